import type { RunConfig } from '../core/config';
import { decodeImageEntry, prepareImage, readImageFolder, type ImageDecoder, type ImageEntry } from '../core/data/images/index';
import { UserError } from '../core/errors';
import { loadClipTokenizerFromFolder } from '../core/models/diffusion/clip-tokenizer';
import type { DiffusersFolder } from '../core/models/diffusion/component';
import { cacheImageSet, type PreparedImage } from '../core/models/diffusion/latent-cache';
import type { SamplingPipeline } from '../core/models/diffusion/sample';
import { blobSource } from '../core/safetensors/source';
import type { CachedImageSet } from '../core/train/image-examples';
import type { LoraLabDb } from '../storage/db';
import { deleteDiffusionModel, getDiffusionModel, importDiffusionModel, listDiffusionModels, storedDiffusersFolder, type StoredDiffusionModel } from '../storage/diffusion-models';
import {
  getImageDataset,
  importImageDataset,
  listImageDatasets,
  previewImageDataset,
  readStoredImageFolder,
  summaryOf,
  type ImageDatasetPreview,
  type ImageDatasetSummary,
} from '../storage/image-datasets';
import { cachedImageSet } from '../storage/latent-cache';
import type { Locks } from '../storage/locks';
import { deleteUnusedImageDataset } from '../storage/prune';
import { liveRunOnModel } from '../storage/runs';
import type { RunContext } from './training-run';

/**
 * The worker's side of the image library: Stable Diffusion models and image folders imported once into IndexedDB
 * (storage/diffusion-models.ts, image-datasets.ts), listed, previewed and deleted; and what an image run reads, from
 * the library (with the latent cache) or from folders picked for that run alone.
 */

/** A folder the person picked (or the headless runner handed over): its name and its files by relative path. */
export interface PickedFolder {
  readonly name: string;
  /** `path` is relative to the folder, '/'-separated, without the folder's own name. */
  readonly files: readonly { readonly path: string; readonly file: File }[];
}

/** An image run's model: one of the library, or a diffusers folder picked for the run. */
export type ImageModelRef = { readonly modelId: string } | PickedFolder;
/** An image run's images: a stored image folder, or a folder picked for the run. */
export type ImageDataRef = { readonly datasetId: string } | PickedFolder;

type Context = Pick<RunContext, 'signal' | 'progress'>;

export interface ImportFolderRequest {
  readonly name: string;
  readonly files: readonly { readonly path: string; readonly file: File }[];
}

async function freeBytes(): Promise<number | undefined> {
  const estimate = await globalThis.navigator?.storage?.estimate?.();
  return estimate?.quota !== undefined ? estimate.quota - (estimate.usage ?? 0) : undefined;
}

export async function importDiffusionFolder(db: LoraLabDb, { name, files }: ImportFolderRequest, ctx: Context, locks: Locks): Promise<StoredDiffusionModel> {
  return importDiffusionModel(db, files.map(({ path, file }) => ({ path, source: blobSource(file, path) })), {
    name,
    locks,
    signal: ctx.signal,
    freeBytes: await freeBytes(),
    onProgress: (done, total) => ctx.progress({ phase: 'Storing the model', done, total, unit: 'bytes' }),
  });
}

export async function importImageFolder(db: LoraLabDb, { name, files }: ImportFolderRequest, ctx: Context, locks: Locks, decode: ImageDecoder): Promise<ImageDatasetSummary> {
  const dataset = await importImageDataset(db, files.map(({ path, file }) => ({ path, source: blobSource(file, path) })), {
    name,
    decode,
    locks,
    signal: ctx.signal,
    freeBytes: await freeBytes(),
    onProgress: ({ phase, done, total }) =>
      ctx.progress(phase === 'decoding' ? { phase: 'Reading images', done, total, unit: 'steps' } : { phase: 'Storing images', done, total, unit: 'bytes' }),
  });
  return summaryOf(dataset);
}

export async function listImageLibrary(db: LoraLabDb): Promise<{ models: StoredDiffusionModel[]; datasets: ImageDatasetSummary[] }> {
  return { models: await listDiffusionModels(db), datasets: (await listImageDatasets(db)).map(summaryOf) };
}

/** Deletes a model and its cached latents; refused while a run (in any tab) trains on it. */
export async function deleteStoredDiffusionModel(db: LoraLabDb, modelId: string, locks: Locks): Promise<void> {
  const live = await liveRunOnModel(db, modelId, locks);
  if (live) {
    throw new UserError('model', `cannot be deleted while the run "${live.name}" trains on it.`, 'Stop that run, or wait for it to end, then delete the model.');
  }
  await deleteDiffusionModel(db, modelId);
}

export function deleteStoredImageDataset(db: LoraLabDb, datasetId: string, locks: Locks): Promise<void> {
  return deleteUnusedImageDataset(db, datasetId, locks);
}

export interface ImageDatasetPreviewRequest {
  readonly datasetId: string;
  /** Token counts with this model's tokenizer; without it they are not counted. */
  readonly modelId?: string;
  readonly resolution: number;
  /** The run's caption_extension (`.txt` when absent). */
  readonly captionExtension?: string;
}

export async function previewStoredImageDataset(db: LoraLabDb, request: ImageDatasetPreviewRequest): Promise<ImageDatasetPreview> {
  const dataset = await getImageDataset(db, request.datasetId);
  if (!dataset) throw new UserError('dataset', 'is not in the library any more.', 'Import the image folder again.');
  const model = request.modelId === undefined ? null : await storedModel(db, request.modelId);
  const tokenizer = model ? await loadClipTokenizerFromFolder(await storedDiffusersFolder(db, model)) : null;
  return previewImageDataset(db, dataset, { tokenizer, resolution: request.resolution, captionExtension: request.captionExtension });
}

async function storedModel(db: LoraLabDb, modelId: string): Promise<StoredDiffusionModel> {
  const model = await getDiffusionModel(db, modelId);
  if (!model) throw new UserError('base_model', 'is not in the model library any more.', 'Import the Stable Diffusion model again.');
  return model;
}

// ─── What an image run reads ────────────────────────────────────────────────────────────────────────────────────

export interface OpenedImageModel {
  readonly folder: DiffusersFolder;
  /** The library's id; null for a picked folder (its latents are not cached). */
  readonly modelId: string | null;
  readonly name: string;
}

export async function openImageModel(db: LoraLabDb, ref: ImageModelRef): Promise<OpenedImageModel> {
  if ('modelId' in ref) {
    const model = await storedModel(db, ref.modelId);
    return { folder: await storedDiffusersFolder(db, model), modelId: model.id, name: model.name };
  }
  const folder: DiffusersFolder = new Map(ref.files.map(({ path, file }) => [path, blobSource(file, path)]));
  if (!folder.has('model_index.json')) {
    throw new UserError('base_model', `${ref.name} has no model_index.json, so it is not a diffusers folder.`, 'Pick the Stable Diffusion folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).');
  }
  return { folder, modelId: null, name: ref.name };
}

export interface ImageData {
  readonly entries: readonly ImageEntry[];
  /** The library's id; null for a picked folder. */
  readonly datasetId: string | null;
}

export async function readImageData(db: LoraLabDb, ref: ImageDataRef, config: Pick<RunConfig, 'caption_extension'>): Promise<ImageData> {
  if ('datasetId' in ref) {
    const dataset = await getImageDataset(db, ref.datasetId);
    if (!dataset) throw new UserError('dataset', 'is not in the library any more.', 'Import the image folder again.');
    return { entries: (await readStoredImageFolder(db, dataset, config.caption_extension)).entries, datasetId: dataset.id };
  }
  const folder = await readImageFolder(ref.files.map(({ path, file }) => ({ path, source: blobSource(file, path) })), {
    folderName: ref.name,
    captionExtension: config.caption_extension,
  });
  return { entries: folder.entries, datasetId: null };
}

/**
 * Decodes, crops and (with flip) mirrors each image and encodes them all to latents once; for a library model and
 * dataset, the latents are read from the cache when this (model, dataset, resolution, flip) was encoded before,
 * and stored for next time when not.
 */
export async function imageSetOf(
  db: LoraLabDb,
  pipeline: SamplingPipeline,
  modelId: string | null,
  data: ImageData,
  opts: { readonly resolution: number; readonly flip: boolean; readonly phase: string; readonly decode: ImageDecoder; readonly trainTextEncoder: boolean },
  ctx: Context,
): Promise<CachedImageSet> {
  const prepare = async (entry: ImageEntry, i: number): Promise<PreparedImage> => {
    ctx.progress({ phase: `${opts.phase}: reading`, done: i, total: data.entries.length, unit: 'steps' });
    const decoded = await decodeImageEntry(entry, opts.decode);
    return {
      size: opts.resolution,
      rgb: prepareImage(decoded, { resolution: opts.resolution, flip: false }),
      flippedRgb: opts.flip ? prepareImage(decoded, { resolution: opts.resolution, flip: true }) : null,
      caption: entry.caption,
      repeats: entry.repeats,
    };
  };
  // With a text-encoder LoRA the captions stay token ids (the encoder runs every step); else their states are cached.
  const encodeOpts = { trainTextEncoder: opts.trainTextEncoder, onProgress: (done: number, total: number) => ctx.progress({ phase: opts.phase, done, total, unit: 'steps' as const }) };
  if (modelId === null || data.datasetId === null) {
    const prepared: PreparedImage[] = [];
    for (const [i, entry] of data.entries.entries()) prepared.push(await prepare(entry, i));
    return cacheImageSet(pipeline, prepared, encodeOpts);
  }
  const key = { modelId, datasetId: data.datasetId, resolution: opts.resolution, flip: opts.flip };
  const images = data.entries.map((entry, i) => ({ path: entry.path, caption: entry.caption, repeats: entry.repeats, prepare: () => prepare(entry, i) }));
  return (await cachedImageSet(db, key, pipeline, images, encodeOpts)).set;
}
