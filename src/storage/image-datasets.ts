import { decodeImageEntry, imageInfo, imagePreview, prepareImage, readImageFolder, type ImageDecoder, type ImageFile, type ImageFolder, type ImagePreview } from '../core/data/images/index';
import { isHiddenPath, isImagePath, normalisePath } from '../core/data/images/paths';
import type { ClipTokenizer } from '../core/models/diffusion/clip-tokenizer';
import { UserError } from '../core/errors';
import { encodePng } from '../core/image/png';
import type { ByteSource } from '../core/safetensors/source';
import { slicesOf, sweepUnfinishedRecords, writeSliced, type RecordKind } from './chunked-records';
import type { LoraLabDb } from './db';
import { lockName, platformLocks, type Locks } from './locks';
import { StorageFullError } from './quota';
import { planFile, storedFileSource, writeFileSlices, type FileToStore, type StoredFileInfo } from './stored-files';

/**
 * Image folders kept in IndexedDB: the images and the caption files (and metadata.csv) byte for byte, so that
 * readImageFolder reads the stored folder exactly as it read the picked one (with any caption_extension a run sets),
 * and, per image, what the preview shows without decoding it again: its size, a pixel hash (duplicates) and a
 * small thumbnail. Every image is decoded once at import, so a file the browser cannot read is refused then.
 */

export interface StoredImageInfo {
  readonly path: string;
  readonly width: number;
  readonly height: number;
  /** pixelHash of the decoded image: equal hashes are the same picture. */
  readonly pixelHash: string;
  /** A THUMBNAIL_SIZE² PNG of the centre crop, for the preview grid. */
  readonly thumbnail: ArrayBuffer;
}

export interface StoredImageDataset {
  readonly id: string;
  /** The picked folder's name (images directly in it count tags under this name, as kohya does). */
  readonly name: string;
  /** `importing` until the last slice is written; such leftovers of a crash are swept on start. */
  readonly status: 'importing' | 'ready';
  readonly files: readonly StoredFileInfo[];
  readonly sizeBytes: number;
  readonly createdAt: number;
  /** Images read at import (with the default caption extension), in readImageFolder's order. */
  readonly images: readonly StoredImageInfo[];
  /** readImageFolder's notes at import. */
  readonly notes: readonly string[];
  /** Images seen per epoch at import: the sum of the repeats. */
  readonly imagesPerEpoch: number;
}

/** What the library lists: a dataset without its per-image infos and thumbnails. */
export type ImageDatasetSummary = Omit<StoredImageDataset, 'images' | 'files'> & { readonly imageCount: number };

export const IMAGE_DATASET_RECORDS: RecordKind = { records: 'imageDatasets', slices: ['imageDatasetFiles'], lock: lockName.datasetImport };

/** Slices of 4 MiB: an image or a caption file is mostly one slice. */
export const IMAGE_CHUNK_BYTES = 4 * 1024 * 1024;
/** Side of the preview thumbnails, in pixels. */
export const THUMBNAIL_SIZE = 64;
/** Files that are neither images nor caption text are not stored; caption files and metadata.csv stay under this. */
const TEXT_FILE_LIMIT = 1024 * 1024;

export interface ImageImportOptions {
  readonly name: string;
  /** The worker's createImageBitmap decoder, or a PNG decoder in Node tests. */
  readonly decode: ImageDecoder;
  readonly onProgress?: (p: { readonly phase: 'decoding' | 'storing'; readonly done: number; readonly total: number }) => void;
  readonly signal?: AbortSignal;
  readonly freeBytes?: number;
  readonly chunkBytes?: number;
  readonly locks?: Locks;
}

/**
 * Reads the folder (captions, repeats), decodes every image (size, hash, thumbnail), then stores it. Nothing is
 * written before every image has decoded; on a failure half-way the dataset is removed again.
 */
export async function importImageDataset(db: LoraLabDb, files: readonly FileToStore[], options: ImageImportOptions): Promise<StoredImageDataset> {
  const chunkBytes = options.chunkBytes ?? IMAGE_CHUNK_BYTES;
  const kept = new Map<string, ByteSource>();
  for (const file of files) {
    const path = normalisePath(file.path);
    if (path === null || path === '' || isHiddenPath(path)) continue;
    if (isImagePath(path) || file.source.size <= TEXT_FILE_LIMIT) kept.set(path, file.source);
  }
  const folder = await readImageFolder([...kept].map(([path, source]) => ({ path, source })), { folderName: options.name });
  const used = new Set(folder.entries.map((e) => e.path));
  // Images of 0-repeat folders are never trained: not stored.
  for (const path of [...kept.keys()]) if (isImagePath(path) && !used.has(path)) kept.delete(path);

  const images: StoredImageInfo[] = [];
  for (const entry of folder.entries) {
    options.signal?.throwIfAborted();
    options.onProgress?.({ phase: 'decoding', done: images.length, total: folder.entries.length });
    const decoded = await decodeImageEntry(entry, options.decode);
    const thumbnail = encodePng(THUMBNAIL_SIZE, THUMBNAIL_SIZE, prepareImage(decoded, { resolution: THUMBNAIL_SIZE, flip: false }));
    images.push({ path: entry.path, ...imageInfo(decoded), thumbnail: thumbnail.buffer as ArrayBuffer });
  }

  const plan = [...kept].map(([path, source]) => ({ info: planFile(path, source.size, chunkBytes), source }));
  const sizeBytes = plan.reduce((n, f) => n + f.info.size, 0);
  if (options.freeBytes !== undefined && sizeBytes > options.freeBytes) throw storageFull(options.name, sizeBytes, options.freeBytes);
  const dataset: StoredImageDataset = {
    id: crypto.randomUUID(),
    name: options.name,
    status: 'importing',
    files: plan.map((f) => f.info),
    sizeBytes,
    createdAt: Date.now(),
    images,
    notes: folder.notes,
    imagesPerEpoch: folder.entries.reduce((n, e) => n + e.repeats, 0),
  };
  return writeSliced(db, {
    kind: IMAGE_DATASET_RECORDS,
    record: dataset,
    locks: options.locks ?? platformLocks(),
    writeSlices: () =>
      writeFileSlices(db, 'imageDatasetFiles', dataset.id, plan, { signal: options.signal, onBytes: (done) => options.onProgress?.({ phase: 'storing', done, total: sizeBytes }) }),
    full: () => storageFull(options.name, sizeBytes, options.freeBytes),
    sweptByAnotherTab: () => new UserError(options.name, 'was removed by another LoRA Lab tab while it was being stored.', 'Import it again, with one tab open.'),
  });
}

export function summaryOf(dataset: StoredImageDataset): ImageDatasetSummary {
  const { images, files: _files, ...rest } = dataset;
  return { ...rest, imageCount: images.length };
}

/** Datasets ready to use, newest first. */
export async function listImageDatasets(db: LoraLabDb): Promise<StoredImageDataset[]> {
  const all = await db.getAll('imageDatasets');
  return all.filter((d) => d.status === 'ready').sort((a, b) => b.createdAt - a.createdAt);
}

export async function getImageDataset(db: LoraLabDb, id: string): Promise<StoredImageDataset | undefined> {
  const dataset = await db.get('imageDatasets', id);
  return dataset?.status === 'ready' ? dataset : undefined;
}

/** Deletes a dataset's record, its files and every latent cached from it, in one transaction. */
export async function deleteImageDataset(db: LoraLabDb, id: string): Promise<void> {
  const tx = db.transaction(['imageDatasets', 'imageDatasetFiles', 'latents'], 'readwrite');
  const latentKeys = await tx.objectStore('latents').index('byDataset').getAllKeys(id);
  await Promise.all([
    tx.objectStore('imageDatasets').delete(id),
    tx.objectStore('imageDatasetFiles').delete(slicesOf(id)),
    ...latentKeys.map((key) => tx.objectStore('latents').delete(key)),
    tx.done,
  ]);
}

export function sweepUnfinishedImageDatasets(db: LoraLabDb, locks: Locks): Promise<number> {
  return sweepUnfinishedRecords(db, IMAGE_DATASET_RECORDS, locks);
}

/** The stored files as readImageFolder takes them (read from IndexedDB as they are used). */
export function storedImageFiles(db: LoraLabDb, dataset: StoredImageDataset): ImageFile[] {
  return dataset.files.map((info) => ({ path: info.path, source: storedFileSource(db, 'imageDatasetFiles', dataset.id, info, dataset.name) }));
}

/** The stored folder read as a run reads it: `captionExtension` is the run's caption_extension. */
export function readStoredImageFolder(db: LoraLabDb, dataset: StoredImageDataset, captionExtension?: string): Promise<ImageFolder> {
  return readImageFolder(storedImageFiles(db, dataset), { folderName: dataset.name, captionExtension });
}

export interface ImageDatasetPreview extends ImagePreview {
  readonly notes: readonly string[];
  /** Whether token counts (and the long-caption warning) come from a model's tokenizer; without one they are 0. */
  readonly tokenCounts: boolean;
  /** THUMBNAIL_SIZE² PNG bytes per image path, in the rows' order. */
  readonly thumbnails: readonly { readonly path: string; readonly png: Uint8Array }[];
}

/** A tokenizer stand-in when no model is chosen: no counts, so no caption is reported too long. */
const NO_TOKENIZER: Pick<ClipTokenizer, 'encode' | 'maxPromptTokens'> = { encode: () => [], maxPromptTokens: Number.POSITIVE_INFINITY };

/**
 * The Data panel's table of a stored image folder: one row per image with its warnings, the folder's warnings, and
 * the thumbnails; nothing is decoded (sizes and hashes were kept at import).
 */
export async function previewImageDataset(
  db: LoraLabDb,
  dataset: StoredImageDataset,
  opts: { readonly tokenizer: Pick<ClipTokenizer, 'encode' | 'maxPromptTokens'> | null; readonly resolution: number; readonly captionExtension?: string },
): Promise<ImageDatasetPreview> {
  const folder = await readStoredImageFolder(db, dataset, opts.captionExtension);
  const byPath = new Map(dataset.images.map((i) => [i.path, i]));
  const preview = imagePreview(folder.entries, byPath, opts.tokenizer ?? NO_TOKENIZER, { resolution: opts.resolution });
  return {
    ...preview,
    notes: folder.notes,
    tokenCounts: opts.tokenizer !== null,
    thumbnails: folder.entries.flatMap((e) => {
      const info = byPath.get(e.path);
      return info ? [{ path: e.path, png: new Uint8Array(info.thumbnail) }] : [];
    }),
  };
}

function storageFull(name: string, needed: number, free: number | undefined): UserError {
  const room = free === undefined ? '' : ` (about ${(Math.max(0, free) / 1e6).toFixed(0)} MB are free)`;
  return new StorageFullError(name, `does not fit in this browser's storage: it needs ${(needed / 1e6).toFixed(1)} MB${room}. Nothing was kept.`, 'Delete datasets, runs or models you no longer need, then import it again.');
}
