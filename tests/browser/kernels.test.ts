import { describe, expect, test } from 'vitest';
import { useWebGpuPage } from './support/webgpu-suite';
import type { CaseResult, FrozenCase, KernelCase, checkFrozenLinear } from './pages/kernel-checks';

// The fused LoRA kernels on WebGPU (SwiftShader in CI, so shapes stay small) against the plain tfjs
// composition on the cpu backend. Odd sizes exercise the tile edges; r covers 1 and 4 (one rank block
// of 4, partly idle for r 1), 8 and 64 (one and eight blocks of 8); both weight layouts, with and
// without bias and dropout mask. Most of the run time is SwiftShader compiling each pipeline once.
const PAGE = '/tests/browser/pages/kernel-checks.ts';
const TOLERANCE = 1e-4; // relative to max(1, max |reference|), float32

const CASES: KernelCase[] = [
  { tokens: 1, inFeatures: 24, outFeatures: 40, rank: 1, layout: 'in_out', bias: true, dropout: 0, scaling: 2 },
  { tokens: 7, inFeatures: 33, outFeatures: 65, rank: 4, layout: 'out_in', bias: false, dropout: 0.1, scaling: 4 },
  { tokens: 37, inFeatures: 24, outFeatures: 40, rank: 8, layout: 'in_out', bias: false, dropout: 0.5, scaling: 2 },
  { tokens: 37, inFeatures: 33, outFeatures: 65, rank: 64, layout: 'out_in', bias: true, dropout: 0.1, scaling: 0.25 },
  { tokens: 130, inFeatures: 64, outFeatures: 192, rank: 8, layout: 'in_out', bias: true, dropout: 0.1, scaling: 2 },
  { tokens: 130, inFeatures: 33, outFeatures: 65, rank: 1, layout: 'out_in', bias: true, dropout: 0, scaling: 16 },
  { tokens: 7, inFeatures: 64, outFeatures: 192, rank: 64, layout: 'in_out', bias: false, dropout: 0, scaling: 0.5 },
  { tokens: 37, inFeatures: 64, outFeatures: 192, rank: 4, layout: 'out_in', bias: false, dropout: 0, scaling: 1 },
  { tokens: 1, inFeatures: 33, outFeatures: 65, rank: 8, layout: 'out_in', bias: false, dropout: 0.3, scaling: 2 },
  { tokens: 130, inFeatures: 24, outFeatures: 40, rank: 64, layout: 'in_out', bias: true, dropout: 0.2, scaling: 1 },
  { tokens: 1024, inFeatures: 24, outFeatures: 40, rank: 4, layout: 'out_in', bias: true, dropout: 0.1, scaling: 2 },
  { tokens: 7, inFeatures: 24, outFeatures: 40, rank: 8, layout: 'in_out', bias: true, dropout: 0.25, scaling: 2, maskInside: true },
  { tokens: 5, inFeatures: 24, outFeatures: 40, rank: 4, layout: 'out_in', bias: true, dropout: 0.1, scaling: 2, leakCheck: true },
];

const name = (c: KernelCase) =>
  `T${c.tokens} ${c.inFeatures}→${c.outFeatures} r${c.rank} ${c.layout}${c.bias ? ' +bias' : ''}` +
  `${c.dropout ? ` dropout ${c.dropout}${c.maskInside ? ' (mask drawn inside f)' : ''}` : ''}` +
  `${c.leakCheck ? ' with IS_TEST leak checks' : ''}`;

const page = useWebGpuPage(PAGE);

describe('fused LoRA linear matches the plain composition', () => {
  test.each(CASES.map((c, i) => [name(c), c, i] as const))('%s', async (_, c, i) => {
    const r = await page.call<CaseResult>('checkCase', c, i + 1);
    expect(r.gpuErrors).toEqual([]);
    // The fused path ran: two dispatches forward, four more backward (five under IS_TEST, which
    // recomputes xa rather than saving it), and no stock tfjs program.
    const forward = ['loraProject', 'loraMatMul'];
    const backward = ['loraProject', 'loraTokenReduce', 'loraTokenReduce', 'loraMatMul'];
    expect(r.forwardPrograms).toEqual(forward);
    expect(r.gradPrograms).toEqual([...forward, ...(c.leakCheck ? ['loraProject'] : []), ...backward]);
    expect(r.errors.y).toBeLessThan(TOLERANCE);
    expect(r.errors.dx).toBeLessThan(TOLERANCE);
    expect(r.errors.dA).toBeLessThan(TOLERANCE);
    expect(r.errors.dB).toBeLessThan(TOLERANCE);
    expect(r.leakedTensors).toBe(0);
    expect(r.leakedDataIds).toBe(0);
  });
});

test('optimizer steps through tf.variableGrads match, and the frozen weight gets no gradient', async () => {
  type Training = { maxParamDiff: number; fusedGradNames: string[]; leakedTensors: number; gpuErrors: string[] };
  const r = await page.call<Training>('checkTraining');
  expect(r.gpuErrors).toEqual([]);
  expect(r.fusedGradNames).toEqual(['a_fused', 'b_fused']);
  expect(r.maxParamDiff).toBeLessThan(TOLERANCE);
  expect(r.leakedTensors).toBe(0);
});

// The same matmul kernel with rank 0 serves every projection without LoRA (frozenLinear).
const FROZEN_CASES: FrozenCase[] = [
  { tokens: 1, inFeatures: 24, outFeatures: 40, layout: 'in_out', bias: true },
  { tokens: 37, inFeatures: 33, outFeatures: 65, layout: 'out_in', bias: false },
  { tokens: 130, inFeatures: 64, outFeatures: 257, layout: 'out_in', bias: false },
  { tokens: 130, inFeatures: 257, outFeatures: 64, layout: 'in_out', bias: true },
];

describe('frozenLinear (no LoRA) matches the stock composition', () => {
  test.each(FROZEN_CASES.map((c, i) => [`T${c.tokens} ${c.inFeatures}→${c.outFeatures} ${c.layout}${c.bias ? ' +bias' : ''}`, c, i] as const))(
    '%s',
    async (_, c, i) => {
      const r = await page.call<Awaited<ReturnType<typeof checkFrozenLinear>>>('checkFrozenLinear', c, i + 1);
      expect(r.gpuErrors).toEqual([]);
      expect(r.forwardPrograms).toEqual(['loraMatMul']);
      expect(r.errors.y).toBeLessThan(TOLERANCE);
      expect(r.errors.dx).toBeLessThan(TOLERANCE);
      // A trainable weight takes stock tfjs ops and gets its gradient.
      expect(r.trainablePrograms).not.toContain('loraMatMul');
      expect(r.trainableWeightGrads).toBe(1);
      expect(r.errors.trainableY).toBeLessThan(TOLERANCE);
      expect(r.leakedTensors).toBe(0);
    },
  );
});

test('on another backend loraLinear falls back to the reference composition', async () => {
  type Fallback = { backend: string; maxDiff: number; programs: number };
  const r = await page.call<Fallback>('checkCpuFallback');
  expect(r.backend).toBe('cpu');
  expect(r.programs).toBe(0);
  expect(r.maxDiff).toBe(0);
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
