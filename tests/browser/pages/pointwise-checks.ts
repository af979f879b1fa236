import * as tf from '@tensorflow/tfjs';
import { activation, activationReference, type ActivationKind } from '../../../src/core/kernels/activation';
import { weightedNll, weightedNllReference } from '../../../src/core/kernels/cross_entropy';
import { onBackend, relErr, takePrograms, webgpu, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface ActivationCase {
  kind: ActivationKind;
  shape: number[];
  /** Run with tfjs's IS_TEST flag, under which a kernel that leaves tensors alive (saved ones too) throws. */
  leakCheck?: boolean;
}

export interface CrossEntropyCase {
  rows: number;
  vocab: number;
  /** Some targets below 0 or ≥ vocab: the kernels clamp them (the reference is given them clamped). */
  outOfRange?: boolean;
  /** Make targets and weights inside the differentiated function, so that tf.grads disposes them first. */
  argsInside?: boolean;
  leakCheck?: boolean;
}

export interface PointwiseResult {
  /** Max |fused - reference| / max(1, max |reference|): the value, then the gradient. */
  errors: { y: number; dx: number };
  /** Programs dispatched by the fused forward pass, then by the fused forward + backward pass. */
  forwardPrograms: string[];
  gradPrograms: string[];
  leakedTensors: number;
  leakedDataIds: number;
  gpuErrors: string[];
}

/** Deterministic numbers in [lo, hi) from JS (the same on every backend). */
function uniforms(count: number, seed: number, lo: number, hi: number): number[] {
  let state = (seed * 2654435761) >>> 0 || 1;
  return Array.from({ length: count }, () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return lo + ((state >>> 8) / 2 ** 24) * (hi - lo);
  });
}

interface Tensors {
  inputs: tf.Tensor[];
  dy: tf.Tensor;
}

/** Value and gradient of `f` at `x` (tf.grads with dy), read back; every tensor it made is disposed. */
async function valueAndGrad(f: (x: tf.Tensor) => tf.Tensor, x: tf.Tensor, dy: tf.Tensor) {
  takePrograms();
  const y = tf.tidy(() => f(x));
  const yData = (await y.data()) as Float32Array;
  const forwardPrograms = takePrograms();
  const [dx] = tf.grads((input) => f(input))([x], dy);
  const dxData = (await dx!.data()) as Float32Array;
  const gradPrograms = takePrograms();
  tf.dispose([y, dx!]);
  return { y: yData, dx: dxData, forwardPrograms, gradPrograms };
}

/**
 * The fused op on webgpu (in an error scope, optionally under IS_TEST) against the reference on cpu.
 * `make(forReference)` builds the inputs, x first; `op(rest)` is the function of x, closing over the rest.
 */
async function compare(
  make: (forReference: boolean) => Tensors,
  fused: (t: tf.Tensor[]) => (x: tf.Tensor) => tf.Tensor,
  reference: (t: tf.Tensor[]) => (x: tf.Tensor) => tf.Tensor,
  leakCheck: boolean,
): Promise<PointwiseResult> {
  const run = async (op: typeof fused, forReference: boolean) => {
    const t = make(forReference);
    const [x, ...rest] = t.inputs;
    try {
      return await valueAndGrad(op(rest), x!, t.dy);
    } finally {
      tf.dispose([...t.inputs, t.dy]);
    }
  };
  const tensorsBefore = tf.memory().numTensors;
  const dataIdsBefore = webgpu().numDataIds();
  if (leakCheck) tf.env().set('IS_TEST', true);
  const { value: got, gpuErrors } = await withErrorScope(() => run(fused, false)).finally(() =>
    tf.env().set('IS_TEST', false),
  );
  const leakedTensors = tf.memory().numTensors - tensorsBefore;
  const leakedDataIds = webgpu().numDataIds() - dataIdsBefore;
  const want = await onBackend('cpu', () => run(reference, true));
  return {
    errors: { y: relErr(got.y, want.y), dx: relErr(got.dx, want.dx) },
    forwardPrograms: got.forwardPrograms,
    gradPrograms: got.gradPrograms,
    leakedTensors,
    leakedDataIds,
    gpuErrors,
  };
}

/** x in [-4, 4] with every 5th element ±20 (the saturated tails), and a random dy. */
function activationTensors(c: ActivationCase, seed: number): Tensors {
  const size = c.shape.reduce((a, b) => a * b, 1);
  const values = uniforms(size, seed, -4, 4).map((v, i) => (i % 5 === 0 ? (i % 10 === 0 ? 20 : -20) : v));
  return { inputs: [tf.tensor(values, c.shape)], dy: tf.tensor(uniforms(size, seed + 1000, -1, 1), c.shape) };
}

/** The fused activation's value and dx against the reference composition on the cpu backend. */
export async function checkActivation(c: ActivationCase, seed: number): Promise<PointwiseResult> {
  return compare(
    () => activationTensors(c, seed),
    () => (x) => activation(x, c.kind),
    () => (x) => activationReference(x, c.kind),
    c.leakCheck ?? false,
  );
}

/**
 * Logits in [-8, 8], every third row shifted by +60 (the max shift must keep exp finite), random
 * targets, weights in [0, 1) with every third one 0, and a random upstream gradient.
 */
function crossEntropyValues(c: CrossEntropyCase, seed: number, clampTargets: boolean) {
  const { rows, vocab } = c;
  const logits = uniforms(rows * vocab, seed, -8, 8).map((v, i) => (Math.floor(i / vocab) % 3 === 1 ? v + 60 : v));
  let targets = uniforms(rows, seed + 1, 0, vocab).map(Math.floor);
  if (c.outOfRange) {
    targets = targets.map((t, i) => (i % 4 === 0 ? -1 - t : i % 4 === 1 ? vocab + t : t));
    if (clampTargets) targets = targets.map((t) => Math.min(Math.max(t, 0), vocab - 1));
  }
  const weights = uniforms(rows, seed + 2, 0, 1).map((w, i) => (i % 3 === 2 ? 0 : w));
  return { logits, targets, weights, dy: uniforms(1, seed + 3, 0.5, 2)[0]! };
}

function crossEntropyTensors(c: CrossEntropyCase, seed: number, clampTargets: boolean): Tensors {
  const v = crossEntropyValues(c, seed, clampTargets);
  return {
    inputs: [tf.tensor2d(v.logits, [c.rows, c.vocab]), tf.tensor1d(v.targets, 'int32'), tf.tensor1d(v.weights)],
    dy: tf.scalar(v.dy),
  };
}

/** weightedNll and d(logits) against weightedNllReference on the cpu backend. */
export async function checkCrossEntropy(c: CrossEntropyCase, seed: number): Promise<PointwiseResult> {
  const op = (nll: typeof weightedNll, forReference: boolean) => (rest: tf.Tensor[]) => {
    const [targets, weights] = rest as [tf.Tensor1D, tf.Tensor1D];
    if (!c.argsInside) return (x: tf.Tensor) => nll(x as tf.Tensor2D, targets, weights);
    // Uploaded anew inside f (no dispatch): tf.grads disposes them before the backward pass runs.
    const v = crossEntropyValues(c, seed, forReference);
    return (x: tf.Tensor) => nll(x as tf.Tensor2D, tf.tensor1d(v.targets, 'int32'), tf.tensor1d(v.weights));
  };
  return compare(
    // The reference is given the clamped targets that the kernels read (its gather would read other rows).
    (forReference) => crossEntropyTensors(c, seed, forReference),
    op(weightedNll, false),
    op(weightedNllReference, true),
    c.leakCheck ?? false,
  );
}

/** On another backend the public functions are the references: same values, same gradients. */
export async function checkCpuFallback(): Promise<{ backend: string; maxDiff: number; programs: number }> {
  takePrograms();
  return onBackend('cpu', async () => {
    let maxDiff = 0;
    const same = async (a: tf.Tensor, b: tf.Tensor) => {
      maxDiff = Math.max(maxDiff, relErr((await a.data()) as Float32Array, (await b.data()) as Float32Array));
      tf.dispose([a, b]);
    };
    for (const kind of ['gelu_tanh', 'gelu_erf', 'silu'] as const) {
      const t = activationTensors({ kind, shape: [7, 5] }, 3);
      const x = t.inputs[0]!;
      await same(activation(x, kind), activationReference(x, kind));
      await same(tf.grad((v) => activation(v, kind))(x, t.dy), tf.grad((v) => activationReference(v, kind))(x, t.dy));
      tf.dispose([...t.inputs, t.dy]);
    }
    const t = crossEntropyTensors({ rows: 7, vocab: 33 }, 4, false);
    const [logits, targets, weights] = t.inputs as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
    await same(weightedNll(logits, targets, weights), weightedNllReference(logits, targets, weights));
    await same(
      tf.grad((v) => weightedNll(v as tf.Tensor2D, targets, weights))(logits, t.dy),
      tf.grad((v) => weightedNllReference(v as tf.Tensor2D, targets, weights))(logits, t.dy),
    );
    tf.dispose([...t.inputs, t.dy]);
    return { backend: tf.getBackend(), maxDiff, programs: takePrograms().length };
  });
}
