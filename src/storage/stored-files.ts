import { UserError } from '../core/errors';
import type { ByteSource } from '../core/safetensors/source';
import type { LoraLabDb } from './db';
import { ownedBuffer } from './chunked-records';

/**
 * Folders kept file by file: a Stable Diffusion model (diffusion-models.ts) and an image folder (image-datasets.ts)
 * store each file's raw bytes in slices keyed [owner id, path, index], so a multi-GB UNet is never one buffer and
 * a stored folder reads back, path for path, like the picked one.
 */

/** The slice stores of stored folders. */
export type FileSliceStore = 'diffusionFiles' | 'imageDatasetFiles';

/** One slice of one stored file. */
export interface StoredFileChunk {
  /** The model's or dataset's id. */
  readonly ownerId: string;
  /** The file's path inside its folder, '/'-separated. */
  readonly path: string;
  readonly index: number;
  readonly bytes: ArrayBuffer;
}

/** A stored file as its owner's record lists it. */
export interface StoredFileInfo {
  readonly path: string;
  readonly size: number;
  /** Slice size it was stored in; every slice but the last is this long. */
  readonly chunkBytes: number;
  readonly chunkCount: number;
}

/** A file to store: its path in the folder and its bytes. */
export interface FileToStore {
  readonly path: string;
  readonly source: ByteSource;
}

export function planFile(path: string, size: number, chunkBytes: number): StoredFileInfo {
  return { path, size, chunkBytes, chunkCount: Math.max(1, Math.ceil(size / chunkBytes)) };
}

/**
 * Copies each file's bytes into `store` under `ownerId`, slice by slice (the owner's record, written around this by
 * writeSliced, makes it all-or-nothing). `onBytes` gets the bytes stored so far.
 */
export async function writeFileSlices(
  db: LoraLabDb,
  store: FileSliceStore,
  ownerId: string,
  files: readonly { readonly info: StoredFileInfo; readonly source: ByteSource }[],
  opts: { readonly signal?: AbortSignal; readonly onBytes?: (done: number) => void },
): Promise<void> {
  let done = 0;
  opts.onBytes?.(0);
  for (const { info, source } of files) {
    for (let index = 0; index < info.chunkCount; index++) {
      opts.signal?.throwIfAborted();
      const begin = index * info.chunkBytes;
      const end = Math.min(info.size, begin + info.chunkBytes);
      const bytes = await source.read(begin, end);
      if (bytes.byteLength !== end - begin) {
        throw new UserError(info.path, 'became shorter while it was being stored: it was changed on disk.', 'Pick the folder again.');
      }
      await db.put(store, { ownerId, path: info.path, index, bytes: ownedBuffer(bytes) });
      done += bytes.byteLength;
      opts.onBytes?.(done);
    }
  }
}

/**
 * A stored file as random-access bytes. The last slice read is kept: readers (a safetensors header, then its
 * tensors in order) mostly ask for ranges inside one slice, and would otherwise fetch it again each time.
 */
export function storedFileSource(db: LoraLabDb, store: FileSliceStore, ownerId: string, info: StoredFileInfo, ownerName: string): ByteSource {
  let cached: { index: number; bytes: Uint8Array } | null = null;
  const slice = async (index: number): Promise<Uint8Array> => {
    if (cached?.index === index) return cached.bytes;
    const chunk = await db.get(store, [ownerId, info.path, index]);
    const expected = Math.min(info.chunkBytes, info.size - index * info.chunkBytes);
    if (!chunk || chunk.bytes.byteLength !== expected) {
      // The browser evicted or damaged part of the origin's storage: the person can only import it again.
      throw new UserError(`${ownerName}: ${info.path}`, `is damaged in this browser's storage (slice ${index + 1} of ${info.chunkCount} is missing).`, `Delete ${ownerName} and import it again.`);
    }
    cached = { index, bytes: new Uint8Array(chunk.bytes) };
    return cached.bytes;
  };
  return {
    name: info.path,
    size: info.size,
    async read(begin: number, end: number): Promise<Uint8Array> {
      if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin || end > info.size) {
        throw new RangeError(`${info.path}: read(${begin}, ${end}) is outside 0..${info.size}`);
      }
      const out = new Uint8Array(end - begin);
      const size = info.chunkBytes;
      for (let index = Math.floor(begin / size); index * size < end; index++) {
        const bytes = await slice(index);
        const from = Math.max(begin, index * size);
        const to = Math.min(end, index * size + bytes.byteLength);
        out.set(bytes.subarray(from - index * size, to - index * size), from - begin);
      }
      return out;
    },
  };
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
