import { captionStates, cacheImageSet, type PreparedImage } from '../core/models/diffusion/latent-cache';
import type { ClipTextModel } from '../core/models/diffusion/clip-text';
import type { ClipTokenizer } from '../core/models/diffusion/clip-tokenizer';
import type { Vae } from '../core/models/diffusion/vae';
import type { CachedImage, CachedImageSet, CaptionTexts } from '../core/train/image-examples';
import type { LoraLabDb } from './db';
import { ownedBuffer } from './chunked-records';

/**
 * The VAE latents of a stored dataset's images under a stored model, kept after the first run encodes them, so the
 * next run with the same (model, dataset, resolution, flip) skips decoding and encoding altogether (kohya's
 * cache_latents_to_disk). The rows' keys begin with the model's id, so deleting the model deletes them in its
 * transaction (DIFFUSION_MODEL_RECORDS); deleting the dataset finds them by the byDataset index (image-datasets.ts).
 * Captions are not cached: they may change with caption_extension, and their text states are cheap.
 */

export interface LatentKey {
  readonly modelId: string;
  readonly datasetId: string;
  readonly resolution: number;
  /** Whether the mirrored images' latents are kept too (flip_aug). */
  readonly flip: boolean;
}

/** One image's latents (C×H×W float32, scaled by the VAE's scaling_factor), keyed by image order in the folder. */
export interface LatentRow {
  readonly modelId: string;
  readonly datasetId: string;
  readonly resolution: number;
  /** 0 or 1: IndexedDB keys cannot be booleans. */
  readonly flip: 0 | 1;
  readonly index: number;
  /** The image's path, checked on reading: a row is only used for the image it was made from. */
  readonly path: string;
  readonly latents: ArrayBuffer;
  readonly flippedLatents: ArrayBuffer | null;
}

export interface CachedLatents {
  readonly latents: Float32Array;
  readonly flippedLatents: Float32Array | null;
}

function rangeOf(key: LatentKey): IDBKeyRange {
  const prefix = [key.modelId, key.datasetId, key.resolution, key.flip ? 1 : 0];
  return IDBKeyRange.bound([...prefix, 0], [...prefix, Number.MAX_SAFE_INTEGER]);
}

/** The cached latents of exactly these images (by path, in order), or null when any is missing. */
export async function readLatents(db: LoraLabDb, key: LatentKey, paths: readonly string[]): Promise<CachedLatents[] | null> {
  const rows = await db.getAll('latents', rangeOf(key));
  if (rows.length !== paths.length || rows.some((r, i) => r.path !== paths[i] || (key.flip && r.flippedLatents === null))) return null;
  return rows.map((r) => ({ latents: new Float32Array(r.latents), flippedLatents: r.flippedLatents ? new Float32Array(r.flippedLatents) : null }));
}

/** Replaces the cache of `key` with these images' latents, in one transaction: a cache is whole or absent. */
export async function writeLatents(db: LoraLabDb, key: LatentKey, images: readonly (CachedLatents & { readonly path: string })[]): Promise<void> {
  const tx = db.transaction('latents', 'readwrite');
  const flip = key.flip ? 1 : 0;
  await Promise.all([
    tx.store.delete(rangeOf(key)),
    ...images.map((image, index) =>
      tx.store.put({
        modelId: key.modelId,
        datasetId: key.datasetId,
        resolution: key.resolution,
        flip,
        index,
        path: image.path,
        latents: ownedBuffer(new Uint8Array(image.latents.buffer, image.latents.byteOffset, image.latents.byteLength)),
        flippedLatents: image.flippedLatents ? ownedBuffer(new Uint8Array(image.flippedLatents.buffer, image.flippedLatents.byteOffset, image.flippedLatents.byteLength)) : null,
      }),
    ),
    tx.done,
  ]);
}

/** Bytes of cached latents per model id (the Storage panel counts them with the model they belong to). */
export async function latentBytesByModel(db: LoraLabDb): Promise<Map<string, number>> {
  const bytes = new Map<string, number>();
  let cursor = await db.transaction('latents').store.openCursor();
  while (cursor) {
    const row = cursor.value;
    bytes.set(row.modelId, (bytes.get(row.modelId) ?? 0) + row.latents.byteLength + (row.flippedLatents?.byteLength ?? 0));
    cursor = await cursor.continue();
  }
  return bytes;
}

/** An image of a stored dataset, ready to be prepared only if its latents are not cached. */
export interface CacheableImage {
  readonly path: string;
  readonly caption: string;
  readonly repeats: number;
  /** Decodes and crops it (and its mirror with flip): called only on a cache miss. */
  prepare(): Promise<PreparedImage>;
}

export interface CachedSetResult {
  readonly set: CachedImageSet;
  /** Whether the latents came from the cache (no image was decoded or encoded). */
  readonly hit: boolean;
}

/**
 * The trainer's cached image set for `images`: from the stored latents when (model, dataset, resolution, flip) was
 * encoded before, else encoded by cacheImageSet and stored for the next run. A cache that cannot be written (a full
 * disk) costs only the next run's encoding, so that failure is not the run's.
 */
export async function cachedImageSet(
  db: LoraLabDb,
  key: LatentKey,
  parts: { readonly vae: Vae; readonly textEncoder: ClipTextModel; readonly tokenizer: ClipTokenizer },
  images: readonly CacheableImage[],
  opts: { readonly trainTextEncoder: boolean; readonly onProgress?: (done: number, total: number) => void },
): Promise<CachedSetResult> {
  const cached = await readLatents(db, key, images.map((i) => i.path));
  if (cached) return { set: await setFromLatents(parts, images, cached, key.resolution, opts.trainTextEncoder), hit: true };
  const prepared: PreparedImage[] = [];
  for (const image of images) prepared.push(await image.prepare());
  const set = await cacheImageSet(parts, prepared, opts);
  // cacheImageSet repeats each image's entry `repeats` times, in order: the first of each run is the image's.
  const perImage: (CachedLatents & { path: string })[] = [];
  let at = 0;
  for (const image of images) {
    const entry = set.examples[at]!;
    perImage.push({ path: image.path, latents: entry.latents, flippedLatents: entry.flippedLatents });
    at += image.repeats;
  }
  await writeLatents(db, key, perImage).catch(() => undefined);
  return { set, hit: false };
}

/** The set cacheImageSet would make, from latents already encoded: captions encoded as it does, entries repeated. */
async function setFromLatents(
  parts: { readonly vae: Vae; readonly textEncoder: ClipTextModel; readonly tokenizer: ClipTokenizer },
  images: readonly CacheableImage[],
  latents: readonly CachedLatents[],
  resolution: number,
  trainTextEncoder: boolean,
): Promise<CachedImageSet> {
  if (images.length === 0) return { latentShape: [0, 0, 0], examples: [], captions: { kind: 'ids', ids: [] } };
  const distinct = [...new Set(images.map((i) => i.caption))];
  const captionIndex = new Map(distinct.map((c, i) => [c, i]));
  const captions: CaptionTexts = trainTextEncoder
    ? { kind: 'ids', ids: distinct.map((c) => parts.tokenizer.encodeForModel(c)) }
    : await captionStates(parts.textEncoder, parts.tokenizer, distinct);
  const examples: CachedImage[] = [];
  images.forEach((image, i) => {
    const entry: CachedImage = { latents: latents[i]!.latents, flippedLatents: latents[i]!.flippedLatents, caption: captionIndex.get(image.caption)! };
    for (let r = 0; r < image.repeats; r++) examples.push(entry);
  });
  const side = resolution / parts.vae.downscale;
  return { latentShape: [latents[0]!.latents.length / (side * side), side, side], examples, captions };
}
