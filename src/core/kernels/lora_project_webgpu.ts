import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import code from '../../../shaders/lora_project.wgsl?raw';
import { constantsKey, fillWgsl, rankBlockFor, type ProgramUniform, type WgslConstants } from './program_util';

export interface LoraProjectParams {
  /** Rows of wide and of the result (tokens). */
  dimT: number;
  /** The contracted (wide) dimension. */
  dimK: number;
  rank: number;
  scale: number;
  /** How the low-rank factor is stored: [r, K] (A) or [K, r] (B). */
  lowLayout: 'rk' | 'kr';
  hasMask: boolean;
}

/**
 * `scale·(wide⊙mask)·low` → [T, r], the skinny matmul of LoRA's down projection (xa) and of dxa.
 * Inputs, in order: wide [T, K], low, dropMask [T, K] (a stand-in, never read, when absent).
 */
export class LoraProjectProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  variableNames = ['wide', 'low', 'dropMask'];
  uniforms = 'dimT : i32, dimK : i32, rank : i32, scale : f32,';
  workgroupSize: [number, number, number];
  uniformData: ProgramUniform[];
  private readonly constants: WgslConstants;

  constructor(params: LoraProjectParams) {
    const { dimT, dimK, rank, scale } = params;
    const rankBlock = rankBlockFor(rank);
    // 64 threads as 4-row groups × K lanes: 16 groups of 4 lanes (fewer partial sums to add; on
    // SwiftShader ~4× faster than 64 lanes, somewhat faster than 16), or, for a handful of tokens
    // (generation), one group of 64 lanes so that the threads are not idle.
    const rowGroups = dimT <= 8 ? 1 : 16;
    const wgK = 64 / rowGroups;
    this.workgroupSize = [wgK, rowGroups, 1];
    this.constants = {
      WG_K: wgK,
      ROW_GROUPS: rowGroups,
      RANK_BLOCK: rankBlock,
      LOW_RK: params.lowLayout === 'rk',
      HAS_MASK: params.hasMask,
    };
    this.outputShape = [dimT, rank];
    this.dispatch = [Math.ceil(rank / rankBlock), Math.ceil(dimT / (4 * rowGroups)), 1];
    this.shaderKey = `loraProject_${constantsKey(this.constants)}`;
    this.uniformData = [
      { type: 'int32', data: [dimT] },
      { type: 'int32', data: [dimK] },
      { type: 'int32', data: [rank] },
      { type: 'float32', data: [scale] },
    ];
  }

  getUserCode(): string {
    return fillWgsl(code, this.constants);
  }
}
