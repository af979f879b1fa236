import type { ByteSource } from '../../safetensors/source';
import type { DatasetRecord, RecordBatch } from './types';
import { lineBatches, readExactly, utf8Chunks, CHUNK_BYTES, type ChunkOptions, type TextChunk } from './utf8';

/**
 * Plain text (.txt, .md): one corpus cut into documents, every token trained.
 *
 * One rule per file, so a document never depends on which separator happened to come first:
 * - if an end-of-text marker (`<|endoftext|>` or the tokenizer's eos text) occurs anywhere, documents are the
 *   text between markers (GPT-2 style corpora), and blank lines inside them are kept;
 * - otherwise documents are paragraphs separated by one or more blank (empty or whitespace-only) lines.
 * Line breaks at a document's edges are dropped, CRLF becomes LF, and pieces with no visible text are skipped,
 * so a marker at the end of the file or a run of blank lines makes no empty document.
 *
 * A document longer than MAX_DOC_CHARS (a book with no blank lines, say) is cut at a line break into several:
 * one string cannot grow without bound in JavaScript, and the one end-of-text token that packing then puts
 * between the pieces is negligible at that length.
 */

export const MAX_DOC_CHARS = 16 * 1024 * 1024;

export interface TextOptions extends ChunkOptions {
  /** Marker texts that end a document, e.g. ["<|endoftext|>", "</s>"]. */
  markers: readonly string[];
  /** Tests lower it; MAX_DOC_CHARS otherwise. */
  maxDocChars?: number;
}

export async function* textRecords(source: ByteSource, opts: TextOptions): AsyncGenerator<RecordBatch> {
  const markers = [...new Set(opts.markers.filter((m) => m !== ''))];
  const chunks = utf8Chunks(source, opts);
  const max = opts.maxDocChars ?? MAX_DOC_CHARS;
  if (markers.length > 0 && (await containsAny(source, markers, opts))) yield* markerDocuments(chunks, markers, max);
  else yield* paragraphDocuments(chunks, max);
}

async function* paragraphDocuments(chunks: AsyncIterable<TextChunk>, max: number): AsyncGenerator<RecordBatch> {
  let paragraph: string[] = [];
  let size = 0; // characters in paragraph, joined
  let startLine = 0;
  let bytesDone = 0;
  for await (const batch of lineBatches(chunks)) {
    bytesDone = batch.bytesDone;
    const records: DatasetRecord[] = [];
    const flush = () => {
      if (paragraph.length > 0) records.push(textRecord(startLine, paragraph.join('\n')));
      paragraph = [];
      size = 0;
    };
    batch.lines.forEach((line, k) => {
      if (line.trim() === '') return flush();
      if (paragraph.length > 0 && size + 1 + line.length > max) flush();
      if (paragraph.length === 0) startLine = batch.first + k;
      size += (paragraph.length > 0 ? 1 : 0) + line.length;
      paragraph.push(line);
    });
    yield { records, bytesDone: batch.bytesDone };
  }
  if (paragraph.length > 0) yield { records: [textRecord(startLine, paragraph.join('\n'))], bytesDone };
}

async function* markerDocuments(chunks: AsyncIterable<TextChunk>, markers: readonly string[], max: number): AsyncGenerator<RecordBatch> {
  const pattern = new RegExp(markers.map(escapeRegExp).join('|'), 'g');
  const longest = Math.max(...markers.map((m) => m.length));
  let pending = ''; // text after the last marker
  let pendingLine = 1; // line on which `pending` starts
  let bytesDone = 0;
  const cut = (doc: string, records: DatasetRecord[]) => {
    const lead = /^[\r\n]*/.exec(doc)![0];
    const body = doc.slice(lead.length).replace(/[\r\n]+$/, '').replace(/\r\n/g, '\n');
    if (body.trim() !== '') records.push(textRecord(pendingLine + countNewlines(lead), body));
  };
  /** Cuts documents off `pending` while it is over `max`, leaving its last `reserve` characters alone. */
  const cutLong = (records: DatasetRecord[], reserve: number) => {
    while (pending.length > max) {
      // Cut at a line break when there is one; otherwise before the reserved end, which may be the start of a
      // marker that the next slice completes (markers hold no line breaks, so a line break never splits one).
      let at = pending.lastIndexOf('\n', max);
      if (at <= 0) at = Math.min(max, pending.length - reserve);
      if (at > 0 && isHighSurrogate(pending.charCodeAt(at - 1))) at--; // never split a character in two
      if (at <= 0) return; // nothing can be cut yet; the next slice brings more
      cut(pending.slice(0, at), records);
      pendingLine += countNewlines(pending.slice(0, at));
      pending = pending.slice(at);
    }
  };
  for await (const chunk of chunks) {
    bytesDone = chunk.bytesDone;
    const records: DatasetRecord[] = [];
    // Search from just before the new text, in case a marker was split between two slices.
    pattern.lastIndex = Math.max(0, pending.length - longest + 1);
    pending += chunk.text;
    for (let m = pattern.exec(pending); m !== null; m = pattern.exec(pending)) {
      cut(pending.slice(0, m.index), records);
      const consumed = m.index + m[0].length;
      pendingLine += countNewlines(pending.slice(0, consumed));
      pending = pending.slice(consumed);
      pattern.lastIndex = 0;
    }
    cutLong(records, longest - 1);
    yield { records, bytesDone: chunk.bytesDone };
  }
  const records: DatasetRecord[] = [];
  cutLong(records, 0);
  cut(pending, records);
  yield { records, bytesDone };
}

function textRecord(line: number, text: string): DatasetRecord {
  return { id: `line ${line}`, kind: 'text', segments: [{ text, trained: true }] };
}

function isHighSurrogate(c: number): boolean {
  return c >= 0xd800 && c <= 0xdbff;
}

function countNewlines(s: string): number {
  let n = 0;
  for (let i = s.indexOf('\n'); i >= 0; i = s.indexOf('\n', i + 1)) n++;
  return n;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Whether any marker occurs in the file, by a byte search before decoding: which rule applies has to be known
 * before the first document is cut, and holding the whole text until then would not fit a large file in memory.
 * It stops at the first hit, which in a marker-separated corpus is near the start.
 */
async function containsAny(source: ByteSource, markers: readonly string[], opts: ChunkOptions): Promise<boolean> {
  const needles = markers.map((m) => new TextEncoder().encode(m));
  const overlap = Math.max(...needles.map((n) => n.length)) - 1;
  const step = opts.chunkBytes ?? CHUNK_BYTES;
  for (let pos = 0; pos < source.size; pos += step) {
    opts.signal?.throwIfAborted();
    const begin = Math.max(0, pos - overlap);
    const bytes = await readExactly(source, begin, Math.min(source.size, pos + step));
    if (needles.some((n) => indexOfBytes(bytes, n) >= 0)) return true;
  }
  return false;
}

function indexOfBytes(haystack: Uint8Array, needle: Uint8Array): number {
  const first = needle[0]!;
  for (let i = haystack.indexOf(first); i >= 0 && i + needle.length <= haystack.length; i = haystack.indexOf(first, i + 1)) {
    let k = 1;
    while (k < needle.length && haystack[i + k] === needle[k]) k++;
    if (k === needle.length) return i;
  }
  return -1;
}
