// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { latestCheckpoint, listCheckpoints } from '../../src/storage/checkpoints';
import type { LoraLabDb, MetricRow } from '../../src/storage/db';
import { artifactBytes, getRun, readArtifacts, readLog, readMetrics } from '../../src/storage/runs';
import type { RunControl, RunEvent } from '../../src/worker/protocol';
import { pauseOnFullStorage } from '../../src/worker/storage-full';
import type { trainLora } from '../../src/worker/training-run';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';

// A full disk during a run pauses it instead of failing it (src/worker/storage-full.ts), end to end in Node (cpu
// backend, fake-indexeddb): from the Nth write into one store on, every write into the run's data stores throws the
// browser's QuotaExceededError until the test "frees space". The run must pause with a plain message, keep what it
// wrote before (the last checkpoint intact), pause again on a Resume while the disk is still full, and, resumed
// after space is freed, retry the write and end exactly as a run whose disk never filled: the same per-step losses,
// curves (each step once), adapter files and checkpoints.

const CONFIG = [
  'base_model: tiny-gpt2', 'train_data: train.txt', 'output_dir: ./out/run', 'lora_rank: 2', 'target_modules: [c_attn]',
  'max_steps: 4', 'batch_size: 2', 'seq_len: 16', 'log_steps: 1', 'save_steps: 2', 'val_split: 0', 'seed: 3',
].join('\n');
const TEXT = 'zebra quilt jinx! '.repeat(40);

let db: LoraLabDb;
let modelId: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

beforeEach(async () => {
  ({ db, modelId } = await freshDbWithTinyGpt2());
});

const realPut = IDBObjectStore.prototype.put;
afterEach(() => {
  IDBObjectStore.prototype.put = realPut;
});

/**
 * The disk: once armed, the `nth` put into `store` and every later put into a data store throw QuotaExceededError,
 * until free(). The run's record (a few hundred bytes) still fits, so its paused status can be stored and checked.
 */
function fillingDisk(store: string, nth: number) {
  let armed = false;
  let puts = 0;
  let full = false;
  const refused: string[] = [];
  IDBObjectStore.prototype.put = function (this: IDBObjectStore, ...args: Parameters<IDBObjectStore['put']>) {
    if (armed && this.name === store && ++puts === nth) full = true;
    if (full && this.name !== 'runs') {
      refused.push(this.name);
      throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    }
    return realPut.apply(this, args);
  } as IDBObjectStore['put'];
  return { arm: () => (armed = true), free: () => (full = false), refused };
}

interface Started {
  readonly events: RunEvent[];
  readonly done: Promise<Awaited<ReturnType<typeof trainLora>>>;
  control(action: RunControl): void;
  /** Resolves at the next `paused` event from now on. */
  nextPause(): Promise<Extract<RunEvent, { kind: 'paused' }>>;
}

/** Starts a run; `onEvent` sees each event as it is sent. */
function start(onEvent: (e: RunEvent) => void = () => undefined): Started {
  const events: RunEvent[] = [];
  let handler: ((a: RunControl) => void) | null = null;
  let onPause: ((e: Extract<RunEvent, { kind: 'paused' }>) => void) | null = null;
  const ctx = runContext(
    (e) => {
      events.push(e);
      onEvent(e);
      if (e.kind === 'paused') onPause?.(e);
    },
    (h) => (handler = h),
  );
  const done = trainPinned(db, { modelId, configYaml: CONFIG, trainData: new File([TEXT], 'train.txt'), valData: null }, ctx);
  return {
    events,
    done,
    control: (a) => handler!(a),
    nextPause: () => new Promise((resolve) => (onPause = resolve)),
  };
}

const lossesOf = (events: readonly RunEvent[]) => events.flatMap((e) => (e.kind === 'step' ? [[e.step, e.loss]] : []));
const trainRows = (rows: readonly MetricRow[]) => rows.filter((r) => r.loss !== null).map((r) => [r.step, r.loss]);

/** What a run whose disk never fills leaves behind, for comparison. */
async function uninterrupted() {
  const run = start();
  const result = await run.done;
  const rows = await readMetrics(db, result.runId);
  const artifacts = await readArtifacts(db, result.runId);
  const checkpoints = await listCheckpoints(db, result.runId);
  return {
    losses: lossesOf(run.events),
    rows: trainRows(rows),
    rowCount: rows.length,
    artifacts: new Map(await Promise.all(artifacts.map(async (a) => [a.path, await artifactBytes(a)] as const))),
    checkpointSteps: checkpoints.map((c) => c.step),
    latest: (await latestCheckpoint(db, result.runId))!.checkpoint,
    logBytes: (await readLog(db, result.runId)).byteLength,
  };
}

let reference: Awaited<ReturnType<typeof uninterrupted>> | undefined;

describe('a full disk during a run', () => {
  // Which write hits the full disk, counting from step 3 (after the step-2 checkpoint): a curve row (step 3's
  // perplexity row), an event-file slice, a checkpoint (step 4's), and a checkpoint's adapter files (checkpoint-4/…).
  it.each([
    ['a metric row', 'metrics', 2],
    ['an event-file chunk', 'logs', 1],
    ['a checkpoint', 'checkpointChunks', 1],
    ['a checkpoint\'s adapter files', 'artifacts', 2],
  ] as const)('%s: pauses the run with a message, loses nothing, and Resume continues exactly', async (_what, store, nth) => {
    // Trained once for all the cases, then a fresh database for the run under test.
    reference ??= await uninterrupted();
    ({ db, modelId } = await freshDbWithTinyGpt2());

    const disk = fillingDisk(store, nth);
    const run = start((e) => e.kind === 'step' && e.step === 3 && disk.arm());
    const paused = await Promise.race([run.nextPause(), run.done.then(() => null)]);
    expect(paused, 'the run ended instead of pausing').not.toBeNull();
    expect(paused!.reason).toMatch(/^Storage is full: the run's .+ could not be stored\. Free space \(Storage panel\) and press Resume\.$/);
    expect(disk.refused[0]).toBe(store);

    const started = run.events.find((e) => e.kind === 'started') as Extract<RunEvent, { kind: 'started' }>;
    const runId = started.runId;
    await vi.waitFor(async () => expect(await getRun(db, runId)).toMatchObject({ status: 'paused', error: paused!.reason }));
    // Held, not failing: no step is taken while the write waits.
    const stepsWhilePaused = lossesOf(run.events).length;
    await new Promise((r) => setTimeout(r, 50));
    expect(lossesOf(run.events)).toHaveLength(stepsWhilePaused);

    // Nothing written before is lost: the rows so far match the reference, and the last checkpoint reads back whole.
    expect(trainRows(await readMetrics(db, runId))).toEqual(reference.rows.slice(0, trainRows(await readMetrics(db, runId)).length));
    const kept = await latestCheckpoint(db, runId);
    expect(kept, 'the checkpoint taken before the disk filled').not.toBeNull();
    expect(kept!.record.step).toBe(2);

    // Resume while the disk is still full: the write is tried again, and the run pauses again, still not failed.
    const again = run.nextPause();
    run.control('resume');
    expect((await again).reason).toBe(paused!.reason);
    expect(lossesOf(run.events)).toHaveLength(stepsWhilePaused);

    // Space freed, Resume: the run goes on as if nothing had happened.
    disk.free();
    run.control('resume');
    const result = await run.done;
    expect(result).toMatchObject({ reason: 'completed', steps: 4 });
    expect(lossesOf(run.events)).toEqual(reference.losses);
    const rows = await readMetrics(db, runId);
    expect(trainRows(rows)).toEqual(reference.rows);
    expect(rows).toHaveLength(reference.rowCount);
    expect((await readLog(db, runId)).byteLength).toBe(reference.logBytes);
    expect((await listCheckpoints(db, runId)).map((c) => c.step)).toEqual(reference.checkpointSteps);
    // The same state, but for the wall-clock seconds it took.
    expect({ ...(await latestCheckpoint(db, runId))!.checkpoint, trainSeconds: 0 }).toEqual({ ...reference.latest, trainSeconds: 0 });
    const artifacts = await readArtifacts(db, runId);
    expect(artifacts.map((a) => a.path).sort()).toEqual([...reference.artifacts.keys()].sort());
    for (const a of artifacts) {
      if (a.path.endsWith('.safetensors')) expect(await artifactBytes(a), a.path).toEqual(reference.artifacts.get(a.path));
    }
    expect(await getRun(db, runId)).toMatchObject({ status: 'completed', error: null });
  }, 60_000);

  it('Stop while the disk is still full ends the run failed with the storage message; the checkpoint stays', async () => {
    const disk = fillingDisk('metrics', 1);
    const run = start((e) => e.kind === 'step' && e.step === 3 && disk.arm());
    const paused = await run.nextPause();
    run.control('stop');
    const error = await run.done.then(() => null, (e: unknown) => e as Error);
    expect(error?.message).toMatch(/^browser storage: is full: the run's curves could not be stored\./);
    const runId = (run.events.find((e) => e.kind === 'started') as Extract<RunEvent, { kind: 'started' }>).runId;
    expect(paused.reason).toMatch(/^Storage is full/);
    expect((await latestCheckpoint(db, runId))?.record.step).toBe(2);
    disk.free();
    expect(await getRun(db, runId)).toMatchObject({ status: 'failed' });
  }, 60_000);
});

describe('pauseOnFullStorage', () => {
  it('holds only a full disk: any other failure goes on at once, unpaused', async () => {
    const pauses: string[] = [];
    const gate = pauseOnFullStorage({ paused: (m) => pauses.push(m) });
    const broken = new DOMException('disk on fire', 'UnknownError');
    await expect(gate.write('curves', () => Promise.reject(broken))).rejects.toBe(broken);
    expect(pauses).toEqual([]);
    expect(gate.waiting).toBe(false);

    let tries = 0;
    const writing = gate.write('TensorBoard log', async () => {
      if (++tries < 3) throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
      return 'stored';
    });
    await vi.waitFor(() => expect(gate.waiting).toBe(true));
    expect(pauses).toEqual(["Storage is full: the run's TensorBoard log could not be stored. Free space (Storage panel) and press Resume."]);
    gate.resume();
    await vi.waitFor(() => expect(pauses).toHaveLength(2));
    gate.resume();
    expect(await writing).toBe('stored');
    expect(tries).toBe(3);
  });
});
