import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import type { MemorySavingCheck } from './pages/memory-saving-checks';
import { MODELS_DIR } from './support/fixtures';
import { useWebGpuPage } from './support/webgpu-suite';

// Gradient checkpointing and the chunked loss on webgpu, through the fused kernels (the recompute runs
// them again inside the backward pass): the same loss and LoRA gradients as the plain step.
const page = useWebGpuPage('/tests/browser/pages/memory-saving-checks.ts');
const config = (dir: string) => JSON.parse(readFileSync(`${MODELS_DIR}${dir}/config.json`, 'utf8')) as Record<string, unknown>;

describe.each(['tiny-gpt2', 'tiny-llama'])('%s on webgpu', (dir) => {
  test('checkpointed blocks and a chunked loss give the plain step\'s loss and gradients', async () => {
    const r = await page.call<MemorySavingCheck>('checkpointedChunkedStep', config(dir));
    expect(r.gpuErrors).toEqual([]);
    expect(r.programs).toEqual(expect.arrayContaining(['attention', 'attentionGrad', 'loraMatMul', 'crossEntropy', 'crossEntropyGrad']));
    expect(r.smallestGrad).toBeGreaterThan(1e-6);
    expect(r.lossErr).toBeLessThan(1e-5);
    for (const e of r.gradErrs) expect(e).toBeLessThan(1e-4);
    expect(r.tensorsLeft).toBe(0);
  });
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
