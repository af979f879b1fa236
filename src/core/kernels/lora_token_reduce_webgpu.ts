import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import code from '../../../shaders/lora_token_reduce.wgsl?raw';
import { constantsKey, fillWgsl, rankBlockFor, type ProgramUniform, type WgslConstants } from './program_util';

export interface LoraTokenReduceParams {
  /** The reduced dimension (tokens). */
  dimT: number;
  /** Columns of wide. */
  dimP: number;
  rank: number;
  scale: number;
  /** How the result is stored: [P, r] (dB) or [r, P] (dA). */
  outLayout: 'pr' | 'rp';
  hasMask: boolean;
}


/**
 * `scale·(wide⊙mask)ᵀ·low` summed over tokens → [P, r] or [r, P]: the LoRA weight gradients.
 * Inputs, in order: wide [T, P], low [T, r], dropMask [T, P] (a stand-in, never read, when absent).
 */
export class LoraTokenReduceProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  variableNames = ['wide', 'low', 'dropMask'];
  uniforms = 'dimT : i32, dimP : i32, rank : i32, scale : f32,';
  workgroupSize: [number, number, number];
  uniformData: ProgramUniform[];
  private readonly constants: WgslConstants;

  constructor(params: LoraTokenReduceParams) {
    const { dimT, dimP, rank, scale } = params;
    const rankBlock = rankBlockFor(rank);
    // 16 column lanes × 4 token lanes. More token lanes give a GPU more threads for short P, but each
    // doubling of them cost ~1.3-1.8× on SwiftShader (measured 1 → 8 lanes: 14 → 33 ms for dB at
    // T 512, out 768, r 8), so the split stays moderate.
    const wgP = 16;
    const wgT = 4;
    this.workgroupSize = [wgP, wgT, 1];
    this.constants = {
      WG_P: wgP,
      WG_T: wgT,
      RANK_BLOCK: rankBlock,
      OUT_PR: params.outLayout === 'pr',
      HAS_MASK: params.hasMask,
    };
    this.outputShape = params.outLayout === 'pr' ? [dimP, rank] : [rank, dimP];
    this.dispatch = [Math.ceil(dimP / (wgP * 4)), Math.ceil(rank / rankBlock), 1];
    this.shaderKey = `loraTokenReduce_${constantsKey(this.constants)}`;
    this.uniformData = [
      { type: 'int32', data: [dimT] },
      { type: 'int32', data: [dimP] },
      { type: 'int32', data: [rank] },
      { type: 'float32', data: [scale] },
    ];
  }

  getUserCode(): string {
    return fillWgsl(code, this.constants);
  }
}
