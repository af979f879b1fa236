import type { WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import finiteCode from '../../../shaders/all_finite.wgsl?raw';
import momentCode from '../../../shaders/adamw_moment.wgsl?raw';
import paramCode from '../../../shaders/adamw_param.wgsl?raw';
import sumSquaresCode from '../../../shaders/sum_squares.wgsl?raw';
import { constantsKey, fillWgsl, type ProgramUniform, type WgslConstants } from './program_util';

const WORKGROUP = 64;

/** An elementwise program over one variable's elements, flattened: one thread per element. */
abstract class ElementwiseProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number];
  abstract variableNames: string[];
  abstract uniforms: string;
  // The backend appends `size : i32` (the output's element count) to the uniforms.
  size = true;
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  abstract uniformData: ProgramUniform[];

  constructor(
    name: string,
    size: number,
    private readonly code: string,
    private readonly constants: WgslConstants,
  ) {
    this.outputShape = [size];
    this.dispatch = [Math.ceil(size / WORKGROUP), 1, 1];
    this.shaderKey = `${name}_${constantsKey(constants)}`;
  }

  getUserCode(): string {
    return fillWgsl(this.code, this.constants);
  }
}

/** `beta·state + (1 − beta)·g` (or `·g²`). Inputs: state, grad, flattened to [size]. */
export class AdamWMomentProgram extends ElementwiseProgram {
  variableNames = ['state', 'grad'];
  uniforms = 'beta : f32, oneMinusBeta : f32,';
  uniformData: ProgramUniform[];

  constructor(params: { size: number; square: boolean; beta: number }) {
    super('adamwMoment', params.size, momentCode, { SQUARE: params.square });
    this.uniformData = [
      { type: 'float32', data: [params.beta] },
      { type: 'float32', data: [1 - params.beta] },
    ];
  }
}

export interface AdamWStepSizes {
  /** 1 − lr·weight_decay. */
  decay: number;
  /** lr / (1 − β1ᵗ). */
  stepSize: number;
  /** √(1 − β2ᵗ). */
  bc2Sqrt: number;
  eps: number;
}

/** `p·decay − (m / (√v / bc2Sqrt + eps))·stepSize`. Inputs: p, m, v (the new moments), flattened. */
export class AdamWParamProgram extends ElementwiseProgram {
  variableNames = ['p', 'm', 'v'];
  uniforms = 'decay : f32, stepSize : f32, bc2Sqrt : f32, eps : f32,';
  uniformData: ProgramUniform[];

  constructor(params: { size: number } & AdamWStepSizes) {
    super('adamwParam', params.size, paramCode, {});
    this.uniformData = [params.decay, params.stepSize, params.bc2Sqrt, params.eps].map((x) => ({ type: 'float32', data: [x] }));
  }
}

/** A whole-tensor reduction to one number in one workgroup: inputs flattened, output [1]. */
abstract class SingleWorkgroupReduceProgram implements WebGPUProgram {
  outputShape = [1];
  shaderKey: string;
  dispatchLayout = { x: [0] };
  dispatch: [number, number, number] = [1, 1, 1];
  abstract variableNames: string[];
  uniforms = 'count : i32,';
  workgroupSize: [number, number, number] = [WORKGROUP, 1, 1];
  uniformData: ProgramUniform[];
  private readonly constants: WgslConstants = { WG: WORKGROUP };

  constructor(
    name: string,
    count: number,
    private readonly code: string,
  ) {
    this.shaderKey = `${name}_${constantsKey(this.constants)}`;
    this.uniformData = [{ type: 'int32', data: [count] }];
  }

  getUserCode(): string {
    return fillWgsl(this.code, this.constants);
  }
}

/** Σ x². Input: x, flattened. */
export class SumSquaresProgram extends SingleWorkgroupReduceProgram {
  variableNames = ['x'];

  constructor(count: number) {
    super('sumSquares', count, sumSquaresCode);
  }
}

/** 1 when a, b and c (same size) are all finite, else 0. Inputs flattened. */
export class AllFiniteProgram extends SingleWorkgroupReduceProgram {
  variableNames = ['a', 'b', 'c'];

  constructor(count: number) {
    super('allFinite', count, finiteCode);
  }
}
