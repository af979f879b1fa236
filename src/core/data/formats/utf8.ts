import { UserError } from '../../errors';
import type { ByteSource } from '../../safetensors/source';

/**
 * Streaming UTF-8 decoding of a ByteSource, slice by slice, so a file of any size is read without holding it
 * whole, and a bad byte is reported with its exact offset and line instead of turning into U+FFFD.
 */

/** Bytes read per slice: small enough that progress moves smoothly, large enough that reads are cheap. */
export const CHUNK_BYTES = 1 << 20;

export interface TextChunk {
  text: string;
  /** Bytes of the file decoded so far (the end of this slice). */
  bytesDone: number;
}

export interface ChunkOptions {
  signal?: AbortSignal | undefined;
  chunkBytes?: number | undefined;
}

/**
 * Yields the file's text slice by slice. A character split across two slices is held back and decoded with the
 * next one. A UTF-8 byte-order mark at the very start is dropped (editors on Windows write one).
 */
export async function* utf8Chunks(source: ByteSource, opts: ChunkOptions = {}): AsyncGenerator<TextChunk> {
  const chunkBytes = opts.chunkBytes ?? CHUNK_BYTES;
  // Non-streaming decode calls with ignoreBOM, because a decoder otherwise strips EF BB BF at the start of every
  // call, which would eat a legitimate U+FEFF that happens to start a slice. The file-start BOM is handled below.
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  let carry: Uint8Array = new Uint8Array(0);
  let carryAt = 0; // file offset of carry[0]
  let newlines = 0; // line breaks before carryAt
  for (let pos = 0; pos < source.size; ) {
    opts.signal?.throwIfAborted();
    const end = Math.min(source.size, pos + chunkBytes);
    const got = await readExactly(source, pos, end);
    if (pos === 0) refuseUtf16(source.name, got);
    const bytes = carry.length === 0 ? got : concat(carry, got);
    const last = end === source.size;
    // At the end of the file nothing is held back: an unfinished character there is an error.
    const cut = last ? bytes.length : completeEnd(bytes);
    const start = carryAt === 0 && hasBom(bytes) ? 3 : 0;
    let text: string;
    try {
      text = decoder.decode(bytes.subarray(start, cut));
    } catch {
      const bad = firstInvalidUtf8(bytes, start, cut);
      // The decoder and the validator implement the same rules, so a miss here would be a bug in the validator.
      const at = bad < 0 ? start : bad;
      const line = newlines + countByte(bytes, 0x0a, 0, at) + 1;
      const byte = bytes[at]!.toString(16).toUpperCase().padStart(2, '0');
      throw new UserError(
        source.name,
        `line ${line} is not valid UTF-8 (byte 0x${byte} at byte offset ${carryAt + at}).`,
        'Save the file with UTF-8 encoding.',
      );
    }
    newlines += countByte(bytes, 0x0a, 0, cut);
    carry = bytes.slice(cut);
    carryAt += cut;
    pos = end;
    yield { text, bytesDone: end };
  }
}

/** Reads [begin, end) and insists on getting all of it: a shorter answer means the file changed under us. */
export async function readExactly(source: ByteSource, begin: number, end: number): Promise<Uint8Array> {
  const bytes = await source.read(begin, end);
  if (bytes.length !== end - begin) {
    throw new UserError(source.name, `ended at byte ${begin + bytes.length}, before its stated size of ${source.size} bytes; it may have changed while being read.`, 'Pick the file again.');
  }
  return bytes;
}

function refuseUtf16(file: string, head: Uint8Array): void {
  const bom = head.length >= 2 ? (head[0]! << 8) | head[1]! : -1;
  if (bom === 0xfffe || bom === 0xfeff) {
    throw new UserError(file, 'is UTF-16 text, and LoRA Lab reads UTF-8.', 'Save the file with UTF-8 encoding.');
  }
}

function hasBom(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function countByte(bytes: Uint8Array, value: number, from: number, to: number): number {
  let n = 0;
  for (let i = bytes.indexOf(value, from); i >= 0 && i < to; i = bytes.indexOf(value, i + 1)) n++;
  return n;
}

/**
 * Where the last whole character ends: a lead byte among the last three whose sequence runs past the end is held
 * back for the next slice. Anything malformed is left in, so the decoder reports it.
 */
function completeEnd(bytes: Uint8Array): number {
  const n = bytes.length;
  for (let back = 1; back <= 3 && back <= n; back++) {
    const b = bytes[n - back]!;
    if ((b & 0xc0) === 0x80) continue; // a continuation byte: keep looking for its lead
    const length = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    return length > back ? n - back : n;
  }
  return n;
}

/**
 * Offset of the first byte that starts an ill-formed sequence in [from, to), or -1. Follows the Unicode table of
 * well-formed byte sequences (no overlongs, no surrogates, nothing above U+10FFFF), which is what a fatal
 * TextDecoder enforces too. A sequence cut off by `to` is ill-formed.
 */
export function firstInvalidUtf8(bytes: Uint8Array, from: number, to: number): number {
  let i = from;
  while (i < to) {
    const b = bytes[i]!;
    if (b < 0x80) {
      i++;
      continue;
    }
    let need: number;
    let lo = 0x80;
    let hi = 0xbf;
    if (b >= 0xc2 && b <= 0xdf) need = 1;
    else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      if (b === 0xe0) lo = 0xa0;
      if (b === 0xed) hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      if (b === 0xf0) lo = 0x90;
      if (b === 0xf4) hi = 0x8f;
    } else return i;
    for (let k = 1; k <= need; k++) {
      if (i + k >= to) return i;
      const c = bytes[i + k]!;
      if (c < (k === 1 ? lo : 0x80) || c > (k === 1 ? hi : 0xbf)) return i;
    }
    i += need + 1;
  }
  return -1;
}

export interface LineBatch {
  /** Complete lines, without their line break (a trailing \r of CRLF is removed too). */
  lines: string[];
  /** 1-based number of lines[0]. */
  first: number;
  bytesDone: number;
}

/**
 * Splits decoded chunks into lines. A final line without a line break still counts; the empty "line" after a
 * file's last line break does not, so "a\nb\n" has two lines, as an editor shows it.
 */
export async function* lineBatches(chunks: AsyncIterable<TextChunk>): AsyncGenerator<LineBatch> {
  let partial = '';
  let next = 1;
  let bytesDone = 0;
  for await (const chunk of chunks) {
    bytesDone = chunk.bytesDone;
    const parts = chunk.text.split('\n');
    parts[0] = partial + parts[0]!;
    partial = parts.pop()!;
    const lines = parts.map(stripCr);
    yield { lines, first: next, bytesDone };
    next += lines.length;
  }
  if (partial !== '') yield { lines: [stripCr(partial)], first: next, bytesDone };
}

function stripCr(line: string): string {
  return line.endsWith('\r') ? line.slice(0, -1) : line;
}

/** Yields the items already taken from `rest` (`first`), then whatever `rest` still has. */
export async function* prepend<T>(first: T[], rest: AsyncIterator<T>): AsyncGenerator<T> {
  yield* first;
  for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
}

/**
 * The first non-whitespace character of the text and the chunks read to find it, so a reader can choose how to
 * parse a file by how it starts and then parse it from the beginning.
 */
export async function peekFirstChar(chunks: AsyncIterator<TextChunk>): Promise<{ char: string | null; seen: TextChunk[] }> {
  const seen: TextChunk[] = [];
  for (let r = await chunks.next(); !r.done; r = await chunks.next()) {
    seen.push(r.value);
    const m = /\S/.exec(r.value.text);
    if (m) return { char: m[0], seen };
  }
  return { char: null, seen };
}
