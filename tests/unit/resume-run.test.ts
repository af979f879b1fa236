// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { readEventFile, scalarSeries } from '../../src/core/logging';
import { applyRestarts, isSessionStart } from '../../src/core/logging/session-log';
import { listCheckpoints } from '../../src/storage/checkpoints';
import { type LoraLabDb, type StoredRun } from '../../src/storage/db';
import { localLocks } from '../../src/storage/locks';
import { getRun, markInterruptedRuns, readMetrics } from '../../src/storage/runs';
import type { ExportedFile, RunEvent } from '../../src/worker/protocol';
import { resumeRequestOf } from '../../src/worker/resume';
import { exportRunFiles } from '../../src/worker/run-files';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';
import { crashingRun } from './support/dying-tab';

// The worker's resume, end to end in Node (cpu backend, fake-indexeddb): a run whose tab dies after step 5 (nothing
// graceful: every storage call from then on simply never answers), marked interrupted by the next tab's sweep and
// resumed there from its step-3 checkpoint, must leave the output folder an uninterrupted run leaves: the same
// adapter, checkpoints, curves (each step once), diagnosis and TensorBoard events, and say when it was interrupted.

const config = (extra: Record<string, string | number> = {}) =>
  Object.entries({
    base_model: 'tiny-gpt2',
    train_data: 'train.txt',
    val_data: 'val.txt',
    output_dir: './out/run',
    lora_rank: 2,
    lora_dropout: 0.1,
    target_modules: '[c_attn]',
    max_steps: 8,
    batch_size: 2,
    grad_accum_steps: 2,
    seq_len: 16,
    log_steps: 2,
    eval_steps: 2,
    save_steps: 3,
    seed: 3,
    ...extra,
  })
    .map(([k, v]) => `${k}: ${v}`)
    .join('\n');
const TEXT = 'zebra quilt jinx! '.repeat(30);
const VAL = 'quilt zebra! jinx '.repeat(6);

let db: LoraLabDb;
let modelId: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

beforeEach(async () => {
  ({ db, modelId } = await freshDbWithTinyGpt2());
});

/** One tab's worker: its own model slot and its own locks (another tab cannot see them once it is gone). */
async function train(into: LoraLabDb, yaml: string, onEvent?: (e: RunEvent) => void) {
  return trainPinned(into, { modelId, configYaml: yaml, trainData: new File([TEXT], 'train.txt'), valData: new File([VAL], 'val.txt') }, runContext(onEvent));
}

/** What the worker's resumeRun does, in a new tab. */
async function resume(runId: string, onEvent?: (e: RunEvent) => void) {
  const run = (await getRun(db, runId))!;
  return trainPinned(db, resumeRequestOf(run), runContext(onEvent), localLocks(), run);
}

const byPath = (files: readonly ExportedFile[]) => new Map(files.map((f) => [f.path, f.bytes]));
const text = (bytes: Uint8Array | undefined) => new TextDecoder().decode(bytes);

/** metrics.csv without tokens_per_second, which measures this machine's speed rather than the run. */
function curves(csv: string): string[][] {
  const [head, ...rows] = csv.trim().split('\n').map((l) => l.split(','));
  const drop = head!.indexOf('tokens_per_second');
  expect(drop).toBeGreaterThan(0);
  return [head!, ...rows].map((r) => r.filter((_, i) => i !== drop));
}

/**
 * The log's events as data, restarts applied as TensorBoard applies them; wall times and tokens per second left
 * out, since they are clock readings (the values, not the events: each must still be there, at its step).
 */
function events(files: Map<string, Uint8Array>): unknown[] {
  const [path] = [...files.keys()].filter((p) => p.startsWith('logs/'));
  const all = readEventFile(path!, files.get(path!)!);
  return applyRestarts(all)
    .filter((e) => !isSessionStart(e))
    .map(({ wallTime: _, ...rest }) =>
      rest.kind === 'summary' ? { ...rest, values: rest.values.map((v) => (v.tag === 'train/tokens_per_second' ? { ...v, value: 'clock' } : v)) } : rest,
    );
}

describe('resuming an interrupted run in the worker', () => {
  it('after a crash at step 5, resumes from the step-3 checkpoint and writes what the uninterrupted run writes', async () => {
    const straight = await train(db, config());
    expect(straight).toMatchObject({ reason: 'completed', steps: 8 });
    const expected = byPath(await exportRunFiles(db, straight.runId));

    const runId = await crashingRun(db, (tab, onEvent) => train(tab, config(), onEvent), 5);
    // The next tab starts: its sweep finds the dead tab's run.
    expect(await markInterruptedRuns(db, localLocks())).toBe(1);
    expect((await getRun(db, runId))!.status).toBe('interrupted');
    const [checkpoint] = await listCheckpoints(db, runId);
    expect(checkpoint?.step).toBe(3);
    // What run_summary.json counts is stored with the checkpoint: steps 1–3, once each.
    expect(checkpoint!.measured!.steps.map((s) => s.step)).toEqual([1, 2, 3]);
    // Steps 4 and 5 were stored before the crash: they are what the resume must replace, not duplicate.
    expect((await readMetrics(db, runId)).filter((r) => r.loss !== null).map((r) => r.step)).toEqual([1, 2, 3, 4, 5]);

    const started: RunEvent[] = [];
    const steps: number[] = [];
    const result = await resume(runId, (e) => {
      if (e.kind === 'started') started.push(e);
      if (e.kind === 'step') steps.push(e.step);
    });
    expect(result).toEqual({ runId, reason: 'completed', steps: 8 });
    expect(started).toMatchObject([{ kind: 'started', runId, fromStep: 3 }]);
    expect(steps).toEqual([4, 5, 6, 7, 8]);

    const run = (await getRun(db, runId)) as StoredRun;
    expect(run.status).toBe('completed');
    expect(run.interruptions).toEqual([{ at_step: 5, resumed_from_step: 3 }]);
    expect(JSON.parse(text(byPath(await exportRunFiles(db, runId)).get('run_summary.json')))).toMatchObject({ interruptions: [{ at_step: 5, resumed_from_step: 3 }] });
    expect(JSON.parse(text(expected.get('run_summary.json')))).toMatchObject({ interruptions: [] });
    // The summary covers the whole run: steps 1–3 measured before the crash, 4–8 after the resume (the first
    // segment's 4 and 5 were trained again and are counted once); the earlier segment's time and peak are in it.
    const summary = JSON.parse(text(byPath(await exportRunFiles(db, runId)).get('run_summary.json')));
    expect(summary.steps).toBe(8);
    expect(JSON.parse(text(expected.get('run_summary.json'))).steps).toBe(8);
    expect(summary.total_seconds).toBeGreaterThan(checkpoint!.measured!.totalSeconds);
    expect(summary.peak_memory_bytes).toBeGreaterThanOrEqual(checkpoint!.measured!.peakMemoryBytes);

    const got = byPath(await exportRunFiles(db, runId));
    expect([...got.keys()].filter((p) => p !== 'run_summary.json' && !p.startsWith('logs/')).sort()).toEqual(
      [...expected.keys()].filter((p) => p !== 'run_summary.json' && !p.startsWith('logs/')).sort(),
    );
    for (const path of ['adapter_model.safetensors', 'adapter_config.json', 'checkpoint-3/adapter_model.safetensors', 'checkpoint-6/adapter_model.safetensors', 'config.yaml', 'diagnosis.json']) {
      expect(got.get(path), path).toEqual(expected.get(path));
    }
    expect(curves(text(got.get('metrics.csv')))).toEqual(curves(text(expected.get('metrics.csv'))));

    // The event file: the same events (scalars, histograms, texts) at the same steps, each step once, whether the
    // reader applies TensorBoard's restart rule or not; and the one session_log START, at step 4.
    const logPath = [...got.keys()].find((p) => p.startsWith('logs/'))!;
    const raw = readEventFile(logPath, got.get(logPath)!);
    expect(raw.filter(isSessionStart).map((e) => e.step)).toEqual([4]);
    expect(events(got)).toEqual(events(expected));
    const loss = scalarSeries(raw).get('train/loss')!.map((p) => p.step);
    expect(loss).toEqual([2, 4, 6, 8]);
    expect(scalarSeries(raw).get('eval/loss')!.map((p) => p.step)).toEqual([2, 4, 6, 8]);
  });

  it('with no checkpoint yet, trains again from step 0 in the same record, replacing everything it had stored', async () => {
    const straight = await train(db, config({ save_steps: 0 }));
    const expected = byPath(await exportRunFiles(db, straight.runId));
    const runId = await crashingRun(db, (tab, onEvent) => train(tab, config({ save_steps: 0 }), onEvent), 2);
    await markInterruptedRuns(db, localLocks());
    expect(await listCheckpoints(db, runId)).toEqual([]);
    expect(await resume(runId)).toEqual({ runId, reason: 'completed', steps: 8 });
    expect((await getRun(db, runId))!.interruptions).toEqual([{ at_step: 2, resumed_from_step: 0 }]);
    // Nothing was kept of the crashed segment: the summary counts the 8 steps trained again, once each.
    expect(JSON.parse(text(byPath(await exportRunFiles(db, runId)).get('run_summary.json')))).toMatchObject({ steps: 8 });
    const got = byPath(await exportRunFiles(db, runId));
    expect(got.get('adapter_model.safetensors')).toEqual(expected.get('adapter_model.safetensors'));
    expect(curves(text(got.get('metrics.csv')))).toEqual(curves(text(expected.get('metrics.csv'))));
    expect(events(got)).toEqual(events(expected));
  });

  it('refuses a run that is not interrupted, and changes nothing', async () => {
    const done = await train(db, config({ max_steps: 2 }));
    const before = await getRun(db, done.runId);
    const error = await resume(done.runId).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).toMatch(/is completed, not interrupted/);
    expect(await getRun(db, done.runId)).toEqual(before);
  });
});
