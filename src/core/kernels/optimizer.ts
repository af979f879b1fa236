import * as tf from '@tensorflow/tfjs';
import { AdamWMomentProgram, AdamWParamProgram, AllFiniteProgram, SumSquaresProgram, type AdamWStepSizes } from './optimizer_webgpu';
import { fusedKernelBackend, runProgram } from './webgpu_run';

/**
 * The optimizer's per-variable arithmetic. A LoRA run has two variables per adapted projection
 * (hundreds with all-linear on a deep model), each small, so in stock tfjs ops the optimizer is
 * ~25 dispatches per variable per step, mostly launch overhead on a GPU. On the webgpu backend these
 * are one dispatch each: the moments, the parameter, the finiteness check, the sum of squares.
 */

export interface AdamWStep extends AdamWStepSizes {
  beta1: number;
  beta2: number;
}

export interface AdamWValues {
  p: tf.Tensor;
  m: tf.Tensor;
  v: tf.Tensor;
}

/**
 * One AdamW step of one variable from its gradient: the new parameter and moments (PyTorch's rule,
 * see train/adamw.ts), not yet assigned. Three dispatches on webgpu, the stock composition elsewhere.
 */
export function adamwValues(current: AdamWValues, g: tf.Tensor, step: AdamWStep): AdamWValues {
  const backend = fusedKernelBackend();
  if (!backend || current.p.dtype !== 'float32') return adamwValuesReference(current, g, step);
  const size = current.p.size;
  const flat = (t: tf.Tensor) => tf.reshape(t, [size]);
  const moment = (state: tf.Tensor, square: boolean, beta: number) =>
    runProgram(backend, new AdamWMomentProgram({ size, square, beta }), [flat(state), flat(g)]);
  return tf.tidy(() => {
    const m = moment(current.m, false, step.beta1);
    const v = moment(current.v, true, step.beta2);
    const p = runProgram(backend, new AdamWParamProgram({ size, ...step }), [flat(current.p), m, v]);
    const shape = current.p.shape;
    return { p: tf.reshape(p, shape), m: tf.reshape(m, shape), v: tf.reshape(v, shape) };
  });
}

/** `adamwValues` in stock tfjs ops, the products in the same order. */
export function adamwValuesReference(current: AdamWValues, g: tf.Tensor, step: AdamWStep): AdamWValues {
  const { beta1: b1, beta2: b2, decay, stepSize, bc2Sqrt, eps } = step;
  return tf.tidy(() => {
    const m = tf.add(tf.mul(current.m, b1), tf.mul(g, 1 - b1));
    const v = tf.add(tf.mul(current.v, b2), tf.mul(tf.square(g), 1 - b2));
    const decayed = decay === 1 ? current.p : tf.mul(current.p, decay);
    const denom = tf.add(tf.div(tf.sqrt(v), bc2Sqrt), eps);
    return { p: tf.sub(decayed, tf.mul(tf.div(m, denom), stepSize)), m, v };
  });
}

/**
 * 1 when every element of the three tensors is finite, else 0, as a float32 scalar (so that it can
 * share one readback with the loss). One dispatch on webgpu; elsewhere tfjs's own isFinite kernel.
 */
export function allFinite(values: AdamWValues): tf.Scalar {
  const backend = fusedKernelBackend();
  const { p, m, v } = values;
  if (!backend || p.dtype !== 'float32') {
    return tf.tidy(() => tf.min(tf.stack([p, m, v].map((x) => tf.min(tf.cast(tf.isFinite(x), 'float32'))))) as tf.Scalar);
  }
  return tf.tidy(() => {
    const flat = (t: tf.Tensor) => tf.reshape(t, [p.size]);
    return tf.reshape(runProgram(backend, new AllFiniteProgram(p.size), [flat(p), flat(m), flat(v)]), []) as tf.Scalar;
  });
}

/** Σ g² over the whole tensor: one dispatch on webgpu, else tf.sum(tf.square(g)). */
export function sumOfSquares(g: tf.Tensor): tf.Scalar {
  const backend = fusedKernelBackend();
  if (!backend || g.dtype !== 'float32') return tf.tidy(() => tf.sum(tf.square(g)) as tf.Scalar);
  return tf.tidy(() => tf.reshape(runProgram(backend, new SumSquaresProgram(g.size), [tf.reshape(g, [g.size])]), []) as tf.Scalar);
}
