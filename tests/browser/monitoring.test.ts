import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readEventFile, scalarSeries } from '../../src/core/logging';
import type { Finding } from '../../src/core/diagnose';
import type { BrowserSession } from './harness';
import { importFixtureModel, openApp, trainInPage, type TrainedRun } from './support/train';

const phrase = 'zebra quilt jinx! '.repeat(12);
const trainText = Array.from({ length: 8 }, () => phrase).join('\n\n');
let browser: BrowserSession;
let modelId: string;

function config(lines: Record<string, string | number>): string {
  const base = { base_model: 'tiny-gpt2', train_data: 'train.txt', output_dir: './output/run', lora_rank: 4, lora_alpha: 8, lora_dropout: 0, lr_scheduler: 'constant', batch_size: 2, seq_len: 32, seed: 3, backend: 'wasm' };
  return Object.entries({ ...base, ...lines }).map(([k, v]) => `${k}: ${v}`).join('\n');
}

const findingsOf = (run: TrainedRun): Finding[] => run.events.flatMap((e) => (e.kind === 'diagnosis' ? [e.findings] : [])).at(-1) ?? [];

beforeAll(async () => {
  // wasm: these runs check numbers and curve shapes, not GPU kernels, and wasm is fast on a CPU.
  browser = await openApp({ backend: 'wasm' });
  modelId = await importFixtureModel(browser.page, 'tiny-gpt2');
});
afterAll(async () => browser?.close());

describe('monitoring a real run', () => {
  test('a custom metric added through a callback reaches the run events, metrics.csv and the TensorBoard file', async () => {
    const run = await trainInPage(browser.page, { modelId, configYaml: config({ learning_rate: '1e-2', max_steps: 6, log_steps: 2 }), train: { name: 'train.txt', text: trainText }, val: null });
    const losses = run.events.flatMap((e) => (e.kind === 'step' ? [e.loss] : []));
    const metrics = run.events.flatMap((e) => (e.kind === 'metric' ? [e] : []));
    expect(metrics.map((m) => [m.name, m.step])).toEqual([['train/perplexity', 2], ['train/perplexity', 4], ['train/perplexity', 6]]);
    metrics.forEach((m, i) => {
      const meanLoss = (losses[2 * i]! + losses[2 * i + 1]!) / 2;
      expect(m.value).toBeCloseTo(Math.exp(meanLoss), 4);
    });

    const logName = [...run.files.keys()].find((p) => p.startsWith('logs/events.out.tfevents.'))!;
    const series = scalarSeries(readEventFile(logName, run.files.get(logName)!));
    expect(series.get('train/perplexity')!.map((p) => p.step)).toEqual([2, 4, 6]);
    series.get('train/perplexity')!.forEach((p, i) => expect(p.value).toBeCloseTo(metrics[i]!.value, 3));
    expect(series.get('train/loss')!.map((p) => p.step)).toEqual([2, 4, 6]);

    const csv = new TextDecoder().decode(run.files.get('metrics.csv')!).trim().split('\n');
    expect(csv[0]).toBe('step,epoch,loss,learning_rate,grad_norm,eval_loss,tokens_per_second,skipped_steps,train/perplexity');
    expect(Number(csv[2]!.split(',').at(-1))).toBeCloseTo(metrics[0]!.value, 4);
  });

  test('log_steps: 0 writes no event file', async () => {
    const run = await trainInPage(browser.page, { modelId, configYaml: config({ learning_rate: '1e-2', max_steps: 2, log_steps: 0 }), train: { name: 'train.txt', text: trainText }, val: null });
    expect([...run.files.keys()].some((p) => p.startsWith('logs/'))).toBe(false);
    expect(run.files.has('adapter_model.safetensors')).toBe(true);
  });

  test('a huge learning rate is diagnosed as too high', async () => {
    // The largest learning rate and update scale the config allows (alpha 4096 / rank 4) on every
    // linear layer: the loss stalls and bounces far above what a sane rate reaches on this text.
    const run = await trainInPage(browser.page, {
      modelId,
      configYaml: config({ learning_rate: 1, lora_alpha: 4096, target_modules: 'all-linear', seed: 5, max_steps: 40, log_steps: 1 }),
      train: { name: 'train.txt', text: trainText },
      val: null,
    });
    const finding = findingsOf(run).find((f) => f.code === 'lr_too_high');
    expect(finding).toBeDefined();
    expect(finding!.suggestion).toMatch(/learning_rate/);

    // The near miss: the same run at a sane rate is healthy.
    const sane = await trainInPage(browser.page, {
      modelId,
      configYaml: config({ learning_rate: '1e-2', lora_alpha: 8, target_modules: 'all-linear', seed: 5, max_steps: 40, log_steps: 1 }),
      train: { name: 'train.txt', text: trainText },
      val: null,
    });
    expect(findingsOf(sane).map((f) => f.code)).toEqual(['healthy']);
  });

  test('a learning rate of 0 is diagnosed as not learning', async () => {
    const run = await trainInPage(browser.page, { modelId, configYaml: config({ learning_rate: 0, max_steps: 30, log_steps: 1 }), train: { name: 'train.txt', text: trainText }, val: null });
    const finding = findingsOf(run).find((f) => f.code === 'not_learning');
    expect(finding).toBeDefined();
    expect(finding!.suggestion).toMatch(/learning_rate/);
    expect(JSON.parse(new TextDecoder().decode(run.files.get('diagnosis.json')!))[0].code).toBe('not_learning');
  });
});
