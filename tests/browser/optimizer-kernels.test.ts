import { expect, test } from 'vitest';
import type { OptimizerResult } from './pages/optimizer-checks';
import { useWebGpuPage } from './support/webgpu-suite';

// The fused optimizer arithmetic on WebGPU (AdamW moments and parameter, the finiteness check, the sum
// of squares for the global norm) against the stock-op composition on the cpu backend. Sizes below,
// at and above one workgroup, odd ones, and more elements than threads in the reductions.
const page = useWebGpuPage('/tests/browser/pages/optimizer-checks.ts');
const TOLERANCE = 1e-5; // relative to max(1, max |reference|)

test.each([
  [[1], 1, 0],
  [[7, 3], 2, 0.01],
  [[8, 64], 10, 0],
  [[192, 8], 1000, 0.1],
  [[333, 210], 3, 0.01],
] as const)('shape %j at step %i, weight decay %f', async (shape, t, weightDecay) => {
  const r = await page.call<OptimizerResult>('checkOptimizer', shape, t, weightDecay, t + shape.length);
  expect(r.gpuErrors).toEqual([]);
  expect(r.programs).toEqual(['adamwMoment', 'adamwMoment', 'adamwParam', 'sumSquares', 'allFinite']);
  expect(r.errors.p).toBeLessThan(TOLERANCE);
  expect(r.errors.m).toBeLessThan(TOLERANCE);
  expect(r.errors.v).toBeLessThan(TOLERANCE);
  expect(r.errors.sumSquares).toBeLessThan(TOLERANCE);
  expect(r.finiteClean).toBe(1);
  // NaN, +Inf and -Inf planted in the last element of p, then m, then v: each one is caught.
  expect(r.finitePlanted).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0]);
  expect(r.leakedDataIds).toBe(0);
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
