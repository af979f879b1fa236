import { UserError } from '../errors';

/**
 * Random-access bytes: a browser File or in-memory bytes behind one interface, so a multi-GB checkpoint can be
 * read one tensor at a time instead of being loaded whole.
 *
 * `read` may return fewer bytes than asked for (a file that shrank since it was picked); callers that need an
 * exact length must check it. The returned bytes belong to the caller.
 */
export interface ByteSource {
  readonly name: string;
  readonly size: number;
  read(begin: number, end: number): Promise<Uint8Array>;
}

function checkRange(source: string, size: number, begin: number, end: number): void {
  if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin || end > size) {
    // The reader validates every range against the file size first, so reaching this is a bug in LoRA Lab.
    throw new RangeError(`${source}: read(${begin}, ${end}) is outside 0..${size}`);
  }
}

/** In-memory bytes (tests, fetched files). `read` copies so callers may mutate what they get back. */
export function bytesSource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    size: bytes.length,
    read(begin: number, end: number): Promise<Uint8Array> {
      checkRange(name, bytes.length, begin, end);
      // Copy via the Uint8Array constructor: a Node Buffer's own slice() returns a view, not a copy.
      return Promise.resolve(new Uint8Array(bytes.subarray(begin, end)));
    },
  };
}

/**
 * A File or Blob. Only the requested slice is ever materialised. Works in browsers and in Node 20 (global Blob).
 * `name` defaults to the File's name.
 */
export function blobSource(blob: Blob, name?: string): ByteSource {
  const fileName = name ?? ((blob as Partial<File>).name || 'safetensors file');
  return {
    name: fileName,
    size: blob.size,
    async read(begin: number, end: number): Promise<Uint8Array> {
      checkRange(fileName, blob.size, begin, end);
      try {
        return new Uint8Array(await blob.slice(begin, end).arrayBuffer());
      } catch (e) {
        // Browsers refuse to read a picked File once it changed or vanished on disk (NotReadableError); the
        // person can fix that by picking it again, so it is their error to see, not a crash.
        const why = e instanceof Error && e.message ? ` (${e.message})` : '';
        throw new UserError(
          fileName,
          `the file could not be read${why}; it may have been moved, changed or deleted since it was picked.`,
          'Pick the file again.',
        );
      }
    },
  };
}
