import { UserError } from '../core/errors';
import { parseModelConfigText } from '../core/models/config';
import { canonicalTensorName, checkTensors, parameterCount } from '../core/models/manifest';
import { loadTokenizer } from '../core/data/tokenizer';
import { FiniteScan, readHeader, type ByteSource, type TensorEntry } from '../core/safetensors';
import type { LoraLabDb, StoredModel, StoredTensorInfo } from './db';
import { MODEL_RECORDS, ownedBuffer, writeSliced } from './chunked-records';
import { platformLocks, type Locks } from './locks';
import { StorageFullError } from './quota';

/** Tensors are stored in slices of at most this size, so no huge tensor is held twice in memory. */
export const CHUNK_BYTES = 16 * 1024 * 1024;

export interface ImportProgress {
  readonly doneBytes: number;
  readonly totalBytes: number;
}

export interface ImportOptions {
  readonly name: string;
  readonly onProgress?: (p: ImportProgress) => void;
  readonly signal?: AbortSignal;
  /** Bytes the origin may still store; checked before anything is written. */
  readonly freeBytes?: number;
  /** Slice size in bytes; defaults to CHUNK_BYTES. Tests set it small to split every tensor into many slices. */
  readonly chunkBytes?: number;
  /** Where the import's lock is held while it writes (other tabs' sweeps skip it); defaults to platformLocks(). */
  readonly locks?: Locks;
}

interface PlannedTensor {
  readonly source: ByteSource;
  readonly entry: TensorEntry;
  readonly info: StoredTensorInfo;
}

/**
 * Imports a Hugging Face model folder into IndexedDB. Everything that can be checked without
 * storing is checked first (config, tokenizer, every safetensors header against config.json);
 * then the weights stream in slice by slice. On any failure — a bad file, a full disk, a cancel —
 * what was written is deleted again, so a model is either fully there or not at all.
 */
export async function importModel(db: LoraLabDb, files: readonly ByteSource[], options: ImportOptions): Promise<StoredModel> {
  const chunkBytes = options.chunkBytes ?? CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) {
    throw new RangeError(`importModel: chunkBytes must be a positive integer, not ${chunkBytes}`);
  }
  const byName = new Map(files.map((f) => [baseName(f.name), f]));
  const configFile = required(byName, 'config.json');
  const tokenizerFile = required(byName, 'tokenizer.json');
  const configText = await readText(configFile);
  const tokenizerText = await readText(tokenizerFile);
  const tokenizerConfigFile = byName.get('tokenizer_config.json');
  const tokenizerConfigText = tokenizerConfigFile ? await readText(tokenizerConfigFile) : null;
  // Kept only to be written back next to a merged model (core/export/merged-model.ts); nothing reads it here.
  const generationConfigFile = byName.get('generation_config.json');
  const generationConfigText = generationConfigFile ? await readText(generationConfigFile) : null;

  const config = parseModelConfigText(configText);
  const tokenizer = loadTokenizer(tokenizerText, tokenizerConfigText);
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new UserError('tokenizer.json', `produces ids up to ${tokenizer.vocabSize - 1}, but config.json says the model has only ${config.vocabSize} embeddings.`, 'Use the tokenizer that belongs to this model.');
  }

  const plan = await planTensors(config, byName, chunkBytes);
  const totalBytes = plan.reduce((sum, t) => sum + t.info.byteLength, 0);
  if (options.freeBytes !== undefined && totalBytes > options.freeBytes) {
    throw storageFull(totalBytes, options.freeBytes);
  }

  const model: StoredModel = {
    id: crypto.randomUUID(),
    name: options.name,
    status: 'importing',
    arch: config.arch,
    parameterCount: parameterCount(config),
    sizeBytes: totalBytes,
    importedAt: Date.now(),
    files: { config: configText, tokenizer: tokenizerText, tokenizerConfig: tokenizerConfigText, generationConfig: generationConfigText },
    tensors: plan.map((t) => t.info),
  };

  return writeSliced(db, {
    kind: MODEL_RECORDS,
    record: model,
    locks: options.locks ?? platformLocks(),
    writeSlices: () => writeTensors(db, model, plan, chunkBytes, options),
    full: () => storageFull(totalBytes, options.freeBytes),
    sweptByAnotherTab: () => new UserError(options.name, 'was removed by another LoRA Lab tab while it was being imported.', 'Import it again, with one tab open.'),
  });
}

/** importModel's slices: every tensor's bytes, checked finite as they pass (the record is written around them). */
async function writeTensors(db: LoraLabDb, model: StoredModel, plan: readonly PlannedTensor[], chunkBytes: number, options: ImportOptions): Promise<void> {
  const totalBytes = model.sizeBytes;
  let doneBytes = 0;
  options.onProgress?.({ doneBytes, totalBytes });
  for (const { source, entry, info } of plan) {
    // Checked as the bytes pass, before each slice is stored: a NaN weight would import, then make every
    // loss NaN and every run "diverge" at its first step, far from the file that caused it.
    const finite = new FiniteScan(info.dtype);
    for (let index = 0; index < info.chunkCount; index++) {
      options.signal?.throwIfAborted();
      const begin = entry.begin + index * chunkBytes;
      const end = Math.min(entry.end, begin + chunkBytes);
      const bytes = await source.read(begin, end);
      if (bytes.byteLength !== end - begin) {
        throw new UserError(source.name, `ended early while reading tensor ${entry.name}: the file is truncated.`);
      }
      const bad = finite.push(bytes);
      if (bad >= 0) {
        throw new UserError(
          source.name,
          `holds a NaN or infinite value in tensor ${entry.name} (element ${bad} of ${info.shape.join('×')}). Nothing was kept.`,
          'The checkpoint is damaged or was saved from a diverged run: use another one.',
        );
      }
      await db.put('tensors', { modelId: model.id, tensor: info.name, index, bytes: ownedBuffer(bytes) });
      doneBytes += bytes.byteLength;
      options.onProgress?.({ doneBytes, totalBytes });
    }
  }
}

async function planTensors(
  config: ReturnType<typeof parseModelConfigText>,
  byName: Map<string, ByteSource>,
  chunkBytes: number,
): Promise<PlannedTensor[]> {
  const shards = await shardFiles(byName);
  const plan: PlannedTensor[] = [];
  const seen = new Map<string, string>();
  for (const source of shards) {
    const header = await readHeader(source);
    for (const entry of header.tensors) {
      const name = canonicalTensorName(config, entry.name);
      if (name === null) continue;
      const earlier = seen.get(name);
      if (earlier !== undefined) {
        throw new UserError(source.name, `holds tensor ${entry.name}, which ${earlier} holds already.`, 'Import each shard once, and only the shards of one model.');
      }
      seen.set(name, source.name);
      const byteLength = entry.end - entry.begin;
      plan.push({
        source,
        entry,
        info: { name, ...(entry.name === name ? {} : { nameInFile: entry.name }), dtype: entry.dtype, shape: entry.shape, byteLength, chunkCount: Math.max(1, Math.ceil(byteLength / chunkBytes)) },
      });
    }
  }
  // The file list names the shards in "tensor X is missing"; without it the message would blame model.safetensors
  // even when the weights came as model-00001-of-00002.safetensors and friends.
  checkTensors(
    config,
    plan.map((t) => ({ name: t.info.name, shape: t.info.shape, file: t.source.name })),
    shards.map((s) => s.name),
  );
  return plan;
}

/** The safetensors files to read: the index's shards when there is an index, else every .safetensors given. */
async function shardFiles(byName: Map<string, ByteSource>): Promise<ByteSource[]> {
  const indexFile = byName.get('model.safetensors.index.json');
  const given = [...byName.values()].filter((f) => f.name.endsWith('.safetensors'));
  if (!indexFile) {
    if (given.length === 0) {
      throw new UserError('model folder', 'has no .safetensors weights.', 'Choose the whole Hugging Face model folder (config.json, model.safetensors, tokenizer.json). PyTorch .bin weights are not supported.');
    }
    if (given.length > 1 && !byName.has('model.safetensors')) {
      // Shards without their index would still import, but naming the gap is kinder than guessing.
      throw new UserError('model.safetensors.index.json', 'is missing: the weights are split into several files.', 'Include the index file that came with the shards.');
    }
    return byName.has('model.safetensors') ? [byName.get('model.safetensors')!] : given;
  }
  let index: unknown;
  try {
    index = JSON.parse(await readText(indexFile));
  } catch (e) {
    throw new UserError(indexFile.name, `is not valid JSON (${(e as Error).message}).`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null) {
    throw new UserError(indexFile.name, 'has no "weight_map" object.');
  }
  const shardNames = [...new Set(Object.values(weightMap as Record<string, unknown>).map(String))].sort();
  return shardNames.map((name) => {
    const shard = byName.get(name);
    if (!shard) throw new UserError(name, `is listed in ${indexFile.name} but was not among the chosen files.`, 'Choose the whole model folder.');
    return shard;
  });
}

function required(byName: Map<string, ByteSource>, name: string): ByteSource {
  const file = byName.get(name);
  if (!file) throw new UserError(name, 'is missing from the model folder.', 'Choose the whole Hugging Face model folder (config.json, model.safetensors, tokenizer.json).');
  return file;
}

async function readText(source: ByteSource): Promise<string> {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(await source.read(0, source.size));
  } catch {
    throw new UserError(source.name, 'is not UTF-8 text.');
  }
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

function storageFull(needed: number, free: number | undefined): UserError {
  const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
  return new StorageFullError(
    'browser storage',
    `is full: the model needs ${mb(needed)}${free !== undefined ? ` and only ${mb(Math.max(0, free))} is free` : ''}. Nothing was kept.`,
    'Delete models or runs you no longer need, then import again.',
  );
}
