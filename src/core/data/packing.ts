import { fmix32, seededRandom } from '../random.js';

/**
 * Turning tokenized documents into fixed-length training and validation windows.
 *
 * Everything here is plain typed arrays on the host, so it runs the same in the worker, in Node
 * tests and anywhere else; the trainer uploads one batch at a time.
 */

/** One document after tokenization. */
export interface TokenizedDoc {
  readonly ids: readonly number[];
  /**
   * Per token, 1 = this token counts in the loss when it is a target, 0 = it does not (e.g. a
   * prompt the model should read but not learn to write). Same length as `ids`; absent = all count.
   */
  readonly lossMask?: Uint8Array;
}

/** Documents joined into one stream, with a loss-mask flag per token. */
export interface TokenStream {
  readonly ids: Int32Array;
  readonly lossMask: Uint8Array;
}

/**
 * Joins documents into one stream with the end-of-text token after each document.
 *
 * The separator comes after every document, the last included, so the model learns to end a
 * document; it always counts in the loss, even after a fully masked document, because ending is
 * something the model must write itself. `eosId` null (a tokenizer without one) joins the
 * documents directly.
 */
export function packStream(docs: readonly TokenizedDoc[], eosId: number | null): TokenStream {
  const sep = eosId === null ? 0 : 1;
  let length = 0;
  for (const doc of docs) length += doc.ids.length + sep;
  const ids = new Int32Array(length);
  const lossMask = new Uint8Array(length);
  let at = 0;
  docs.forEach((doc, d) => {
    const mask = doc.lossMask;
    if (mask !== undefined && mask.length !== doc.ids.length) {
      throw new Error(`document ${d}: lossMask has ${mask.length} entries for ${doc.ids.length} tokens`);
    }
    for (let i = 0; i < doc.ids.length; i++) {
      ids[at] = doc.ids[i]!;
      lossMask[at] = mask === undefined ? 1 : mask[i]! === 0 ? 0 : 1;
      at++;
    }
    if (eosId !== null) {
      ids[at] = eosId;
      lossMask[at] = 1;
      at++;
    }
  });
  return { ids, lossMask };
}

/**
 * `count` windows of `seqLen` positions, row-major ([count, seqLen] flattened).
 * inputs[w][t] is the token at stream position w·seqLen + t; targets[w][t] is the one after it;
 * mask[w][t] is 1 when that target counts in the loss.
 */
export interface WindowSet {
  readonly seqLen: number;
  readonly count: number;
  readonly inputs: Int32Array;
  readonly targets: Int32Array;
  readonly mask: Uint8Array;
  /** Targets with mask 1, over all windows: the denominator of a token-weighted mean. */
  readonly targetTokens: number;
}

function cutWindows(stream: TokenStream, seqLen: number): WindowSet {
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new RangeError(`seqLen must be a positive integer, got ${seqLen}`);
  if (stream.lossMask.length !== stream.ids.length) throw new Error('stream ids and lossMask differ in length');
  // Window w reads positions [w·seqLen, w·seqLen + seqLen] inclusive (seqLen + 1 tokens), so it
  // exists when that last position is inside the stream.
  const count = stream.ids.length > seqLen ? Math.floor((stream.ids.length - 1) / seqLen) : 0;
  const n = count * seqLen;
  const inputs = stream.ids.slice(0, n);
  const targets = stream.ids.slice(1, n + 1);
  const mask = stream.lossMask.slice(1, n + 1);
  let targetTokens = 0;
  for (let i = 0; i < n; i++) targetTokens += mask[i]!;
  return { seqLen, count, inputs, targets, mask, targetTokens };
}

/**
 * Training windows: seqLen + 1 tokens each (inputs = the first seqLen, targets = the same shifted
 * by one), stepping by seqLen so every token is a target exactly once, the last incomplete window
 * dropped. A target whose lossMask is 0 is masked out of the loss.
 */
export function trainWindows(stream: TokenStream, seqLen: number): WindowSet {
  return cutWindows(stream, seqLen);
}

/**
 * Validation windows. This is THE definition of LoRA Lab's `eval/loss`, which the reference
 * fixtures (`loss_base`) are computed with, so do not change it without changing them:
 *
 *   The validation token stream (documents joined with eos between them, see packStream) is cut
 *   into windows of `seq_len` inputs with targets shifted by one token, starting at token 0 and
 *   stepping by `seq_len`, the last incomplete window dropped. `eval/loss` is the mean
 *   cross-entropy over every target token of every window (masked tokens excluded), no dropout.
 *
 * The mean is token-weighted over ALL targets of ALL windows, not a mean of per-window means: the
 * two differ when windows have different numbers of unmasked targets. `evaluate` in
 * core/train implements the mean.
 */
export function evalWindows(stream: TokenStream, seqLen: number): WindowSet {
  return cutWindows(stream, seqLen);
}

/**
 * Copies the windows `indices` (in that order) into one batch, [indices.length, seqLen] flattened.
 */
export function gatherWindows(
  windows: WindowSet,
  indices: readonly number[],
): { inputs: Int32Array; targets: Int32Array; mask: Float32Array; targetTokens: number } {
  const s = windows.seqLen;
  const inputs = new Int32Array(indices.length * s);
  const targets = new Int32Array(indices.length * s);
  const mask = new Float32Array(indices.length * s);
  let targetTokens = 0;
  indices.forEach((w, row) => {
    if (!Number.isInteger(w) || w < 0 || w >= windows.count) throw new RangeError(`window ${w} is outside 0..${windows.count - 1}`);
    inputs.set(windows.inputs.subarray(w * s, w * s + s), row * s);
    targets.set(windows.targets.subarray(w * s, w * s + s), row * s);
    for (let t = 0; t < s; t++) {
      const m = windows.mask[w * s + t]!;
      mask[row * s + t] = m;
      targetTokens += m;
    }
  });
  return { inputs, targets, mask, targetTokens };
}

/**
 * Splits whole documents into training and validation sets, the same way for the same seed.
 *
 * ceil(fraction · n) documents go to validation (as datasets' train_test_split sizes its test
 * split), but at least one always stays for training. Each side keeps the documents' original
 * order, so a preview of either reads like the source.
 */
export function splitValidation<T>(docs: readonly T[], fraction: number, seed: number): { train: T[]; validation: T[] } {
  if (!(fraction >= 0 && fraction < 1)) throw new RangeError(`validation fraction must be in [0, 1), got ${fraction}`);
  const n = docs.length;
  const size = Math.min(Math.ceil(fraction * n - 1e-9), Math.max(n - 1, 0));
  const chosen = new Uint8Array(n);
  for (const i of shuffled(n, mixSeed(seed, 0x5eed)).slice(0, size)) chosen[i] = 1;
  const train: T[] = [];
  const validation: T[] = [];
  docs.forEach((doc, i) => (chosen[i] ? validation : train).push(doc));
  return { train, validation };
}

/**
 * The micro-batches of one epoch: window indices shuffled by (seed, epoch), cut into batches of
 * batchSize, the last partial batch kept so no window is skipped. Same arguments, same order.
 */
export function batchOrder(windowCount: number, batchSize: number, epoch: number, seed: number): number[][] {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchSize must be a positive integer, got ${batchSize}`);
  const order = shuffled(windowCount, mixSeed(seed, epoch));
  const batches: number[][] = [];
  for (let i = 0; i < order.length; i += batchSize) batches.push(order.slice(i, i + batchSize));
  return batches;
}

/** 0..n-1 in a Fisher–Yates order drawn from `seed`. */
function shuffled(n: number, seed: number): number[] {
  const random = seededRandom(seed);
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/**
 * One 32-bit seed from two numbers. The generator's own mixing is weak for seeds that differ by
 * small steps, so epochs 0, 1, 2… are hashed apart first. (Kept as it was when the demo model was
 * trained, so `npm run demo:pretrain` reproduces public/demo bit for bit.)
 */
function mixSeed(seed: number, salt: number): number {
  return fmix32((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(salt >>> 0, 0x85ebca77)) >>> 0);
}
