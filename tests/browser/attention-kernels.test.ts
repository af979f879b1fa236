import { describe, expect, test } from 'vitest';
import { useWebGpuPage } from './support/webgpu-suite';
import type { AttentionCase, AttentionResult } from './pages/attention-checks';

// The fused causal attention (forward, statistics, gradients) on WebGPU (SwiftShader in CI) against the
// stock-op composition on the cpu backend. Odd sequence lengths, batch and head counts, head sizes that
// are not multiples of 4 and real models' 128 and 256, grouped- and multi-query attention, sliding
// windows shorter and longer than the sequence, and a batch·seq of 1024.
const PAGE = '/tests/browser/pages/attention-checks.ts';
const TOLERANCE = 1e-4; // relative to max(1, max |reference|), float32

const CASES: AttentionCase[] = [
  { batch: 1, seq: 1, heads: 1, kvHeads: 1, headDim: 1, scale: 1, slidingWindow: null },
  { batch: 2, seq: 7, heads: 4, kvHeads: 4, headDim: 16, scale: 0.25, slidingWindow: null },
  { batch: 3, seq: 13, heads: 4, kvHeads: 2, headDim: 8, scale: 1 / Math.sqrt(8), slidingWindow: 5 },
  { batch: 1, seq: 33, heads: 6, kvHeads: 1, headDim: 5, scale: 0.5, slidingWindow: null },
  { batch: 2, seq: 9, heads: 2, kvHeads: 2, headDim: 4, scale: 1, slidingWindow: 40 },
  { batch: 8, seq: 64, heads: 4, kvHeads: 4, headDim: 16, scale: 0.25, slidingWindow: null },
  { batch: 4, seq: 256, heads: 2, kvHeads: 1, headDim: 8, scale: 0.125, slidingWindow: 100 },
  { batch: 2, seq: 5, heads: 4, kvHeads: 2, headDim: 6, scale: 0.4, slidingWindow: null, leakCheck: true },
  // Real models' head sizes (GPT-2 64, Llama 128, Gemma 256): the per-thread arrays stay within WGSL's
  // 8 KiB of function-scope memory.
  { batch: 1, seq: 9, heads: 2, kvHeads: 1, headDim: 128, scale: 1 / Math.sqrt(128), slidingWindow: null },
  { batch: 1, seq: 6, heads: 2, kvHeads: 2, headDim: 256, scale: 1 / 16, slidingWindow: 4 },
];

const name = (c: AttentionCase) =>
  `batch ${c.batch} × seq ${c.seq}, ${c.heads} heads / ${c.kvHeads} kv, d ${c.headDim}` +
  `${c.slidingWindow ? `, window ${c.slidingWindow}` : ''}${c.leakCheck ? ', IS_TEST leak checks' : ''}`;

const page = useWebGpuPage(PAGE);

describe('fused causal attention matches the stock-op composition', () => {
  test.each(CASES.map((c, i) => [name(c), c, i] as const))('%s', async (_, c, i) => {
    const r = await page.call<AttentionResult>('checkAttention', c, i + 1);
    expect(r.gpuErrors).toEqual([]);
    // One dispatch forward; backward the statistics, then the whole gradient of qkv.
    expect(r.forwardPrograms).toEqual(['attention']);
    expect(r.gradPrograms).toEqual(['attention', 'attentionStats', 'attentionGrad']);
    expect(r.errors.out).toBeLessThan(TOLERANCE);
    expect(r.errors.dqkv).toBeLessThan(TOLERANCE);
    expect(r.leakedTensors).toBe(0);
    expect(r.leakedDataIds).toBe(0);
  });
});

test('on another backend causalAttention is the reference composition', async () => {
  const r = await page.call<{ backend: string; maxDiff: number; programs: number }>('checkCpuFallback');
  expect(r.backend).toBe('cpu');
  expect(r.programs).toBe(0);
  expect(r.maxDiff).toBe(0);
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
