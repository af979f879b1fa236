// Gives Node the IndexedDB globals (indexedDB, IDBKeyRange) the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { deleteDB } from 'idb';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../src/core/data/tokenizer';
import { isUserError } from '../../src/core/errors';
import { buildModel, loadWeightsFromSafetensors, parseModelConfigText } from '../../src/core/models/index';
import { bytesSource, type ByteSource } from '../../src/core/safetensors/index';
import {
  checkDatasetSize,
  DATASET_LIMIT_BYTES,
  deleteDataset,
  getDataset,
  listDatasets,
  storeDataset,
  storedDatasetSource,
  sweepUnfinishedDatasets,
} from '../../src/storage/datasets';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb } from '../../src/storage/db';
import { importModel } from '../../src/storage/import-model';
import { localLocks } from '../../src/storage/locks';
import { estimateStoredRun, importDatasetFile, previewStoredDataset, projectionsOf, readRunData, type DatasetContext } from '../../src/worker/datasets';
import type { Progress } from '../../src/worker/protocol';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

let db: LoraLabDb;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
});

afterEach(async () => {
  await closeDatabase();
});

/** Bytes whose every position is distinguishable, so a slice put back in the wrong place shows. */
function patterned(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + (i >> 8)) & 0xff;
  return out;
}

async function expectNothingStored(): Promise<void> {
  expect(await db.count('datasets')).toBe(0);
  expect(await db.count('datasetChunks')).toBe(0);
}

/** A thrown UserError, for checking its subject and message. */
async function userErrorOf(promise: Promise<unknown>): Promise<{ subject: string; message: string }> {
  try {
    await promise;
  } catch (e) {
    if (isUserError(e)) return { subject: e.subject, message: e.message };
    throw e;
  }
  throw new Error('expected a UserError, but the call succeeded');
}

describe('dataset storage', () => {
  it('stores a file in slices and reads back every range exactly, across slice boundaries', async () => {
    const bytes = patterned(1000);
    const stored = await storeDataset(db, bytesSource('notes.txt', bytes), { name: 'notes.txt', format: 'text', chunkBytes: 64 });
    expect(stored.status).toBe('ready');
    expect(stored.chunkCount).toBe(16); // ceil(1000 / 64)
    expect(await db.count('datasetChunks')).toBe(16);
    expect((await listDatasets(db)).map((d) => d.id)).toEqual([stored.id]);

    const source = storedDatasetSource(db, stored);
    expect(source.name).toBe('notes.txt');
    expect(source.size).toBe(1000);
    for (const [begin, end] of [[0, 1000], [0, 64], [63, 65], [100, 900], [999, 1000], [500, 500], [640, 1000]] as const) {
      expect(Array.from(await source.read(begin, end))).toEqual(Array.from(bytes.subarray(begin, end)));
    }
    await expect(source.read(10, 1001)).rejects.toThrow(RangeError);
  });

  it('lists newest first and deletes a dataset with all its slices', async () => {
    const a = await storeDataset(db, bytesSource('a.txt', patterned(10)), { name: 'a.txt', format: 'text', chunkBytes: 4 });
    await new Promise((r) => setTimeout(r, 5));
    const b = await storeDataset(db, bytesSource('b.txt', patterned(10)), { name: 'b.txt', format: 'text', chunkBytes: 4 });
    expect((await listDatasets(db)).map((d) => d.name)).toEqual(['b.txt', 'a.txt']);
    await deleteDataset(db, b.id);
    expect((await listDatasets(db)).map((d) => d.name)).toEqual(['a.txt']);
    expect(await db.count('datasetChunks')).toBe(3); // a's ceil(10 / 4) slices only
    expect(await getDataset(db, b.id)).toBeUndefined();
    expect(await getDataset(db, a.id)).toBeDefined();
  });

  it('a full disk half-way leaves nothing behind and says so', async () => {
    let puts = 0;
    const failing = new Proxy(db, {
      get(target, prop) {
        if (prop === 'put') {
          return (store: 'datasets' | 'datasetChunks', value: never) => {
            if (store === 'datasetChunks' && ++puts === 3) return Promise.reject(new DOMException('The quota has been exceeded.', 'QuotaExceededError'));
            return target.put(store, value);
          };
        }
        const value: unknown = Reflect.get(target, prop);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const error = await userErrorOf(storeDataset(failing, bytesSource('big.txt', patterned(100)), { name: 'big.txt', format: 'text', chunkBytes: 10 }));
    expect(error.subject).toBe('big.txt');
    expect(error.message).toMatch(/does not fit in this browser's storage/);
    await expectNothingStored();
  });

  it('a file larger than the free space is refused before anything is written', async () => {
    const error = await userErrorOf(storeDataset(db, bytesSource('big.txt', patterned(100)), { name: 'big.txt', format: 'text', freeBytes: 50 }));
    expect(error.message).toMatch(/does not fit/);
    await expectNothingStored();
  });

  it('a cancelled import leaves nothing behind', async () => {
    const controller = new AbortController();
    const source: ByteSource = {
      name: 'slow.txt',
      size: 100,
      async read(begin, end) {
        if (begin >= 30) controller.abort(new DOMException('Cancelled', 'AbortError'));
        return patterned(100).subarray(begin, end);
      },
    };
    await expect(storeDataset(db, source, { name: 'slow.txt', format: 'text', chunkBytes: 10, signal: controller.signal })).rejects.toThrow(/Cancelled/);
    await expectNothingStored();
  });

  it('sweeps imports a crash left half-way, and keeps finished ones', async () => {
    const kept = await storeDataset(db, bytesSource('kept.txt', patterned(20)), { name: 'kept.txt', format: 'text', chunkBytes: 8 });
    await db.put('datasets', { ...kept, id: 'crashed', status: 'importing' });
    await db.put('datasetChunks', { datasetId: 'crashed', index: 0, bytes: new ArrayBuffer(8) });
    expect((await listDatasets(db)).map((d) => d.id)).toEqual([kept.id]); // never listed while importing
    // A crash leaves no lock behind: a fresh lock set sees nothing held.
    expect(await sweepUnfinishedDatasets(db, localLocks())).toBe(1);
    expect(await db.count('datasets')).toBe(1);
    expect(await db.count('datasetChunks')).toBe(3);
  });

  it('a missing slice (storage evicted) is reported as damage to re-import, not a crash', async () => {
    const stored = await storeDataset(db, bytesSource('x.txt', patterned(30)), { name: 'x.txt', format: 'text', chunkBytes: 10 });
    await db.delete('datasetChunks', [stored.id, 1]);
    const error = await userErrorOf(storedDatasetSource(db, stored).read(0, 30));
    expect(error.message).toMatch(/x\.txt: is damaged.*slice 2 of 3/);
  });

  it('refuses 2 GB files (decimal or binary) before reading a byte', async () => {
    expect(() => checkDatasetSize('big.jsonl', 2e9)).toThrow(/big\.jsonl: is 2\.00 GB; LoRA Lab takes datasets under 2 GB/);
    expect(() => checkDatasetSize('big.jsonl', 2 ** 31)).toThrow(/is 2\.15 GB/);
    expect(() => checkDatasetSize('ok.jsonl', DATASET_LIMIT_BYTES - 1)).not.toThrow();
    const neverRead: ByteSource = { name: 'huge.bin', size: 2 ** 31, read: () => Promise.reject(new Error('must not be read')) };
    await expect(storeDataset(db, neverRead, { name: 'huge.bin', format: 'bin' })).rejects.toThrow(/under 2 GB/);
    await expectNothingStored();
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The worker's dataset requests, run in Node on the same code (IndexedDB faked, Files from Node's own File).

/** tiny-gpt2's byte-level tokenizer: id = UTF-8 byte, 256 = <|endoftext|>. Written out here, not taken from the app. */
const EOS = 256;
const bytesOf = (text: string) => [...new TextEncoder().encode(text)];

function modelFolder(dir: string): ByteSource[] {
  return readdirSync(join(FIXTURES, dir)).map((name) => bytesSource(`${dir}/${name}`, new Uint8Array(readFileSync(join(FIXTURES, dir, name)))));
}

function context(): DatasetContext & { phases: Set<string> } {
  const phases = new Set<string>();
  return { signal: new AbortController().signal, progress: (p: Progress) => phases.add(p.phase.replace(/ .*/, '')), phases };
}

const chatLine = (user: string, assistant: string) =>
  JSON.stringify({ messages: [{ role: 'user', content: user }, { role: 'assistant', content: assistant }] });

describe('dataset requests in the worker', () => {
  let modelId: string;
  beforeEach(async () => {
    modelId = (await importModel(db, modelFolder('tiny-gpt2'), { name: 'tiny-gpt2' })).id;
  });

  it('checks and stores a chat file; the preview and training read the same tokens and masks', async () => {
    const text = [chatLine('Hi?', 'Hello.'), chatLine('Hi?', 'Hello.'), chatLine('Who?', 'Me.')].join('\n') + '\n';
    const ctx = context();
    const { dataset } = await importDatasetFile(db, { modelId, file: new File([text], 'chat.jsonl'), meta: null }, ctx);
    expect(ctx.phases).toEqual(new Set(['Checking', 'Storing']));
    expect(dataset).toMatchObject({ name: 'chat.jsonl', format: 'jsonl', sizeBytes: new TextEncoder().encode(text).length, status: 'ready' });
    expect(dataset.summary).toMatchObject({ kind: 'chat', records: 3, modelName: 'tiny-gpt2' });
    expect((await listDatasets(db)).map((d) => d.id)).toEqual([dataset.id]);

    const preview = await previewStoredDataset(db, { modelId, datasetId: dataset.id, seqLen: 16, count: 2 }, context());
    expect(preview.kind).toBe('chat');
    expect(preview.records.map((r) => r.id)).toEqual(['line 1', 'line 2']);
    // The fallback layout: "<|user|>\nHi?<eos>\n<|assistant|>\n" read only, "Hello.<eos>" trained, "\n" read only,
    // then the separator that packing adds (trained).
    const first = preview.records[0]!;
    const masked = first.tokens.filter((t) => !t.trained).map((t) => t.text).join('');
    const trained = first.tokens.filter((t) => t.trained).map((t) => t.text).join('');
    expect(masked).toBe('<|user|>\nHi?<|endoftext|>\n<|assistant|>\n\n');
    expect(trained).toBe('Hello.<|endoftext|><|endoftext|>');
    const s = preview.stats;
    const perRecord = (u: string, a: string) => bytesOf(`<|user|>\n${u}`).length + 1 + bytesOf('\n<|assistant|>\n').length + bytesOf(a).length + 1 + 1;
    expect(s.records).toBe(3);
    expect(s.tokens).toBe(2 * perRecord('Hi?', 'Hello.') + perRecord('Who?', 'Me.'));
    expect(s.streamTokens).toBe(s.tokens + 3);
    expect(s.trainedTokens).toBe(2 * (6 + 1 + 1) + (3 + 1 + 1));
    expect(s.windows).toBe(Math.floor((s.streamTokens - 1) / 16));
    expect(s.longestRecord).toEqual({ id: 'line 1', tokens: perRecord('Hi?', 'Hello.') });
    expect(s.warnings.map((w) => w.code).sort()).toEqual(['duplicates', 'too_long']);

    // Training reads the stored dataset to the same documents as the picked file.
    const stored = (await db.get('models', modelId))!;
    const tokenizer = loadTokenizer(stored.files.tokenizer, stored.files.tokenizerConfig);
    const fromStore = await readRunData(db, { datasetId: dataset.id }, stored, tokenizer, context());
    const fromFile = await readRunData(db, new File([text], 'chat.jsonl'), stored, tokenizer, context());
    expect(fromStore.docs.map((d) => [d.ids, Array.from(d.lossMask ?? [])])).toEqual(fromFile.docs.map((d) => [d.ids, Array.from(d.lossMask ?? [])]));
    expect(fromStore.docs[0]!.ids).toEqual([...bytesOf('<|user|>\nHi?'), EOS, ...bytesOf('\n<|assistant|>\nHello.'), EOS, ...bytesOf('\n')]);
  });

  // Each rule of src/core/data: the message names the file and where, and nothing is stored.
  const bad: [string, string | Uint8Array<ArrayBuffer>, RegExp][] = [
    ['chat.jsonl', `${chatLine('a', 'b')}\n{"messages": [\n`, /chat\.jsonl: line 2 is not JSON/],
    ['notes.txt', new Uint8Array([0x61, 0x0a, 0x62, 0xff, 0x0a]), /notes\.txt: line 2 is not valid UTF-8/],
    ['table.csv', 'name,age\nann,3\n', /table\.csv: has no column LoRA Lab can train on/],
    ['empty.jsonl', '', /empty\.jsonl: is empty/],
    ['odd.bin', new Uint8Array([1, 0, 2]), /odd\.bin: is 3 bytes, which is not a whole number of uint16 token ids/],
    ['vocab.bin', new Uint8Array([1, 0, 0x2c, 0x01]), /vocab\.bin: token 1 .*is id 300, but the tokenizer has only 257 ids/],
    ['data.parquet', 'PAR1', /data\.parquet: is not a dataset format/],
  ];
  for (const [name, content, message] of bad) {
    it(`refuses ${name} with a message naming it, and stores nothing`, async () => {
      const error = await userErrorOf(importDatasetFile(db, { modelId, file: new File([content], name), meta: null }, context()));
      expect(error.subject).toBe(name);
      expect(error.message).toMatch(message);
      await expectNothingStored();
    });
  }

  it('a .bin is read with the width its .meta.json gives, which is stored with it', async () => {
    const ids = new Uint8Array(new Uint32Array([72, 105, 256, 33]).buffer);
    const meta = new File(['{"dtype": "uint32"}'], 'ids.meta.json');
    const { dataset } = await importDatasetFile(db, { modelId, file: new File([ids], 'ids.bin'), meta }, context());
    expect(dataset.metaJson).toBe('{"dtype": "uint32"}');
    expect(dataset.summary).toMatchObject({ kind: 'tokens', tokens: 4 });
    // The meta travels with the stored bytes: once two other imports have pushed the tokenized copy out of the
    // worker's cache, the preview reads storage again and still reads uint32 ids.
    for (const name of ['a.txt', 'b.txt']) await importDatasetFile(db, { modelId, file: new File(['some text'], name), meta: null }, context());
    const preview = await previewStoredDataset(db, { modelId, datasetId: dataset.id, seqLen: 2, count: 1 }, context());
    expect(preview.records[0]!.tokens.flatMap((t) => t.ids).slice(0, 4)).toEqual([72, 105, 256, 33]);
  });

  it('a 2 GB file is refused before it is read', async () => {
    const huge = { name: 'huge.jsonl', size: 2 ** 31, text: () => Promise.reject(new Error('must not be read')), slice: () => { throw new Error('must not be read'); } } as unknown as File;
    const error = await userErrorOf(importDatasetFile(db, { modelId, file: huge, meta: null }, context()));
    expect(error.message).toMatch(/huge\.jsonl: is 2\.15 GB/);
    await expectNothingStored();
  });

  it('without a stored model, nothing is read', async () => {
    const error = await userErrorOf(importDatasetFile(db, { modelId: 'gone', file: new File(['x'], 'a.txt'), meta: null }, context()));
    expect(error.subject).toBe('model');
  });

  it('the estimate counts the training stream after val_split, and the adapter from the config alone', async () => {
    const lines = Array.from({ length: 10 }, (_, i) => JSON.stringify({ text: `record number ${i}` })).join('\n');
    const { dataset } = await importDatasetFile(db, { modelId, file: new File([lines], 'text.jsonl'), meta: null }, context());
    const base = { modelId, trainDatasetId: dataset.id, valDatasetId: null, limits: null, deviceMemoryBytes: null, tokensPerSecond: null };
    const yaml = (extra: string) => `lora_rank: 8\ntarget_modules: [c_attn]\nseq_len: 16\nbatch_size: 2\nepochs: 1\n${extra}`;
    const all = await estimateStoredRun(db, { ...base, configYaml: yaml('val_split: 0') }, context());
    const stream = Array.from({ length: 10 }, (_, i) => bytesOf(`record number ${i}`).length + 1).reduce((a, b) => a + b);
    expect(all.trainTokens).toBe(stream);
    expect(all.estimate.trainableParameters).toBe(2 * 8 * (64 + 192)); // c_attn 64 → 192, two layers
    expect(all.estimate.stepsPerEpoch).toBe(Math.ceil(Math.floor((stream - 1) / 16) / 2));
    // 20% held out: two of the ten records leave the training stream.
    const held = await estimateStoredRun(db, { ...base, configYaml: yaml('val_split: 0.2\nseed: 3') }, context());
    expect(stream - held.trainTokens!).toBeGreaterThanOrEqual(2 * 16);
    expect(stream - held.trainTokens!).toBeLessThanOrEqual(2 * 17);
    // A validation dataset replaces the split.
    const withVal = await estimateStoredRun(db, { ...base, valDatasetId: dataset.id, configYaml: yaml('val_split: 0.2') }, context());
    expect(withVal.trainTokens).toBe(stream);
    // Without data: the adapter and memory, no steps.
    const noData = await estimateStoredRun(db, { ...base, trainDatasetId: null, configYaml: yaml('') }, context());
    expect(noData.trainTokens).toBeNull();
    expect(noData.estimate.totalSteps).toBe(0);
    // A target that does not exist is named, with the modules the model has.
    const error = await userErrorOf(estimateStoredRun(db, { ...base, configYaml: 'target_modules: [q_proj]' }, context()));
    expect(error.subject).toBe('target_modules');
    expect(error.message).toMatch(/c_attn, c_proj, c_fc/);
  });
});

describe('the projections an estimate sees, from the config alone', () => {
  for (const dir of ['tiny-gpt2', 'tiny-llama']) {
    it(`match the loaded ${dir}'s own linears (path, in, out, in module order)`, async () => {
      const config = parseModelConfigText(readFileSync(join(FIXTURES, dir, 'config.json'), 'utf8'));
      const model = buildModel(config, await loadWeightsFromSafetensors(config, [bytesSource('model.safetensors', new Uint8Array(readFileSync(join(FIXTURES, dir, 'model.safetensors'))))]));
      expect(projectionsOf(config)).toEqual(model.linears.map((l) => ({ path: l.path, inFeatures: l.inFeatures, outFeatures: l.outFeatures })));
      model.dispose();
    });
  }
});
