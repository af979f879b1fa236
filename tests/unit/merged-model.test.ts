import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { unzipSync } from 'fflate';
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { importPeftAdapter } from '../../src/core/export/peft';
import { planMergedModel, type FolderSink } from '../../src/core/export/merged-model';
import { loraDeltasOf, type LoraDeltas } from '../../src/core/lora/merge';
import { bytesSource, readHeader, readTensorBytes as readFileTensor, toFloat32, writeSafetensors, type Dtype } from '../../src/core/safetensors/index';
import { bf16Bits, f16Bits, fromFloat32 } from '../../src/core/safetensors/encode';
import { FLOAT32_PLACEMENT } from '../../src/core/weights/hold';
import type { LoraLabDb, RunArtifact, StoredModel, StoredRun } from '../../src/storage/db';
import { importModel } from '../../src/storage/import-model';
import { localLocks } from '../../src/storage/locks';
import { mergeIntoStoredModel, storedBaseTensors } from '../../src/storage/merge-stored-model';
import { loadStoredModel } from '../../src/storage/model-weights';
import { getModel } from '../../src/storage/models';
import { writeMergedModel } from '../../src/core/export/merged-model';
import { trainPinned } from './support/run-context';
import { freshDbWithModelFolder } from './support/stored-model';
import { artifactBytes, putArtifact, putRun, readArtifacts } from '../../src/storage/runs';
import { zipRunBundle } from '../../src/core/export/run-bundle';
import { mergedArtifactSink, mergeFinishedRun } from '../../src/worker/merged-export';
import { peftDeltas } from '../../src/core/export/peft-deltas';
import { parseModelConfigText } from '../../src/core/models/config';
import { runOutputFiles } from '../../src/worker/run-files';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
type Arch = 'tiny-gpt2' | 'tiny-llama';

interface Expected {
  tokens: number[];
  logits_base: number[][];
  logits_with_adapter: number[][];
}
const expectedOf = (file: string): Expected => JSON.parse(readFileSync(join(FIXTURES, file), 'utf8')) as Expected;

/** A FolderSink that keeps every file in memory and records what the merge did, for the memory checks. */
function memorySink(): FolderSink & { files: Map<string, Uint8Array>; largestWrite: number } {
  const files = new Map<string, Uint8Array>();
  const sink = {
    files,
    largestWrite: 0,
    async open(path: string) {
      const parts: Uint8Array[] = [];
      return {
        async write(bytes: Uint8Array) {
          sink.largestWrite = Math.max(sink.largestWrite, bytes.length);
          parts.push(bytes.slice());
        },
        async close() {
          const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          let at = 0;
          for (const p of parts) {
            out.set(p, at);
            at += p.length;
          }
          files.set(path, out);
        },
      };
    },
  };
  return sink;
}

/** The fixture adapter for `arch`, read through the F32 base (the adapter's values do not depend on the base's dtype). */
async function fixtureDeltas(db: LoraLabDb, stored: StoredModel, arch: Arch): Promise<LoraDeltas> {
  const { model } = await loadStoredModel(db, stored, FLOAT32_PLACEMENT);
  const dir = join(FIXTURES, `${arch}-adapter`);
  const adapter = await importPeftAdapter(
    model,
    readFileSync(join(dir, 'adapter_config.json'), 'utf8'),
    bytesSource('adapter_model.safetensors', new Uint8Array(readFileSync(join(dir, 'adapter_model.safetensors')))),
  );
  const deltas = await loraDeltasOf(adapter);
  adapter.dispose();
  model.dispose();
  return deltas;
}

/** Imports a folder (path → bytes) the way the app imports a picked model folder, as a plain model. */
async function importFolder(db: LoraLabDb, files: Map<string, Uint8Array>, name: string): Promise<StoredModel> {
  return importModel(db, [...files].map(([path, bytes]) => bytesSource(`${name}/${path}`, bytes)), { name, locks: localLocks() });
}

async function logitsOf(db: LoraLabDb, stored: StoredModel, tokens: number[]): Promise<Float32Array> {
  const { model } = await loadStoredModel(db, stored, FLOAT32_PLACEMENT);
  const ids = tf.tensor2d([tokens], [1, tokens.length], 'int32');
  const out = model.forward(ids);
  const data = (await out.data()) as Float32Array;
  tf.dispose([ids, out]);
  model.dispose();
  return data;
}

function maxAbsDiff(a: ArrayLike<number>, b: number[][] | ArrayLike<number>): number {
  const flat: ArrayLike<number> = Array.isArray(b) && Array.isArray(b[0]) ? (b as number[][]).flat() : (b as ArrayLike<number>);
  expect(a.length).toBe(flat.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - flat[i]!));
  return worst;
}

async function headerOf(bytes: Uint8Array, name: string) {
  return readHeader(bytesSource(name, bytes));
}

/** F32 base from the fixtures, its adapter, and the merged folder as our code writes it. */
async function mergedFixture(base: string, arch: Arch, maxShardBytes?: number) {
  const { db, modelId } = await freshDbWithModelFolder(join(FIXTURES, base), base);
  const stored = (await getModel(db, modelId))!;
  // The adapter is read against the F32 model of the same architecture (same shapes, same module paths).
  const f32 = base === arch ? stored : await importFolder(db, folderFiles(arch), arch);
  const deltas = await fixtureDeltas(db, f32, arch);
  const sink = memorySink();
  const plan = await mergeIntoStoredModel(db, stored, deltas, sink, maxShardBytes === undefined ? {} : { maxShardBytes });
  return { db, stored, deltas, sink, plan };
}

function folderFiles(dir: string): Map<string, Uint8Array> {
  const names = ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json'];
  return new Map(names.map((n) => [n, new Uint8Array(readFileSync(join(FIXTURES, dir, n)))]));
}

describe('merged model folder', () => {
  // The worker modules register the wasm backend too; these tests run on tfjs's cpu backend, as training-run's do.
  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it.each(['tiny-gpt2', 'tiny-llama'] as const)('%s (F32): the merged folder, imported as a plain model, gives the fixture logits_with_adapter', async (arch) => {
    const { db, sink, deltas } = await mergedFixture(arch, arch);
    const files = sink.files;
    expect([...files.keys()].sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    const base = folderFiles(arch);
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json']) expect(files.get(f)).toEqual(base.get(f));

    // The base checkpoint's own names, dtypes and shapes; only the adapted weights' bytes differ.
    const ours = await headerOf(files.get('model.safetensors')!, 'merged');
    const theirs = await headerOf(base.get('model.safetensors')!, 'base');
    expect(ours.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(theirs.tensors.map((t) => [t.name, t.dtype, t.shape]));
    expect(ours.metadata).toEqual({ format: 'pt' });
    const adapted = new Set(deltas.modules.map((m) => `${m.path}.weight`));
    expect(adapted.size).toBeGreaterThan(0);
    for (const t of ours.tensors) {
      const a = await readFileTensor(bytesSource('merged', files.get('model.safetensors')!), t);
      const b = await readFileTensor(bytesSource('base', base.get('model.safetensors')!), theirs.tensors.find((x) => x.name === t.name)!);
      expect(Buffer.compare(Buffer.from(a), Buffer.from(b)) !== 0, t.name).toBe(adapted.has(t.name));
    }
    if (arch === 'tiny-gpt2') expect(ours.tensors.some((t) => t.name === 'lm_head.weight')).toBe(false); // tied stays tied

    const expected = expectedOf(`${arch}.expected.json`);
    const merged = await importFolder(db, files, `${arch}-merged`);
    const err = maxAbsDiff(await logitsOf(db, merged, expected.tokens), expected.logits_with_adapter);
    console.info(`${arch} F32 merged folder: max |logit − logits_with_adapter| = ${err.toExponential(2)}`);
    expect(err).toBeLessThan(1e-4);
  });

  it.each(['tiny-gpt2', 'tiny-llama'] as const)('%s (BF16): stays BF16, adapted weights are the nearest BF16 of W + ΔW, logits within the BF16 bound', async (arch) => {
    const { db, stored, sink, deltas } = await mergedFixture(`${arch}-bf16`, arch);
    const file = sink.files.get('model.safetensors')!;
    const header = await headerOf(file, 'merged');
    expect(new Set(header.tensors.map((t) => t.dtype))).toEqual(new Set(['BF16']));
    expect(JSON.parse(new TextDecoder().decode(sink.files.get('config.json')!)).torch_dtype).toBe('bfloat16');

    // Every adapted element independently: |merged − (W + s·B·A)| within BF16's unit roundoff (half a step of an
    // 8-bit significand: 2⁻⁸ relative), plus float32 slack; a wrong orientation or scaling is off by whole ΔW values.
    const baseTensors = new Map(storedBaseTensors(db, stored).map((t) => [t.canonicalName, t]));
    for (const m of deltas.modules) {
      const entry = header.tensors.find((t) => t.name === `${m.path}.weight`)!;
      const got = toFloat32('BF16', await readFileTensor(bytesSource('merged', file), entry));
      const w = toFloat32('BF16', await baseTensors.get(entry.name)!.read());
      const ba = tf.tidy(() => tf.mul(tf.matMul(tf.tensor2d(m.B, [m.outFeatures, m.rank]), tf.tensor2d(m.A, [m.rank, m.inFeatures])), deltas.scaling));
      const delta = (await (m.layout === 'in_out' ? tf.transpose(ba) : ba).data()) as Float32Array;
      ba.dispose();
      let worst = 0;
      let moved = 0;
      for (let i = 0; i < w.length; i++) {
        const exact = w[i]! + delta[i]!;
        worst = Math.max(worst, Math.abs(got[i]! - exact) / Math.max(Math.abs(exact), 2 ** -126));
        moved = Math.max(moved, Math.abs(got[i]! - w[i]!));
      }
      expect(worst, entry.name).toBeLessThanOrEqual(2 ** -8 * (1 + 1e-3));
      expect(moved, entry.name).toBeGreaterThan(0);
    }

    // Logits: the fixture's F32 reference vs our merged BF16 model. Storing the base in BF16 alone moves the
    // logits by D = max|logits_base(bf16) − logits_base(f32)| (both from the fixtures); merging rounds the adapted
    // weights to BF16 once more, an error of the same size on a subset of the weights. So the merged model may
    // differ from the F32 merge by about 2·D; 3·D leaves room, and is still far below what a missed or
    // transposed ΔW does (its effect, max|logits_with_adapter − logits_base|, is printed and checked larger).
    const f32 = expectedOf(`${arch}.expected.json`);
    const bf16 = expectedOf(`${arch}-bf16.expected.json`);
    const d = maxAbsDiff(bf16.logits_base.flat(), f32.logits_base);
    const adapterEffect = maxAbsDiff(f32.logits_with_adapter.flat(), f32.logits_base);
    const merged = await importFolder(db, sink.files, `${arch}-bf16-merged`);
    expect(merged.tensors.every((t) => t.dtype === 'BF16')).toBe(true);
    const err = maxAbsDiff(await logitsOf(db, merged, f32.tokens), f32.logits_with_adapter);
    console.info(`${arch} BF16 merged: max |logit error| = ${err.toExponential(2)}; BF16 storage bound D = ${d.toExponential(2)}; adapter effect ${adapterEffect.toExponential(2)}`);
    expect(err).toBeLessThan(3 * d);
    expect(adapterEffect).toBeGreaterThan(10 * 3 * d);
  });

  it('F16 stays F16 and ties round to even', async () => {
    const { sink } = await mergedFixture('tiny-llama-f16', 'tiny-llama');
    const header = await headerOf(sink.files.get('model.safetensors')!, 'merged');
    expect(new Set(header.tensors.map((t) => t.dtype))).toEqual(new Set(['F16']));
    // The encoders invert the decoders on every half value (NaN payloads aside), and round halfway cases to even.
    for (const dtype of ['F16', 'BF16'] as Dtype[]) {
      const all = new Uint8Array(new Uint16Array(Array.from({ length: 65536 }, (_, i) => i)).buffer);
      const back = new Uint16Array(fromFloat32(dtype, toFloat32(dtype, all)).buffer);
      const src = new Uint16Array(all.buffer);
      const isNan = (h: number) => (dtype === 'F16' ? (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0 : (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0);
      for (let h = 0; h < 65536; h++) {
        if (isNan(h)) expect(isNan(back[h]!)).toBe(true);
        else if (back[h] !== src[h]) expect.fail(`${dtype} ${h.toString(16)} came back as ${back[h]!.toString(16)}`);
      }
    }
    const bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0]!;
    expect(f16Bits(bits(1 + 2 ** -11))).toBe(0x3c00); // halfway between 1 and the next half: even is 1
    expect(f16Bits(bits(1 + 3 * 2 ** -11))).toBe(0x3c02); // halfway, odd below: up
    expect(f16Bits(bits(65520))).toBe(0x7c00); // past the largest half: inf
    expect(f16Bits(bits(2 ** -25 * 1.5))).toBe(0x0001); // subnormal rounding
    expect(bf16Bits(bits(1 + 2 ** -8))).toBe(0x3f80);
    expect(bf16Bits(bits(1 + 3 * 2 ** -8))).toBe(0x3f82);
  });

  it('shards with a small shard size: the index maps every tensor, and the sharded folder re-imports identically', async () => {
    const whole = await mergedFixture('tiny-gpt2', 'tiny-gpt2');
    // The second fixture reopens the database, so the imports below use its handle.
    const { db, sink, plan } = await mergedFixture('tiny-gpt2', 'tiny-gpt2', 100_000);
    const shardNames = [...sink.files.keys()].filter((f) => f.endsWith('.safetensors')).sort();
    expect(shardNames.length).toBeGreaterThan(3);
    shardNames.forEach((n, i) => expect(n).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(shardNames.length).padStart(5, '0')}.safetensors`));
    expect(sink.files.has('model.safetensors')).toBe(false);
    const index = JSON.parse(new TextDecoder().decode(sink.files.get('model.safetensors.index.json')!)) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    const wholeHeader = await headerOf(whole.sink.files.get('model.safetensors')!, 'whole');
    expect(Object.keys(index.weight_map).sort()).toEqual(wholeHeader.tensors.map((t) => t.name).sort());
    expect(index.metadata.total_size).toBe(wholeHeader.tensors.reduce((n, t) => n + t.end - t.begin, 0));
    expect(index.metadata.total_size).toBe(plan.totalBytes);
    // Each tensor sits in the shard the index names, with the same bytes as in the single file.
    for (const shard of shardNames) {
      const h = await headerOf(sink.files.get(shard)!, shard);
      expect(h.tensors.length).toBeGreaterThan(0);
      expect(h.tensors.reduce((n, t) => n + t.end - t.begin, 0) <= 100_000 || h.tensors.length === 1).toBe(true);
      for (const t of h.tensors) {
        expect(index.weight_map[t.name]).toBe(shard);
        const a = await readFileTensor(bytesSource(shard, sink.files.get(shard)!), t);
        const b = await readFileTensor(bytesSource('whole', whole.sink.files.get('model.safetensors')!), wholeHeader.tensors.find((x) => x.name === t.name)!);
        expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
      }
    }
    const tokens = expectedOf('tiny-gpt2.expected.json').tokens;
    const fromShards = await logitsOf(db, await importFolder(db, sink.files, 'sharded'), tokens);
    const fromWhole = await logitsOf(db, await importFolder(db, whole.sink.files, 'whole'), tokens);
    expect(maxAbsDiff(fromShards, fromWhole)).toBe(0);
  });

  it('streams: one tensor read at a time, each written out before the next is read, in slices of at most sliceBytes', async () => {
    const { db, stored, deltas } = await mergedFixture('tiny-llama', 'tiny-llama');
    const sliceBytes = 4096;
    const sink = memorySink();
    let written = 0;
    let readSoFar = 0;
    let reads = 0;
    const counting: FolderSink = {
      async open(path) {
        const f = await sink.open(path);
        return { write: async (b) => ((written += path.endsWith('.safetensors') ? b.length : 0), f.write(b)), close: () => f.close() };
      },
    };
    const plan = planMergedModel(stored.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })));
    const headerBytes = plan.shards[0]!.layout.header.length;
    const tensors = storedBaseTensors(db, stored).map((t) => ({
      ...t,
      read: async () => {
        // Everything read before is already written: at most one tensor's bytes are ever held.
        expect(written).toBe(headerBytes + readSoFar);
        const bytes = await t.read();
        readSoFar += bytes.length;
        reads++;
        return bytes;
      },
    }));
    await writeMergedModel({ tensors, files: { config: stored.files.config, tokenizer: null, tokenizerConfig: null, generationConfig: null } }, deltas, counting, { sliceBytes });
    expect(reads).toBe(stored.tensors.length);
    expect(written).toBe(headerBytes + readSoFar);
    expect(sink.largestWrite).toBeLessThanOrEqual(sliceBytes);
    expect(Math.max(...stored.tensors.map((t) => t.byteLength))).toBeGreaterThan(sliceBytes); // so slicing really happened
    expect([...sink.files.keys()].sort()).toEqual(['config.json', 'model.safetensors']);
  });

  it('stores merged/ without ever holding a shard whole: nothing larger than a slice reaches storage, and the shard reads back byte-identical', async () => {
    const { db, stored, deltas, sink: reference } = await mergedFixture('tiny-llama', 'tiny-llama');
    const sliceBytes = 4096;
    const runId = 'run-sliced';
    // Every buffer the sink and the storage are handed for the shard: each slice written, each part a Blob is built
    // from (a buffer; a Blob part is a handle, joined without copying), and each value put into IndexedDB. (The text
    // files, config.json and the tokenizer's, are written in one piece: they are strings the model record holds.)
    let largestWrite = 0;
    let largestBlobPart = 0;
    let largestStored = 0;
    let inShard = false;
    const blobFiles: string[] = [];
    const bufferSize = (x: unknown): number => (x instanceof ArrayBuffer ? x.byteLength : ArrayBuffer.isView(x) ? x.byteLength : 0);
    const NativeBlob = Blob;
    vi.stubGlobal(
      'Blob',
      class MeasuredBlob extends NativeBlob {
        constructor(parts?: BlobPart[], options?: BlobPropertyBag) {
          if (inShard) for (const part of parts ?? []) largestBlobPart = Math.max(largestBlobPart, bufferSize(part));
          super(parts, options);
        }
      },
    );
    const measuredDb = new Proxy(db, {
      get(target, key) {
        if (key !== 'put') return Reflect.get(target, key, target) as unknown;
        return async (store: 'artifacts', value: RunArtifact) => {
          largestStored = Math.max(largestStored, bufferSize(value.bytes));
          if (value.bytes instanceof NativeBlob) blobFiles.push(value.path);
          return target.put(store, value);
        };
      },
    });
    const artifacts = mergedArtifactSink(measuredDb, runId);
    const measured: FolderSink = {
      async open(path) {
        const file = await artifacts.open(path);
        inShard = path.endsWith('.safetensors');
        return {
          write: async (b) => ((largestWrite = inShard ? Math.max(largestWrite, b.length) : largestWrite), file.write(b)),
          close: () => file.close(),
        };
      },
    };
    try {
      await mergeIntoStoredModel(db, stored, deltas, measured, { sliceBytes });
    } finally {
      vi.unstubAllGlobals();
    }
    const shard = reference.files.get('model.safetensors')!;
    console.info(`merged shard of ${shard.length} bytes stored from slices of ${sliceBytes}: largest write ${largestWrite}, largest Blob part ${largestBlobPart}, largest buffer put ${largestStored}`);
    expect(shard.length).toBeGreaterThan(50 * sliceBytes); // so "at most a slice" is a real bound
    expect(largestWrite).toBe(sliceBytes);
    expect(largestBlobPart).toBeLessThanOrEqual(sliceBytes);
    expect(largestStored).toBe(0); // every merged/ file went in as a Blob, none as a buffer
    expect(blobFiles.sort()).toEqual([...reference.files.keys()].map((f) => `merged/${f}`).sort());

    // Read back: each file equals what the in-memory sink got, the shard read a slice at a time as the zip reads it.
    const storedFiles = (await readArtifacts(db, runId)).filter((a) => a.path.startsWith('merged/'));
    expect(storedFiles.map((a) => a.path).sort()).toEqual(blobFiles);
    for (const a of storedFiles) {
      const want = reference.files.get(a.path.slice('merged/'.length))!;
      expect(a.bytes).toBeInstanceOf(Blob);
      const blob = a.bytes as Blob;
      expect(blob.size, a.path).toBe(want.length);
      for (let at = 0; at < blob.size; at += 100_000) {
        const got = new Uint8Array(await blob.slice(at, at + 100_000).arrayBuffer());
        expect(Buffer.from(got).equals(Buffer.from(want.subarray(at, at + 100_000))), `${a.path} at ${at}`).toBe(true);
      }
    }
  });

  it('refuses an adapter for another model before writing anything', async () => {
    const { db, stored, deltas } = await mergedFixture('tiny-llama', 'tiny-llama');
    const sink = memorySink();
    const wrong: LoraDeltas = { ...deltas, modules: [{ ...deltas.modules[0]!, path: 'model.layers.9.self_attn.q_proj' }] };
    await expect(mergeIntoStoredModel(db, stored, wrong, sink)).rejects.toThrow(/model\.layers\.9\.self_attn\.q_proj\.weight/);
    const transposed: LoraDeltas = { ...deltas, modules: [{ ...deltas.modules.find((m) => m.path.endsWith('down_proj'))!, layout: 'in_out' }] };
    await expect(mergeIntoStoredModel(db, stored, transposed, sink)).rejects.toThrow(/down_proj\.weight is \[64, 176\]/);
    expect(sink.files.size).toBe(0);
  });

  it.each(['tiny-gpt2', 'tiny-llama'] as const)('%s: "Merge into a model" on a finished run writes merged/ from its stored PEFT adapter files', async (arch) => {
    const { db, modelId } = await freshDbWithModelFolder(join(FIXTURES, arch), arch);
    // A finished run as the trainer stores it: its record and, among its artifacts, the PEFT adapter files.
    const run = { id: `run-${arch}`, name: 'r', modelId, modelName: arch, status: 'completed' } as unknown as StoredRun;
    await putRun(db, run);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
      await putArtifact(db, run.id, f, new Uint8Array(readFileSync(join(FIXTURES, `${arch}-adapter`, f))));
    }
    const phases: string[] = [];
    const { files } = await mergeFinishedRun(db, run.id, (p) => phases.push(p.phase));
    expect(files.sort()).toEqual(['merged/config.json', 'merged/generation_config.json', 'merged/model.safetensors', 'merged/tokenizer.json', 'merged/tokenizer_config.json']);
    expect(phases.length).toBeGreaterThan(0);
    const mergedArtifacts = (await readArtifacts(db, run.id)).filter((a) => a.path.startsWith('merged/'));
    const stored = new Map(await Promise.all(mergedArtifacts.map(async (a) => [a.path.slice('merged/'.length), await artifactBytes(a)] as const)));
    expect([...stored.keys()].map((k) => `merged/${k}`).sort()).toEqual(files);
    const expected = expectedOf(`${arch}.expected.json`);
    const err = maxAbsDiff(await logitsOf(db, await importFolder(db, stored, `${arch}-merged`), expected.tokens), expected.logits_with_adapter);
    expect(err).toBeLessThan(1e-4);
  });

  it('export_merged: true: a training run ends with merged/ in its output, equal to its adapter applied to the base', async () => {
    const { db, modelId } = await freshDbWithModelFolder(join(FIXTURES, 'tiny-gpt2'), 'tiny-gpt2');
    const config = ['base_model: tiny-gpt2', 'train_data: train.txt', 'output_dir: ./out/merged', 'lora_rank: 2', 'target_modules: [c_attn, c_proj]', 'max_steps: 2', 'batch_size: 2', 'seq_len: 16', 'learning_rate: 0.01', 'log_steps: 1', 'seed: 3', 'export_merged: true'].join('\n');
    const { runId } = await trainPinned(db, { modelId, configYaml: config, trainData: new File(['zebra quilt jinx! '.repeat(40)], 'train.txt'), valData: null });
    const artifacts = new Map(await Promise.all((await readArtifacts(db, runId)).map(async (a) => [a.path, await artifactBytes(a)] as const)));
    const merged = new Map([...artifacts].filter(([p]) => p.startsWith('merged/')).map(([p, b]) => [p.slice('merged/'.length), b]));
    expect([...merged.keys()].sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

    // Independent path: the run's own PEFT files loaded onto the base model and run as an adapter (no merge).
    const stored = (await getModel(db, modelId))!;
    const { model } = await loadStoredModel(db, stored, FLOAT32_PLACEMENT);
    const adapter = await importPeftAdapter(model, new TextDecoder().decode(artifacts.get('adapter_config.json')!), bytesSource('adapter_model.safetensors', artifacts.get('adapter_model.safetensors')!));
    const tokens = expectedOf('tiny-gpt2.expected.json').tokens.slice(0, 40);
    const ids = tf.tensor2d([tokens], undefined, 'int32');
    const viaAdapter = tf.tidy(() => model.forward(ids, { linear: adapter.apply({ training: false }) }));
    const plain = tf.tidy(() => model.forward(ids));
    const want = (await viaAdapter.data()) as Float32Array;
    // Trained for two steps at a high rate, so the adapter really changes the logits.
    expect(maxAbsDiff(want, (await plain.data()) as Float32Array)).toBeGreaterThan(1e-3);
    tf.dispose([ids, viaAdapter, plain]);
    adapter.dispose();
    model.dispose();
    expect(maxAbsDiff(await logitsOf(db, await importFolder(db, merged, 'run-merged'), tokens), want)).toBeLessThan(1e-4);

    // The run's output as the app zips it: merged/ comes as Blobs (read a slice at a time), and the zip holds
    // the same bytes as were stored.
    const output = await runOutputFiles(db, runId);
    const mergedOut = output.filter((f) => f.path.startsWith('merged/'));
    expect(mergedOut.map((f) => f.path).sort()).toEqual([...merged.keys()].map((k) => `merged/${k}`).sort());
    for (const f of mergedOut) expect(f.bytes).toBeInstanceOf(Blob);
    const parts: Uint8Array[] = [];
    await zipRunBundle(output, 'run', (chunk) => parts.push(chunk));
    const zip = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (zip.set(p, at), at + p.length), 0);
    const opened = unzipSync(zip);
    for (const [name, bytes] of merged) expect(Buffer.from(opened[`run/merged/${name}`]!).equals(Buffer.from(bytes)), name).toBe(true);
    expect(Buffer.from(opened['run/adapter_model.safetensors']!).equals(Buffer.from(artifacts.get('adapter_model.safetensors')!))).toBe(true);
  });

  it('export_merged on an evaluated run merges the adapter its output holds (the best one, read back from storage)', async () => {
    const { db, modelId } = await freshDbWithModelFolder(join(FIXTURES, 'tiny-gpt2'), 'tiny-gpt2');
    const config = ['base_model: tiny-gpt2', 'train_data: train.txt', 'val_data: val.txt', 'output_dir: ./out/merged-eval', 'lora_rank: 2', 'target_modules: [c_attn]', 'max_steps: 4', 'eval_steps: 2', 'batch_size: 2', 'seq_len: 16', 'learning_rate: 0.01', 'log_steps: 1', 'seed: 3', 'export_merged: true'].join('\n');
    const text = 'zebra quilt jinx! '.repeat(40);
    const { runId } = await trainPinned(db, { modelId, configYaml: config, trainData: new File([text], 'train.txt'), valData: new File([text.slice(0, 200)], 'val.txt') });
    const artifacts = new Map(await Promise.all((await readArtifacts(db, runId)).map(async (a) => [a.path, await artifactBytes(a)] as const)));
    const merged = new Map([...artifacts].filter(([p]) => p.startsWith('merged/')).map(([p, b]) => [p.slice('merged/'.length), b]));
    expect([...merged.keys()].sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    // The merged weights are the top-level adapter (the run's output) folded in: c_attn moved by exactly its ΔW.
    const stored = (await getModel(db, modelId))!;
    const deltas = await peftDeltas(parseModelConfigText(stored.files.config), new TextDecoder().decode(artifacts.get('adapter_config.json')!), bytesSource('adapter_model.safetensors', artifacts.get('adapter_model.safetensors')!));
    const reference = memorySink();
    await mergeIntoStoredModel(db, stored, deltas, reference);
    expect(Buffer.from(merged.get('model.safetensors')!).equals(Buffer.from(reference.files.get('model.safetensors')!))).toBe(true);
  });

  it('keeps the checkpoint\'s own names: a GPT2Model save (no transformer. prefix) is written back without it', async () => {
    const { db, modelId } = await freshDbWithModelFolder(join(FIXTURES, 'tiny-gpt2'), 'tiny-gpt2');
    const deltas = await fixtureDeltas(db, (await getModel(db, modelId))!, 'tiny-gpt2');
    // The fixture's weights re-saved under GPT2Model's names, as OpenAI's GPT-2 checkpoints name them.
    const source = bytesSource('model.safetensors', folderFiles('tiny-gpt2').get('model.safetensors')!);
    const tensors = await Promise.all((await readHeader(source)).tensors.map(async (t) => ({
      name: t.name.replace(/^transformer\./, ''), shape: t.shape, data: toFloat32(t.dtype, await readFileTensor(source, t)),
    })));
    const files = folderFiles('tiny-gpt2');
    files.set('model.safetensors', writeSafetensors(tensors, { format: 'pt' }));
    const bare = await importFolder(db, files, 'gpt2-bare');
    const sink = memorySink();
    await mergeIntoStoredModel(db, bare, deltas, sink);
    const names = (await headerOf(sink.files.get('model.safetensors')!, 'merged')).tensors.map((t) => t.name);
    expect(names.sort()).toEqual(tensors.map((t) => t.name).sort());
    expect(names.some((n) => n.startsWith('transformer.'))).toBe(false);
    const expected = expectedOf('tiny-gpt2.expected.json');
    expect(maxAbsDiff(await logitsOf(db, await importFolder(db, sink.files, 'gpt2-bare-merged'), expected.tokens), expected.logits_with_adapter)).toBeLessThan(1e-4);
  });
});
