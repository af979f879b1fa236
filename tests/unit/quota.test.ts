// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deleteDB } from 'idb';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseRunConfigYaml, unwrapRunConfig } from '../../src/core/config';
import { isUserError, type UserError } from '../../src/core/errors';
import { bytesSource } from '../../src/core/safetensors/index';
import { storeDataset } from '../../src/storage/datasets';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb, type StoredRun } from '../../src/storage/db';
import { importModel } from '../../src/storage/import-model';
import { localLocks } from '../../src/storage/locks';
import { isQuotaError } from '../../src/storage/quota';
import { appendLog, getRun, putArtifact, putMetric, putRun, updateRun } from '../../src/storage/runs';

// One classifier for "storage is full", shared by models, datasets and runs, that knows how each browser says it.

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

/** What each engine throws when the origin's quota is used up (name, and legacy code where it has one). */
const QUOTA_ERRORS: readonly [string, () => unknown][] = [
  ['Chrome / Edge / Safari / Firefox: QuotaExceededError', () => new DOMException('The quota has been exceeded.', 'QuotaExceededError')],
  ['Firefox (older): NS_ERROR_DOM_QUOTA_REACHED', () => new DOMException('Persistent storage maximum size reached', 'NS_ERROR_DOM_QUOTA_REACHED')],
  ['Firefox IndexedDB internals: NS_ERROR_DOM_INDEXEDDB_QUOTA_ERR', () => ({ name: 'NS_ERROR_DOM_INDEXEDDB_QUOTA_ERR', message: 'quota' })],
  ['Firefox DOM internals: NS_ERROR_DOM_QUOTA_EXCEEDED_ERR', () => ({ name: 'NS_ERROR_DOM_QUOTA_EXCEEDED_ERR', message: 'quota' })],
  ['old WebKit: QUOTA_EXCEEDED_ERR', () => ({ name: 'QUOTA_EXCEEDED_ERR', code: 22, message: 'QUOTA_EXCEEDED_ERR: DOM Exception 22' })],
  ['another realm\'s DOMException, known by code 1014', () => ({ name: 'SomeFirefoxName', code: 1014 })],
];

const OTHER_ERRORS: readonly [string, () => unknown][] = [
  ['AbortError', () => new DOMException('aborted', 'AbortError')],
  ['UnknownError', () => new DOMException('disk on fire', 'UnknownError')],
  ['ConstraintError', () => new DOMException('key exists', 'ConstraintError')],
  ['a plain Error', () => new Error('QuotaExceededError')],
  ['a plain Error with code 22', () => Object.assign(new Error('x'), { code: 22 })],
  ['a TypeError', () => new TypeError('x')],
  ['Node ENOSPC', () => Object.assign(new Error('no space'), { code: 'ENOSPC' })],
  ['null', () => null],
  ['a string', () => 'QuotaExceededError'],
];

describe('isQuotaError', () => {
  it.each(QUOTA_ERRORS)('%s → quota', (_name, make) => expect(isQuotaError(make())).toBe(true));
  it.each(OTHER_ERRORS)('%s → not quota', (_name, make) => expect(isQuotaError(make())).toBe(false));
});

// ─── Every store maps every browser's quota error to its "full" message ─────────────────────────────────────────

let db: LoraLabDb;

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
});

/** The database with every shortcut put() failing with `error` (what a full disk does to the first write). */
function failingPuts(real: LoraLabDb, error: () => unknown): LoraLabDb {
  return new Proxy(real, {
    get(target, prop) {
      if (prop === 'put') return () => Promise.reject(error());
      const value: unknown = Reflect.get(target, prop);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

async function refusal(promise: Promise<unknown>): Promise<UserError> {
  try {
    await promise;
  } catch (e) {
    if (isUserError(e)) return e;
    throw e;
  }
  throw new Error('expected a refusal');
}

describe.each(QUOTA_ERRORS)('%s', (_name, make) => {
  it('model import: "storage is full", nothing kept', async () => {
    const dir = join(FIXTURES, 'tiny-gpt2');
    const files = readdirSync(dir).map((n) => bytesSource(`tiny-gpt2/${n}`, new Uint8Array(readFileSync(join(dir, n)))));
    const e = await refusal(importModel(failingPuts(db, make), files, { name: 'm', locks: localLocks() }));
    expect(e.subject).toBe('browser storage');
    expect(e.message).toMatch(/is full/);
    expect(await db.count('models')).toBe(0);
  });

  it('dataset import: "does not fit", nothing kept', async () => {
    const e = await refusal(storeDataset(failingPuts(db, make), bytesSource('a.txt', new Uint8Array(100).fill(65)), { name: 'a.txt', format: 'text', locks: localLocks() }));
    expect(e.subject).toBe('a.txt');
    expect(e.message).toMatch(/does not fit in this browser's storage/);
    expect(await db.count('datasets')).toBe(0);
  });

  it('run writes: each names what could not be stored', async () => {
    await putRun(db, RUN);
    const expectFull = async (write: Promise<unknown>, what: string) => {
      const e = await refusal(write);
      expect(e.subject).toBe('browser storage');
      expect(e.message).toBe(`browser storage: is full: the run's ${what} could not be stored. Delete models, datasets or runs you no longer need, then start the run again.`);
    };
    await expectFull(putRun(failingPuts(db, make), RUN), 'record');
    await expectFull(putArtifact(failingPuts(db, make), RUN.id, 'adapter_model.safetensors', new Uint8Array(4)), 'file adapter_model.safetensors');
    // The transactional writes fail inside the object store, where the browser raises it.
    await withFailingStorePuts(make, async () => {
      await expectFull(updateRun(db, RUN.id, { step: 5 }), 'record');
      await expectFull(putMetric(db, METRIC), 'curves');
      await expectFull(appendLog(db, RUN.id, new Uint8Array([1, 2, 3])), 'TensorBoard log');
    });
    expect((await getRun(db, RUN.id))?.step).toBe(0);
  });
});

describe('run writes: other errors', () => {
  it('pass through unchanged (a bug or a broken disk is not "storage full")', async () => {
    await putRun(db, RUN);
    const broken = () => new DOMException('disk on fire', 'UnknownError');
    await expect(putArtifact(failingPuts(db, broken), RUN.id, 'x', 'y')).rejects.toMatchObject({ name: 'UnknownError' });
    await withFailingStorePuts(broken, async () => {
      await expect(putMetric(db, METRIC)).rejects.toMatchObject({ name: 'UnknownError' });
    });
  });
});

// ─── Fixtures ───────────────────────────────────────────────────────────────────────────────────────────────────

const RUN: StoredRun = {
  id: 'run-1', name: 'a', modelId: 'm', modelName: 'm',
  config: unwrapRunConfig(parseRunConfigYaml('base_model: m\ntrain_data: t.txt\noutput_dir: ./out/a\n', 'config.yaml')).config,
  status: 'running', createdAt: 1, updatedAt: 1, backend: 'cpu', step: 0, totalSteps: 10, bestEvalLoss: null, findings: [], logFile: 'events', error: null,
};

const METRIC = { runId: RUN.id, step: 1, epoch: 0.1, loss: 2, learningRate: 1e-3, gradNorm: 1, tokensPerSecond: 10, evalLoss: null, custom: {} };

const realStorePut = IDBObjectStore.prototype.put;

/** Makes every object store's put() throw `error`, as the browser's store does when the disk is full, during `body`. */
async function withFailingStorePuts(error: () => unknown, body: () => Promise<void>): Promise<void> {
  IDBObjectStore.prototype.put = function () {
    throw error();
  };
  try {
    await body();
  } finally {
    IDBObjectStore.prototype.put = realStorePut;
  }
}

afterEach(() => {
  IDBObjectStore.prototype.put = realStorePut;
});
