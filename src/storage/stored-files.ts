import { UserError } from '../core/errors';
import type { ByteSource } from '../core/safetensors/source';
import type { LoraLabDb } from './db';
import { ownedBuffer, slicedSource } from './chunked-records';

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

/** A stored file as random-access bytes (see slicedSource). */
export function storedFileSource(db: LoraLabDb, store: FileSliceStore, ownerId: string, info: StoredFileInfo, ownerName: string): ByteSource {
  return slicedSource(
    { name: info.path, size: info.size, sliceBytes: info.chunkBytes },
    async (index) => (await db.get(store, [ownerId, info.path, index]))?.bytes,
    (index) => new UserError(`${ownerName}: ${info.path}`, `is damaged in this browser's storage (slice ${index + 1} of ${info.chunkCount} is missing).`, `Delete ${ownerName} and import it again.`),
  );
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}
