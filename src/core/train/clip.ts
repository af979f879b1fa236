import * as tf from '@tensorflow/tfjs';
import { sumOfSquares } from '../kernels/optimizer.js';

/** The L2 norm of all gradients taken together, as one vector. */
export function globalNorm(grads: readonly tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => {
    if (grads.length === 0) return tf.scalar(0);
    // Σ of per-tensor Σg²: the same value as torch's norm of per-tensor norms, with one sqrt.
    // Summed through a stack, not tf.addN: tfjs-backend-webgpu 4.22's AddN silently drops every
    // input after the fourth (a browser test compares this norm across backends).
    const squares = grads.map((g) => sumOfSquares(g));
    return tf.sqrt(tf.sum(tf.stack(squares))) as tf.Scalar;
  });
}

/**
 * Global-norm clipping like torch.nn.utils.clip_grad_norm_: every gradient is scaled by
 * min(1, maxNorm / (norm + 1e-6)), where norm is the pre-clip total returned alongside.
 *
 * maxNorm ≤ 0 turns clipping off (TrainingArguments.max_grad_norm = 0); the norm is still
 * computed, for the grad_norm curve, and `grads` then holds the input tensors themselves.
 * Otherwise the clipped gradients are new tensors and the inputs stay the caller's. A non-finite
 * norm is returned as it is (torch's error_if_nonfinite=False); the caller decides what to do.
 */
export function clipByGlobalNorm(grads: readonly tf.Tensor[], maxNorm: number): { grads: tf.Tensor[]; norm: tf.Scalar } {
  const norm = globalNorm(grads);
  if (!(maxNorm > 0)) return { grads: [...grads], norm };
  const clipped = tf.tidy(() => {
    const coef = tf.minimum(tf.div(maxNorm, tf.add(norm, 1e-6)), 1);
    return grads.map((g) => tf.mul(g, coef));
  });
  return { grads: clipped, norm };
}
