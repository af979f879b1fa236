import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { AttentionGradProgram, AttentionProgram, AttentionStatsProgram, type AttentionDims } from './attention_webgpu';
import { fusedKernelBackend, runProgram } from './webgpu_run';

/** One causal self-attention over a batch of packed sequences, in the projections' token-major layout. */
export interface AttentionShape {
  readonly batch: number;
  readonly seq: number;
  readonly heads: number;
  /** Key/value heads; query head h reads kv head floor(h / (heads / kvHeads)), as HF's repeat_kv. */
  readonly kvHeads: number;
  readonly headDim: number;
  /** Multiplies q·k: 1/√headDim, or whatever the architecture says. */
  readonly scale: number;
  /** Query t sees keys t − slidingWindow < j ≤ t (Mistral-style); null: every j ≤ t. */
  readonly slidingWindow: number | null;
}

/**
 * Causal scaled-dot-product attention. qkv [batch·seq, (heads + 2·kvHeads)·headDim] holds, per token, the
 * query heads, then the key heads, then the value heads: GPT-2's c_attn output as it is (other
 * architectures concatenate their three projections). Returns [batch·seq, heads·headDim], ready for
 * the output projection. On the webgpu backend: one fused kernel forward and two backward (per-query
 * statistics, then the gradient of qkv in one piece), with no [seq, seq] tensor and no head
 * transposes. Elsewhere: `causalAttentionReference`, the same maths in stock tfjs ops.
 */
export function causalAttention(qkv: tf.Tensor2D, shape: AttentionShape): tf.Tensor2D {
  checkArgs(qkv, shape);
  const backend = fusedKernelBackend();
  return backend ? fusedAttention(backend, qkv, shape) : causalAttentionReference(qkv, shape);
}

function fusedAttention(backend: WebGPUBackend, qkv: tf.Tensor2D, shape: AttentionShape): tf.Tensor2D {
  const { batch, seq, heads, kvHeads, headDim, scale, slidingWindow } = shape;
  const dims: AttentionDims = { rows: batch * seq, seq, heads, kvHeads, headDim, scale, windowSize: slidingWindow ?? 0 };
  const op = tf.customGrad((...inputs) => {
    const [packed, save] = inputs as [tf.Tensor2D, tf.GradSaveFunc];
    const out = runProgram(backend, new AttentionProgram(dims), [packed]) as tf.Tensor2D;
    save([packed, out]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor => {
      const [sQkv, sOut] = saved as [tf.Tensor, tf.Tensor];
      const stats = runProgram(backend, new AttentionStatsProgram(dims), [sQkv, sOut, dy]);
      const grad = runProgram(backend, new AttentionGradProgram(dims), [sQkv, dy, stats]);
      stats.dispose();
      return grad;
    };
    return { value: out, gradFunc };
  });
  return op(qkv) as tf.Tensor2D;
}

/**
 * Added to the scores of keys a query may not see. Finite rather than -Infinity so that the backward
 * pass never multiplies 0 by infinity; exp() of it underflows to exactly 0 in float32.
 */
const MASKED = -1e9;

/** Additive mask [seq, seq]: 0 where key j is visible from query i, MASKED elsewhere; one upload, no ops. */
function buildCausalMask(seq: number, slidingWindow: number | null): tf.Tensor2D {
  const values = new Float32Array(seq * seq).fill(MASKED);
  for (let i = 0; i < seq; i++) {
    const first = slidingWindow === null ? 0 : Math.max(0, i - slidingWindow + 1);
    values.fill(0, i * seq + first, i * seq + i + 1);
  }
  return tf.tensor2d(values, [seq, seq]);
}

/**
 * Masks kept between calls, as a tfjs user who cares about speed keeps them: a model calls attention
 * once per layer and step with the same seq and window, and rebuilding the mask every time would put
 * that cost into the stock baseline the fused kernel is measured against. Keyed by seq and window, at
 * most MASKS_KEPT of them (a model mixes at most full and sliding-window layers; a new key frees the
 * least recently used), all freed when the backend changes. Not kept on the cpu backend: the app never
 * trains there (it is the tests' independent reference, whose tensor counts must stay exact), and
 * building a mask there is plain JavaScript either way.
 */
const MASKS_KEPT = 2;
const keptMasks = new Map<string, tf.Tensor2D>();
let keptMasksBackend: tf.KernelBackend | null = null;

function causalMask(seq: number, slidingWindow: number | null): tf.Tensor2D {
  if (tf.getBackend() === 'cpu') return buildCausalMask(seq, slidingWindow); // the caller's tidy frees it
  if (tf.backend() !== keptMasksBackend) {
    releaseCausalMasks();
    keptMasksBackend = tf.backend();
  }
  const key = `${seq}:${slidingWindow ?? 0}`;
  let mask = keptMasks.get(key);
  keptMasks.delete(key); // re-inserted below: the Map's order is least recently used first
  if (!mask || mask.isDisposed) mask = tf.keep(buildCausalMask(seq, slidingWindow)); // kept: no tidy frees it
  keptMasks.set(key, mask);
  for (const [oldest, old] of keptMasks) {
    if (keptMasks.size <= MASKS_KEPT) break;
    keptMasks.delete(oldest);
    old.dispose();
  }
  return mask;
}

/** Frees the masks kept by the stock-tfjs attention (they are rebuilt on the next call that needs them). */
export function releaseCausalMasks(): void {
  for (const mask of keptMasks.values()) mask.dispose();
  keptMasks.clear();
  keptMasksBackend = null;
}

/**
 * `causalAttention` in stock tfjs ops: q, k and v sliced out, heads split out by transposes, scores,
 * additive mask, softmax, weighted values. Instead of materialising repeated k/v for grouped-query
 * attention, the group's query heads are stacked along the sequence axis so one batched matmul per kv
 * head serves the whole group.
 */
export function causalAttentionReference(qkv: tf.Tensor2D, shape: AttentionShape): tf.Tensor2D {
  const { batch, seq, heads, kvHeads, headDim, scale, slidingWindow } = shape;
  return tf.tidy(() => {
    const [q, k, v] = tf.split(qkv, [heads * headDim, kvHeads * headDim, kvHeads * headDim], 1);
    const split = (x: tf.Tensor, n: number) => x.reshape([batch, seq, n, headDim]).transpose([0, 2, 1, 3]);
    const group = heads / kvHeads;
    const qg = tf.mul(split(q!, heads), scale).reshape([batch, kvHeads, group * seq, headDim]);
    const scores = tf.matMul(qg, split(k!, kvHeads), false, true).reshape([batch, kvHeads, group, seq, seq]);
    const probs = tf.softmax(tf.add(scores, causalMask(seq, slidingWindow))).reshape([batch, kvHeads, group * seq, seq]);
    const out = tf.matMul(probs, split(v!, kvHeads)).reshape([batch, heads, seq, headDim]);
    return out.transpose([0, 2, 1, 3]).reshape([batch * seq, heads * headDim]);
  });
}

function checkArgs(qkv: tf.Tensor2D, s: AttentionShape): void {
  const fail = (what: string): never => {
    throw new Error(`causalAttention: ${what}`);
  };
  for (const [name, n] of [['batch', s.batch], ['seq', s.seq], ['heads', s.heads], ['kvHeads', s.kvHeads], ['headDim', s.headDim]] as const) {
    if (!Number.isInteger(n) || n < 1) fail(`${name} must be a positive integer, got ${n}`);
  }
  if (s.heads % s.kvHeads !== 0) fail(`heads (${s.heads}) must be a multiple of kvHeads (${s.kvHeads})`);
  if (s.slidingWindow !== null && !(Number.isInteger(s.slidingWindow) && s.slidingWindow >= 1)) {
    fail(`slidingWindow must be a positive integer or null, got ${s.slidingWindow}`);
  }
  const rows = s.batch * s.seq;
  const cols = (s.heads + 2 * s.kvHeads) * s.headDim;
  if (qkv.dtype !== 'float32') fail(`qkv must be float32, got ${qkv.dtype}`);
  if (qkv.rank !== 2 || qkv.shape[0] !== rows || qkv.shape[1] !== cols) {
    fail(`qkv must be [${rows}, ${cols}] (batch·seq, (heads + 2·kvHeads)·headDim), got [${qkv.shape.join(', ')}]`);
  }
}
