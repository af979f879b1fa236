import { describe, expect, test } from 'vitest';
import { useWebGpuPage } from './support/webgpu-suite';
import type { NormCase, NormCaseResult, VariableResult } from './pages/norm-checks';

// The fused LayerNorm / RMSNorm kernels on WebGPU (SwiftShader in CI, so shapes stay small) against
// the plain tfjs composition on the cpu backend. Rows cover one partial workgroup of 64 threads (1, 7),
// several (130) and many (1024); C covers 1 (a constant row), odd and even lengths. Row counts and C
// are uniforms, so the five pipelines (norm: layer ±bias, rms; normGrad: layer, rms) compile once each.
const PAGE = '/tests/browser/pages/norm-checks.ts';
const TOLERANCE = 1e-4; // relative to max(1, max |reference|), float32

const CASES: NormCase[] = [
  { rows: 1, cols: 24, kind: 'layer', bias: true, eps: 1e-5 },
  { rows: 7, cols: 33, kind: 'layer', bias: false, eps: 1e-5 },
  { rows: 130, cols: 64, kind: 'layer', bias: true, eps: 1e-5 },
  { rows: 1024, cols: 64, kind: 'layer', bias: true, eps: 1e-5 },
  { rows: 7, cols: 257, kind: 'layer', bias: true, eps: 1e-5 },
  { rows: 130, cols: 1, kind: 'layer', bias: true, eps: 1e-5 },
  { rows: 130, cols: 33, kind: 'layer', bias: true, eps: 1e-5, offset: 100 },
  { rows: 1, cols: 257, kind: 'rms', bias: false, eps: 1e-6 },
  { rows: 7, cols: 24, kind: 'rms', bias: false, eps: 1e-6 },
  { rows: 130, cols: 33, kind: 'rms', bias: false, eps: 1e-5 },
  { rows: 1024, cols: 64, kind: 'rms', bias: false, eps: 1e-6 },
  { rows: 7, cols: 1, kind: 'rms', bias: false, eps: 1e-6 },
  { rows: 7, cols: 64, kind: 'layer', bias: false, eps: 1e-5, weightInside: true },
  { rows: 130, cols: 24, kind: 'rms', bias: false, eps: 1e-6, weightInside: true },
  { rows: 7, cols: 33, kind: 'layer', bias: true, eps: 1e-5, leakCheck: true },
  { rows: 7, cols: 33, kind: 'rms', bias: false, eps: 1e-6, leakCheck: true },
];

const name = (c: NormCase) =>
  `${c.kind} ${c.rows}×${c.cols}${c.bias ? ' +bias' : ''}${c.offset ? ` x+${c.offset}` : ''}` +
  `${c.weightInside ? ' (weight made inside f)' : ''}${c.leakCheck ? ' with IS_TEST leak checks' : ''}`;

const page = useWebGpuPage(PAGE);

describe('fused normalize matches the plain composition', () => {
  test.each(CASES.map((c, i) => [name(c), c, i] as const))('%s', async (_, c, i) => {
    const r = await page.call<NormCaseResult>('checkCase', c, i + 1);
    expect(r.gpuErrors).toEqual([]);
    // One dispatch forward, one backward, and no stock tfjs program.
    expect(r.forwardPrograms).toEqual(['norm']);
    expect(r.gradPrograms).toEqual(['norm', 'normGrad']);
    expect(r.errors.y).toBeLessThan(TOLERANCE);
    expect(r.errors.dx).toBeLessThan(TOLERANCE);
    expect(r.leakedTensors).toBe(0);
    expect(r.leakedDataIds).toBe(0);
  });
});

test('a trainable weight falls back to the composition and gets its gradient; a frozen variable does not', async () => {
  const r = await page.call<VariableResult>('checkVariables');
  expect(r.gpuErrors).toEqual([]);
  expect(r.trainablePrograms.length).toBeGreaterThan(0);
  expect(r.trainablePrograms.filter((p) => p.startsWith('norm'))).toEqual([]);
  expect(r.gradNames).toEqual(['norm_b_fused', 'norm_w_fused']);
  expect(r.errors.y).toBeLessThan(TOLERANCE);
  expect(r.errors.dx).toBeLessThan(TOLERANCE);
  expect(r.errors.dWeight).toBeLessThan(TOLERANCE);
  expect(r.errors.dBias).toBeLessThan(TOLERANCE);
  expect(r.frozenPrograms).toEqual(['norm']);
  expect(r.frozenErrorY).toBeLessThan(TOLERANCE);
  expect(r.leakedTensors).toBe(0);
});

test('on another backend normalize is the reference composition', async () => {
  type Fallback = { backend: string; maxDiff: number; programs: number };
  const r = await page.call<Fallback>('checkCpuFallback');
  expect(r.backend).toBe('cpu');
  expect(r.programs).toBe(0);
  expect(r.maxDiff).toBe(0);
});

test('bad arguments throw clear errors', async () => {
  const messages = await page.call<string[]>('checkArgErrors');
  expect(messages).toEqual([
    'normalize: rms normalization has no bias',
    'normalize: weight must be [4], got [5]',
    'normalize: bias must be [4], got [5]',
    'normalize: x must be float32, got int32',
    'normalize: x must be [rows, C], got [1, 3, 4]',
    'normalize: eps must be a finite number ≥ 0, got NaN',
  ]);
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
