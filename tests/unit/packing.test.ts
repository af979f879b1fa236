import { describe, expect, it } from 'vitest';
import {
  batchOrder,
  evalWindows,
  gatherWindows,
  packStream,
  splitValidation,
  trainWindows,
  type TokenStream,
} from '../../src/core/data/packing';

const stream = (ids: number[], mask?: number[]): TokenStream => ({
  ids: Int32Array.from(ids),
  lossMask: Uint8Array.from(mask ?? ids.map(() => 1)),
});
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

describe('packStream', () => {
  it('puts the end-of-text token after every document, counted in the loss', () => {
    const s = packStream([{ ids: [1, 2, 3] }, { ids: [4, 5] }], 9);
    expect([...s.ids]).toEqual([1, 2, 3, 9, 4, 5, 9]);
    expect([...s.lossMask]).toEqual([1, 1, 1, 1, 1, 1, 1]);
  });

  it('keeps per-document loss masks, and eos counts even after a fully masked document', () => {
    const s = packStream(
      [
        { ids: [1, 2, 3], lossMask: Uint8Array.from([0, 0, 0]) },
        { ids: [4, 5], lossMask: Uint8Array.from([0, 1]) },
        { ids: [6] },
      ],
      9,
    );
    expect([...s.ids]).toEqual([1, 2, 3, 9, 4, 5, 9, 6, 9]);
    expect([...s.lossMask]).toEqual([0, 0, 0, 1, 0, 1, 1, 1, 1]);
  });

  it('joins directly without an eos token, handles empty input, and rejects a mask of the wrong length', () => {
    expect([...packStream([{ ids: [1, 2] }, { ids: [3] }], null).ids]).toEqual([1, 2, 3]);
    expect(packStream([], 9).ids.length).toBe(0);
    expect([...packStream([{ ids: [] }], 9).ids]).toEqual([9]);
    expect(() => packStream([{ ids: [1, 2], lossMask: Uint8Array.from([1]) }], 9)).toThrow(/lossMask/);
  });
});

describe('trainWindows / evalWindows', () => {
  it('cuts seqLen+1 token windows stepping by seqLen, targets shifted by one', () => {
    const w = trainWindows(stream(range(10)), 3);
    expect(w.count).toBe(3);
    expect(w.seqLen).toBe(3);
    expect([...w.inputs]).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect([...w.targets]).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect([...w.mask]).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 1]);
    expect(w.targetTokens).toBe(9);
  });

  it('drops the last incomplete window', () => {
    // 9 tokens: a third window would need token 9 as its last target.
    const w = trainWindows(stream(range(9)), 3);
    expect(w.count).toBe(2);
    expect([...w.targets]).toEqual([1, 2, 3, 4, 5, 6]);
    expect(trainWindows(stream(range(4)), 3).count).toBe(1);
    expect(trainWindows(stream(range(3)), 3).count).toBe(0);
    expect(trainWindows(stream([]), 3).count).toBe(0);
  });

  it('masks a target whose lossMask is 0 (the mask of the first token never matters)', () => {
    const mask = [0, 1, 1, 1, 0, 1, 1, 0, 1, 1];
    const w = trainWindows(stream(range(10), mask), 3);
    expect([...w.mask]).toEqual([1, 1, 1, 0, 1, 1, 0, 1, 1]);
    expect(w.targetTokens).toBe(7);
  });

  it('evalWindows is the documented definition: start at 0, step seqLen, shifted targets, partial dropped', () => {
    const docs = [{ ids: [10, 11, 12, 13] }, { ids: [20, 21], lossMask: Uint8Array.from([0, 1]) }, { ids: [30, 31, 32] }];
    const s = packStream(docs, 99);
    // stream: 10 11 12 13 99 20 21 99 30 31 32 99  (12 tokens) → floor(11 / 4) = 2 windows of 4
    const w = evalWindows(s, 4);
    expect(w.count).toBe(2);
    expect([...w.inputs]).toEqual([10, 11, 12, 13, 99, 20, 21, 99]);
    expect([...w.targets]).toEqual([11, 12, 13, 99, 20, 21, 99, 30]);
    expect([...w.mask]).toEqual([1, 1, 1, 1, 0, 1, 1, 1]);
    expect(w.targetTokens).toBe(7);
    // Same cut as the training windows.
    expect(trainWindows(s, 4)).toEqual(w);
  });

  it('rejects a bad sequence length', () => {
    expect(() => evalWindows(stream(range(5)), 0)).toThrow(RangeError);
    expect(() => trainWindows(stream(range(5)), 1.5)).toThrow(RangeError);
  });

  it('gatherWindows copies the chosen windows in order', () => {
    const w = trainWindows(stream(range(10), [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]), 3);
    const b = gatherWindows(w, [2, 0]);
    expect([...b.inputs]).toEqual([6, 7, 8, 0, 1, 2]);
    expect([...b.targets]).toEqual([7, 8, 9, 1, 2, 3]);
    expect([...b.mask]).toEqual([1, 1, 1, 1, 0, 1]);
    expect(b.targetTokens).toBe(5);
    expect(() => gatherWindows(w, [3])).toThrow(RangeError);
  });
});

describe('splitValidation', () => {
  const docs = range(20).map((i) => ({ ids: [i] }));

  it('is deterministic by seed and splits whole documents, each side in source order', () => {
    const a = splitValidation(docs, 0.2, 7);
    const b = splitValidation(docs, 0.2, 7);
    expect(a).toEqual(b);
    expect(a.validation).toHaveLength(4);
    expect(a.train).toHaveLength(16);
    const ids = (xs: { ids: number[] }[]) => xs.map((d) => d.ids[0]!);
    expect([...ids(a.train), ...ids(a.validation)].sort((x, y) => x - y)).toEqual(range(20));
    for (const side of [ids(a.train), ids(a.validation)]) expect(side).toEqual([...side].sort((x, y) => x - y));
    // The same objects, not copies.
    expect(a.validation.every((d) => docs.includes(d))).toBe(true);
    // Another seed picks other documents.
    expect(ids(splitValidation(docs, 0.2, 8).validation)).not.toEqual(ids(a.validation));
  });

  it('sizes with ceil, keeps at least one training document, and 0 means none', () => {
    expect(splitValidation(docs, 0.01, 1).validation).toHaveLength(1);
    expect(splitValidation(docs, 0, 1).validation).toHaveLength(0);
    expect(splitValidation(docs.slice(0, 2), 0.9, 1).train).toHaveLength(1);
    expect(splitValidation(docs.slice(0, 1), 0.5, 1)).toEqual({ train: docs.slice(0, 1), validation: [] });
    expect(() => splitValidation(docs, 1, 1)).toThrow(RangeError);
    expect(() => splitValidation(docs, -0.1, 1)).toThrow(RangeError);
  });
});

describe('batchOrder', () => {
  it('covers every window once per epoch, keeps the last partial batch', () => {
    const batches = batchOrder(10, 4, 0, 42);
    expect(batches.map((b) => b.length)).toEqual([4, 4, 2]);
    expect(batches.flat().sort((x, y) => x - y)).toEqual(range(10));
  });

  it('same seed and epoch → same order; other epoch or seed → another order', () => {
    const order = (epoch: number, seed: number) => batchOrder(64, 8, epoch, seed).flat();
    expect(order(0, 42)).toEqual(order(0, 42));
    expect(order(1, 42)).not.toEqual(order(0, 42));
    expect(order(0, 43)).not.toEqual(order(0, 42));
    // Shuffled, not the identity.
    expect(order(0, 42)).not.toEqual(range(64));
    // The batch size only cuts the order: the permutation depends on (seed, epoch) alone, so
    // gradient accumulation over small batches sees the same windows as one large batch.
    expect(batchOrder(64, 3, 2, 5).flat()).toEqual(batchOrder(64, 16, 2, 5).flat());
  });

  it('handles no windows and rejects a bad batch size', () => {
    expect(batchOrder(0, 4, 0, 1)).toEqual([]);
    expect(() => batchOrder(10, 0, 0, 1)).toThrow(RangeError);
  });
});
