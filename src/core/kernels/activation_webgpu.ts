import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import mathCode from '../../../shaders/activation_math.wgsl?raw';
import forwardCode from '../../../shaders/activation.wgsl?raw';
import gradCode from '../../../shaders/activation_grad.wgsl?raw';
import type { ActivationKind } from './activation';
import { constantsKey, fillWgsl, type ProgramUniform, type WgslConstants } from './program_util';

const KIND_CODES: Record<ActivationKind, number> = { gelu_tanh: 0, gelu_erf: 1, silu: 2 };

/** Threads per workgroup of the pointwise programs (one element each). */
const WORKGROUP = 64;

/** What the forward and backward programs share: a flat [size] output, one thread per element. */
abstract class PointwiseActivationProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  abstract variableNames: string[];
  // The backend appends `size : i32` (the output's element count) to the uniforms.
  size = true;
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  uniformData: ProgramUniform[] = [];
  private readonly constants: WgslConstants;

  constructor(
    name: string,
    size: number,
    kind: ActivationKind,
    private readonly entryCode: string,
  ) {
    this.constants = { KIND: KIND_CODES[kind] };
    this.outputShape = [size];
    // The backend folds a dispatch over 65535 workgroups into 2-D; the preamble's flat index follows.
    this.dispatch = [Math.ceil(size / WORKGROUP), 1, 1];
    this.shaderKey = `${name}_${constantsKey(this.constants)}`;
  }

  getUserCode(): string {
    return fillWgsl(`${mathCode}\n${this.entryCode}`, this.constants);
  }
}

/** `f(x)` elementwise. Input: x, flattened to [size]. */
export class ActivationProgram extends PointwiseActivationProgram {
  variableNames = ['x'];

  constructor(params: { size: number; kind: ActivationKind }) {
    super('activation', params.size, params.kind, forwardCode);
  }
}

/** `dy·f'(x)` elementwise, f' recomputed from x. Inputs: x and dy, both flattened to [size]. */
export class ActivationGradProgram extends PointwiseActivationProgram {
  variableNames = ['x', 'dy'];

  constructor(params: { size: number; kind: ActivationKind }) {
    super('activationGrad', params.size, params.kind, gradCode);
  }
}
