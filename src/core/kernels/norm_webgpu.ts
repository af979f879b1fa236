import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import normCode from '../../../shaders/norm.wgsl?raw';
import normGradCode from '../../../shaders/norm_grad.wgsl?raw';
import statsCode from '../../../shaders/norm_stats.wgsl?raw';
import { constantsKey, fillWgsl, type ProgramUniform, type WgslConstants } from './program_util';

export interface NormParams {
  rows: number;
  /** The row length C (the normalized dimension). */
  cols: number;
  /** Uniform: changing it reuses the pipeline. */
  eps: number;
  kind: 'layer' | 'rms';
}

/** Threads per workgroup, one row each. */
const ROWS_PER_WORKGROUP = 64;

/** What both programs share: one thread per row, a flat dispatch over rows, the same uniforms. */
abstract class RowProgram implements WebGPUProgram {
  outputShape: number[];
  abstract shaderKey: string;
  abstract variableNames: string[];
  // Flat over rows: the backend calls main(index) with index = the row (and folds a dispatch that is
  // too wide for one dimension into y and z by itself).
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [ROWS_PER_WORKGROUP, 1, 1];
  uniforms = 'rows : i32, cols : i32, eps : f32,';
  uniformData: ProgramUniform[];

  constructor(params: NormParams) {
    const { rows, cols, eps } = params;
    this.outputShape = [rows, cols];
    this.dispatch = [Math.ceil(rows / ROWS_PER_WORKGROUP), 1, 1];
    this.uniformData = [
      { type: 'int32', data: [rows] },
      { type: 'int32', data: [cols] },
      { type: 'float32', data: [eps] },
    ];
  }

  abstract getUserCode(): string;
}

/**
 * LayerNorm (`(x − mean)·rstd·weight + bias`) or RMSNorm (`weight·(x·rstd)`) of each row of x, one
 * thread per row. Inputs, in order: x [rows, C], weight [C], bias [C] (a stand-in, never read, when
 * absent; RMSNorm has none).
 */
export class NormProgram extends RowProgram {
  shaderKey: string;
  variableNames = ['x', 'weight', 'bias'];
  private readonly constants: WgslConstants;

  constructor(params: NormParams & { hasBias: boolean }) {
    super(params);
    this.constants = { IS_RMS: params.kind === 'rms', HAS_BIAS: params.hasBias };
    this.shaderKey = `norm_${constantsKey(this.constants)}`;
  }

  getUserCode(): string {
    return fillWgsl(`${statsCode}\n${normCode}`, this.constants);
  }
}

/**
 * dx of NormProgram for a frozen weight (and bias), recomputing each row's mean and rstd from x:
 * `rstd·(g − mean(g) − x̂·mean(g·x̂))` for LayerNorm, `rstd·(g − x̂·mean(g·x̂))` for RMSNorm, g = dy·weight.
 * Inputs, in order: x [rows, C], dy [rows, C], weight [C].
 */
export class NormGradProgram extends RowProgram {
  shaderKey: string;
  variableNames = ['x', 'dy', 'weight'];
  private readonly constants: WgslConstants;

  constructor(params: NormParams) {
    super(params);
    this.constants = { IS_RMS: params.kind === 'rms' };
    this.shaderKey = `normGrad_${constantsKey(this.constants)}`;
  }

  getUserCode(): string {
    return fillWgsl(`${statsCode}\n${normGradCode}`, this.constants);
  }
}
