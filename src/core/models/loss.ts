import * as tf from '@tensorflow/tfjs';

/**
 * Σᵢ wᵢ·(logsumexp(logitsᵢ) − logitsᵢ[targetᵢ]) over rows of logits [n, vocab].
 *
 * Its gradient is written out, (softmax − onehot)·w, rather than left to autodiff: the natural
 * forward picks one logit per row with gather, and gather's gradient needs the
 * UnsortedSegmentSum kernel, which the wasm backend lacks, so training on wasm would fail.
 * targets and weights are only saved, never differentiated.
 */
function weightedNll(logits: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D): tf.Scalar {
  const op = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const rows = args[0] as tf.Tensor2D;
    const save = args[1] as tf.GradSaveFunc;
    const [n, vocab] = rows.shape;
    // Shift by the row max before exp so large logits cannot overflow (the logSoftmax trick).
    const max = tf.max(rows, 1, true);
    const logSumExp = tf.add(tf.log(tf.sum(tf.exp(tf.sub(rows, max)), 1)), max.reshape([n]));
    // One logit per row from the flattened matrix: O(n) memory, where a one-hot product would
    // allocate another [n, vocab] tensor during the forward pass.
    const flatIndex = tf.add(tf.mul(tf.range(0, n, 1, 'int32'), tf.scalar(vocab, 'int32')), targets);
    const picked = tf.gather(rows.reshape([n * vocab]), flatIndex);
    save([rows, targets, weights]);
    return {
      value: tf.sum(tf.mul(tf.sub(logSumExp, picked), weights)) as tf.Scalar,
      gradFunc: (dy: tf.Scalar, saved: tf.Tensor[]) => {
        const [r, t, w] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
        const rowScale = tf.mul(w, dy).reshape([n, 1]);
        // Built as int32 and cast: tfjs-backend-wasm 4.22's OneHot writes int32 bits into a
        // float32 output when asked for float32 directly, which silently zeroes the gradient's
        // target term (a test compares this gradient across backends).
        const oneHot = tf.cast(tf.oneHot(t, vocab), 'float32');
        return tf.mul(tf.sub(tf.softmax(r), oneHot), rowScale);
      },
    };
  });
  return op(logits) as tf.Scalar;
}

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
