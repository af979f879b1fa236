import { describe, expect, test } from 'vitest';
import { useWebGpuPage } from './support/webgpu-suite';
import type { ActivationCase, CrossEntropyCase, PointwiseResult } from './pages/pointwise-checks';

// The fused activation and cross-entropy kernels on WebGPU (SwiftShader in CI, so shapes stay small)
// against the plain tfjs compositions on the cpu backend. Activations: sizes 1, 7, 165 and 1000 over
// 1-, 2- and 3-D shapes (the kernels see them flat: one pipeline per kind and direction), with ±20 in
// every fifth element. Cross-entropy: row counts of one partial workgroup of 64 threads (1, 7) and
// several (130, 512), vocabularies under one 4-wide step (5), odd (33) and GPT-2 tiny's 257; some rows
// shifted by +60, a third of the weights 0.
const PAGE = '/tests/browser/pages/pointwise-checks.ts';
const TOLERANCE = 1e-4; // relative to max(1, max |reference|), float32

const ACTIVATIONS: ActivationCase[] = [
  { kind: 'gelu_tanh', shape: [1] },
  { kind: 'gelu_tanh', shape: [7] },
  { kind: 'gelu_tanh', shape: [33, 5] },
  { kind: 'gelu_tanh', shape: [10, 4, 25] },
  { kind: 'gelu_erf', shape: [1, 1] },
  { kind: 'gelu_erf', shape: [7] },
  { kind: 'gelu_erf', shape: [3, 11, 5] },
  { kind: 'gelu_erf', shape: [1000] },
  { kind: 'silu', shape: [1] },
  { kind: 'silu', shape: [1, 7] },
  { kind: 'silu', shape: [33, 5] },
  { kind: 'silu', shape: [8, 125] },
  { kind: 'gelu_tanh', shape: [7, 5], leakCheck: true },
];

const CROSS_ENTROPY: CrossEntropyCase[] = [
  { rows: 1, vocab: 5 },
  { rows: 7, vocab: 33 },
  { rows: 130, vocab: 257 },
  { rows: 512, vocab: 257 },
  { rows: 7, vocab: 33, argsInside: true },
  { rows: 9, vocab: 33, outOfRange: true },
  { rows: 7, vocab: 33, leakCheck: true },
];

const activationName = (c: ActivationCase) =>
  `${c.kind} [${c.shape.join(', ')}]${c.leakCheck ? ' with IS_TEST leak checks' : ''}`;
const crossEntropyName = (c: CrossEntropyCase) =>
  `[${c.rows}, ${c.vocab}]${c.argsInside ? ' (targets and weights made inside f)' : ''}` +
  `${c.outOfRange ? ' with targets out of range, clamped' : ''}${c.leakCheck ? ' with IS_TEST leak checks' : ''}`;

function expectClean(r: PointwiseResult): void {
  expect(r.gpuErrors).toEqual([]);
  expect(r.errors.y).toBeLessThan(TOLERANCE);
  expect(r.errors.dx).toBeLessThan(TOLERANCE);
  expect(r.leakedTensors).toBe(0);
  expect(r.leakedDataIds).toBe(0);
}

const page = useWebGpuPage(PAGE);

describe('fused activation matches the plain composition', () => {
  test.each(ACTIVATIONS.map((c, i) => [activationName(c), c, i] as const))('%s', async (_, c, i) => {
    const r = await page.call<PointwiseResult>('checkActivation', c, i + 1);
    // One dispatch forward, one backward, and no stock tfjs program.
    expect(r.forwardPrograms).toEqual(['activation']);
    expect(r.gradPrograms).toEqual(['activation', 'activationGrad']);
    expectClean(r);
  });
});

describe('fused weightedNll matches the plain composition', () => {
  test.each(CROSS_ENTROPY.map((c, i) => [crossEntropyName(c), c, i] as const))('%s', async (_, c, i) => {
    const r = await page.call<PointwiseResult>('checkCrossEntropy', c, 100 + i);
    // Per-row losses, then tfjs's Sum of them ('reduce'); backward one dispatch.
    expect(r.forwardPrograms).toEqual(['crossEntropy', 'reduce']);
    expect(r.gradPrograms).toEqual(['crossEntropy', 'reduce', 'crossEntropyGrad']);
    expectClean(r);
  });
});

test('on another backend the public functions are the references', async () => {
  type Fallback = { backend: string; maxDiff: number; programs: number };
  const r = await page.call<Fallback>('checkCpuFallback');
  expect(r.backend).toBe('cpu');
  expect(r.programs).toBe(0);
  expect(r.maxDiff).toBe(0);
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
