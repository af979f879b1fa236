// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { type LoraLabDb, type StoredRun } from '../../src/storage/db';
import { localLocks, type Locks } from '../../src/storage/locks';
import { listRuns, markInterruptedRuns } from '../../src/storage/runs';
import type { RunEvent } from '../../src/worker/protocol';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';

// The worker's training run, end to end in Node (cpu backend, fake-indexeddb): what it leaves in IndexedDB when
// the storage writes after training fail, and that its lock keeps other tabs' sweeps off it while it trains.

const CONFIG = ['base_model: tiny-gpt2', 'train_data: train.txt', 'output_dir: ./out/run', 'lora_rank: 2', 'target_modules: [c_attn]', 'max_steps: 2', 'batch_size: 2', 'seq_len: 16', 'log_steps: 1', 'seed: 3'].join('\n');
const TEXT = 'zebra quilt jinx! '.repeat(40);

let db: LoraLabDb;
let modelId: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

beforeEach(async () => {
  ({ db, modelId } = await freshDbWithTinyGpt2());
});

/** The database, except that writes of run files (artifacts) fail with `error`: a full disk after training. */
function failingArtifacts(real: LoraLabDb, error: () => Error): LoraLabDb {
  return new Proxy(real, {
    get(target, prop) {
      if (prop === 'put') {
        return (store: string, value: never) => (store === 'artifacts' ? Promise.reject(error()) : target.put(store as 'runs', value));
      }
      const value: unknown = Reflect.get(target, prop);
      // idb's methods find the underlying IDBDatabase through `this`, so they must stay bound to idb's own proxy.
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

async function train(into: LoraLabDb, locks: Locks, onEvent: (e: RunEvent) => void = () => undefined) {
  return trainPinned(into, { modelId, configYaml: CONFIG, trainData: new File([TEXT], 'train.txt'), valData: null }, runContext(onEvent), locks);
}

async function onlyRun(): Promise<StoredRun> {
  const runs = await listRuns(db);
  expect(runs).toHaveLength(1);
  return runs[0]!;
}

describe('a failure after training', () => {
  it('a full disk while storing the adapter pauses the finished run; Stop while still full marks it failed with a clear message', async () => {
    const quota = () => new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    const events: RunEvent[] = [];
    let control: ((action: 'pause' | 'resume' | 'stop') => void) | null = null;
    const onEvent = (e: RunEvent) => {
      events.push(e);
      if (e.kind === 'paused') control?.('stop'); // the person gives up instead of freeing space
    };
    let thrown: unknown;
    const ctx = runContext(onEvent, (handler) => (control = handler));
    await trainPinned(failingArtifacts(db, quota), { modelId, configYaml: CONFIG, trainData: new File([TEXT], 'train.txt'), valData: null }, ctx, localLocks()).catch(
      (e: unknown) => (thrown = e),
    );
    // Training itself ran: both steps were taken before the output was written.
    expect(events.filter((e) => e.kind === 'step')).toHaveLength(2);
    // The run paused for space, saying what could not be stored, before Stop ended it.
    expect(events.find((e) => e.kind === 'paused')).toEqual({
      kind: 'paused',
      reason: "Storage is full: the run's file adapter_model.safetensors could not be stored. Free space (Storage panel) and press Resume.",
    });
    expect(isUserError(thrown)).toBe(true);
    const message = (thrown as Error).message;
    expect(message).toMatch(/^browser storage: is full: the run's file adapter_model\.safetensors could not be stored\./);

    const run = await onlyRun();
    expect(run.status).toBe('failed');
    expect(run.error).toBe(message);
  });

  it('any other error there is recorded the same way, with its own message', async () => {
    const broken = () => new DOMException('disk on fire', 'UnknownError');
    const thrown = await train(failingArtifacts(db, broken), localLocks()).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(thrown?.message).toBe('disk on fire');
    expect(await onlyRun()).toMatchObject({ status: 'failed', error: 'disk on fire' });
  });
});

describe('the run lock', () => {
  it('is held while the run trains (a sweep leaves it running) and dropped when it ends', async () => {
    const locks = localLocks();
    let sweptMidRun: Promise<{ marked: number; status: string | undefined }> | null = null;
    const result = await train(db, locks, (e) => {
      // At the first step, a second tab starts up and sweeps.
      if (e.kind === 'step' && e.step === 1 && !sweptMidRun) {
        sweptMidRun = markInterruptedRuns(db, locks).then(async (marked) => ({ marked, status: (await listRuns(db))[0]?.status }));
      }
    });
    expect(result.reason).toBe('completed');
    expect(sweptMidRun).not.toBeNull();
    const mid = await sweptMidRun!;
    expect(mid.marked).toBe(0);
    expect(mid.status).toBe('running');

    expect((await onlyRun()).status).toBe('completed');
    expect(await markInterruptedRuns(db, locks)).toBe(0);
    expect((await onlyRun()).status).toBe('completed');
  });

  it('a run left running by a worker that died is marked interrupted by the next sweep', async () => {
    // What a reload does: the record says running, and its lock went with the worker.
    await train(db, localLocks());
    const run = await onlyRun();
    await db.put('runs', { ...run, status: 'running' });
    expect(await markInterruptedRuns(db, localLocks())).toBe(1);
    expect((await onlyRun()).status).toBe('interrupted');
  });
});
