// Gives Node the IndexedDB globals (indexedDB, IDBKeyRange) the storage layer uses in the browser.
import { FLOAT32_PLACEMENT } from '../../src/core/weights/hold';
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { deleteDB } from 'idb';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isUserError, UserError } from '../../src/core/errors';
import { bytesSource, writeSafetensors, type ByteSource, type TensorToWrite } from '../../src/core/safetensors/index';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb, type StoredModel } from '../../src/storage/db';
import { importModel, type ImportOptions } from '../../src/storage/import-model';
import { localLocks } from '../../src/storage/locks';
import { loadStoredModel } from '../../src/storage/model-weights';
import { deleteModel, getModel, listModels, readTensorBytes, sweepUnfinishedImports } from '../../src/storage/models';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const TOL = 1e-4;

// ---------------------------------------------------------------------------------------------------------------
// Fixture helpers. The safetensors layout is parsed here by hand rather than with the library's readHeader, so the
// byte-for-byte comparisons below do not trust the code under test to tell them where each tensor lies.

interface RawEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

interface RawFile {
  /** Header JSON, tensors only (no __metadata__). */
  readonly entries: Record<string, RawEntry>;
  readonly dataStart: number;
  readonly bytes: Uint8Array;
}

function parseRaw(bytes: Uint8Array): RawFile {
  const headerLength = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const json = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<string, unknown>;
  delete json['__metadata__'];
  return { entries: json as unknown as Record<string, RawEntry>, dataStart: 8 + headerLength, bytes };
}

/** The absolute bytes of one tensor in a parsed file. */
function rawTensorBytes(file: RawFile, name: string): Uint8Array {
  const entry = file.entries[name];
  if (!entry) throw new Error(`fixture has no tensor ${name}`);
  return file.bytes.subarray(file.dataStart + entry.data_offsets[0], file.dataStart + entry.data_offsets[1]);
}

/** Assembles a safetensors file from a (possibly tampered) header and a data section, as the format lays it out. */
function assemble(entries: Record<string, unknown>, data: Uint8Array): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(entries));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** The header of `bytes` changed by `edit`, with the data section untouched. */
function tamperHeader(bytes: Uint8Array, edit: (entries: Record<string, RawEntry>) => void): Uint8Array {
  const raw = parseRaw(bytes);
  const entries = structuredClone(raw.entries);
  edit(entries);
  return assemble(entries, bytes.subarray(raw.dataStart));
}

/** Every tensor of an F32 fixture file as float32 values, for re-writing it with writeSafetensors. */
function f32Tensors(bytes: Uint8Array): TensorToWrite[] {
  const raw = parseRaw(bytes);
  return Object.entries(raw.entries).map(([name, e]) => {
    expect(e.dtype).toBe('F32');
    // slice(): a fresh, 4-byte aligned copy.
    return { name, shape: e.shape, data: new Float32Array(rawTensorBytes(raw, name).slice().buffer) };
  });
}

type FolderEdit = Record<string, Uint8Array | string | null>;

/**
 * A fixture folder as the file picker hands it over: every file, named by its path relative to the chosen folder's
 * parent (like File.webkitRelativePath). `edit` replaces files (bytes or text), adds new ones, or drops them (null).
 */
function folder(dir: string, edit: FolderEdit = {}): ByteSource[] {
  const files = new Map<string, Uint8Array>();
  for (const name of readdirSync(join(FIXTURES, dir))) files.set(name, new Uint8Array(readFileSync(join(FIXTURES, dir, name))));
  for (const [name, content] of Object.entries(edit)) {
    if (content === null) files.delete(name);
    else files.set(name, typeof content === 'string' ? new TextEncoder().encode(content) : content);
  }
  return [...files].map(([name, bytes]) => bytesSource(`${dir}/${name}`, bytes));
}

const fixtureBytes = (dir: string, file = 'model.safetensors'): Uint8Array => new Uint8Array(readFileSync(join(FIXTURES, dir, file)));
const fixtureText = (dir: string, file: string): string => readFileSync(join(FIXTURES, dir, file), 'utf8');

interface Expected {
  tokens: number[];
  logits_base: number[][];
}
const expectedOf = (name: string): Expected => JSON.parse(readFileSync(join(FIXTURES, `${name}.expected.json`), 'utf8')) as Expected;

/** Tensors the importer must drop: rebuilt at load time (HF discards them too), so they are not parameters. */
function isIgnoredBuffer(name: string, tiedEmbeddings: boolean): boolean {
  return /\.attn\.(bias|masked_bias)$/.test(name) || /\.rotary_emb\.inv_freq$/.test(name) || (tiedEmbeddings && name === 'lm_head.weight');
}

// ---------------------------------------------------------------------------------------------------------------
// Database helpers.

let db: LoraLabDb;

async function freshDatabase(): Promise<void> {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
}

/** Nothing of any import is left: no record in any status, no chunk. */
async function expectEmpty(): Promise<void> {
  expect(await db.count('models')).toBe(0);
  expect(await db.count('tensors')).toBe(0);
}

/**
 * The same database, except that the `nth` put into 'tensors' (1-based) throws what `fail` returns, as a browser
 * does when the origin's quota runs out half-way. Counts every put, so a test can tell that nothing was written.
 */
function instrumented(real: LoraLabDb, nth = Infinity, fail = () => new DOMException('The quota has been exceeded.', 'QuotaExceededError')) {
  const counts = { models: 0, tensors: 0 };
  const wrapped = new Proxy(real, {
    get(target, prop) {
      if (prop === 'put') {
        return (store: 'models' | 'tensors', value: never) => {
          counts[store]++;
          if (store === 'tensors' && counts.tensors === nth) return Promise.reject(fail());
          return target.put(store, value);
        };
      }
      const value: unknown = Reflect.get(target, prop);
      // idb's methods find the underlying IDBDatabase through `this`, so they must stay bound to idb's own proxy.
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { db: wrapped, counts };
}

async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  throw new Error('expected a rejection, but the promise resolved');
}

async function userErrorOf(promise: Promise<unknown>): Promise<UserError> {
  const e = await rejection(promise);
  if (!isUserError(e)) throw e;
  return e;
}

const importFolder = (files: ByteSource[], options: Partial<ImportOptions> = {}, into: LoraLabDb = db) =>
  importModel(into, files, { name: 'test model', ...options });

async function storedLogits(stored: StoredModel, tokens: number[]): Promise<Float32Array> {
  const { model } = await loadStoredModel(db, stored, FLOAT32_PLACEMENT);
  try {
    const ids = tf.tensor2d([tokens], [1, tokens.length], 'int32');
    const out = model.forward(ids);
    const values = (await out.data()) as Float32Array;
    ids.dispose();
    out.dispose();
    return values;
  } finally {
    model.dispose();
  }
}

/**
 * Byte equality that fails fast with the first differing offset. toEqual on a 64 KB array would build a diff of
 * every element when it fails, which takes minutes and blocks the test timeout.
 */
function expectSameBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  expect(actual.findIndex((b, i) => b !== expected[i]), `${what}: first differing byte`).toBe(-1);
}

function maxAbsDiff(actual: Float32Array, expected: number[][]): number {
  const flat = expected.flat();
  expect(actual.length).toBe(flat.length);
  let worst = 0;
  for (let i = 0; i < flat.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - flat[i]!));
  return worst;
}

/** Every chunk of one model, keyed by tensor, for checking how tensors were sliced. */
async function chunksOf(modelId: string): Promise<Map<string, ArrayBuffer[]>> {
  const byTensor = new Map<string, ArrayBuffer[]>();
  for (const c of await db.getAllFromIndex('tensors', 'byModel', modelId)) {
    const list = byTensor.get(c.tensor) ?? [];
    list[c.index] = c.bytes;
    byTensor.set(c.tensor, list);
  }
  return byTensor;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

beforeEach(freshDatabase);

afterEach(async () => {
  // Every test must leave tfjs as it found it: a leak here is a leak in loadStoredModel or the model.
  expect(tf.memory().numTensors).toBe(0);
});

// ---------------------------------------------------------------------------------------------------------------

describe('importing the reference models', () => {
  const cases = [
    { dir: 'tiny-gpt2', arch: 'gpt2', dtype: 'F32', f32: 'tiny-gpt2' },
    { dir: 'tiny-llama', arch: 'llama', dtype: 'F32', f32: 'tiny-llama' },
    { dir: 'tiny-gpt2-f16', arch: 'gpt2', dtype: 'F16', f32: 'tiny-gpt2' },
    { dir: 'tiny-gpt2-bf16', arch: 'gpt2', dtype: 'BF16', f32: 'tiny-gpt2' },
    { dir: 'tiny-llama-f16', arch: 'llama', dtype: 'F16', f32: 'tiny-llama' },
    { dir: 'tiny-llama-bf16', arch: 'llama', dtype: 'BF16', f32: 'tiny-llama' },
  ] as const;

  it.each(cases)('$dir: listed ready, bytes stored verbatim, logits match the reference', async ({ dir, arch, dtype, f32 }) => {
    const progress: { doneBytes: number; totalBytes: number }[] = [];
    const before = Date.now();
    const imported = await importFolder(folder(dir), { name: `My ${dir}`, onProgress: (p) => progress.push(p) });

    const file = parseRaw(fixtureBytes(dir));
    const tied = (JSON.parse(fixtureText(dir, 'config.json')) as { tie_word_embeddings?: boolean }).tie_word_embeddings ?? true;
    const kept = Object.keys(file.entries).filter((n) => !isIgnoredBuffer(n, tied));
    const params = kept.reduce((sum, n) => sum + file.entries[n]!.shape.reduce((a, b) => a * b, 1), 0);
    const bytes = kept.reduce((sum, n) => sum + rawTensorBytes(file, n).length, 0);

    const listed = await listModels(db);
    expect(listed).toHaveLength(1);
    const stored = listed[0]!;
    expect(stored).toEqual(imported);
    expect(stored).toMatchObject({ name: `My ${dir}`, status: 'ready', arch, parameterCount: params, sizeBytes: bytes });
    expect(stored.importedAt).toBeGreaterThanOrEqual(before);
    expect(stored.files.config).toBe(fixtureText(dir, 'config.json'));
    expect(stored.files.tokenizer).toBe(fixtureText(dir, 'tokenizer.json'));
    expect(stored.files.tokenizerConfig).toBe(fixtureText(dir, 'tokenizer_config.json'));
    expect(await getModel(db, stored.id)).toEqual(stored);

    // Half-precision stays half precision on disk: the point of storing the original dtype.
    if (dtype !== 'F32') {
      const full = parseRaw(fixtureBytes(f32));
      const fullBytes = Object.keys(full.entries).reduce((sum, n) => sum + rawTensorBytes(full, n).length, 0);
      expect(stored.sizeBytes * 2).toBe(fullBytes);
    }

    expect(stored.tensors.map((t) => t.name).sort()).toEqual([...kept].sort());
    for (const info of stored.tensors) {
      const entry = file.entries[info.name]!;
      expect(info.dtype).toBe(dtype);
      expect(info.shape).toEqual(entry.shape);
      expect(info.byteLength).toBe(entry.data_offsets[1] - entry.data_offsets[0]);
      // Far below the default slice size, so one chunk each.
      expect(info.chunkCount).toBe(1);
      expectSameBytes(await readTensorBytes(db, stored.id, info), rawTensorBytes(file, info.name), info.name);
    }
    expect(await db.count('tensors')).toBe(stored.tensors.length);

    expect(progress[0]).toEqual({ doneBytes: 0, totalBytes: bytes });
    expect(progress.at(-1)).toEqual({ doneBytes: bytes, totalBytes: bytes });
    for (let i = 1; i < progress.length; i++) expect(progress[i]!.doneBytes).toBeGreaterThan(progress[i - 1]!.doneBytes);

    const expected = expectedOf(dir);
    expect(maxAbsDiff(await storedLogits(stored, expected.tokens), expected.logits_base)).toBeLessThan(TOL);
  });

  it('accepts bare file names as well as folder paths', async () => {
    const files = folder('tiny-gpt2').map((f) => ({ ...f, name: f.name.slice(f.name.lastIndexOf('/') + 1) }));
    const stored = await importFolder(files);
    expect(stored.status).toBe('ready');
    expect(await db.count('tensors')).toBe(stored.tensors.length);
  });

  it('drops buffers and the tied head duplicate, and stores GPT2Model names under canonical ones', async () => {
    // As saved from GPT2Model with a transformers version that still wrote the causal-mask buffers: no
    // `transformer.` prefix, per-layer attn.bias / attn.masked_bias, and a copy of the tied head.
    const tensors = f32Tensors(fixtureBytes('tiny-gpt2')).map((t) => ({ ...t, name: t.name.replace(/^transformer\./, '') }));
    const wte = tensors.find((t) => t.name === 'wte.weight')!;
    const mask = new Float32Array(128 * 128).map((_, i) => (i % 128 <= Math.floor(i / 128) ? 1 : 0));
    const buffers: TensorToWrite[] = [
      { name: 'h.0.attn.bias', shape: [1, 1, 128, 128], data: mask },
      { name: 'h.1.attn.bias', shape: [1, 1, 128, 128], data: mask },
      { name: 'h.0.attn.masked_bias', shape: [], data: new Float32Array([-1e4]) },
      { name: 'lm_head.weight', shape: wte.shape, data: wte.data },
    ];
    const weights = writeSafetensors([...tensors, ...buffers]);
    const stored = await importFolder(folder('tiny-gpt2', { 'model.safetensors': weights }));

    const params = tensors.reduce((sum, t) => sum + t.data.length, 0);
    expect(stored.parameterCount).toBe(params);
    expect(stored.sizeBytes).toBe(params * 4);
    expect(stored.tensors.map((t) => t.name).sort()).toEqual(tensors.map((t) => `transformer.${t.name}`).sort());
    expect(await db.count('tensors')).toBe(tensors.length);

    const expected = expectedOf('tiny-gpt2');
    expect(maxAbsDiff(await storedLogits(stored, expected.tokens), expected.logits_base)).toBeLessThan(TOL);
  });

  it('drops the RoPE frequency buffers of older Llama checkpoints', async () => {
    const tensors = f32Tensors(fixtureBytes('tiny-llama'));
    const invFreq = new Float32Array(8).map((_, i) => 1 / 10000 ** ((2 * i) / 16));
    const withBuffers = [
      ...tensors,
      { name: 'model.layers.0.self_attn.rotary_emb.inv_freq', shape: [8], data: invFreq },
      { name: 'model.layers.1.self_attn.rotary_emb.inv_freq', shape: [8], data: invFreq },
    ];
    const stored = await importFolder(folder('tiny-llama', { 'model.safetensors': writeSafetensors(withBuffers) }));
    expect(stored.parameterCount).toBe(tensors.reduce((sum, t) => sum + t.data.length, 0));
    expect(stored.tensors.some((t) => t.name.includes('inv_freq'))).toBe(false);
    const expected = expectedOf('tiny-llama');
    expect(maxAbsDiff(await storedLogits(stored, expected.tokens), expected.logits_base)).toBeLessThan(TOL);
  });
});

describe('chunking', () => {
  // Odd on purpose: slices then end mid-element, so reassembly cannot get away with element-wise luck.
  const CHUNK = 1001;

  it.each(['tiny-llama', 'tiny-gpt2-bf16'])('%s: many slices per tensor reassemble byte-exactly', async (dir) => {
    const stored = await importFolder(folder(dir), { chunkBytes: CHUNK });
    const file = parseRaw(fixtureBytes(dir));
    const chunks = await chunksOf(stored.id);

    let total = 0;
    let multi = 0;
    for (const info of stored.tensors) {
      expect(info.chunkCount).toBe(Math.ceil(info.byteLength / CHUNK));
      if (info.chunkCount > 2) multi++;
      const stored_ = chunks.get(info.name)!;
      expect(stored_).toHaveLength(info.chunkCount);
      // Every slice but the last is full; together they are exactly the tensor.
      stored_.forEach((c, i) => expect(c.byteLength).toBe(i < info.chunkCount - 1 ? CHUNK : info.byteLength - CHUNK * (info.chunkCount - 1)));
      const original = rawTensorBytes(file, info.name);
      const glued = new Uint8Array(info.byteLength);
      let at = 0;
      for (const c of stored_) {
        glued.set(new Uint8Array(c), at);
        at += c.byteLength;
      }
      expectSameBytes(glued, original, `${info.name} (slices)`);
      expectSameBytes(await readTensorBytes(db, stored.id, info), original, info.name);
      total += info.chunkCount;
    }
    // The embedding alone is 257*64*4 = 65792 bytes: dozens of slices.
    expect(multi).toBeGreaterThan(5);
    expect(await db.count('tensors')).toBe(total);

    const expected = expectedOf(dir);
    expect(maxAbsDiff(await storedLogits(stored, expected.tokens), expected.logits_base)).toBeLessThan(TOL);
  });

  it('a slice size that divides a tensor exactly leaves no empty trailing slice', async () => {
    const stored = await importFolder(folder('tiny-gpt2'), { chunkBytes: 256 });
    const bias = stored.tensors.find((t) => t.name === 'transformer.ln_f.bias')!;
    // [64] float32 = 256 bytes: exactly one slice.
    expect(bias.chunkCount).toBe(1);
    const wte = stored.tensors.find((t) => t.name === 'transformer.wte.weight')!;
    expect(wte.chunkCount).toBe((257 * 64 * 4) / 256);
    expect((await chunksOf(stored.id)).get(wte.name)!.every((c) => c.byteLength === 256)).toBe(true);
  });

  it('rejects a nonsensical slice size before touching anything', async () => {
    for (const chunkBytes of [0, -1, 1.5, Number.NaN]) {
      await expect(importFolder(folder('tiny-gpt2'), { chunkBytes })).rejects.toThrow(RangeError);
    }
    await expectEmpty();
  });

  it('readTensorBytes refuses a tensor with a missing slice instead of returning short data', async () => {
    const stored = await importFolder(folder('tiny-gpt2'), { chunkBytes: 4096 });
    const wte = stored.tensors.find((t) => t.name === 'transformer.wte.weight')!;
    await db.delete('tensors', [stored.id, wte.name, 3]);
    await expect(readTensorBytes(db, stored.id, wte)).rejects.toThrow(`has ${wte.chunkCount - 1} of ${wte.chunkCount} chunks`);
  });
});

describe('sharded checkpoints', () => {
  const SHARD1 = 'model-00001-of-00002.safetensors';
  const SHARD2 = 'model-00002-of-00002.safetensors';
  const INDEX = 'model.safetensors.index.json';
  const all = () => f32Tensors(fixtureBytes('tiny-llama'));
  // Embedding and layer 0 in the first shard; layer 1, the final norm and the head in the second.
  const inFirst = (name: string) => name === 'model.embed_tokens.weight' || name.startsWith('model.layers.0.');

  function shardedFolder(opts: { shard1?: TensorToWrite[]; shard2?: TensorToWrite[]; index?: unknown; drop?: string[] } = {}): ByteSource[] {
    const tensors = all();
    const shard1 = opts.shard1 ?? tensors.filter((t) => inFirst(t.name));
    const shard2 = opts.shard2 ?? tensors.filter((t) => !inFirst(t.name));
    const weightMap: Record<string, string> = {};
    for (const t of shard1) weightMap[t.name] = SHARD1;
    for (const t of shard2) weightMap[t.name] = SHARD2;
    const index = opts.index ?? { metadata: { total_size: tensors.reduce((s, t) => s + t.data.byteLength, 0) }, weight_map: weightMap };
    const edit: FolderEdit = {
      'model.safetensors': null,
      [SHARD1]: writeSafetensors(shard1),
      [SHARD2]: writeSafetensors(shard2),
      [INDEX]: JSON.stringify(index),
    };
    for (const name of opts.drop ?? []) edit[name] = null;
    return folder('tiny-llama', edit);
  }

  it('imports both shards; bytes and logits match the single-file model', async () => {
    const stored = await importFolder(shardedFolder(), { chunkBytes: 5000 });
    const file = parseRaw(fixtureBytes('tiny-llama'));
    expect(stored.tensors).toHaveLength(Object.keys(file.entries).length);
    expect(stored.sizeBytes).toBe(file.bytes.length - file.dataStart);
    for (const info of stored.tensors) {
      expectSameBytes(await readTensorBytes(db, stored.id, info), rawTensorBytes(file, info.name), info.name);
    }
    const expected = expectedOf('tiny-llama');
    expect(maxAbsDiff(await storedLogits(stored, expected.tokens), expected.logits_base)).toBeLessThan(TOL);
  });

  it('an index naming a shard that was not chosen names that shard', async () => {
    const e = await userErrorOf(importFolder(shardedFolder({ drop: [SHARD2] })));
    expect(e.subject).toBe(SHARD2);
    expect(e.message).toContain(INDEX);
    await expectEmpty();
  });

  it('an index without a weight_map is refused', async () => {
    const e = await userErrorOf(importFolder(shardedFolder({ index: { metadata: {} } })));
    expect(e.subject).toBe(`tiny-llama/${INDEX}`);
    expect(e.message).toContain('"weight_map"');
    await expectEmpty();
  });

  it('an index that is not JSON is refused', async () => {
    const files = shardedFolder().map((f) => (f.name.endsWith(INDEX) ? bytesSource(f.name, new TextEncoder().encode('{"weight_map": ')) : f));
    const e = await userErrorOf(importFolder(files));
    expect(e.subject).toBe(`tiny-llama/${INDEX}`);
    expect(e.message).toContain('not valid JSON');
    await expectEmpty();
  });

  it('two shards holding the same tensor are refused, naming both', async () => {
    const tensors = all();
    const shard2 = [...tensors.filter((t) => !inFirst(t.name)), tensors.find((t) => t.name === 'model.embed_tokens.weight')!];
    const e = await userErrorOf(importFolder(shardedFolder({ shard2 })));
    expect(e.subject).toBe(`tiny-llama/${SHARD2}`);
    expect(e.message).toContain('model.embed_tokens.weight');
    expect(e.message).toContain(SHARD1);
    await expectEmpty();
  });

  it('a tensor missing from every shard is reported against the shards, not a model.safetensors that does not exist', async () => {
    const shard2 = all().filter((t) => !inFirst(t.name) && t.name !== 'lm_head.weight');
    const e = await userErrorOf(importFolder(shardedFolder({ shard2 })));
    expect(e.message).toContain('"lm_head.weight" is missing');
    expect(e.subject).toContain(SHARD1);
    expect(e.subject).toContain(SHARD2);
    await expectEmpty();
  });

  it('shards without their index are refused', async () => {
    const e = await userErrorOf(importFolder(shardedFolder({ drop: [INDEX] })));
    expect(e.subject).toBe(INDEX);
    expect(e.message).toContain('several files');
    await expectEmpty();
  });
});

describe('bad model folders leave nothing behind', () => {
  const GPT2 = 'tiny-gpt2/model.safetensors';
  const weights = () => fixtureBytes('tiny-gpt2');
  const gpt2Config = () => JSON.parse(fixtureText('tiny-gpt2', 'config.json')) as Record<string, unknown>;

  const cases: { what: string; edit: () => FolderEdit; subject: string; says: (string | RegExp)[] }[] = [
    {
      what: 'a truncated safetensors file',
      edit: () => ({ 'model.safetensors': weights().subarray(0, weights().length - 1000) }),
      subject: GPT2,
      says: ['transformer.wte.weight', 'truncated'],
    },
    {
      what: 'a header length beyond the end of the file',
      edit: () => {
        const bytes = weights().slice();
        new DataView(bytes.buffer).setBigUint64(0, BigInt(bytes.length), true);
        return { 'model.safetensors': bytes };
      },
      subject: GPT2,
      says: [/header says it is \d+ bytes long but the file has only \d+ bytes/],
    },
    {
      what: 'a file only a few bytes long',
      edit: () => ({ 'model.safetensors': new Uint8Array([1, 2, 3]) }),
      subject: GPT2,
      says: ['only 3 bytes long'],
    },
    {
      what: 'overlapping tensor offsets',
      edit: () => ({
        'model.safetensors': tamperHeader(weights(), (entries) => {
          const e = entries['transformer.h.0.ln_2.weight']!;
          e.data_offsets = [e.data_offsets[0] - 4, e.data_offsets[1] - 4];
        }),
      }),
      subject: GPT2,
      says: ['transformer.h.0.ln_2.weight', 'overlap'],
    },
    {
      what: 'a dtype that does not exist',
      edit: () => ({ 'model.safetensors': tamperHeader(weights(), (entries) => void (entries['transformer.ln_f.bias']!.dtype = 'Q4_K')) }),
      subject: GPT2,
      says: ['transformer.ln_f.bias', 'Q4_K', 'not a safetensors dtype'],
    },
    {
      what: 'a real but unsupported dtype',
      edit: () => ({ 'model.safetensors': tamperHeader(weights(), (entries) => void (entries['transformer.ln_f.bias']!.dtype = 'I8')) }),
      subject: GPT2,
      says: ['transformer.ln_f.bias', 'I8', 'not supported'],
    },
    {
      what: 'a tensor shape that disagrees with config.json',
      // Same byte count, transposed: only the comparison with config.json can catch it.
      edit: () => ({ 'model.safetensors': tamperHeader(weights(), (entries) => void (entries['transformer.h.1.attn.c_attn.weight']!.shape = [192, 64])) }),
      subject: GPT2,
      says: ['transformer.h.1.attn.c_attn.weight', '[192, 64]', 'config.json implies [64, 192]'],
    },
    {
      what: 'a config.json that disagrees with the weights',
      edit: () => ({ 'config.json': JSON.stringify({ ...gpt2Config(), vocab_size: 300 }) }),
      subject: GPT2,
      says: ['transformer.wte.weight', '[257, 64]', '[300, 64]'],
    },
    {
      what: 'a missing tensor',
      edit: () => ({ 'model.safetensors': writeSafetensors(f32Tensors(weights()).filter((t) => t.name !== 'transformer.h.1.mlp.c_fc.bias')) }),
      subject: GPT2,
      says: ['"transformer.h.1.mlp.c_fc.bias" is missing'],
    },
    {
      what: 'a tensor config.json does not call for',
      edit: () => ({ 'model.safetensors': writeSafetensors([...f32Tensors(weights()), { name: 'transformer.h.2.ln_1.weight', shape: [64], data: new Float32Array(64) }]) }),
      subject: GPT2,
      says: ['transformer.h.2.ln_1.weight'],
    },
    {
      what: 'an unsupported model_type',
      edit: () => ({ 'config.json': JSON.stringify({ ...gpt2Config(), model_type: 'bert' }) }),
      subject: 'config.json',
      says: ['"bert" is not supported'],
    },
    {
      what: 'a config.json that is not JSON',
      edit: () => ({ 'config.json': '{"model_type": "gpt2",' }),
      subject: 'config.json',
      says: ['is not valid JSON'],
    },
    {
      what: 'a config.json that is not text',
      edit: () => ({ 'config.json': new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) }),
      subject: 'tiny-gpt2/config.json',
      says: ['not UTF-8'],
    },
    {
      what: 'no config.json',
      edit: () => ({ 'config.json': null }),
      subject: 'config.json',
      says: ['missing'],
    },
    {
      what: 'no tokenizer.json',
      edit: () => ({ 'tokenizer.json': null }),
      subject: 'tokenizer.json',
      says: ['missing'],
    },
    {
      what: 'a tokenizer with more ids than the model has embeddings',
      edit: () => {
        const tokenizer = JSON.parse(fixtureText('tiny-gpt2', 'tokenizer.json')) as { added_tokens: Record<string, unknown>[] };
        tokenizer.added_tokens.push({ id: 300, content: '<|extra|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
        return { 'tokenizer.json': JSON.stringify(tokenizer) };
      },
      subject: 'tokenizer.json',
      says: ['ids up to 300', 'only 257 embeddings'],
    },
    {
      what: 'a tokenizer.json that is not a tokenizer',
      edit: () => ({ 'tokenizer.json': '{"version": "1.0"}' }),
      subject: 'tokenizer.json',
      says: ['no "model" section'],
    },
    {
      what: 'no .safetensors at all',
      edit: () => ({ 'model.safetensors': null, 'pytorch_model.bin': new Uint8Array(100) }),
      subject: 'model folder',
      says: ['no .safetensors'],
    },
  ];

  it.each(cases)('$what', async ({ edit, subject, says }) => {
    const probe = instrumented(db);
    const e = await userErrorOf(importFolder(folder('tiny-gpt2', edit()), {}, probe.db));
    expect(e).toBeInstanceOf(UserError);
    expect(e.subject).toBe(subject);
    expect(e.message.startsWith(`${subject}: `)).toBe(true);
    for (const s of says) expect(e.message).toMatch(s);
    // Every one of these is detectable from headers and small files alone, so nothing was even written.
    expect(probe.counts).toEqual({ models: 0, tensors: 0 });
    await expectEmpty();
  });

  it('a file that shrinks while its tensors are being copied: the slices already stored are removed', async () => {
    const bytes = weights();
    const half = bytes.length / 2;
    const good = folder('tiny-gpt2');
    // Headers read fine; data reads past the middle come back short, as a File that changed on disk would.
    const files = good.map((f): ByteSource =>
      f.name === GPT2 ? { name: f.name, size: f.size, read: async (b, e) => (await f.read(b, e)).subarray(0, b > half ? 1 : undefined) } : f,
    );
    const probe = instrumented(db);
    const e = await userErrorOf(importFolder(files, { chunkBytes: 2048 }, probe.db));
    expect(e.subject).toBe(GPT2);
    expect(e.message).toMatch(/ended early while reading tensor .*truncated/);
    // It really got half-way: plenty of slices were written, then all of them deleted.
    expect(probe.counts.tensors).toBeGreaterThan(50);
    await expectEmpty();
  });
});

describe('storage full', () => {
  it.each([1, 2, 40])('the browser refuses slice %i: a UserError about storage, and nothing kept', async (nth) => {
    const probe = instrumented(db, nth);
    const e = await userErrorOf(importFolder(folder('tiny-llama'), { chunkBytes: 4096 }, probe.db));
    expect(e.subject).toBe('browser storage');
    expect(e.message).toContain('is full');
    expect(e.message).toContain('Nothing was kept');
    expect(probe.counts.tensors).toBe(nth);
    await expectEmpty();

    // The failed import must not wedge the database: the same folder imports fine afterwards.
    const stored = await importFolder(folder('tiny-llama'));
    expect((await listModels(db)).map((m) => m.id)).toEqual([stored.id]);
  });

  it('a refusal of the model record itself reads as storage full too', async () => {
    const quota = () => new DOMException('The quota has been exceeded.', 'QuotaExceededError');
    const failing = new Proxy(db, {
      get(target, prop) {
        if (prop === 'put') return () => Promise.reject(quota());
        const value: unknown = Reflect.get(target, prop);
        return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
      },
    });
    const e = await userErrorOf(importFolder(folder('tiny-gpt2'), {}, failing));
    expect(e.subject).toBe('browser storage');
    await expectEmpty();
  });

  it('other write errors are passed on unchanged, still leaving nothing', async () => {
    const probe = instrumented(db, 3, () => new DOMException('disk on fire', 'UnknownError'));
    const e = await rejection(importFolder(folder('tiny-gpt2'), {}, probe.db));
    expect(isUserError(e)).toBe(false);
    expect((e as DOMException).name).toBe('UnknownError');
    await expectEmpty();
  });

  it('freeBytes smaller than the weights: refused before anything is written', async () => {
    const sizeBytes = fixtureBytes('tiny-gpt2').length - parseRaw(fixtureBytes('tiny-gpt2')).dataStart;
    const probe = instrumented(db);
    const e = await userErrorOf(importFolder(folder('tiny-gpt2'), { freeBytes: sizeBytes - 1 }, probe.db));
    expect(e.subject).toBe('browser storage');
    expect(e.message).toContain(`needs ${(sizeBytes / 1e6).toFixed(1)} MB`);
    expect(probe.counts).toEqual({ models: 0, tensors: 0 });
    await expectEmpty();

    // Exactly enough is enough.
    const stored = await importFolder(folder('tiny-gpt2'), { freeBytes: sizeBytes });
    expect(stored.sizeBytes).toBe(sizeBytes);
  });
});

describe('cancelling', () => {
  it('aborting after the first slice rejects and leaves nothing', async () => {
    const controller = new AbortController();
    const probe = instrumented(db);
    const e = await rejection(
      importFolder(folder('tiny-llama'), {
        chunkBytes: 4096,
        signal: controller.signal,
        onProgress: ({ doneBytes }) => {
          if (doneBytes > 0) controller.abort(new DOMException('Cancelled', 'AbortError'));
        },
      }, probe.db),
    );
    expect((e as DOMException).name).toBe('AbortError');
    // The slice in flight when the signal fired was the last one written.
    expect(probe.counts.tensors).toBe(1);
    await expectEmpty();
  });

  it('an already aborted signal writes no weights', async () => {
    const controller = new AbortController();
    controller.abort();
    const probe = instrumented(db);
    await expect(importFolder(folder('tiny-gpt2'), { signal: controller.signal }, probe.db)).rejects.toThrow();
    expect(probe.counts.tensors).toBe(0);
    await expectEmpty();
  });
});

describe('another tab', () => {
  it('a sweep by a tab that cannot see the import\'s lock, mid-import: the import is refused, not marked ready with slices missing', async () => {
    let swept = false;
    const e = await rejection(
      importFolder(folder('tiny-gpt2'), {
        chunkBytes: 4096,
        onProgress: ({ doneBytes }) => {
          // What a second tab's start-up does while this import is under way, if it cannot see this tab's
          // locks (an origin without Web Locks, an older LoRA Lab): its own, separate lock set.
          if (doneBytes > 0 && !swept) {
            swept = true;
            void sweepUnfinishedImports(db, localLocks());
          }
        },
      }),
    );
    expect(swept).toBe(true);
    expect(isUserError(e)).toBe(true);
    expect((e as Error).message).toMatch(/removed by another LoRA Lab tab/);
    await expectEmpty();
  });
});

describe('deleting and sweeping', () => {
  it('deleteModel removes one model, every one of its slices, and nothing of another', async () => {
    const gpt2 = await importFolder(folder('tiny-gpt2'), { name: 'gpt2', chunkBytes: 3000 });
    const llama = await importFolder(folder('tiny-llama'), { name: 'llama', chunkBytes: 3000 });
    const slices = (m: StoredModel) => m.tensors.reduce((s, t) => s + t.chunkCount, 0);
    expect(await db.count('tensors')).toBe(slices(gpt2) + slices(llama));

    await deleteModel(db, gpt2.id);
    expect(await getModel(db, gpt2.id)).toBeUndefined();
    expect(await db.get('models', gpt2.id)).toBeUndefined();
    expect(await db.countFromIndex('tensors', 'byModel', gpt2.id)).toBe(0);
    expect(await db.count('tensors')).toBe(slices(llama));
    expect((await listModels(db)).map((m) => m.name)).toEqual(['llama']);

    const expected = expectedOf('tiny-llama');
    expect(maxAbsDiff(await storedLogits(llama, expected.tokens), expected.logits_base)).toBeLessThan(TOL);

    // Deleting what is not there is harmless.
    await deleteModel(db, gpt2.id);
    await deleteModel(db, 'no-such-model');
    expect(await db.count('tensors')).toBe(slices(llama));
  });

  it('deleteModel keeps models whose id starts with the deleted id', async () => {
    // The key range must end at this id exactly, not at every id sharing its prefix.
    const chunk = (modelId: string, tensor: string, index: number) => ({ modelId, tensor, index, bytes: new Uint8Array([index]).buffer });
    for (const id of ['m', 'm2', 'l']) {
      for (const tensor of ['a', 'b']) for (let i = 0; i < 3; i++) await db.put('tensors', chunk(id, tensor, i));
    }
    await deleteModel(db, 'm');
    expect(await db.countFromIndex('tensors', 'byModel', 'm')).toBe(0);
    expect(await db.countFromIndex('tensors', 'byModel', 'm2')).toBe(6);
    expect(await db.countFromIndex('tensors', 'byModel', 'l')).toBe(6);
  });

  it('sweepUnfinishedImports removes a crashed import and its slices, and only that', async () => {
    const ready = await importFolder(folder('tiny-gpt2'));
    const readySlices = await db.count('tensors');
    const crashed: StoredModel = { ...ready, id: 'crashed-import', name: 'half done', status: 'importing' };
    await db.put('models', crashed);
    for (let i = 0; i < 3; i++) {
      await db.put('tensors', { modelId: crashed.id, tensor: 'transformer.wte.weight', index: i, bytes: new ArrayBuffer(16) });
    }

    // Half-imported models are invisible to the app.
    expect((await listModels(db)).map((m) => m.id)).toEqual([ready.id]);
    expect(await getModel(db, crashed.id)).toBeUndefined();

    expect(await sweepUnfinishedImports(db, localLocks())).toBe(1);
    expect(await db.get('models', crashed.id)).toBeUndefined();
    expect(await db.countFromIndex('tensors', 'byModel', crashed.id)).toBe(0);
    expect(await db.count('tensors')).toBe(readySlices);
    expect(await getModel(db, ready.id)).toEqual(ready);

    // Nothing left to sweep.
    expect(await sweepUnfinishedImports(db, localLocks())).toBe(0);
  });

  it('listModels puts the newest first', async () => {
    const first = await importFolder(folder('tiny-gpt2'), { name: 'first' });
    await new Promise((r) => setTimeout(r, 5));
    const second = await importFolder(folder('tiny-llama'), { name: 'second' });
    expect(second.importedAt).toBeGreaterThan(first.importedAt);
    expect((await listModels(db)).map((m) => m.name)).toEqual(['second', 'first']);
  });

  it('closeDatabase: the next openDatabase gets a working new connection to the same data', async () => {
    const stored = await importFolder(folder('tiny-gpt2'));
    await closeDatabase();
    db = await openDatabase();
    expect(await getModel(db, stored.id)).toEqual(stored);
    // Calling it twice, or with nothing open, is harmless.
    await closeDatabase();
    await closeDatabase();
    db = await openDatabase();
    expect(await db.count('models')).toBe(1);
  });
});
