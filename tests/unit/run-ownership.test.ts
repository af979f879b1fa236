// Gives Node the IndexedDB globals the storage layer uses in the browser.
import { FLOAT32_PLACEMENT } from '../../src/core/weights/hold';
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deleteDB } from 'idb';
import { beforeEach, describe, expect, it } from 'vitest';
import { parseRunConfigYaml, unwrapRunConfig } from '../../src/core/config';
import type { TextTokenizer } from '../../src/core/data/tokenizer';
import { isUserError } from '../../src/core/errors';
import type { CausalLM } from '../../src/core/models/model';
import { bytesSource, type ByteSource } from '../../src/core/safetensors/index';
import { getDataset, storeDataset, sweepUnfinishedDatasets } from '../../src/storage/datasets';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb, type RunStatus, type StoredModel, type StoredRun } from '../../src/storage/db';
import { importModel } from '../../src/storage/import-model';
import { localLocks, lockName, type Locks } from '../../src/storage/locks';
import { getModel, sweepUnfinishedImports } from '../../src/storage/models';
import { getRun, liveRunOnModel, markInterruptedRuns, putRun } from '../../src/storage/runs';
import { ModelSlot } from '../../src/worker/loaded-model';

// One owner per run and per import: the owner holds a named lock while it writes, and start-up sweeps (another
// tab's, or this tab's after a reload) touch only records whose lock nobody holds. In Node there is no
// navigator.locks; localLocks() has the same semantics within one process, and two separate instances stand for
// two tabs that cannot see each other's locks.

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

let db: LoraLabDb;

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
});

/** A lock held until the returned release() is called, as a live tab holds it. */
async function holdOpen(locks: Locks, name: string): Promise<() => Promise<void>> {
  let release!: () => void;
  let acquired!: () => void;
  const isHeld = new Promise<void>((resolve) => (acquired = resolve));
  const done = locks.hold(name, () => {
    acquired();
    return new Promise<void>((resolve) => (release = resolve));
  });
  await isHeld;
  return async () => {
    release();
    await done;
  };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

const CONFIG = unwrapRunConfig(parseRunConfigYaml('base_model: m\ntrain_data: t.txt\noutput_dir: ./out/a\n', 'config.yaml')).config;

function run(id: string, status: RunStatus, modelId = 'model-1'): StoredRun {
  return {
    id, name: id, modelId, modelName: 'tiny', config: CONFIG, status, createdAt: 1, updatedAt: 1, backend: 'cpu',
    step: 3, totalSteps: 10, bestEvalLoss: null, findings: [], logFile: null, error: null,
  };
}

describe('localLocks', () => {
  it('is exclusive: a second holder waits; ifFree runs nothing while the lock is held or awaited', async () => {
    const locks = localLocks();
    const order: string[] = [];
    const release = await holdOpen(locks, 'a');
    const second = locks.hold('a', async () => void order.push('second'));
    expect(await locks.ifFree('a', async () => order.push('probe'))).toEqual({ taken: false });
    expect(await locks.ifFree('b', async () => 'other name')).toEqual({ taken: true, value: 'other name' });
    order.push('release');
    await release();
    await second;
    expect(order).toEqual(['release', 'second']);
    expect(await locks.ifFree('a', async () => 1)).toEqual({ taken: true, value: 1 });
  });

  it('a holder that throws releases the lock', async () => {
    const locks = localLocks();
    await expect(locks.hold('a', async () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    expect(await locks.ifFree('a', async () => 'free')).toEqual({ taken: true, value: 'free' });
  });
});

describe('runs left running by a tab that is gone', () => {
  it('the start-up sweep marks running and paused runs interrupted, unless a live tab holds their lock', async () => {
    const locks = localLocks();
    for (const r of [run('crashed', 'running'), run('paused-then-closed', 'paused'), run('live', 'running'), run('done', 'completed'), run('broke', 'failed')]) {
      await putRun(db, r);
    }
    const release = await holdOpen(locks, lockName.run('live'));

    expect(await markInterruptedRuns(db, locks)).toBe(2);
    const status = async (id: string) => (await getRun(db, id))!.status;
    expect(await status('crashed')).toBe('interrupted');
    expect(await status('paused-then-closed')).toBe('interrupted');
    expect(await status('live')).toBe('running');
    expect(await status('done')).toBe('completed');
    expect(await status('broke')).toBe('failed');
    // The rest of the record is kept (where it stopped, its config), only the status changes.
    expect(await getRun(db, 'crashed')).toMatchObject({ step: 3, totalSteps: 10, config: CONFIG });

    // The live tab closes without a word: the next start-up sweep finds its run orphaned.
    await release();
    expect(await markInterruptedRuns(db, locks)).toBe(1);
    expect(await status('live')).toBe('interrupted');
    expect(await markInterruptedRuns(db, locks)).toBe(0);
  });

  it('a run that ends between the listing and the lock is not marked', async () => {
    const locks = localLocks();
    await putRun(db, run('finishing', 'running'));
    // The sweep has listed the run as running; before it takes the lock, the owner writes the final status and
    // drops its lock. The status must be read again inside the lock.
    const racing: Locks = {
      hold: (name, work) => locks.hold(name, work),
      async ifFree(name, work) {
        await putRun(db, run('finishing', 'completed'));
        return locks.ifFree(name, work);
      },
    };
    expect(await markInterruptedRuns(db, racing)).toBe(0);
    expect((await getRun(db, 'finishing'))!.status).toBe('completed');
  });

  it('liveRunOnModel finds a model\'s run only while its lock is held', async () => {
    const locks = localLocks();
    await putRun(db, run('r1', 'running', 'gpt2'));
    await putRun(db, run('r2', 'completed', 'llama'));
    expect(await liveRunOnModel(db, 'gpt2', locks)).toBeUndefined(); // stored as running, but nobody owns it
    const release = await holdOpen(locks, lockName.run('r1'));
    expect((await liveRunOnModel(db, 'gpt2', locks))?.id).toBe('r1');
    expect(await liveRunOnModel(db, 'llama', locks)).toBeUndefined();
    await release();
    expect(await liveRunOnModel(db, 'gpt2', locks)).toBeUndefined();
  });
});

/** A source whose reads wait for `gate` once `after` bytes have been read: an import paused half-way. */
function gated(source: ByteSource, after: number, gate: Promise<void>, reached: () => void): ByteSource {
  return {
    name: source.name,
    size: source.size,
    async read(begin, end) {
      if (begin >= after) {
        reached();
        await gate;
      }
      return source.read(begin, end);
    },
  };
}

function fixtureFolder(dir: string): ByteSource[] {
  return readdirSync(join(FIXTURES, dir)).map((name) => bytesSource(`${dir}/${name}`, new Uint8Array(readFileSync(join(FIXTURES, dir, name)))));
}

describe('imports another tab is still writing', () => {
  it('a model import holds its lock: a sweep that sees the lock leaves it alone, and the import finishes', async () => {
    const locks = localLocks();
    let open!: () => void;
    let reached!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const halfway = new Promise<void>((resolve) => (reached = resolve));
    const files = fixtureFolder('tiny-gpt2').map((f) => (f.name.endsWith('.safetensors') ? gated(f, 100_000, gate, reached) : f));
    const importing = importModel(db, files, { name: 'tiny', chunkBytes: 4096, locks });
    await halfway;
    expect((await db.getAll('models')).map((m) => m.status)).toEqual(['importing']);
    const slicesSoFar = await db.count('tensors');
    expect(slicesSoFar).toBeGreaterThan(0);

    expect(await sweepUnfinishedImports(db, locks)).toBe(0);
    expect(await db.count('tensors')).toBe(slicesSoFar);

    open();
    const model = await importing;
    expect((await getModel(db, model.id))?.status).toBe('ready');
    // Finished: the lock is gone, and a later sweep has nothing to do.
    expect(await sweepUnfinishedImports(db, locks)).toBe(0);
    expect(await getModel(db, model.id)).toBeDefined();
  });

  it('a dataset import holds its lock the same way', async () => {
    const locks = localLocks();
    let open!: () => void;
    let reached!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const halfway = new Promise<void>((resolve) => (reached = resolve));
    const text = new TextEncoder().encode('some training text '.repeat(20));
    const storing = storeDataset(db, gated(bytesSource('notes.txt', text), 64, gate, reached), { name: 'notes.txt', format: 'text', chunkBytes: 32, locks });
    await halfway;
    expect(await sweepUnfinishedDatasets(db, locks)).toBe(0);
    open();
    const dataset = await storing;
    expect((await getDataset(db, dataset.id))?.status).toBe('ready');
    expect(await db.count('datasetChunks')).toBe(dataset.chunkCount);
  });

  it('a sweep that cannot see the lock (a separate lock set) removes the import, which then refuses to finish', async () => {
    let open!: () => void;
    let reached!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const halfway = new Promise<void>((resolve) => (reached = resolve));
    const text = new TextEncoder().encode('some training text '.repeat(20));
    const storing = storeDataset(db, gated(bytesSource('notes.txt', text), 64, gate, reached), { name: 'notes.txt', format: 'text', chunkBytes: 32, locks: localLocks() });
    await halfway;
    expect(await sweepUnfinishedDatasets(db, localLocks())).toBe(1);
    open();
    expect((await rejection(storing)).message).toMatch(/removed by another LoRA Lab tab/);
    expect(await db.count('datasets')).toBe(0);
    expect(await db.count('datasetChunks')).toBe(0);
  });
});

describe('ModelSlot: the run pins its model', () => {
  const loads: string[] = [];
  const disposed: string[] = [];
  const loader = async (_db: LoraLabDb, stored: StoredModel) => {
    loads.push(stored.id);
    return { model: { dispose: () => disposed.push(stored.id) } as unknown as CausalLM, tokenizer: {} as TextTokenizer };
  };

  async function storeModel(id: string, name: string): Promise<void> {
    const model: StoredModel = {
      id, name, status: 'ready', arch: 'gpt2', parameterCount: 1, sizeBytes: 1, importedAt: 1,
      files: { config: '{}', tokenizer: '{}', tokenizerConfig: null }, tensors: [],
    };
    await db.put('models', model);
  }

  beforeEach(async () => {
    loads.length = 0;
    disposed.length = 0;
    await storeModel('a', 'model A');
    await storeModel('b', 'model B');
  });

  it('while pinned: a second run, another model, and deleting the pinned model are refused; the pinned model keeps serving', async () => {
    const slot = new ModelSlot(loader);
    const pin = slot.pin('a');
    const loaded = await pin.load(db, FLOAT32_PLACEMENT);
    expect(loaded.name).toBe('model A');

    const second = (() => {
      try {
        slot.pin('b');
      } catch (e) {
        return e as Error;
      }
      throw new Error('a second pin was accepted');
    })();
    expect(isUserError(second)).toBe(true);
    expect(second.message).toMatch(/already running.*one run at a time/);

    const other = await rejection(slot.use(db, 'b'));
    expect(isUserError(other)).toBe(true);
    expect(other.message).toMatch(/while a run trains on "model A"/);

    const removal = await rejection(slot.evict('a'));
    expect(removal.message).toMatch(/cannot be deleted while a run trains on it/);

    // Requests on the run's own model share the loaded weights.
    expect(await slot.use(db, 'a')).toBe(loaded);
    expect(loads).toEqual(['a']);
    expect(disposed).toEqual([]);

    // Deleting another model is fine, and does not touch the pinned one.
    await slot.evict('b');
    expect(disposed).toEqual([]);

    pin.release();
    pin.release(); // twice is harmless
    await slot.use(db, 'b');
    expect(loads).toEqual(['a', 'b']);
    expect(disposed).toEqual(['a']);
    const next = slot.pin('b');
    next.release();
  });

  it('a request already waiting for a load when a run pins another model is refused when its turn comes', async () => {
    const slot = new ModelSlot(loader);
    // 'b' is asked for first, but its load has not started when the run pins 'a': loading it now would only be
    // undone by the run's load (or worse, free the run's weights after it), so it is refused at its turn.
    const first = slot.use(db, 'b');
    const pin = slot.pin('a');
    const refused = await rejection(first);
    expect(refused.message).toMatch(/while a run trains/);
    await pin.load(db, FLOAT32_PLACEMENT);
    expect(loads).toEqual(['a']);
    pin.release();
  });

  it('evict frees a loaded model that is not pinned', async () => {
    const slot = new ModelSlot(loader);
    await slot.use(db, 'a');
    await slot.evict('a');
    expect(disposed).toEqual(['a']);
    await slot.use(db, 'a');
    expect(loads).toEqual(['a', 'a']);
  });
});
