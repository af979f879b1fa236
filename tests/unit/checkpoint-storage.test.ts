// Gives Node the IndexedDB globals (indexedDB, IDBKeyRange) the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { deleteDB } from 'idb';
import { beforeEach, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import type { TrainerCheckpoint } from '../../src/core/train/checkpoint';
import { deleteCheckpoints, latestCheckpoint, listCheckpoints, saveCheckpoint } from '../../src/storage/checkpoints';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb, type StoredRun } from '../../src/storage/db';
import { appendLog, deleteRun, putRun } from '../../src/storage/runs';
import { freshDbAtVersion } from './support/old-database';

let db: LoraLabDb;

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
});

/** A checkpoint whose every number depends on `step`, so two of them never compare equal by accident. */
function checkpointAt(step: number, size = 300): TrainerCheckpoint {
  const fill = (salt: number) => Float32Array.from({ length: size }, (_, i) => Math.sin(step * 1000 + salt * 100 + i));
  return {
    step,
    position: { epoch: Math.floor(step / 10), microBatch: step % 10 },
    order: Uint32Array.from({ length: 10 }, (_, i) => (i * 7 + step) % 10),
    plan: { seed: 1, batchSize: 1, gradAccumSteps: 1, totalSteps: 100, windows: 10, seqLen: 8, dataFingerprint: 'feedfacecafebeef' },
    params: [{ shape: [size / 3, 3], value: fill(1), m: fill(2), v: fill(3).map(Math.abs) }],
    optimizerSteps: step,
    bestEval: null,
    pendingLogLosses: [step / 4],
    trainSeconds: step * 0.5,
  };
}

// 300 floats × 3 + the order and header: a little under 4 kB, so 1 kB slices make 4–5 chunks per checkpoint.
const SMALL_CHUNKS = { chunkBytes: 1024 };

const chunkSteps = async (runId: string): Promise<number[]> =>
  [...new Set((await db.getAll('checkpointChunks')).filter((c) => c.runId === runId).map((c) => c.step))].sort((a, b) => a - b);

/**
 * The same database, except that in checkpoint-writing transactions the `nth` put into checkpointChunks does
 * `fail(tx)` instead: abort the transaction (a tab dying mid-write) or reject (a full disk).
 */
function failingAt(real: LoraLabDb, nth: number, fail: (tx: IDBTransaction) => Promise<never>): LoraLabDb {
  let puts = 0;
  const bound = <T extends object>(target: T, prop: string | symbol): unknown => {
    const value = Reflect.get(target, prop, target) as unknown;
    return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
  };
  return new Proxy(real, {
    get(target, prop) {
      if (prop !== 'transaction') return bound(target, prop);
      return (...args: Parameters<LoraLabDb['transaction']>) => {
        const tx = (target.transaction as (...a: unknown[]) => ReturnType<LoraLabDb['transaction']>)(...args);
        return new Proxy(tx, {
          get(t, p) {
            if (p !== 'objectStore') return bound(t, p);
            return (name: string) => {
              const store = t.objectStore(name as never);
              return new Proxy(store, {
                get(s, q) {
                  if (q === 'put' && name === 'checkpointChunks') {
                    return (value: unknown) => (++puts === nth ? fail(t as unknown as IDBTransaction) : s.put!(value as never));
                  }
                  return bound(s, q);
                },
              });
            };
          },
        });
      };
    },
  }) as LoraLabDb;
}

describe('checkpoints store', () => {
  it('keeps the newest N, prunes older ones with their slices, and reads the latest back exactly', async () => {
    for (const step of [10, 20, 30]) await saveCheckpoint(db, 'run-a', checkpointAt(step), { keep: 2, ...SMALL_CHUNKS });
    await saveCheckpoint(db, 'run-b', checkpointAt(5), SMALL_CHUNKS);
    expect((await listCheckpoints(db, 'run-a')).map((c) => c.step)).toEqual([30, 20]);
    expect(await chunkSteps('run-a')).toEqual([20, 30]);
    const [newest] = await listCheckpoints(db, 'run-a');
    expect(newest!.chunkCount).toBeGreaterThan(3);
    expect((await latestCheckpoint(db, 'run-a'))?.checkpoint).toEqual(checkpointAt(30));
    expect((await latestCheckpoint(db, 'run-b'))?.checkpoint).toEqual(checkpointAt(5));
    expect(await latestCheckpoint(db, 'run-none')).toBeNull();
  });

  it('a rewrite of the same step (fewer slices) replaces it, leaving no stale slice', async () => {
    await saveCheckpoint(db, 'run-a', checkpointAt(10, 300), SMALL_CHUNKS);
    await saveCheckpoint(db, 'run-a', checkpointAt(10, 30), SMALL_CHUNKS);
    const [record] = await listCheckpoints(db, 'run-a');
    expect(record!.chunkCount).toBe(1);
    expect((await db.getAll('checkpointChunks')).length).toBe(1);
    expect((await latestCheckpoint(db, 'run-a'))?.checkpoint).toEqual(checkpointAt(10, 30));
  });

  it('a write aborted half-way (the tab dies) leaves the previous checkpoints exactly as they were', async () => {
    await saveCheckpoint(db, 'run-a', checkpointAt(10), { keep: 1, ...SMALL_CHUNKS });
    const before = await db.getAll('checkpointChunks');
    // The third slice of the new checkpoint: two are already put in the transaction when it dies.
    const crashing = failingAt(db, 3, (tx) => {
      tx.abort();
      return Promise.reject(new DOMException('The transaction was aborted.', 'AbortError'));
    });
    await expect(saveCheckpoint(crashing, 'run-a', checkpointAt(20), { keep: 1, ...SMALL_CHUNKS })).rejects.toThrow(/abort/i);
    expect((await listCheckpoints(db, 'run-a')).map((c) => c.step)).toEqual([10]);
    expect(await db.getAll('checkpointChunks')).toEqual(before);
    expect((await latestCheckpoint(db, 'run-a'))?.checkpoint).toEqual(checkpointAt(10));
    // And the store still takes the next write.
    await saveCheckpoint(db, 'run-a', checkpointAt(30), { keep: 1, ...SMALL_CHUNKS });
    expect((await latestCheckpoint(db, 'run-a'))?.checkpoint).toEqual(checkpointAt(30));
  });

  it("records how many slices of the run's TensorBoard log existed when it was taken", async () => {
    await appendLog(db, 'run-a', new Uint8Array([1, 2, 3]));
    await appendLog(db, 'run-a', new Uint8Array([4]));
    await appendLog(db, 'run-b', new Uint8Array([5]));
    expect((await saveCheckpoint(db, 'run-a', checkpointAt(10))).logChunks).toBe(2);
    await appendLog(db, 'run-a', new Uint8Array([6]));
    await saveCheckpoint(db, 'run-a', checkpointAt(20));
    expect((await listCheckpoints(db, 'run-a')).map((c) => [c.step, c.logChunks])).toEqual([
      [20, 3],
      [10, 2],
    ]);
    expect((await latestCheckpoint(db, 'run-a'))?.record.logChunks).toBe(3);
  });

  it('a full disk half-way is one message naming the step, and loses nothing stored before', async () => {
    await saveCheckpoint(db, 'run-a', checkpointAt(10), { keep: 1, ...SMALL_CHUNKS });
    const full = failingAt(db, 2, () => Promise.reject(new DOMException('The quota has been exceeded.', 'QuotaExceededError')));
    const error = await saveCheckpoint(full, 'run-a', checkpointAt(20), { keep: 1, ...SMALL_CHUNKS }).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).toMatch(/browser storage: is full: the checkpoint at step 20 could not be stored/);
    expect((await listCheckpoints(db, 'run-a')).map((c) => c.step)).toEqual([10]);
    expect(await chunkSteps('run-a')).toEqual([10]);
    expect((await latestCheckpoint(db, 'run-a'))?.checkpoint).toEqual(checkpointAt(10));
  });

  it('a damaged newest checkpoint (a slice lost, or a bit flipped) falls back to the one before', async () => {
    await saveCheckpoint(db, 'run-a', checkpointAt(10), SMALL_CHUNKS);
    await saveCheckpoint(db, 'run-a', checkpointAt(20), SMALL_CHUNKS);
    await db.delete('checkpointChunks', ['run-a', 20, 1]);
    expect((await latestCheckpoint(db, 'run-a'))?.checkpoint).toEqual(checkpointAt(10));
    await saveCheckpoint(db, 'run-a', checkpointAt(20), SMALL_CHUNKS);
    const chunk = (await db.get('checkpointChunks', ['run-a', 20, 2]))!;
    const flipped = new Uint8Array(chunk.bytes.slice(0));
    flipped[17]! ^= 1;
    await db.put('checkpointChunks', { ...chunk, bytes: flipped.buffer });
    expect((await latestCheckpoint(db, 'run-a'))?.checkpoint).toEqual(checkpointAt(10));
  });

  it('goes with its run: deleteRun and deleteCheckpoints remove that run\'s checkpoints only', async () => {
    const run = { id: 'run-a', name: 'a', status: 'interrupted' } as unknown as StoredRun;
    await putRun(db, run);
    await saveCheckpoint(db, 'run-a', checkpointAt(10), SMALL_CHUNKS);
    await saveCheckpoint(db, 'run-b', checkpointAt(10), SMALL_CHUNKS);
    await saveCheckpoint(db, 'run-c', checkpointAt(10), SMALL_CHUNKS);
    await deleteRun(db, 'run-a');
    await deleteCheckpoints(db, 'run-c');
    expect(await db.count('runs')).toBe(0);
    expect(await listCheckpoints(db, 'run-a')).toEqual([]);
    expect(await listCheckpoints(db, 'run-c')).toEqual([]);
    expect(await chunkSteps('run-a')).toEqual([]);
    expect(await chunkSteps('run-c')).toEqual([]);
    expect((await latestCheckpoint(db, 'run-b'))?.checkpoint).toEqual(checkpointAt(10));
  });

  it('the version-5 migration adds the stores to an existing version-4 database without touching its data', async () => {
    const v4 = await freshDbAtVersion(4);
    await v4.put('runs', { id: 'old-run', status: 'interrupted' });
    v4.close();
    db = await openDatabase();
    // 5 or later: later migrations (6: adapters) run on top of it.
    expect(db.version).toBeGreaterThanOrEqual(5);
    expect(await db.get('runs', 'old-run')).toEqual({ id: 'old-run', status: 'interrupted' });
    await saveCheckpoint(db, 'old-run', checkpointAt(10));
    expect((await latestCheckpoint(db, 'old-run'))?.checkpoint).toEqual(checkpointAt(10));
  });
});
