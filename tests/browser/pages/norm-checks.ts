import * as tf from '@tensorflow/tfjs';
import { normalize, normalizeReference, type NormKind } from '../../../src/core/kernels/norm';
import { onBackend, relErr, takePrograms, webgpu, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface NormCase {
  rows: number;
  cols: number;
  kind: NormKind;
  bias: boolean;
  eps: number;
  /** Added to x: a large mean tests that the variance does not lose its digits. */
  offset?: number;
  /** Compute the weight inside the differentiated function, so that tf.grads disposes it before backprop. */
  weightInside?: boolean;
  /** Run with tfjs's IS_TEST flag, under which a kernel that leaves tensors alive (saved ones too) throws. */
  leakCheck?: boolean;
}

export interface NormCaseResult {
  /** Max |fused - reference| / max(1, max |reference|), per output. */
  errors: { y: number; dx: number };
  /** Programs dispatched by the fused forward pass, then by the fused forward + backward pass. */
  forwardPrograms: string[];
  gradPrograms: string[];
  leakedTensors: number;
  leakedDataIds: number;
  gpuErrors: string[];
}

type NormOp = typeof normalize;

interface CaseTensors {
  x: tf.Tensor2D;
  weight: tf.Tensor1D;
  bias: tf.Tensor1D | null;
  dy: tf.Tensor2D;
}

function makeCase(c: NormCase, seed: number): CaseTensors {
  const u = (shape: number[], s: number, lo = -1, hi = 1) => tf.randomUniform(shape, lo, hi, 'float32', seed * 16 + s);
  const x = tf.tidy(() => tf.add(u([c.rows, c.cols], 1, -2, 2), c.offset ?? 0)) as tf.Tensor2D;
  return {
    x,
    // Around 1, as trained norm weights are.
    weight: u([c.cols], 2, 0.5, 1.5) as tf.Tensor1D,
    bias: c.bias ? (u([c.cols], 3) as tf.Tensor1D) : null,
    dy: u([c.rows, c.cols], 4) as tf.Tensor2D,
  };
}

function disposeCase(t: CaseTensors): void {
  tf.dispose([t.x, t.weight, t.dy, ...(t.bias ? [t.bias] : [])]);
}

/** y and dx of `op` (tf.grads with a random dy), read back; every tensor it made is disposed. */
async function forwardAndGrads(op: NormOp, c: NormCase, seed: number) {
  const t = makeCase(c, seed);
  const apply = (x: tf.Tensor): tf.Tensor2D => {
    // tf.add(w, 0) is a new tensor that tf.grads disposes before the backward pass.
    const weight = c.weightInside ? tf.add(t.weight, 0) : t.weight;
    return op(x as tf.Tensor2D, weight, t.bias, c.eps, c.kind);
  };
  takePrograms();
  const y = tf.tidy(() => apply(t.x));
  const yData = (await y.data()) as Float32Array;
  const forwardPrograms = takePrograms();
  const [dx] = tf.grads(apply)([t.x], t.dy) as [tf.Tensor];
  const dxData = (await dx.data()) as Float32Array;
  const gradPrograms = takePrograms();
  tf.dispose([y, dx]);
  disposeCase(t);
  return { y: yData, dx: dxData, forwardPrograms, gradPrograms };
}

/** Forward and dx of the fused op on webgpu against tf.grads of the stock-op composition on cpu. */
export async function checkCase(c: NormCase, seed: number): Promise<NormCaseResult> {
  const tensorsBefore = tf.memory().numTensors;
  const dataIdsBefore = webgpu().numDataIds();
  if (c.leakCheck) tf.env().set('IS_TEST', true);
  const { value: fused, gpuErrors } = await withErrorScope(() => forwardAndGrads(normalize, c, seed)).finally(() =>
    tf.env().set('IS_TEST', false),
  );
  const reference = await onBackend('cpu', () => forwardAndGrads(normalizeReference, c, seed));
  return {
    errors: { y: relErr(fused.y, reference.y), dx: relErr(fused.dx, reference.dx) },
    forwardPrograms: fused.forwardPrograms,
    gradPrograms: fused.gradPrograms,
    leakedTensors: tf.memory().numTensors - tensorsBefore,
    leakedDataIds: webgpu().numDataIds() - dataIdsBefore,
    gpuErrors,
  };
}

export interface VariableResult {
  /** Programs dispatched by the differentiated function with a trainable weight. */
  trainablePrograms: string[];
  /** Variables that got a gradient. */
  gradNames: string[];
  errors: { y: number; dx: number; dWeight: number; dBias: number };
  /** Programs dispatched with a non-trainable variable as the weight: the fused ones. */
  frozenPrograms: string[];
  frozenErrorY: number;
  leakedTensors: number;
  gpuErrors: string[];
}

/**
 * A trainable weight (a tf.Variable) falls back to the stock-op composition, so that it gets its
 * gradient; a non-trainable variable is frozen and takes the fused path.
 */
export async function checkVariables(): Promise<VariableResult> {
  const tensorsBefore = tf.memory().numTensors;
  const c: NormCase = { rows: 7, cols: 33, kind: 'layer', bias: true, eps: 1e-5 };
  const run = async (op: NormOp, tag: string) => {
    const t = makeCase(c, 21);
    const weight = tf.variable(t.weight, true, `norm_w_${tag}`);
    const bias = tf.variable(t.bias!, true, `norm_b_${tag}`);
    takePrograms();
    const { value, grads } = tf.variableGrads(() => {
      const y = op(t.x, weight, bias, c.eps, c.kind);
      return tf.sum(tf.mul(y, t.dy)) as tf.Scalar;
    }, [weight, bias]);
    const y = op(t.x, weight, bias, c.eps, c.kind);
    const [dx] = tf.grads((x: tf.Tensor) => op(x as tf.Tensor2D, weight, bias, c.eps, c.kind))([t.x], t.dy);
    const trainablePrograms = takePrograms();
    const gradNames = Object.keys(grads).filter((n) => grads[n] != null).sort();
    const data = {
      y: (await y.data()) as Float32Array,
      dx: (await dx!.data()) as Float32Array,
      dWeight: (await grads[weight.name]!.data()) as Float32Array,
      dBias: (await grads[bias.name]!.data()) as Float32Array,
    };
    tf.dispose([value, y, dx!, ...Object.values(grads)]);

    const frozen = tf.variable(t.weight, false, `norm_frozen_${tag}`);
    const yFrozen = op(t.x, frozen, t.bias, c.eps, c.kind);
    const yFrozenData = (await yFrozen.data()) as Float32Array;
    const frozenPrograms = takePrograms();
    tf.dispose([weight, bias, frozen, yFrozen]);
    disposeCase(t);
    return { data, trainablePrograms, gradNames, frozenPrograms, yFrozenData };
  };
  const { value: fused, gpuErrors } = await withErrorScope(() => run(normalize, 'fused'));
  const reference = await onBackend('cpu', () => run(normalizeReference, 'ref'));
  return {
    trainablePrograms: fused.trainablePrograms,
    gradNames: fused.gradNames,
    errors: {
      y: relErr(fused.data.y, reference.data.y),
      dx: relErr(fused.data.dx, reference.data.dx),
      dWeight: relErr(fused.data.dWeight, reference.data.dWeight),
      dBias: relErr(fused.data.dBias, reference.data.dBias),
    },
    frozenPrograms: fused.frozenPrograms,
    frozenErrorY: relErr(fused.yFrozenData, reference.yFrozenData),
    leakedTensors: tf.memory().numTensors - tensorsBefore,
    gpuErrors,
  };
}

/** On another backend normalize is the reference composition, for both kinds. */
export async function checkCpuFallback(): Promise<{ backend: string; maxDiff: number; programs: number }> {
  takePrograms();
  await tf.setBackend('cpu');
  try {
    let maxDiff = 0;
    const cases: NormCase[] = [
      { rows: 7, cols: 24, kind: 'layer', bias: true, eps: 1e-5 },
      { rows: 7, cols: 24, kind: 'layer', bias: false, eps: 1e-5 },
      { rows: 7, cols: 24, kind: 'rms', bias: false, eps: 1e-6 },
    ];
    for (const [i, c] of cases.entries()) {
      const t = makeCase(c, 30 + i);
      const y = normalize(t.x, t.weight, t.bias, c.eps, c.kind);
      const yRef = normalizeReference(t.x, t.weight, t.bias, c.eps, c.kind);
      maxDiff = Math.max(maxDiff, relErr((await y.data()) as Float32Array, (await yRef.data()) as Float32Array));
      tf.dispose([y, yRef]);
      disposeCase(t);
    }
    return { backend: tf.getBackend(), maxDiff, programs: takePrograms().length };
  } finally {
    await tf.setBackend('webgpu');
  }
}

/** The messages normalize throws for bad arguments (each call must throw). */
export function checkArgErrors(): string[] {
  const x = tf.zeros([3, 4]) as tf.Tensor2D;
  const w = tf.ones([4]);
  const wrong = tf.ones([5]);
  const ints = tf.zeros([3, 4], 'int32') as tf.Tensor2D;
  const x3 = tf.zeros([1, 3, 4]) as unknown as tf.Tensor2D;
  const calls: Array<() => tf.Tensor> = [
    () => normalize(x, w, w, 1e-6, 'rms'),
    () => normalize(x, wrong, null, 1e-5, 'layer'),
    () => normalize(x, w, wrong, 1e-5, 'layer'),
    () => normalize(ints, w, null, 1e-5, 'layer'),
    () => normalize(x3, w, null, 1e-5, 'layer'),
    () => normalize(x, w, null, Number.NaN, 'layer'),
  ];
  const messages = calls.map((call) => {
    try {
      call().dispose();
      return 'did not throw';
    } catch (e) {
      return e instanceof Error ? e.message : String(e);
    }
  });
  tf.dispose([x, w, wrong, ints, x3]);
  return messages;
}
