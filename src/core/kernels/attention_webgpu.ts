import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import forwardCode from '../../../shaders/attention.wgsl?raw';
import commonCode from '../../../shaders/attention_common.wgsl?raw';
import gradCode from '../../../shaders/attention_grad.wgsl?raw';
import statsCode from '../../../shaders/attention_stats.wgsl?raw';
import { constantsKey, fillWgsl, type ProgramUniform, type WgslConstants } from './program_util';

/** The shape of one causal self-attention over a packed qkv, token-major: rows = batch·seq. */
export interface AttentionDims {
  rows: number;
  seq: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** Multiplies q·k. */
  scale: number;
  /** Keys visible from query t: t − windowSize < j ≤ t; 0 = all j ≤ t. */
  windowSize: number;
}

const WORKGROUP_SIZE = 64;

/**
 * What the three attention programs share: flat dispatch, one thread per (token, head), the head size
 * baked in (it sizes the per-thread arrays), everything else a uniform so one pipeline serves any
 * sequence length, batch, head count and scale.
 */
abstract class AttentionProgramBase implements WebGPUProgram {
  abstract outputShape: number[];
  abstract variableNames: string[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  workgroupSize: [number, number, number] = [WORKGROUP_SIZE, 1, 1];
  uniforms = 'rows : i32, seq : i32, heads : i32, kvHeads : i32, windowSize : i32, scale : f32,';
  uniformData: ProgramUniform[];
  private readonly constants: WgslConstants;

  constructor(
    name: string,
    private readonly code: string,
    dims: AttentionDims,
    threads: number,
  ) {
    this.constants = { HEAD_DIM: dims.headDim };
    this.shaderKey = `${name}_${constantsKey(this.constants)}`;
    // Past WebGPU's 65,535 workgroups per dimension the backend folds x into y and z itself.
    this.dispatch = [Math.ceil(threads / WORKGROUP_SIZE), 1, 1];
    this.uniformData = [
      { type: 'int32', data: [dims.rows] },
      { type: 'int32', data: [dims.seq] },
      { type: 'int32', data: [dims.heads] },
      { type: 'int32', data: [dims.kvHeads] },
      { type: 'int32', data: [dims.windowSize] },
      { type: 'float32', data: [dims.scale] },
    ];
  }

  getUserCode(): string {
    return fillWgsl(`${commonCode}\n${this.code}`, this.constants);
  }
}

/** Input qkv [rows, (heads + 2·kvHeads)·d]; output [rows, heads·d]. */
export class AttentionProgram extends AttentionProgramBase {
  outputShape: number[];
  variableNames = ['qkv'];

  constructor(dims: AttentionDims) {
    super('attention', forwardCode, dims, dims.rows * dims.heads);
    this.outputShape = [dims.rows, dims.heads * dims.headDim];
  }
}

/** Inputs qkv, the forward output and its gradient; output [rows, heads, 2]: (logsumexp, delta). */
export class AttentionStatsProgram extends AttentionProgramBase {
  outputShape: number[];
  variableNames = ['qkv', 'attnOut', 'dOut'];

  constructor(dims: AttentionDims) {
    super('attentionStats', statsCode, dims, dims.rows * dims.heads);
    this.outputShape = [dims.rows, dims.heads, 2];
  }
}

/** Inputs qkv, dOut, stats; output the gradient of qkv, [rows, (heads + 2·kvHeads)·d]. */
export class AttentionGradProgram extends AttentionProgramBase {
  outputShape: number[];
  variableNames = ['qkv', 'dOut', 'stats'];

  constructor(dims: AttentionDims) {
    super('attentionGrad', gradCode, dims, dims.rows * (dims.heads + dims.kvHeads));
    this.outputShape = [dims.rows, (dims.heads + 2 * dims.kvHeads) * dims.headDim];
  }
}
