import * as tf from '@tensorflow/tfjs';
import { weightedNll } from '../kernels/cross_entropy.js';
import { isCheckpointable } from './checkpointing.js';
import { logitsChunkRows } from './loss-chunks.js';
import { applyLinear, type Linear, type LinearApply } from './linear.js';
import { vjp } from './vjp.js';

export { LOGITS_CHUNK_BYTES, logitsChunkRows } from './loss-chunks.js';

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
    const { flatTargets, weights } = tokenWeights(targets, mask, n);
    return weightedNll(logits.reshape([n, vocab]), flatTargets, weights);
  });
}

/** Each token's share of the mean: 1/n, or mask / max(Σ mask, 1). */
function tokenWeights(targets: tf.Tensor2D, mask: tf.Tensor2D | null, n: number): { flatTargets: tf.Tensor1D; weights: tf.Tensor1D } {
  const flatTargets = tf.cast(targets.reshape([n]), 'int32') as tf.Tensor1D;
  if (mask === null) return { flatTargets, weights: tf.fill([n], 1 / n) };
  const m = tf.cast(mask.reshape([n]), 'float32') as tf.Tensor1D;
  return { flatTargets, weights: tf.div(m, tf.maximum(tf.sum(m), 1)) };
}

export interface HeadLossOptions {
  /** The most bytes one chunk's float32 logits [tokens, vocab] may take. Default LOGITS_CHUNK_BYTES. */
  readonly maxChunkBytes?: number;
}

/**
 * `causalLmLoss(head(hidden))`, the same value and gradients, without the whole [tokens, vocab] logits
 * ever existing: 1,024 tokens of a 128,256-token vocabulary would be 525 MB of float32.
 *
 * hidden: the model's final hidden states [batch·seq, hidden] (CausalLM.hidden); head and apply: its
 * output projection and the LinearApply that runs it (CausalLM.lmHead and the blocks' apply), so the
 * loss does not depend on how the head's weight is held. targets and mask as causalLmLoss.
 *
 * The tokens are cut into chunks whose logits fit `maxChunkBytes`. The forward pass computes each
 * chunk's logits and its weighted NLL and frees the logits before the next chunk. The backward pass
 * (one tf.customGrad, differentiable in `hidden`) computes each chunk's logits again and takes the
 * chunk's gradient with respect to its hidden states through the head's and the NLL's own gradients,
 * dlogits = w·(softmax − onehot) then dhidden = dlogits·W_head, again one chunk at a time. Cost: the
 * head's matmul once more per step.
 *
 * Taken whole, as causalLmLoss(head(hidden)) exactly, when one chunk holds every token, and when the
 * head itself may be trained (a LoRA target, a model trained from scratch, an apply that does not
 * say): the op's gradient reaches `hidden` only. Evaluation takes the same path as training; with no
 * gradient asked for, only the chunked forward runs.
 */
export function causalLmLossFromHidden(
  hidden: tf.Tensor2D,
  head: Linear,
  apply: LinearApply,
  targets: tf.Tensor2D,
  mask: tf.Tensor2D | null,
  opts: HeadLossOptions = {},
): tf.Scalar {
  const [n] = hidden.shape;
  const [batch, seq] = targets.shape;
  if (batch * seq !== n) throw new Error(`causalLmLossFromHidden: ${n} hidden rows for targets [${batch}, ${seq}]`);
  const rows = logitsChunkRows(head.outFeatures, opts.maxChunkBytes);
  return tf.tidy(() => {
    const { flatTargets, weights } = tokenWeights(targets, mask, n);
    if (n <= rows || !headIsFrozen(head, apply)) return weightedNll(apply(head, hidden), flatTargets, weights);
    return chunkedNll(hidden, head, apply, flatTargets, weights, rows);
  });
}

/**
 * Whether the head reads nothing trainable through `apply`: what the chunked op needs, as its gradient
 * reaches `hidden` only. Known for the plain projection and for an apply that names its trainable
 * tensors (LoRA's); any other function is assumed to train the head.
 */
function headIsFrozen(head: Linear, apply: LinearApply): boolean {
  const variable = (t: unknown) => t instanceof tf.Variable && t.trainable;
  if (variable(head.weight) || variable(head.bias)) return false;
  return apply === applyLinear || (isCheckpointable(apply) && apply.trainables(head).length === 0);
}

function chunkedNll(
  hidden: tf.Tensor2D,
  head: Linear,
  apply: LinearApply,
  targets: tf.Tensor1D,
  weights: tf.Tensor1D,
  rows: number,
): tf.Scalar {
  const [n, width] = hidden.shape;
  const chunks: { start: number; size: number }[] = [];
  for (let start = 0; start < n; start += rows) chunks.push({ start, size: Math.min(rows, n - start) });
  // The chunk's hidden rows are a tensor of their own, so that its gradient is [size, hidden], not [n, hidden].
  const rowsOf = (h: tf.Tensor2D, c: (typeof chunks)[number]) => tf.slice(h, [c.start, 0], [c.size, width]);
  const chunkNll = (hc: tf.Tensor2D, t: tf.Tensor1D, w: tf.Tensor1D, c: (typeof chunks)[number]): tf.Scalar =>
    weightedNll(apply(head, hc), tf.slice(t, c.start, c.size), tf.slice(w, c.start, c.size));

  const op = tf.customGrad((...inputs) => {
    const [h, save] = inputs as [tf.Tensor2D, tf.GradSaveFunc];
    let total = tf.scalar(0);
    for (const c of chunks) {
      // One chunk's logits at a time: the tidy frees them before the next chunk's are made.
      const next = tf.tidy(() => tf.add<tf.Scalar>(total, chunkNll(rowsOf(h, c), targets, weights, c)));
      total.dispose();
      total = next;
    }
    // targets and weights are closed over rather than inputs (they get no gradient), and saved all the
    // same: the caller's tidy frees them before the backward pass runs.
    save([h, targets, weights]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor => {
      const [sh, st, sw] = saved as [tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
      const parts = chunks.map((c) =>
        tf.tidy(() => {
          const hc = rowsOf(sh, c);
          return vjp(() => chunkNll(hc, st, sw, c), [hc], dy)[0]!;
        }),
      );
      const dh = tf.concat(parts, 0);
      tf.dispose(parts);
      return dh;
    };
    return { value: total, gradFunc };
  });
  return op(hidden) as tf.Scalar;
}
