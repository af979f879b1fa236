import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { openBrowser, type BrowserSession } from './harness';
import { mergedEvalLoss } from './support/independent-eval';
import { importFixtureModel, trainInPage, useBackend, type TrainedRun } from './support/train';

// A short phrase repeated: the adapter can learn it in a few steps, so the loss must fall well below
// the base model's. The validation text is one more paragraph of it.
const text = 'zebra quilt jinx! '.repeat(12);
const trainText = Array.from({ length: 8 }, () => text).join('\n\n');
const SEQ_LEN = 32;

function configYaml(model: 'tiny-gpt2' | 'tiny-llama', backend: 'webgpu' | 'wasm'): string {
  return [
    `base_model: ${model}`,
    'train_data: train.txt',
    'val_data: val.txt',
    `output_dir: ./output/${model}-${backend}`,
    'lora_rank: 4',
    'lora_alpha: 8',
    'lora_dropout: 0',
    `target_modules: ${model === 'tiny-gpt2' ? '[c_attn]' : '[q_proj, v_proj]'}`,
    'learning_rate: 1e-2',
    'lr_scheduler: constant',
    'max_steps: 16',
    'batch_size: 4',
    `seq_len: ${SEQ_LEN}`,
    'log_steps: 4',
    'eval_steps: 16',
    'seed: 7',
    `backend: ${backend}`,
  ].join('\n');
}

/** The byte-level fixture tokenizer: id = UTF-8 byte, 256 = end of text after each document. */
function tokenStream(doc: string): number[] {
  return [...new TextEncoder().encode(doc), 256];
}

const losses = (run: TrainedRun) => run.events.flatMap((e) => (e.kind === 'step' ? [e.loss] : []));
const evalLoss = (run: TrainedRun) => run.events.flatMap((e) => (e.kind === 'eval' ? [e.loss] : [])).at(-1)!;

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openBrowser();
  await browser.page.goto(inject('appUrl'));
});
afterAll(async () => browser?.close());

describe.each(['tiny-gpt2', 'tiny-llama'] as const)('LoRA training of %s in the worker', (model) => {
  const runs: Partial<Record<'webgpu' | 'wasm', TrainedRun>> = {};

  test('on WebGPU the loss falls, and the exported adapter merged independently gives the reported eval loss', async () => {
    const { page } = browser;
    await useBackend(page, 'webgpu');
    const modelId = await importFixtureModel(page, model);
    const run = await trainInPage(page, { modelId, configYaml: configYaml(model, 'webgpu'), train: { name: 'train.txt', text: trainText }, val: { name: 'val.txt', text } });
    runs.webgpu = run;
    expect(run.reason).toBe('completed');
    expect(run.steps).toBe(16);
    const stepLosses = losses(run);
    expect(stepLosses).toHaveLength(16);
    const first = stepLosses.slice(0, 3).reduce((a, b) => a + b) / 3;
    const last = stepLosses.slice(-3).reduce((a, b) => a + b) / 3;
    expect(last).toBeLessThan(first - 0.5);

    const reported = evalLoss(run);
    const independent = await mergedEvalLoss(model, run.files, tokenStream(text), SEQ_LEN);
    expect(Math.abs(independent - reported)).toBeLessThan(1e-3);
    // And the adapter really changed the model: it starts from the base model's loss on this text.
    expect(reported).toBeLessThan(first - 0.5);
  });

  test('the same run on wasm agrees with WebGPU', async () => {
    const { page } = browser;
    await useBackend(page, 'wasm');
    const modelId = await page.getByRole('radio', { name: new RegExp(`^${model}\\b`) }).inputValue();
    const run = await trainInPage(page, { modelId, configYaml: configYaml(model, 'wasm'), train: { name: 'train.txt', text: trainText }, val: { name: 'val.txt', text } });
    runs.wasm = run;
    const gpu = losses(runs.webgpu!);
    const cpu = losses(run);
    // Float32 sums in a different order drift apart a little over 16 steps of training.
    for (let i = 0; i < cpu.length; i++) expect(Math.abs(cpu[i]! - gpu[i]!)).toBeLessThan(1e-3 * (1 + i));
    expect(Math.abs(evalLoss(run) - evalLoss(runs.webgpu!))).toBeLessThan(1e-2);
  });
});
