import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { CrossEntropyGradProgram, CrossEntropyProgram } from './cross_entropy_webgpu';
import { fusedKernelBackend, runProgram } from './webgpu_run';

/**
 * Σᵢ wᵢ·(logsumexp(logitsᵢ) − logitsᵢ[targetᵢ]) over rows of logits [n, vocab]; targets int32 [n],
 * weights float32 [n]. The gradient flows to the logits only: targets and weights are saved, never
 * differentiated.
 *
 * On the webgpu backend two dispatches forward (one thread per row writes its weighted loss, then
 * tfjs's Sum) and one backward (one thread per row recomputes the row's max and exp-sum and writes
 * (softmax − onehot)·w·dy), in place of the stock Max/Sum/Softmax reductions, which cost tens of ms
 * each on SwiftShader. Elsewhere it is `weightedNllReference`.
 *
 * A target outside [0, vocab) is a caller bug: the kernels clamp it into the row (never reading
 * another row or out of bounds); the reference's behaviour for it is the backend's.
 */
export function weightedNll(logits: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D): tf.Scalar {
  checkArgs(logits, targets, weights);
  const backend = fusedKernelBackend();
  return backend ? fusedWeightedNll(backend, logits, targets, weights) : weightedNllReference(logits, targets, weights);
}

/**
 * `weightedNll` from stock tfjs ops, for every backend.
 *
 * Its gradient is written out, (softmax − onehot)·w, rather than left to autodiff: the natural
 * forward picks one logit per row with gather, and gather's gradient needs the
 * UnsortedSegmentSum kernel, which the wasm backend lacks, so training on wasm would fail.
 * targets and weights are only saved, never differentiated.
 */
export function weightedNllReference(logits: tf.Tensor2D, targets: tf.Tensor1D, weights: tf.Tensor1D): tf.Scalar {
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

function fusedWeightedNll(
  backend: WebGPUBackend,
  logits: tf.Tensor2D,
  targets: tf.Tensor1D,
  weights: tf.Tensor1D,
): tf.Scalar {
  const [rows, vocab] = logits.shape;
  // targets and weights are closed over rather than passed in, so that no gradient is computed for
  // them. They are saved all the same, because tf.grads disposes whatever its function created (the
  // weights causalLmLoss builds, say) before the backward pass runs.
  const op = tf.customGrad((...inputs) => {
    const [x, save] = inputs as [tf.Tensor2D, tf.GradSaveFunc];
    const perRow = runProgram(backend, new CrossEntropyProgram({ rows, vocab }), [x, targets, weights]);
    save([x, targets, weights]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor =>
      tf.tidy(() => {
        const [sx, st, sw] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
        // dy stays on the device: the kernel reads it as a one-element input.
        return runProgram(backend, new CrossEntropyGradProgram({ rows, vocab }), [sx, st, sw, tf.reshape(dy, [1])]);
      });
    // customGrad runs this function inside a tidy, which releases the per-row losses.
    return { value: tf.sum(perRow) as tf.Scalar, gradFunc };
  });
  return op(logits) as tf.Scalar;
}

function checkArgs(logits: tf.Tensor, targets: tf.Tensor, weights: tf.Tensor): void {
  const fail = (what: string): never => {
    throw new Error(`weightedNll: ${what}`);
  };
  const shape = (t: tf.Tensor): string => `[${t.shape.join(', ')}]`;
  if (logits.rank !== 2 || logits.dtype !== 'float32') {
    fail(`logits must be float32 [n, vocab], got ${logits.dtype} ${shape(logits)}`);
  }
  const [n, vocab] = logits.shape as [number, number];
  if (vocab < 1) fail('vocab must be at least 1');
  if (targets.dtype !== 'int32' || targets.rank !== 1 || targets.shape[0] !== n) {
    fail(`targets must be int32 [${n}], got ${targets.dtype} ${shape(targets)}`);
  }
  if (weights.dtype !== 'float32' || weights.rank !== 1 || weights.shape[0] !== n) {
    fail(`weights must be float32 [${n}], got ${weights.dtype} ${shape(weights)}`);
  }
}
