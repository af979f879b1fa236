import { expect, test } from 'vitest';
import { smoothEma } from '../../src/ui/charts/smooth';

test('weight 0 returns the raw values', () => {
  expect(smoothEma([3, 1, 2], 0)).toEqual([3, 1, 2]);
});

test('debiased EMA: the first point is itself, later points follow TensorBoard’s formula', () => {
  const w = 0.6;
  const out = smoothEma([2, 4, 8], w);
  expect(out[0]).toBeCloseTo(2, 12);
  // last = 0.4·2 = 0.8 → /0.4; then 0.8·0.6 + 0.4·4 = 2.08 → /(1 − 0.36); then 2.08·0.6 + 0.4·8 = 4.448 → /(1 − 0.216)
  expect(out[1]).toBeCloseTo(2.08 / 0.64, 12);
  expect(out[2]).toBeCloseTo(4.448 / 0.784, 12);
});

test('a constant curve stays constant at any weight, and NaN passes through without poisoning it', () => {
  expect(smoothEma([5, 5, 5, 5], 0.99).every((v) => Math.abs(v - 5) < 1e-9)).toBe(true);
  const out = smoothEma([1, Number.NaN, 1], 0.9);
  expect(out[1]).toBeNaN();
  expect(out[2]).toBeCloseTo(1, 12);
});
