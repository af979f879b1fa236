import * as tf from '@tensorflow/tfjs';
import type { CausalLM, ForwardOptions } from './model.js';
import { seededRandom } from '../random.js';

export interface TokenProb {
  readonly id: number;
  readonly prob: number;
}

/** Logits of the position after `ids`, as float64 for stable host-side softmax and sampling. */
async function lastLogits(model: CausalLM, ids: readonly number[], forward?: ForwardOptions): Promise<Float64Array> {
  if (ids.length === 0) throw new Error('generation needs at least one context token');
  // No KV cache: the whole (cropped) context is re-run per token, so keep only what fits.
  const context = ids.slice(-model.config.maxPositions);
  const last = tf.tidy(() => {
    const input = tf.tensor2d([...context], [1, context.length], 'int32');
    const logits = model.forward(input, forward);
    return logits.slice([0, context.length - 1, 0], [1, 1, model.config.vocabSize]).reshape([-1]);
  });
  try {
    // data() rather than dataSync(): WebGPU in workers and Node's Dawn refuse synchronous readback.
    return Float64Array.from(await last.data());
  } finally {
    last.dispose();
  }
}

function softmax(logits: Float64Array, temperature: number): Float64Array {
  let max = -Infinity;
  for (const v of logits) if (v > max) max = v;
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = Math.exp((logits[i]! - max) / temperature);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / sum;
  return out;
}

/** The `topK` most likely next tokens after `ids`, most likely first. */
export async function nextTokenDistribution(
  model: CausalLM,
  ids: readonly number[],
  topK: number,
  forward?: ForwardOptions,
): Promise<TokenProb[]> {
  const probs = softmax(await lastLogits(model, ids, forward), 1);
  const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]! || a - b);
  return order.slice(0, Math.max(0, topK)).map((id) => ({ id, prob: probs[id]! }));
}

function argmax(values: Float64Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

function sample(probs: Float64Array, u: number): number {
  let acc = 0;
  for (let i = 0; i < probs.length; i++) {
    acc += probs[i]!;
    if (u < acc) return i;
  }
  // Rounding can leave the cumulative sum a hair under 1.
  return argmax(probs);
}

export interface GenerateOptions {
  readonly maxNewTokens: number;
  /** 0 = greedy (argmax); otherwise logits are divided by it before sampling. */
  readonly temperature: number;
  readonly seed: number;
  /** Generation ends after emitting any of these (e.g. config.eosTokenIds). */
  readonly stopTokenIds?: readonly number[];
  /** Called with each new token as soon as it is chosen, for streaming output. */
  readonly onToken?: (id: number) => void;
  readonly forward?: ForwardOptions;
}

/** Extends `ids` by up to maxNewTokens tokens; returns only the new tokens. */
export async function generate(model: CausalLM, ids: readonly number[], opts: GenerateOptions): Promise<number[]> {
  if (!(opts.temperature >= 0)) throw new Error(`temperature must be >= 0, got ${opts.temperature}`);
  const random = seededRandom(opts.seed);
  const stop = new Set(opts.stopTokenIds ?? []);
  const context = [...ids];
  const produced: number[] = [];
  for (let step = 0; step < opts.maxNewTokens; step++) {
    const logits = await lastLogits(model, context, opts.forward);
    const next = opts.temperature === 0 ? argmax(logits) : sample(softmax(logits, opts.temperature), random());
    produced.push(next);
    context.push(next);
    opts.onToken?.(next);
    if (stop.has(next)) break;
  }
  return produced;
}

/** One generated token with what the model thought of it: its probability and the most likely alternatives. */
export interface ScoredToken {
  readonly id: number;
  /** The token's probability under the model (softmax of the logits at temperature 1), whatever the sampling temperature. */
  readonly prob: number;
  /** The `topK` most likely tokens at that position, most likely first (the chosen one among them when it ranks there). */
  readonly top: readonly TokenProb[];
}

/**
 * generate(), also reporting for each new token its probability and the top alternatives at that position: what
 * the playground shows on hover. The same seed draws the same random numbers, so two models (base and adapted)
 * sampled with the same settings differ only where their distributions do.
 */
export async function generateScored(model: CausalLM, ids: readonly number[], opts: GenerateOptions & { readonly topK: number }): Promise<ScoredToken[]> {
  if (!(opts.temperature >= 0)) throw new Error(`temperature must be >= 0, got ${opts.temperature}`);
  const random = seededRandom(opts.seed);
  const stop = new Set(opts.stopTokenIds ?? []);
  const context = [...ids];
  const produced: ScoredToken[] = [];
  for (let step = 0; step < opts.maxNewTokens; step++) {
    const logits = await lastLogits(model, context, opts.forward);
    const probs = softmax(logits, 1);
    const next = opts.temperature === 0 ? argmax(logits) : sample(opts.temperature === 1 ? probs : softmax(logits, opts.temperature), random());
    const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]! || a - b);
    produced.push({ id: next, prob: probs[next]!, top: order.slice(0, Math.max(0, opts.topK)).map((id) => ({ id, prob: probs[id]! })) });
    context.push(next);
    opts.onToken?.(next);
    if (stop.has(next)) break;
  }
  return produced;
}
