import * as tf from '@tensorflow/tfjs';

/**
 * Added to the scores of keys a query may not see. Finite rather than -Infinity so that the
 * backward pass never multiplies 0 by infinity; exp() of it underflows to exactly 0 in float32.
 */
const MASKED = -1e9;

/**
 * Additive attention mask [seq, seq]: 0 where key j is visible from query i, MASKED elsewhere.
 * Built with ops rather than uploaded from JS so it stays on the device.
 */
export function causalMask(seq: number, slidingWindow: number | null): tf.Tensor2D {
  const i = tf.range(0, seq, 1, 'int32').reshape([seq, 1]);
  const j = tf.range(0, seq, 1, 'int32').reshape([1, seq]);
  const distance = tf.sub(i, j);
  let visible = tf.greaterEqual(distance, 0);
  if (slidingWindow !== null) visible = tf.logicalAnd(visible, tf.less(distance, slidingWindow));
  return tf.where(visible, tf.zeros([seq, seq]), tf.fill([seq, seq], MASKED)) as tf.Tensor2D;
}

/**
 * Scaled dot-product attention with grouped-query support.
 *
 * q: [batch, heads, seq, headDim]; k, v: [batch, kvHeads, seq, headDim]; returns [batch·seq, heads·headDim].
 * Query head h reads key/value head floor(h / group), as HF's repeat_kv arranges it. Instead of
 * materialising repeated k/v, the group's query heads are stacked along the sequence axis so one
 * batched matmul per kv head serves the whole group.
 */
export function attention(
  q: tf.Tensor4D,
  k: tf.Tensor4D,
  v: tf.Tensor4D,
  mask: tf.Tensor2D,
  scale: number,
): tf.Tensor2D {
  const [batch, heads, seq, headDim] = q.shape;
  const kvHeads = k.shape[1];
  const group = heads / kvHeads;
  const qg = tf.mul(q, scale).reshape([batch, kvHeads, group * seq, headDim]);
  const scores = tf.matMul(qg, k, false, true).reshape([batch, kvHeads, group, seq, seq]);
  const probs = tf.softmax(tf.add(scores, mask)).reshape([batch, kvHeads, group * seq, seq]);
  const out = tf.matMul(probs, v).reshape([batch, heads, seq, headDim]);
  return out.transpose([0, 2, 1, 3]).reshape([batch * seq, heads * headDim]);
}

/** [batch·seq, heads·headDim] → [batch, heads, seq, headDim]. */
export function splitHeads(x: tf.Tensor2D, batch: number, seq: number, heads: number, headDim: number): tf.Tensor4D {
  return x.reshape([batch, seq, heads, headDim]).transpose([0, 2, 1, 3]);
}

export function layerNorm(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor2D {
  const mean = tf.mean(x, -1, true);
  const centered = tf.sub(x, mean);
  // Biased variance, as torch.nn.LayerNorm uses.
  const variance = tf.mean(tf.square(centered), -1, true);
  return tf.add(tf.mul(tf.mul(centered, tf.rsqrt(tf.add(variance, eps))), weight), bias);
}

export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor, eps: number): tf.Tensor2D {
  const meanSquare = tf.mean(tf.square(x), -1, true);
  return tf.mul(weight, tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))));
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/** GELU, tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`). */
export function geluTanh(x: tf.Tensor): tf.Tensor {
  const inner = tf.mul(tf.add(x, tf.mul(tf.mul(tf.square(x), x), 0.044715)), SQRT_2_OVER_PI);
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
}

/** Exact GELU (HF `gelu`). */
export function geluErf(x: tf.Tensor): tf.Tensor {
  return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

export function silu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(x));
}

/** Fetches a weight the manifest guarantees; a miss here is a bug, not a user error. */
export function requireWeight(weights: ReadonlyMap<string, tf.Tensor>, name: string): tf.Tensor {
  const t = weights.get(name);
  if (!t) throw new Error(`weight "${name}" was not provided to buildModel`);
  return t;
}
