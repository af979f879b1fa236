import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import type { TrainingRun } from './pages/training-checks';
import { MODELS_DIR } from './support/fixtures';
import { useWebGpuPage } from './support/webgpu-suite';

// Whole training steps (forward, backward, clipping, AdamW; LoRA with dropout on every linear) on
// webgpu with the fused kernels, the optimizer's included, against the same steps in stock tfjs ops on the same backend
// (LORA_LAB_FUSED_KERNELS off): the same losses and gradient norms step after step, and no tensor left
// behind by any step.
const page = useWebGpuPage('/tests/browser/pages/training-checks.ts');
const config = (dir: string) => JSON.parse(readFileSync(`${MODELS_DIR}${dir}/config.json`, 'utf8')) as Record<string, unknown>;

describe.each(['tiny-gpt2', 'tiny-llama'])('%s on webgpu', (dir) => {
  test('fused kernels train as the stock ops do, and keep memory flat', async () => {
    const fused = await page.call<TrainingRun>('trainSteps', config(dir), true);
    const stock = await page.call<TrainingRun>('trainSteps', config(dir), false);
    expect(fused.gpuErrors).toEqual([]);
    expect(stock.gpuErrors).toEqual([]);
    // Every model op and the optimizer ran fused: no stock matmul or softmax (tfjs's own programs
    // remain for the embedding lookup, residual adds, dropout masks and the clip scale). The stock run
    // used none of ours.
    expect(fused.programs).toEqual(
      expect.arrayContaining(['attention', 'attentionGrad', 'norm', 'normGrad', 'activation', 'crossEntropy', 'loraMatMul', 'adamwMoment', 'adamwParam', 'sumSquares', 'allFinite']),
    );
    expect(fused.programs.filter((p) => /matmul|softmax/i.test(p) && !p.startsWith('lora'))).toEqual([]);
    expect(stock.programs.filter((p) => /^(lora|attention|norm|activation|crossEntropy|adamw|sumSquares|allFinite)/.test(p))).toEqual([]);
    expect(stock.programs.some((p) => /matmul/i.test(p))).toBe(true);
    expect(fused.losses).toHaveLength(4);
    // Four steps at lr 1e-2 move the loss: the comparison is not of a run that stood still.
    expect(Math.abs(fused.losses[3]! - fused.losses[0]!)).toBeGreaterThan(1e-3);
    fused.losses.forEach((loss, i) => expect(Math.abs(loss - stock.losses[i]!)).toBeLessThan(1e-4 * Math.max(1, Math.abs(loss))));
    fused.gradNorms.forEach((norm, i) => expect(Math.abs(norm - stock.gradNorms[i]!)).toBeLessThan(1e-3 * Math.max(1, norm)));
    for (const run of [fused, stock]) {
      expect(new Set(run.tensorsAfterStep.slice(1)).size).toBe(1);
      expect(new Set(run.dataIdsAfterStep.slice(1)).size).toBe(1);
    }
  });
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
