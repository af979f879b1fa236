import { isUserError, UserError } from '../../errors';
import { readExactly } from '../formats/utf8';
import type { ImageEntry } from './folder';

/**
 * Image decoding is injected: the browser worker decodes with createImageBitmap + OffscreenCanvas, the Node tests
 * with a PNG decoder, so the core stays DOM-free and every step after decoding is the same everywhere.
 */

export interface DecodedImage {
  readonly width: number;
  readonly height: number;
  /** width × height × 4 bytes, rows top to bottom, straight (not premultiplied) alpha. */
  readonly rgba: Uint8Array;
}

/** Decodes an image file's bytes; `name` is for the decoder's own messages. Rejects on anything it cannot read. */
export type ImageDecoder = (bytes: Uint8Array, name: string) => Promise<DecodedImage>;

const UNDECODABLE_FIX = 'Open it in an image editor and save it again as PNG or JPEG, or remove it from the folder.';

/** Reads and decodes one image. A file the decoder refuses, or a result that is not an image, is a UserError naming the file. */
export async function decodeImageEntry(entry: Pick<ImageEntry, 'path' | 'source'>, decode: ImageDecoder): Promise<DecodedImage> {
  const bytes = await readExactly(entry.source, 0, entry.source.size);
  let image: DecodedImage;
  try {
    image = await decode(bytes, entry.path);
  } catch (e) {
    if (isUserError(e)) throw e;
    const why = e instanceof Error && e.message ? ` (${e.message})` : '';
    throw new UserError(entry.path, `could not be decoded as an image${why}.`, UNDECODABLE_FIX);
  }
  const { width, height, rgba } = image;
  if (!Number.isSafeInteger(width) || !Number.isSafeInteger(height) || width < 1 || height < 1 || rgba.length !== width * height * 4) {
    throw new UserError(entry.path, `decoded to no usable pixels (${width}×${height}, ${rgba.length} bytes).`, UNDECODABLE_FIX);
  }
  return image;
}

/** What the preview needs to know of a decoded image, without keeping its pixels. */
export interface ImageInfo {
  readonly width: number;
  readonly height: number;
  /** Equal for images with the same size and RGBA bytes (see pixelHash). */
  readonly pixelHash: string;
}

export function imageInfo(image: DecodedImage): ImageInfo {
  return { width: image.width, height: image.height, pixelHash: pixelHash(image) };
}

/**
 * A 64-bit hash of the size and the RGBA bytes: two independent 32-bit hashes (FNV-1a and a multiply-rotate mix)
 * side by side. Written out rather than crypto.subtle, which a page served over plain http does not have; for
 * finding duplicate images among thousands, 64 bits make a false match practically impossible.
 */
export function pixelHash(image: DecodedImage): string {
  let fnv = 0x811c9dc5;
  let mix = 0x9e3779b9 ^ image.width ^ Math.imul(image.height, 0x85ebca6b);
  fnv = Math.imul(fnv ^ image.width, 0x01000193);
  fnv = Math.imul(fnv ^ image.height, 0x01000193);
  const { rgba } = image;
  for (let i = 0; i < rgba.length; i++) {
    const b = rgba[i]!;
    fnv = Math.imul(fnv ^ b, 0x01000193);
    mix = Math.imul(mix ^ (b + i), 0xcc9e2d51);
    mix = (mix << 15) | (mix >>> 17);
    mix = (Math.imul(mix, 5) + 0xe6546b64) | 0;
  }
  return (fnv >>> 0).toString(16).padStart(8, '0') + (mix >>> 0).toString(16).padStart(8, '0');
}

/** Decodes each image in turn (one in memory at a time) and keeps its ImageInfo, by path. */
export async function measureImages(
  entries: readonly Pick<ImageEntry, 'path' | 'source'>[],
  decode: ImageDecoder,
  opts: { signal?: AbortSignal; onProgress?: (done: number, total: number) => void } = {},
): Promise<Map<string, ImageInfo>> {
  const infos = new Map<string, ImageInfo>();
  for (const entry of entries) {
    opts.signal?.throwIfAborted();
    infos.set(entry.path, imageInfo(await decodeImageEntry(entry, decode)));
    opts.onProgress?.(infos.size, entries.length);
  }
  return infos;
}
