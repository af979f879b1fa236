// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import type { LossFn } from '../../src/core/train/index';
import { latestCheckpoint, listCheckpoints } from '../../src/storage/checkpoints';
import { type LoraLabDb } from '../../src/storage/db';
import { getRun } from '../../src/storage/runs';
import type { RunEvent } from '../../src/worker/protocol';
import { exportRunFiles } from '../../src/worker/run-files';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';

// The worker's side of skipped updates, in Node (cpu backend, fake-indexeddb): the training loss the worker builds
// is made NaN on chosen tries (one try per loss call: grad_accum_steps 1, no gradient checkpointing), and the run's
// stored record, metrics.csv and checkpoints are read back.

/** Tries (0-based calls of the training loss) whose loss is NaN; set by each test. */
const poison = vi.hoisted(() => ({ nanAt: new Set<number>(), calls: 0 }));

vi.mock('../../src/core/train/index', async (importOriginal) => {
  const train = await importOriginal<typeof import('../../src/core/train/index')>();
  return {
    ...train,
    loraLossFn: (...args: Parameters<typeof train.loraLossFn>): LossFn => {
      const inner = train.loraLossFn(...args);
      return (batch, ctx) => {
        const loss = inner(batch, ctx);
        if (!poison.nanAt.has(poison.calls++)) return loss;
        return tf.tidy(() => tf.mul(loss, tf.scalar(Number.NaN)));
      };
    },
  };
});

const CONFIG = [
  'base_model: tiny-gpt2',
  'train_data: train.txt',
  'output_dir: ./out/run',
  'lora_rank: 2',
  'target_modules: [c_attn]',
  'max_steps: 10',
  'batch_size: 2',
  'grad_accum_steps: 1',
  'seq_len: 16',
  'log_steps: 2',
  'save_steps: 2',
  'learning_rate: 0.01',
  'seed: 3',
].join('\n');
const TEXT = 'zebra quilt jinx! '.repeat(30);

let db: LoraLabDb;
let modelId: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

beforeEach(async () => {
  ({ db, modelId } = await freshDbWithTinyGpt2());
  poison.calls = 0;
});

async function train(nanAt: number[], events: RunEvent[] = []) {
  poison.nanAt = new Set(nanAt);
  return trainPinned(db, { modelId, configYaml: CONFIG, trainData: new File([TEXT], 'train.txt'), valData: null }, runContext((e) => void events.push(e)));
}

/** metrics.csv's training rows as step → skipped_steps. */
async function skippedColumn(runId: string): Promise<[number, string][]> {
  const csv = new TextDecoder().decode((await exportRunFiles(db, runId)).find((f) => f.path === 'metrics.csv')!.bytes);
  const [head, ...lines] = csv.trim().split('\n').map((l) => l.split(','));
  const at = (name: string) => head!.indexOf(name);
  return lines.filter((l) => l[at('loss')] !== '').map((l) => [Number(l[at('step')]), l[at('skipped_steps')]!]);
}

describe('skipped updates in a worker run', () => {
  it('a NaN try is skipped: the run completes, metrics.csv counts it from the next step on, the UI hears of it', async () => {
    const events: RunEvent[] = [];
    const result = await train([3], events);
    expect(result).toMatchObject({ reason: 'completed', steps: 10 });
    expect(await skippedColumn(result.runId)).toEqual([
      [1, '0'],
      [2, '0'],
      [3, '0'],
      [4, '1'],
      [5, '1'],
      [6, '1'],
      [7, '1'],
      [8, '1'],
      [9, '1'],
      [10, '1'],
    ]);
    expect(events.filter((e) => e.kind === 'skipped')).toEqual([{ kind: 'skipped', step: 4, skippedSteps: 1, problem: 'the loss was NaN' }]);
    expect((await getRun(db, result.runId))!.status).toBe('completed');
  });

  it('5 in a row: the run is stored as diverged with the diagnosis saying why, and the last checkpoint is the last good step', async () => {
    // Steps 1-5 are applied (checkpoints after 2 and 4); every try from the 6th on is NaN.
    const result = await train(Array.from({ length: 40 }, (_, i) => 5 + i));
    expect(result).toMatchObject({ reason: 'diverged', steps: 5 });
    const run = (await getRun(db, result.runId))!;
    expect(run.status).toBe('diverged');
    expect(run.step).toBe(5);
    expect(run.findings).toHaveLength(1);
    expect(run.findings[0]).toMatchObject({ code: 'diverged', severity: 'error', step: 6 });
    expect(run.findings[0]!.message).toContain('5 updates in a row were not finite');
    const files = await exportRunFiles(db, result.runId);
    const diagnosis = JSON.parse(new TextDecoder().decode(files.find((f) => f.path === 'diagnosis.json')!.bytes)) as { code: string }[];
    expect(diagnosis.map((f) => f.code)).toEqual(['diverged']);
    // No checkpoint was written for the end: the newest is step 4's, and it holds finite values only.
    expect((await listCheckpoints(db, result.runId)).map((c) => c.step)).toEqual([4, 2]);
    const last = (await latestCheckpoint(db, result.runId))!.checkpoint;
    expect(last.step).toBe(4);
    expect(last.params.every((p) => p.value.every(Number.isFinite) && p.m.every(Number.isFinite) && p.v.every(Number.isFinite))).toBe(true);
    // The adapter kept is finite too: the bad updates never reached it.
    const adapter = files.find((f) => f.path === 'adapter_model.safetensors')!.bytes;
    expect(adapter.byteLength).toBeGreaterThan(0);
    expect(await skippedColumn(result.runId)).toEqual([1, 2, 3, 4, 5].map((s) => [s, '0']));
  });
});
