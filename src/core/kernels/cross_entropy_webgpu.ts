import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import forwardCode from '../../../shaders/cross_entropy.wgsl?raw';
import gradCode from '../../../shaders/cross_entropy_grad.wgsl?raw';
import rowsCode from '../../../shaders/cross_entropy_rows.wgsl?raw';
import { fillWgsl, type ProgramUniform } from './program_util';

/** Rows per workgroup; each thread owns one row. */
const WORKGROUP = 64;

/** What the forward and backward programs share: one thread per row of logits [rows, vocab]. */
abstract class RowProgram implements WebGPUProgram {
  abstract outputShape: number[];
  shaderKey: string;
  // One dispatched thread per row, whatever the output's shape.
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  abstract variableNames: string[];
  uniforms = 'rows : i32, vocab : i32,';
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  uniformData: ProgramUniform[];

  constructor(
    name: string,
    rows: number,
    vocab: number,
    private readonly entryCode: string,
  ) {
    this.dispatch = [Math.ceil(rows / WORKGROUP), 1, 1];
    // Nothing is baked into the WGSL: rows and vocab are uniforms, so one pipeline serves every shape.
    this.shaderKey = name;
    this.uniformData = [
      { type: 'int32', data: [rows] },
      { type: 'int32', data: [vocab] },
    ];
  }

  getUserCode(): string {
    return fillWgsl(`${rowsCode}\n${this.entryCode}`, {});
  }
}

/**
 * `weights[i]·(logsumexp(logits[i]) − logits[i, targets[i]])` → [rows]. Inputs, in order:
 * logits [rows, vocab] float32, targets [rows] int32, weights [rows] float32.
 */
export class CrossEntropyProgram extends RowProgram {
  outputShape: number[];
  variableNames = ['logits', 'targets', 'weights'];

  constructor(params: { rows: number; vocab: number }) {
    super('crossEntropy', params.rows, params.vocab, forwardCode);
    this.outputShape = [params.rows];
  }
}

/**
 * `(softmax(logits[i]) − onehot(targets[i]))·weights[i]·dy` → [rows, vocab]. Inputs, in order:
 * logits, targets, weights as in CrossEntropyProgram, and dy [1] (the upstream gradient of the sum).
 */
export class CrossEntropyGradProgram extends RowProgram {
  outputShape: number[];
  variableNames = ['logits', 'targets', 'weights', 'dy'];

  constructor(params: { rows: number; vocab: number }) {
    super('crossEntropyGrad', params.rows, params.vocab, gradCode);
    this.outputShape = [params.rows, params.vocab];
  }
}
