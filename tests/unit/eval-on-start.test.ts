// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseRunConfigYaml } from '../../src/core/config';
import { evalWindows, packStream, trainWindows } from '../../src/core/data/packing';
import { readEventFile, scalarSeries } from '../../src/core/logging/reader';
import { LoraAdapter } from '../../src/core/lora/index';
import { buildModel, loadWeightsFromSafetensors, parseModelConfigText, type CausalLM } from '../../src/core/models/index';
import { bytesSource } from '../../src/core/safetensors/index';
import type { TrainerCheckpoint } from '../../src/core/train/checkpoint';
import { loraEvalLossFn, loraLossFn, Trainer, windowExamples } from '../../src/core/train/index';
import { exportRunFiles } from '../../src/worker/run-files';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';

// eval_on_start (Hugging Face's name): one evaluation before the first step, at step 0 in metrics.csv and as
// eval/loss step 0 in the event file. B starts at zero, so it is the base model's loss: the fixture's PyTorch
// reference (loss_base) on the same text, windows and seq_len.

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const LOSS_BASE = (JSON.parse(readFileSync(join(FIXTURES, 'tiny-gpt2.expected.json'), 'utf8')) as { loss_base: { text: string; seq_len: number; loss: number } }).loss_base;
const TRAIN_TEXT = 'zebra quilt jinx! '.repeat(40);

const CONFIG = [
  'base_model: tiny-gpt2',
  'train_data: train.txt',
  'val_data: val.txt',
  'output_dir: ./out/eval-start',
  'lora_rank: 2',
  'target_modules: [c_attn]',
  'max_steps: 2',
  'batch_size: 2',
  `seq_len: ${LOSS_BASE.seq_len}`,
  'learning_rate: 0.01',
  'log_steps: 1',
  'eval_steps: 2',
  'eval_on_start: true',
  'seed: 3',
].join('\n');

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** metrics.csv as rows of named cells. */
function csvRows(text: string): Record<string, string>[] {
  const [head, ...lines] = text.trim().split('\n');
  const columns = head!.split(',');
  return lines.map((line) => Object.fromEntries(line.split(',').map((cell, i) => [columns[i]!, cell])));
}

describe('eval_on_start through the worker run', () => {
  it('writes eval at step 0 to metrics.csv and the event file, equal to the base model\'s PyTorch loss', async () => {
    const { db, modelId } = await freshDbWithTinyGpt2();
    const evals: { step: number; loss: number }[] = [];
    const { runId } = await trainPinned(
      db,
      { modelId, configYaml: CONFIG, trainData: new File([TRAIN_TEXT], 'train.txt'), valData: new File([LOSS_BASE.text], 'val.txt') },
      runContext((e) => void (e.kind === 'eval' && evals.push({ step: e.step, loss: e.loss }))),
    );
    // One evaluation before step 1, then the one eval_steps asks for.
    expect(evals.map((e) => e.step)).toEqual([0, 2]);
    expect(evals[0]!.loss).toBeCloseTo(LOSS_BASE.loss, 4);

    const files = await exportRunFiles(db, runId);
    const csv = csvRows(new TextDecoder().decode(files.find((f) => f.path === 'metrics.csv')!.bytes));
    const step0 = csv.filter((r) => r.step === '0');
    expect(step0).toHaveLength(1);
    expect(Math.abs(Number(step0[0]!.eval_loss) - LOSS_BASE.loss)).toBeLessThan(1e-4);
    // Step 0 is an evaluation only: no training numbers are made up for it.
    expect(step0[0]!.loss).toBe('');
    expect(csv.filter((r) => r.eval_loss !== '').map((r) => Number(r.step))).toEqual([0, 2]);

    const log = files.find((f) => f.path.startsWith('logs/events.out.tfevents.'))!;
    const events = readEventFile(log.path, log.bytes);
    // TensorBoard's rules for a file it reads whole: the version record first, then events in wall-time order.
    expect(events[0]).toMatchObject({ kind: 'file_version' });
    const wallTimes = events.map((e) => e.wallTime);
    expect(wallTimes).toEqual([...wallTimes].sort((a, b) => a - b));
    const evalLoss = scalarSeries(events).get('eval/loss')!;
    expect(evalLoss.map((p) => p.step)).toEqual([0, 2]);
    expect(Math.abs(evalLoss[0]!.value - LOSS_BASE.loss)).toBeLessThan(1e-4);
    // The event file stores float32: the same number as metrics.csv's, to float32 precision.
    expect(evalLoss[0]!.value).toBe(Math.fround(Number(step0[0]!.eval_loss)));
  }, 120_000);
});

describe('eval_on_start in the trainer', () => {
  let model: CausalLM;
  beforeAll(async () => {
    const cfg = parseModelConfigText(readFileSync(join(FIXTURES, 'tiny-gpt2', 'config.json'), 'utf8'));
    model = buildModel(cfg, await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', new Uint8Array(readFileSync(join(FIXTURES, 'tiny-gpt2', 'model.safetensors'))))]));
  });
  afterAll(() => model.dispose());

  const bytesOf = (s: string) => [...new TextEncoder().encode(s)];
  const train = () => trainWindows(packStream([{ ids: bytesOf(TRAIN_TEXT) }], 256), 32);
  const evalSet = () => evalWindows(packStream([{ ids: bytesOf(LOSS_BASE.text) }], 256), 32);

  async function run(options: { evalOnStart: boolean; resumeFrom?: TrainerCheckpoint; maxSteps: number }) {
    const adapter = LoraAdapter.create(model, { rank: 2, alpha: 4, dropout: 0, targetModules: ['c_attn'], useRslora: false }, 5);
    const evals: { step: number; loss: number }[] = [];
    const checkpoints: TrainerCheckpoint[] = [];
    try {
      const trainer = new Trainer({
        variables: adapter.variables(),
        lossFn: loraLossFn(model, adapter, 5),
        train: windowExamples(train()),
        eval: { examples: windowExamples(evalSet()), lossFn: loraEvalLossFn(model, adapter) },
        options: { batchSize: 2, maxSteps: options.maxSteps, evalSteps: 2, saveSteps: 1, learningRate: 0.01, seed: 5, evalOnStart: options.evalOnStart },
        resumeFrom: options.resumeFrom ?? null,
        callbacks: { onEval: (e) => void evals.push(e), onCheckpoint: (c) => void checkpoints.push(c) },
      });
      await trainer.run();
      return { evals, checkpoints };
    } finally {
      adapter.dispose();
    }
  }

  it('evaluates once before step 1, counts it as the best so far, and not again on a resume past step 0', async () => {
    const first = await run({ evalOnStart: true, maxSteps: 3 });
    expect(first.evals.map((e) => e.step)).toEqual([0, 2]);
    expect(first.evals[0]!.loss).toBeCloseTo(LOSS_BASE.loss, 4);
    // The checkpoint after step 1 carries the step-0 eval as the best: early stopping after a resume counts from it.
    const ck = first.checkpoints[0]!;
    expect(ck.step).toBe(1);
    expect(ck.bestEval).toEqual({ step: 0, loss: first.evals[0]!.loss, evalsSince: 0 });

    // Resumed past step 0: the same later evaluation, and no second one before it.
    const resumed = await run({ evalOnStart: true, maxSteps: 3, resumeFrom: ck });
    expect(resumed.evals).toEqual([first.evals[1]]);
    // Without the option nothing is evaluated before the first step.
    const plain = await run({ evalOnStart: false, maxSteps: 2 });
    expect(plain.evals.map((e) => e.step)).toEqual([2]);
  }, 60_000);
});

describe('eval_on_start in the config', () => {
  it('warns when there is no validation data to evaluate, and is quiet when there is', () => {
    const base = 'base_model: m\ntrain_data: t.txt\neval_on_start: true\n';
    const without = parseRunConfigYaml(base, 'run.yaml');
    expect(without.ok).toBe(true);
    if (!without.ok) return;
    expect(without.config.eval_on_start).toBe(true);
    expect(without.warnings.filter((w) => w.key === 'eval_on_start').map((w) => w.message)).toEqual([
      'set, but there is no validation data (val_data or val_split), so nothing is evaluated before step 1',
    ]);
    const withSplit = parseRunConfigYaml(`${base}val_split: 0.1\n`, 'run.yaml');
    expect(withSplit.ok && withSplit.warnings.some((w) => w.key === 'eval_on_start')).toBe(false);
  });
});
