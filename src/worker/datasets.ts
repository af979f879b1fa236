import * as tf from '@tensorflow/tfjs';
import { estimateSettingsOf, parseRunConfigYaml, resolveTargetModules, unwrapRunConfig } from '../core/config';
import { chatSettingsFromConfig, datasetStats, detectFormat, readDataset, type DatasetStats, type ReadDatasetOptions, type TokenizedDataset } from '../core/data/dataset';
import type { DatasetFormat, RecordKind } from '../core/data/formats/types';
import { splitValidation } from '../core/data/packing';
import { previewRecords, type PreviewRecord } from '../core/data/preview';
import { loadTokenizer, type TextTokenizer } from '../core/data/tokenizer';
import { UserError } from '../core/errors';
import { fusedKernelBackend } from '../core/kernels/webgpu_run';
import { resolveTargets } from '../core/lora/settings';
import { parseModelConfigText, type ModelConfig } from '../core/models/config';
import type { Linear } from '../core/models/linear';
import { expectedTensors } from '../core/models/manifest';
import type { CausalLM } from '../core/models/model';
import type { Dtype } from '../core/safetensors/dtype';
import { blobSource, type ByteSource } from '../core/safetensors/source';
import { estimateRun, WASM_MEMORY_LIMIT_BYTES, type RunEstimate } from '../core/train/estimate';
import { placementFor } from '../core/weights/hold';
import type { LoraLabDb, StoredModel } from '../storage/db';
import { checkDatasetSize, getDataset, storeDataset, storedDatasetSource, type StoredDataset } from '../storage/datasets';
import { getModel } from '../storage/models';
import type { Progress } from './protocol';

/**
 * The worker's side of datasets: checking a file with the selected model's tokenizer before it is stored, the
 * preview, the run estimate, and reading a dataset for training. Every path reads a file through the same
 * readDataset options (readOptionsFor), so the preview shows exactly the tokens and masks training uses.
 */

/** Training data as the `train` request takes it: a stored dataset, or a File (the headless runner and tests). */
export type DatasetRef = File | { readonly datasetId: string };

/** What the Data panel shows of a dataset: the first records as the model sees them, and counts at a seq_len. */
export interface DatasetPreview {
  readonly datasetId: string;
  readonly name: string;
  readonly format: DatasetFormat;
  readonly kind: RecordKind;
  readonly records: PreviewRecord[];
  readonly stats: DatasetStats;
}

export interface EstimateRequest {
  readonly modelId: string;
  readonly configYaml: string;
  /** null: no data chosen yet; the estimate then has no steps or tokens. */
  readonly trainDatasetId: string | null;
  readonly valDatasetId: string | null;
  /** The WebGPU adapter's limits, or null on wasm. */
  readonly limits: { readonly maxBufferSize: number; readonly maxStorageBufferBindingSize: number } | null;
  readonly deviceMemoryBytes: number | null;
  readonly tokensPerSecond: number | null;
}

export interface EstimateResult {
  readonly estimate: RunEstimate;
  /** Tokens of the packed training stream after val_split, or null without data. */
  readonly trainTokens: number | null;
}

/** The part of a request's context these handlers use. */
export interface DatasetContext {
  readonly signal: AbortSignal;
  progress(p: Progress): void;
}

// ─── The model's tokenizer ────────────────────────────────────────────────────────────────────────

let tokenizerCache: { readonly modelId: string; readonly tokenizer: TextTokenizer } | null = null;

/** The stored model and its tokenizer, without loading any weights (checking and previewing need only text). */
async function modelAndTokenizer(db: LoraLabDb, modelId: string): Promise<{ stored: StoredModel; tokenizer: TextTokenizer }> {
  const stored = await getModel(db, modelId);
  if (!stored) throw new UserError('model', 'is not in the model library any more.', 'Pick a model in step 1, or import one.');
  if (tokenizerCache?.modelId !== modelId) {
    tokenizerCache = { modelId, tokenizer: loadTokenizer(stored.files.tokenizer, stored.files.tokenizerConfig) };
  }
  return { stored, tokenizer: tokenizerCache.tokenizer };
}

/**
 * How a file is read for `stored`: its chat template (or the fallback layout) and the special-token texts that
 * templates write, as Hugging Face's apply_chat_template fills them in. One function, so that the check at import,
 * the preview and training can never tokenize differently.
 */
export function readOptionsFor(stored: StoredModel, tokenizer: TextTokenizer): Pick<ReadDatasetOptions, 'tokenizer' | 'chatTemplate' | 'specialTokens'> {
  const { chatTemplate, bosToken, eosToken } = chatSettingsFromConfig(stored.files.tokenizerConfig);
  return { tokenizer, chatTemplate, specialTokens: { bos: bosToken, eos: eosToken } };
}

// ─── Tokenized datasets, kept for the preview, the estimate and training ─────────────────────────────

type ProgressFn = (done: number, total: number) => void;

interface Tokenizing {
  readonly key: string;
  readonly result: Promise<TokenizedDataset>;
  /** Everyone waiting for it sees its progress. */
  readonly listeners: Set<ProgressFn>;
}

/**
 * The last two tokenized datasets (a training and a validation set), by model and dataset. Stored bytes never
 * change under an id, so an entry stays right until memory needs it for another: moving seq_len or config sliders
 * then costs no re-reading.
 */
const tokenizedCache: Tokenizing[] = [];
const CACHE_SIZE = 2;

const cacheKey = (modelId: string, datasetId: string) => `${modelId}\n${datasetId}`;

function remember(entry: Tokenizing): void {
  const at = tokenizedCache.findIndex((e) => e.key === entry.key);
  if (at >= 0) tokenizedCache.splice(at, 1);
  tokenizedCache.push(entry);
  while (tokenizedCache.length > CACHE_SIZE) tokenizedCache.shift();
}

/**
 * A stored dataset tokenized for a model, shared by all callers. It is not cancelled by any one caller (another
 * may be waiting for it); each caller stops waiting when its own request is cancelled.
 */
async function tokenizeStored(db: LoraLabDb, stored: StoredModel, tokenizer: TextTokenizer, datasetId: string, ctx: DatasetContext, phase: string): Promise<TokenizedDataset> {
  const key = cacheKey(stored.id, datasetId);
  let entry = tokenizedCache.find((e) => e.key === key);
  if (!entry) {
    const dataset = await getDataset(db, datasetId);
    if (!dataset) throw new UserError('dataset', 'is not stored any more (it was deleted).', 'Pick another dataset, or import the file again.');
    const listeners = new Set<ProgressFn>();
    const result = readDataset(storedDatasetSource(db, dataset), {
      ...readOptionsFor(stored, tokenizer),
      meta: metaSourceOf(dataset),
      onProgress: (done, total) => listeners.forEach((l) => l(done, total)),
    });
    const created: Tokenizing = { key, result, listeners };
    entry = created;
    remember(created);
    // A failed read is not kept: the next request tries again (and reports the problem again).
    result.catch(() => {
      const at = tokenizedCache.indexOf(created);
      if (at >= 0) tokenizedCache.splice(at, 1);
    });
  } else remember(entry);
  const listener: ProgressFn = (done, total) => ctx.progress({ phase, done, total, unit: 'bytes' });
  entry.listeners.add(listener);
  try {
    return await untilAborted(entry.result, ctx.signal);
  } finally {
    entry.listeners.delete(listener);
  }
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

function metaSourceOf(dataset: StoredDataset): ByteSource | undefined {
  if (dataset.metaJson === null) return undefined;
  return blobSource(new Blob([dataset.metaJson]), dataset.name.replace(/\.bin$/i, '') + '.meta.json');
}

// ─── Requests ─────────────────────────────────────────────────────────────────────────────────────

/** A .meta.json holds one small object; anything larger is not one. */
const META_LIMIT_BYTES = 1024 * 1024;

/**
 * Imports a dataset file: reads all of it with the model's tokenizer first (any bad line, record or id is
 * reported, naming the file and where, and nothing is stored), then copies its bytes into IndexedDB.
 */
export async function importDatasetFile(
  db: LoraLabDb,
  request: { modelId: string; file: File; meta: File | null },
  ctx: DatasetContext,
): Promise<{ dataset: StoredDataset }> {
  const { file, meta } = request;
  checkDatasetSize(file.name, file.size);
  const format = detectFormat(file.name);
  const { stored, tokenizer } = await modelAndTokenizer(db, request.modelId);
  if (meta && meta.size > META_LIMIT_BYTES) throw new UserError(meta.name, 'is over 1 MB, so it is not a .meta.json of token ids.', 'Pick the .bin file with its small .meta.json, or the .bin alone.');
  const metaJson = meta ? await meta.text() : null;
  const ds = await readDataset(blobSource(file, file.name), {
    ...readOptionsFor(stored, tokenizer),
    meta: meta ? blobSource(meta, meta.name) : undefined,
    signal: ctx.signal,
    onProgress: (done, total) => ctx.progress({ phase: `Checking ${file.name}`, done, total, unit: 'bytes' }),
  });
  const dataset = await storeDataset(db, blobSource(file, file.name), {
    name: file.name,
    format,
    metaJson,
    summary: { kind: ds.kind, records: ds.records, tokens: ds.tokens, modelName: stored.name },
    signal: ctx.signal,
    freeBytes: await freeStorageBytes(),
    onProgress: (done, total) => ctx.progress({ phase: `Storing ${file.name}`, done, total, unit: 'bytes' }),
  });
  // The check just tokenized it: the preview that follows need not read it again.
  remember({ key: cacheKey(stored.id, dataset.id), result: Promise.resolve(ds), listeners: new Set() });
  return { dataset };
}

export async function previewStoredDataset(
  db: LoraLabDb,
  request: { modelId: string; datasetId: string; seqLen: number; count: number },
  ctx: DatasetContext,
): Promise<DatasetPreview> {
  const { stored, tokenizer } = await modelAndTokenizer(db, request.modelId);
  const ds = await tokenizeStored(db, stored, tokenizer, request.datasetId, ctx, 'Reading the dataset');
  return {
    datasetId: request.datasetId,
    name: ds.file,
    format: ds.format,
    kind: ds.kind,
    records: previewRecords(ds, tokenizer, request.count),
    stats: datasetStats(ds, request.seqLen),
  };
}

/**
 * The run estimate for a config and the chosen data, before anything is loaded: the model's projections come from
 * its config, and the training tokens are the packed stream that training would build (after val_split).
 */
export async function estimateStoredRun(db: LoraLabDb, request: EstimateRequest, ctx: DatasetContext): Promise<EstimateResult> {
  const { config } = unwrapRunConfig(parseRunConfigYaml(request.configYaml, 'config.yaml'));
  const { stored, tokenizer } = await modelAndTokenizer(db, request.modelId);
  const model = parseModelConfigText(stored.files.config);
  const resolved = resolveTargets(weightlessModel(model), resolveTargetModules(config, model.arch));
  if ('problem' in resolved) throw new UserError('target_modules', resolved.problem, resolved.fix);

  let trainTokens: number | null = null;
  if (request.trainDatasetId !== null) {
    const ds = await tokenizeStored(db, stored, tokenizer, request.trainDatasetId, ctx, 'Reading the dataset');
    // The same split training makes, so the estimate counts the documents that will really be trained on.
    const docs = request.valDatasetId === null && config.val_split > 0 ? splitValidation(ds.docs, config.val_split, config.seed).train : ds.docs;
    const separator = ds.eosId === null ? 0 : 1;
    trainTokens = docs.reduce((n, d) => n + d.ids.length + separator, 0);
  }
  const estimate = estimateRun({
    model,
    targets: resolved.linears,
    ...estimateSettingsOf(config),
    trainTokens: trainTokens ?? 0,
    limits: request.limits,
    // The run will train on this worker's backend: on webgpu its ops take the fused kernels.
    fusedKernels: fusedKernelBackend() !== null,
    weights: { storedDtype: storedMatrixDtype(stored), placement: placementFor(config.base_quantization) },
    deviceMemoryBytes: request.deviceMemoryBytes,
    wasmMemoryLimitBytes: tf.getBackend() === 'wasm' ? WASM_MEMORY_LIMIT_BYTES : null,
    tokensPerSecond: request.tokensPerSecond,
  });
  return { estimate, trainTokens };
}

/** Tokenizes the data of a training run (a stored dataset, or a File handed over directly). */
export async function readRunData(db: LoraLabDb, ref: DatasetRef, stored: StoredModel, tokenizer: TextTokenizer, ctx: DatasetContext): Promise<TokenizedDataset> {
  if ('datasetId' in ref) {
    // The cache's tokenizer is the same files as the training model's: same ids.
    const model = await modelAndTokenizer(db, stored.id);
    return tokenizeStored(db, model.stored, model.tokenizer, ref.datasetId, ctx, 'Tokenizing the dataset');
  }
  return readDataset(blobSource(ref, ref.name), {
    ...readOptionsFor(stored, tokenizer),
    signal: ctx.signal,
    onProgress: (done, total) => ctx.progress({ phase: `Tokenizing ${ref.name}`, done, total, unit: 'bytes' }),
  });
}

// ─── Helpers ──────────────────────────────────────────────────────────────────────────────────────

/** The dtype a checkpoint stores its matrices in (that of its largest tensor: checkpoints rarely mix). */
function storedMatrixDtype(stored: StoredModel): Dtype {
  const largest = stored.tensors.reduce((a, b) => (b.byteLength > a.byteLength ? b : a));
  return largest.dtype;
}

/**
 * The model's projections as resolveTargets sees them (path, in and out features), from its config alone, in
 * module order: a weightless stand-in for the loaded model, so target_modules is resolved by the same rules the
 * run will use without loading gigabytes of weights for an estimate. resolveTargets reads only paths and the
 * config. GPT-2's Conv1D weights are [in, out]; every other projection (and lm_head) is [out, in].
 */
export function projectionsOf(model: ModelConfig): { path: string; inFeatures: number; outFeatures: number }[] {
  const out: { path: string; inFeatures: number; outFeatures: number }[] = [];
  for (const [name, shape] of expectedTensors(model)) {
    if (!name.endsWith('.weight') || shape.length !== 2 || /(^|\.)(wte|wpe|embed_tokens)\.weight$/.test(name)) continue;
    const path = name.slice(0, -'.weight'.length);
    const [a, b] = shape as [number, number];
    const inOut = model.arch === 'gpt2' && path !== 'lm_head';
    out.push({ path, inFeatures: inOut ? a : b, outFeatures: inOut ? b : a });
  }
  // A tied head has no tensor of its own in the manifest; the model still lists it (as the embedding, transposed).
  if (model.tiedEmbeddings) out.push({ path: 'lm_head', inFeatures: model.hiddenSize, outFeatures: model.vocabSize });
  return out;
}

function weightlessModel(model: ModelConfig): CausalLM {
  const linears = projectionsOf(model) as unknown as Linear[];
  return { config: model, linears } as unknown as CausalLM;
}

async function freeStorageBytes(): Promise<number | undefined> {
  if (typeof navigator === 'undefined') return undefined;
  const estimate = await navigator.storage?.estimate?.();
  return estimate?.quota !== undefined ? estimate.quota - (estimate.usage ?? 0) : undefined;
}
