// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { bytesSource } from '../../src/core/safetensors/index';
import { latestCheckpoint } from '../../src/storage/checkpoints';
import { storeDataset, type StoredDataset } from '../../src/storage/datasets';
import type { LoraLabDb } from '../../src/storage/db';
import { lockName, localLocks } from '../../src/storage/locks';
import { deleteRunCheckpoints, deleteStoredRun, deleteUnusedDataset } from '../../src/storage/prune';
import { getRun, readArtifacts, readLog, readMetrics } from '../../src/storage/runs';
import { storageUsage } from '../../src/storage/usage';
import { trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';

// The Storage panel's numbers against the bytes actually stored (each slice read back and counted here, apart from
// the storage code), and its one-click deletes: they free what they say, keep what they promise to keep, and refuse
// what a run still needs.

const CONFIG = [
  'base_model: tiny-gpt2', 'train_data: notes.txt', 'output_dir: ./out/usage', 'lora_rank: 2', 'target_modules: [c_attn]',
  'max_steps: 4', 'batch_size: 2', 'seq_len: 16', 'log_steps: 1', 'save_steps: 2', 'val_split: 0', 'seed: 3',
].join('\n');
const TEXT = 'zebra quilt jinx! '.repeat(40);

let db: LoraLabDb;
let modelId: string;
let dataset: StoredDataset;
let runId: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

beforeEach(async () => {
  ({ db, modelId } = await freshDbWithTinyGpt2());
  // Small slices, so the dataset is several of them.
  dataset = await storeDataset(db, bytesSource('notes.txt', new TextEncoder().encode(TEXT)), { name: 'notes.txt', format: 'text', chunkBytes: 100, locks: localLocks() });
  ({ runId } = await trainPinned(db, { modelId, configYaml: CONFIG, trainData: { datasetId: dataset.id }, valData: null }));
});

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);
const utf8 = (s: string) => new TextEncoder().encode(s).byteLength;
const range = (id: string) => IDBKeyRange.bound([id], [id, []]);

/** Counted from the stores directly: every slice's bytes. */
async function storedBytes() {
  const model = (await db.get('models', modelId))!;
  const tensors = (await db.getAll('tensors')).filter((t) => t.modelId === modelId);
  const artifacts = await db.getAll('artifacts', range(runId));
  const isCheckpointFile = (path: string) => /^checkpoint-\d+\//.test(path);
  // A merged model's files are stored as Blobs (runs.ts putArtifact), the rest as bytes.
  const sizeOf = (a: { bytes: ArrayBuffer | Blob }) => (a.bytes instanceof Blob ? a.bytes.size : a.bytes.byteLength);
  const checkpointChunks = await db.getAll('checkpointChunks', range(runId));
  return {
    model: sum(tensors.map((t) => t.bytes.byteLength)) + sum(Object.values(model.files).map((f) => (typeof f === 'string' ? utf8(f) : 0))),
    dataset: sum((await db.getAll('datasetChunks', range(dataset.id))).map((c) => c.bytes.byteLength)),
    checkpoints: sum(checkpointChunks.map((c) => c.bytes.byteLength)) + sum(artifacts.filter((a) => isCheckpointFile(a.path)).map(sizeOf)),
    kept:
      sum(artifacts.filter((a) => !isCheckpointFile(a.path)).map(sizeOf)) +
      sum((await db.getAll('logs', range(runId))).map((c) => c.bytes.byteLength)) +
      sum((await db.getAll('metrics', range(runId))).map((r) => utf8(JSON.stringify(r)))),
  };
}

describe('storage usage', () => {
  it('each model, dataset, run and checkpoint set is what its slices hold, and the total their sum', async () => {
    // An adapter imported onto the model (its weights a Blob, as adapters.ts stores them) counts with the model.
    const adapter = { weights: new Blob([new Uint8Array(1234)]), config: '{"r": 2}' };
    await db.put('adapters', { modelId, name: 'style', importedAt: 1, settings: {} as never, baseModelName: null, parameterCount: 0, moduleCount: 0, files: adapter });
    const adapterBytes = 1234 + utf8(adapter.config);
    const usage = await storageUsage(db);
    const stored = await storedBytes();
    expect(stored.checkpoints).toBeGreaterThan(0);
    expect(usage.models).toEqual([{ id: modelId, name: 'tiny-gpt2', bytes: stored.model + adapterBytes, adapterBytes }]);
    expect(usage.datasets).toEqual([{ id: dataset.id, name: 'notes.txt', bytes: stored.dataset, neededBy: [] }]);
    expect(stored.dataset).toBe(utf8(TEXT));
    expect(usage.runs).toHaveLength(1);
    expect(usage.runs[0]).toMatchObject({ id: runId, status: 'completed', checkpointBytes: stored.checkpoints, checkpointCount: 2, keptBytes: stored.kept, bytes: stored.checkpoints + stored.kept });
    expect(usage.totalBytes).toBe(stored.model + adapterBytes + stored.dataset + stored.checkpoints + stored.kept);
  });
});

describe('prune', () => {
  it('"Delete checkpoints" frees what the panel said and keeps the final adapter, files, log and curves', async () => {
    const before = (await storageUsage(db)).runs[0]!;
    const artifactsBefore = (await readArtifacts(db, runId)).filter((a) => !a.path.startsWith('checkpoint-'));
    const logBefore = await readLog(db, runId);
    const rowsBefore = await readMetrics(db, runId);
    expect(artifactsBefore.map((a) => a.path)).toContain('adapter_model.safetensors');

    const freed = await deleteRunCheckpoints(db, runId, localLocks());
    expect(freed).toBe(before.checkpointBytes);
    const after = (await storageUsage(db)).runs[0]!;
    expect(after).toMatchObject({ checkpointBytes: 0, checkpointCount: 0, keptBytes: before.keptBytes });
    expect((await storedBytes()).checkpoints).toBe(0);
    expect(await latestCheckpoint(db, runId)).toBeNull();
    expect(await readArtifacts(db, runId)).toEqual(artifactsBefore);
    expect(await readLog(db, runId)).toEqual(logBefore);
    expect(await readMetrics(db, runId)).toEqual(rowsBefore);
  });

  it('refuses the checkpoints of a run that can still be resumed, and a dataset such a run trains on', async () => {
    await db.put('runs', { ...(await getRun(db, runId))!, status: 'interrupted' });
    const checkpoints = await deleteRunCheckpoints(db, runId, localLocks()).catch((e: unknown) => e);
    expect(isUserError(checkpoints)).toBe(true);
    expect((checkpoints as Error).message).toBe('run "usage": is interrupted: its checkpoints are what resuming it starts from. Resume it to the end or delete the whole run.');
    expect((await storedBytes()).checkpoints).toBeGreaterThan(0);

    expect((await storageUsage(db)).datasets[0]!.neededBy).toEqual(['usage']);
    const data = await deleteUnusedDataset(db, dataset.id).catch((e: unknown) => e);
    expect((data as Error).message).toMatch(/^dataset "notes\.txt": is the data of the run "usage", which is training or can still be resumed\./);
    expect((await storedBytes()).dataset).toBe(utf8(TEXT));

    // Once the run is gone, the dataset goes too: record and every slice.
    await deleteStoredRun(db, runId, localLocks());
    expect(await getRun(db, runId)).toBeUndefined();
    expect(await db.count('checkpointChunks')).toBe(0);
    expect(await db.count('artifacts')).toBe(0);
    await deleteUnusedDataset(db, dataset.id);
    expect(await db.count('datasets')).toBe(0);
    expect(await db.count('datasetChunks')).toBe(0);
    expect((await storageUsage(db)).totalBytes).toBe((await storedBytes()).model);
  });

  it('refuses to delete a run some tab trains (its lock is held), and deletes nothing of it', async () => {
    const locks = localLocks();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const holding = locks.hold(lockName.run(runId), () => held);
    const refused = await deleteStoredRun(db, runId, locks).catch((e: unknown) => e);
    expect((refused as Error).message).toBe('run "usage": is training right now (in this tab or another). Stop it first.');
    const refusedCheckpoints = await deleteRunCheckpoints(db, runId, locks).catch((e: unknown) => e);
    expect(isUserError(refusedCheckpoints)).toBe(true);
    release();
    await holding;
    expect(await getRun(db, runId)).toBeDefined();
    expect((await storedBytes()).checkpoints).toBeGreaterThan(0);
  });
});
