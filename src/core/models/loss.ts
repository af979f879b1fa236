import * as tf from '@tensorflow/tfjs';
import { weightedNll } from '../kernels/cross_entropy.js';

/**
 * Mean next-token cross-entropy over the unmasked positions.
 *
 * logits: [batch, seq, vocab]; targets: int32 [batch, seq], already shifted (targets[t] is the token
 * after input t); mask: float32 [batch, seq] of 0/1 weights, or null for all positions. A batch
 * with nothing unmasked yields 0 rather than NaN so one empty batch cannot poison training.
 */
export function causalLmLoss(logits: tf.Tensor3D, targets: tf.Tensor2D, mask: tf.Tensor2D | null): tf.Scalar {
  return tf.tidy(() => {
    const [batch, seq, vocab] = logits.shape;
    const n = batch * seq;
    const flatTargets = tf.cast(targets.reshape([n]), 'int32') as tf.Tensor1D;
    let weights: tf.Tensor1D;
    if (mask === null) {
      weights = tf.fill([n], 1 / n);
    } else {
      const m = tf.cast(mask.reshape([n]), 'float32') as tf.Tensor1D;
      weights = tf.div(m, tf.maximum(tf.sum(m), 1));
    }
    return weightedNll(logits.reshape([n, vocab]), flatTargets, weights);
  });
}
