import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import code from '../../../shaders/lora_matmul.wgsl?raw';
import { encodingConstants, PACKED_WEIGHT_WGSL, type MatrixEncoding } from './packed_weight_webgpu';
import { constantsKey, fillWgsl, type ProgramUniform, type WgslConstants } from './program_util';

export interface LoraMatMulParams {
  /** Rows of lhs and of the result (tokens). */
  dimM: number;
  /** Columns of the result. */
  dimN: number;
  /** The contracted dimension of the base matmul. */
  dimK: number;
  /** 0: the plain base matmul (+ bias), as frozenLinear runs it; low and up are then never read. */
  rank: number;
  /** Multiplies the low-rank term only (uniform: changing it reuses the pipeline). */
  scale: number;
  /** How the frozen weight is stored relative to this product: [K, N] or [N, K]. */
  rhsLayout: 'kn' | 'nk';
  /** How the frozen weight's elements are held (float32, or packed and decoded as tiles load). */
  rhsEncoding: MatrixEncoding;
  /** How the up-projection is stored: [N, r] (B in the forward pass) or [r, N] (A in dx). */
  upLayout: 'nr' | 'rn';
  hasBias: boolean;
  hasMask: boolean;
}

/**
 * `lhs·rhs + bias + scale·mask⊙(low·up)`: the base matmul, register-blocked 4×4 per thread over
 * workgroup-memory tiles, with the LoRA term added in its epilogue. Inputs, in order:
 * lhs [M, K], rhs (values or packed words), rhsScale (the packed encoding's scales), low [M, r], up,
 * bias [N], dropMask [M, N] (absent ones are float32 stand-ins, never read).
 */
export class LoraMatMulProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [1], y: [0] };
  dispatch: [number, number, number];
  variableNames = ['lhs', 'rhs', 'rhsScale', 'low', 'up', 'bias', 'dropMask'];
  uniforms = 'dimM : i32, dimN : i32, dimK : i32, rank : i32, scale : f32,';
  workgroupSize: [number, number, number];
  uniformData: ProgramUniform[];
  private readonly constants: WgslConstants;

  constructor(params: LoraMatMulParams) {
    const { dimM, dimN, dimK, rank, scale } = params;
    // A short M (generation, small batches) would leave most of a 64-row tile empty.
    const wgY = dimM <= 16 ? 4 : 16;
    const wgX = 16;
    this.workgroupSize = [wgX, wgY, 1];
    this.constants = {
      WG_X: wgX,
      WG_Y: wgY,
      TILE_K: 16,
      RHS_KN: params.rhsLayout === 'kn',
      UP_NR: params.upLayout === 'nr',
      HAS_BIAS: params.hasBias,
      HAS_MASK: params.hasMask,
      ...encodingConstants(params.rhsEncoding),
    };
    this.outputShape = [dimM, dimN];
    this.dispatch = [Math.ceil(dimN / (wgX * 4)), Math.ceil(dimM / (wgY * 4)), 1];
    this.shaderKey = `loraMatMul_${constantsKey(this.constants)}`;
    this.uniformData = [
      { type: 'int32', data: [dimM] },
      { type: 'int32', data: [dimN] },
      { type: 'int32', data: [dimK] },
      { type: 'int32', data: [rank] },
      { type: 'float32', data: [scale] },
    ];
  }

  getUserCode(): string {
    return fillWgsl(`${PACKED_WEIGHT_WGSL}\n${code}`, this.constants);
  }
}
