import { UserError } from '../core/errors';
import { clipTextConfig } from '../core/models/diffusion/clip-text';
import { loadClipTokenizerFromFolder } from '../core/models/diffusion/clip-tokenizer';
import { readComponentConfig, type DiffusersComponentName, type DiffusersFolder } from '../core/models/diffusion/component';
import { parseNoiseSchedule } from '../core/models/diffusion/noise';
import { openSingleFile, SD15_CONFIGS, type SingleFileConfigs } from '../core/models/diffusion/single-file';
import { parseUnetConfig } from '../core/models/diffusion/unet-config';
import { vaeConfig } from '../core/models/diffusion/vae';
import { readHeader, type ByteSource } from '../core/safetensors/index';
import { deleteRecord, sweepUnfinishedRecords, writeSliced, type RecordKind } from './chunked-records';
import type { LoraLabDb } from './db';
import { lockName, platformLocks, type Locks } from './locks';
import { StorageFullError } from './quota';
import { singleFileFolder } from './single-file-folder';
import { baseName, planFile, storedFileSource, writeFileSlices, type FileToStore, type StoredFileInfo } from './stored-files';

/**
 * Stable Diffusion 1.x models kept in IndexedDB, apart from the language models (models.ts): a small record and
 * every file the pipeline needs, byte for byte, in slices (stored-files.ts). A diffusers folder keeps its layout;
 * a single-file checkpoint is kept as it came, with its configs and the tokenizer files picked with it, and is
 * mapped to diffusers names when it is read (single-file-folder.ts). Everything is checked before the first byte
 * is written; a failure or a cancel half-way removes what was written (chunked-records.ts).
 */

export type DiffusionModelFormat =
  /** A diffusers folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/. */
  | { readonly kind: 'diffusers' }
  /** One .safetensors with LDM names (stored under `checkpoint`), read with `configs`; the tokenizer files beside it. */
  | { readonly kind: 'single-file'; readonly checkpoint: string; readonly configs: SingleFileConfigs };

export interface StoredDiffusionModel {
  readonly id: string;
  readonly name: string;
  /** `importing` until the last slice is written; such leftovers of a crash are swept on start. */
  readonly status: 'importing' | 'ready';
  readonly format: DiffusionModelFormat;
  /** Every stored file, by its path in the folder view (`unet/config.json`, `tokenizer/vocab.json`, …). */
  readonly files: readonly StoredFileInfo[];
  /** Bytes of all stored files. */
  readonly sizeBytes: number;
  readonly importedAt: number;
}

/** A model's slices: its files, the latents cached with it (latent-cache.ts) and its image LoRAs (image-adapters.ts), whose keys begin with its id. */
export const DIFFUSION_MODEL_RECORDS: RecordKind = { records: 'diffusionModels', slices: ['diffusionFiles', 'latents', 'imageAdapters'], lock: lockName.modelImport };

/** Slices of 16 MiB, as language-model weights (import-model.ts). */
export const DIFFUSION_CHUNK_BYTES = 16 * 1024 * 1024;

export interface DiffusionImportOptions {
  readonly name: string;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly signal?: AbortSignal;
  /** Bytes the origin may still store; checked before anything is written. */
  readonly freeBytes?: number;
  /** Slice size; tests make it tiny so that reads cross slice boundaries. */
  readonly chunkBytes?: number;
  /** The configs a single file is read with; SD 1.5's by default (a single file has none of its own). */
  readonly singleFileConfigs?: SingleFileConfigs;
  readonly locks?: Locks;
}

const COMPONENTS: readonly DiffusersComponentName[] = ['unet', 'vae', 'text_encoder'];
/** Weight file names diffusers and transformers write, preferred in this order (component.ts reads the same). */
const WEIGHT_FILES = ['diffusion_pytorch_model.safetensors', 'model.safetensors'];
const TOKENIZER_REQUIRED = ['vocab.json', 'merges.txt'];
const TOKENIZER_OPTIONAL = ['tokenizer_config.json', 'special_tokens_map.json'];
const FOLDER_FIX = 'Pick the whole Stable Diffusion 1.x folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), or one .safetensors checkpoint with the tokenizer\'s vocab.json and merges.txt.';

/**
 * Checks and stores a diffusers SD 1.x folder, or a single-file checkpoint with its tokenizer files. `files` are the
 * picked files by path relative to the picked folder. Only the files the pipeline reads are stored.
 */
export async function importDiffusionModel(db: LoraLabDb, files: readonly FileToStore[], options: DiffusionImportOptions): Promise<StoredDiffusionModel> {
  const chunkBytes = options.chunkBytes ?? DIFFUSION_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) throw new RangeError(`importDiffusionModel: chunkBytes must be a positive integer, not ${chunkBytes}`);
  const byPath = new Map(files.map((f) => [normalise(f.path), f.source]));
  const picked = byPath.has('model_index.json') ? await checkDiffusers(byPath) : await checkSingleFile(byPath, options.singleFileConfigs ?? SD15_CONFIGS);
  const plan = [...picked.files].map(([path, source]) => ({ info: planFile(path, source.size, chunkBytes), source }));
  const sizeBytes = plan.reduce((n, f) => n + f.info.size, 0);
  if (options.freeBytes !== undefined && sizeBytes > options.freeBytes) throw storageFull(options.name, sizeBytes, options.freeBytes);

  const model: StoredDiffusionModel = {
    id: crypto.randomUUID(),
    name: options.name,
    status: 'importing',
    format: picked.format,
    files: plan.map((f) => f.info),
    sizeBytes,
    importedAt: Date.now(),
  };
  return writeSliced(db, {
    kind: DIFFUSION_MODEL_RECORDS,
    record: model,
    locks: options.locks ?? platformLocks(),
    writeSlices: () => writeFileSlices(db, 'diffusionFiles', model.id, plan, { signal: options.signal, onBytes: (done) => options.onProgress?.(done, sizeBytes) }),
    full: () => storageFull(options.name, sizeBytes, options.freeBytes),
    sweptByAnotherTab: () => new UserError(options.name, 'was removed by another LoRA Lab tab while it was being imported.', 'Import it again, with one tab open.'),
  });
}

interface CheckedModel {
  readonly format: DiffusionModelFormat;
  /** What to store, by stored path. */
  readonly files: ReadonlyMap<string, ByteSource>;
}

/** A diffusers folder: every config parses, every weights file's header reads, the tokenizer loads. */
async function checkDiffusers(byPath: ReadonlyMap<string, ByteSource>): Promise<CheckedModel> {
  const keep = new Map<string, ByteSource>();
  const take = (path: string) => {
    const source = byPath.get(path);
    if (source) keep.set(path, source);
    return source;
  };
  const index = take('model_index.json')!;
  await readJsonObject(index);
  const configs = new Map<string, Record<string, unknown>>();
  for (const name of [...COMPONENTS, 'scheduler'] as const) {
    take(name === 'scheduler' ? 'scheduler/scheduler_config.json' : `${name}/config.json`);
    configs.set(name, await readComponentConfig(byPath, name));
  }
  parseUnetConfig(configs.get('unet')!);
  vaeConfig({ name: 'vae', config: configs.get('vae')!, weights: new Map() });
  clipTextConfig({ name: 'text_encoder', config: configs.get('text_encoder')!, weights: new Map() });
  parseNoiseSchedule(configs.get('scheduler')!);
  for (const name of COMPONENTS) {
    const path = weightsPath(byPath, name);
    await readHeader(take(path)!);
  }
  for (const file of [...TOKENIZER_REQUIRED, ...TOKENIZER_OPTIONAL]) take(`tokenizer/${file}`);
  for (const file of TOKENIZER_REQUIRED) {
    if (!keep.has(`tokenizer/${file}`)) throw new UserError(`tokenizer/${file}`, 'is missing from the diffusers folder.', FOLDER_FIX);
  }
  await loadClipTokenizerFromFolder(keep);
  return { format: { kind: 'diffusers' }, files: keep };
}

/** The component's weights file: a name diffusers writes, or the only .safetensors in its folder (as component.ts picks). */
function weightsPath(byPath: ReadonlyMap<string, ByteSource>, name: DiffusersComponentName): string {
  for (const file of WEIGHT_FILES) if (byPath.has(`${name}/${file}`)) return `${name}/${file}`;
  const candidates = [...byPath.keys()].filter((p) => p.startsWith(`${name}/`) && p.endsWith('.safetensors'));
  if (candidates.length === 1) return candidates[0]!;
  if (candidates.length > 1) {
    throw new UserError(`${name}/`, `holds ${candidates.length} safetensors files (${candidates.join(', ')}) and none is named ${WEIGHT_FILES.join(' or ')}.`, 'Keep only the weights file diffusers wrote.');
  }
  throw new UserError(`${name}/${WEIGHT_FILES[name === 'text_encoder' ? 1 : 0]}`, 'is missing from the diffusers folder (only .safetensors weights are read).', FOLDER_FIX);
}

/** One .safetensors checkpoint with LDM names, and vocab.json + merges.txt (a single file has no tokenizer). */
async function checkSingleFile(byPath: ReadonlyMap<string, ByteSource>, configs: SingleFileConfigs): Promise<CheckedModel> {
  const checkpoints = [...byPath.keys()].filter((p) => p.toLowerCase().endsWith('.safetensors'));
  if (checkpoints.length === 0) throw new UserError('model_index.json', 'is missing, and no .safetensors checkpoint was picked either.', FOLDER_FIX);
  if (checkpoints.length > 1) {
    throw new UserError('model_index.json', `is missing, so this is read as a single-file checkpoint, but ${checkpoints.length} .safetensors files were picked (${checkpoints.slice(0, 3).join(', ')}).`, FOLDER_FIX);
  }
  const checkpointPath = checkpoints[0]!;
  const source = byPath.get(checkpointPath)!;
  const byName = new Map([...byPath].map(([path, s]) => [baseName(path), s]));
  const tokenizer = new Map<string, ByteSource>();
  for (const file of [...TOKENIZER_REQUIRED, ...TOKENIZER_OPTIONAL]) {
    const found = byName.get(file);
    if (found) tokenizer.set(`tokenizer/${file}`, found);
  }
  const missing = TOKENIZER_REQUIRED.filter((file) => !tokenizer.has(`tokenizer/${file}`));
  if (missing.length > 0) {
    throw new UserError(
      baseName(checkpointPath),
      `is a single-file checkpoint, which holds no tokenizer, and ${missing.join(' and ')} ${missing.length > 1 ? 'were' : 'was'} not picked with it.`,
      "Pick the checkpoint together with the CLIP tokenizer's vocab.json and merges.txt (the tokenizer/ folder of any SD 1.x model in diffusers layout, e.g. stable-diffusion-v1-5).",
    );
  }
  parseNoiseSchedule(configs.scheduler);
  const checkpoint = await openSingleFile(source, configs);
  await loadClipTokenizerFromFolder(tokenizer);
  const stored = `checkpoint/${baseName(checkpointPath)}`;
  return { format: { kind: 'single-file', checkpoint: stored, configs }, files: new Map([[stored, checkpoint.source], ...tokenizer]) };
}

/** Models ready to use, newest first. */
export async function listDiffusionModels(db: LoraLabDb): Promise<StoredDiffusionModel[]> {
  const all = await db.getAll('diffusionModels');
  return all.filter((m) => m.status === 'ready').sort((a, b) => b.importedAt - a.importedAt);
}

export async function getDiffusionModel(db: LoraLabDb, id: string): Promise<StoredDiffusionModel | undefined> {
  const model = await db.get('diffusionModels', id);
  return model?.status === 'ready' ? model : undefined;
}

/** Deletes a model's record, its files and the latents cached with it, in one transaction. */
export function deleteDiffusionModel(db: LoraLabDb, id: string): Promise<void> {
  return deleteRecord(db, DIFFUSION_MODEL_RECORDS, id);
}

/** Removes imports that never finished; those a live tab still writes (their lock is held) are left alone. */
export function sweepUnfinishedDiffusionModels(db: LoraLabDb, locks: Locks): Promise<number> {
  return sweepUnfinishedRecords(db, DIFFUSION_MODEL_RECORDS, locks);
}

/**
 * A stored model as the diffusers folder the core loads (loadSamplingPipeline, readComponentConfig): its files read
 * from IndexedDB slice by slice, a single file mapped to diffusers names as it is read.
 */
export async function storedDiffusersFolder(db: LoraLabDb, model: StoredDiffusionModel): Promise<DiffusersFolder> {
  const files = new Map(model.files.map((info) => [info.path, storedFileSource(db, 'diffusionFiles', model.id, info, model.name)]));
  if (model.format.kind === 'diffusers') return files;
  const checkpoint = files.get(model.format.checkpoint);
  if (!checkpoint) throw new Error(`storage: model ${model.id} lists no ${model.format.checkpoint}`);
  const tokenizer = new Map([...files].filter(([path]) => path.startsWith('tokenizer/')));
  return singleFileFolder(await openSingleFile(checkpoint, model.format.configs), tokenizer);
}

/** Paths as the folder view keys them: '/'-separated, no leading './' or '/'. */
function normalise(path: string): string {
  return path.replace(/\\/g, '/').replace(/^(\.\/|\/)+/, '');
}

async function readJsonObject(source: ByteSource): Promise<Record<string, unknown>> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await source.read(0, source.size)));
  } catch (e) {
    throw new UserError(source.name, `is not valid JSON (${e instanceof Error ? e.message : String(e)}).`, 'Use the file that came with the model.');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new UserError(source.name, 'must be a JSON object.', 'Use the file that came with the model.');
  return json as Record<string, unknown>;
}

function storageFull(name: string, needed: number, free: number | undefined): UserError {
  const room = free === undefined ? '' : ` (about ${(Math.max(0, free) / 1e6).toFixed(0)} MB are free)`;
  return new StorageFullError(name, `does not fit in this browser's storage: it needs ${(needed / 1e6).toFixed(1)} MB${room}. Nothing was kept.`, 'Delete models, datasets or runs you no longer need, then import it again.');
}
