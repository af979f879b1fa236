import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { useWebGpuPage } from './support/webgpu-suite';
import type { PeakCase } from './pages/estimate-checks';
import { MODELS_DIR } from './support/fixtures';

// The run estimate's activation memory for WebGPU (fusedKernels: true) against the GPU memory tfjs
// really holds for tensors during a training micro-batch on the fused kernels. The estimate must not
// be below the measured peak, nor far above it. (tests/unit/estimate.test.ts checks the stock-op
// figure against the cpu backend the same way.)
const PAGE = '/tests/browser/pages/estimate-checks.ts';
const config = (dir: string) => JSON.parse(readFileSync(`${MODELS_DIR}${dir}/config.json`, 'utf8')) as Record<string, unknown>;

const page = useWebGpuPage(PAGE);

const cases = [
  ['tiny-gpt2', ['c_attn'], 2, 32],
  ['tiny-gpt2', ['c_attn'], 2, 128],
  ['tiny-gpt2', 'all-linear', 4, 64],
  ['tiny-llama', ['q_proj', 'v_proj'], 2, 32],
  ['tiny-llama', ['q_proj', 'v_proj'], 2, 128],
  ['tiny-llama', 'all-linear', 4, 64],
] as const;

test.each(cases)('%s %j at batch %i × seq %i: measured ≤ estimate ≤ 1.5 × measured', async (dir, targetModules, batch, seq) => {
  const c: PeakCase = { config: config(dir), targetModules: targetModules === 'all-linear' ? targetModules : [...targetModules], batch, seq };
  const r = await page.call<{ measured: number; estimated: number; fusedPrograms: number }>('measureFusedPeak', c);
  expect(r.fusedPrograms).toBeGreaterThan(0);
  expect(r.measured).toBeGreaterThan(0);
  expect(r.estimated).toBeGreaterThanOrEqual(r.measured);
  expect(r.estimated).toBeLessThanOrEqual(1.5 * r.measured);
});
