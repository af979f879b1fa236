import { UserError } from '../errors';
import type { ByteSource } from '../safetensors/source';
import { readTokenIds } from './formats/bin';
import { ChatFormatter } from './formats/chat';
import { csvRecords } from './formats/csv';
import { jsonRecords } from './formats/jsonl';
import type { RecordContext } from './formats/records';
import { textRecords } from './formats/text';
import type { DatasetFormat, DatasetRecord, RecordBatch, RecordKind, Segment } from './formats/types';
import { CHUNK_BYTES } from './formats/utf8';
import type { TokenizedDoc } from './packing';
import type { TextTokenizer } from './tokenizer';

/**
 * Reading a dataset file into tokenized documents with loss masks, ready for packing (packing.ts).
 *
 * Formats, by extension (case-insensitive):
 *   .txt .md .markdown .text   plain text, split into documents (formats/text.ts)
 *   .jsonl .ndjson .json       JSON records, one per line or in one array (formats/jsonl.ts)
 *   .csv .tsv                  a table with a header row (formats/csv.ts)
 *   .bin                       pre-tokenized ids, nanoGPT style (formats/bin.ts)
 * What each record kind trains on is in formats/records.ts (Alpaca layout, prompt/completion) and
 * formats/chat.ts (chat templates, and the fallback layout for models without one).
 *
 * Records are tokenized segment by segment, and the ids concatenated, so a loss mask follows the segment
 * boundaries exactly. A BPE merge that would have crossed a boundary (the last characters of a prompt with the
 * first of its completion) does not happen, so ids at a boundary can differ slightly from encoding the whole
 * string; LLaMA-Factory tokenizes prompt and response separately for the same reason. Each document starts with
 * the tokenizer's BOS when it has one (Llama 2's `<s>`; see documentPrefix): in plain text a token like the others,
 * in records with a prompt part of the prompt, so not trained.
 *
 * Everything streams: the file is read in 1 MiB slices and tokenized as it is read, with progress and
 * cancellation between records, so no more than the resulting token ids is ever held.
 */

export type { DatasetFormat, DatasetRecord, RecordKind, Segment } from './formats/types';
export { ALPACA_SEPARATOR } from './formats/records';
export { FALLBACK_CHAT_TEMPLATE, chatSettingsFromConfig } from './formats/chat';
export { metaName } from './formats/bin';

/**
 * Text formats are refused above this: their records are tokenized into memory, and a browser tab's memory runs
 * out well before a larger corpus would be useful for a LoRA. A .bin is already ids and may be bigger.
 */
export const TEXT_FORMAT_LIMIT_BYTES = 2 * 1024 ** 3;

/** A tokenized document that remembers which record it came from (for the preview and warnings). */
export interface DatasetDoc extends TokenizedDoc {
  readonly id: string;
  readonly ids: number[];
}

export interface DatasetWarning {
  code: 'empty_records' | 'too_long' | 'duplicates' | 'no_trained_tokens';
  /** Records affected. */
  count: number;
  message: string;
  /** Ids of the first few records affected. */
  examples: string[];
}

export interface TokenizedDataset {
  file: string;
  format: DatasetFormat;
  kind: RecordKind;
  /**
   * Documents to train on, in file order. Empty records and records with nothing trained are left out (see
   * `warnings`). `lossMask` is present for kinds that mask something (prompt_completion, alpaca, chat) and
   * absent for text and tokens, where every token counts.
   */
  docs: DatasetDoc[];
  /** Records read from the file, including those left out. */
  records: number;
  /** Tokens in `docs`, without the end-of-text separators that packing adds. */
  tokens: number;
  /** The separator packing puts after each document (the tokenizer's eos), for stats and previews. */
  eosId: number | null;
  warnings: DatasetWarning[];
}

export interface ReadDatasetOptions {
  tokenizer: TextTokenizer;
  /** The model's chat_template (see chatSettingsFromConfig), or null for FALLBACK_CHAT_TEMPLATE. */
  chatTemplate: string | null;
  /**
   * Special-token texts that chat templates use, from tokenizer_config.json. `eos` defaults to the tokenizer's
   * eos token, `bos` to none.
   */
  specialTokens?: { bos?: string | null; eos?: string | null };
  /** `<name>.meta.json` next to a .bin (see metaName), which may give the id width. */
  meta?: ByteSource;
  /** Bytes of the file read and tokenized so far, of `total` = the file size. */
  onProgress?(done: number, total: number): void;
  signal?: AbortSignal;
  /** Slice size for reading; tests make it tiny to cross slice boundaries. */
  chunkBytes?: number;
}

const EXTENSIONS: Readonly<Record<string, DatasetFormat>> = {
  txt: 'text',
  text: 'text',
  md: 'text',
  markdown: 'text',
  jsonl: 'jsonl',
  ndjson: 'jsonl',
  json: 'jsonl',
  csv: 'csv',
  tsv: 'csv',
  bin: 'bin',
};

/** The format a file name says; a .json file's layout (array or lines) is sniffed later, from its content. */
export function detectFormat(fileName: string): DatasetFormat {
  const ext = /\.([^./\\]+)$/.exec(fileName)?.[1]?.toLowerCase();
  const format = ext === undefined ? undefined : EXTENSIONS[ext];
  if (format === undefined) {
    throw new UserError(
      fileName,
      `is not a dataset format LoRA Lab reads${ext === undefined ? ' (it has no extension)' : ` (.${ext})`}.`,
      'Use .txt or .md (plain text), .jsonl or .json (records), .csv or .tsv (a table with a header row), or .bin (token ids).',
    );
  }
  return format;
}

export async function readDataset(source: ByteSource, opts: ReadDatasetOptions): Promise<TokenizedDataset> {
  const file = source.name;
  const format = detectFormat(file);
  const total = source.size;
  const { tokenizer, signal } = opts;
  const chunkBytes = opts.chunkBytes ?? CHUNK_BYTES;
  if (total === 0) throw new UserError(file, 'is empty (0 bytes).', 'Pick the file that holds the training data.');
  if (format !== 'bin' && total > TEXT_FORMAT_LIMIT_BYTES) {
    throw new UserError(
      file,
      `is ${(total / 1024 ** 3).toFixed(2)} GB, over the 2 GB limit for text datasets.`,
      'Use a part of it, or pre-tokenize it into a .bin file of token ids, which may be larger.',
    );
  }
  const pacer = new Pacer(signal, (done) => opts.onProgress?.(done, total));
  signal?.throwIfAborted();

  if (format === 'bin') {
    const ids = await readTokenIds(source, {
      meta: opts.meta,
      vocabSize: tokenizer.vocabSize,
      chunkBytes,
      signal,
      progress: async (done) => {
        if (pacer.due()) await pacer.pause(done);
      },
    });
    opts.onProgress?.(total, total);
    return { file, format, kind: 'tokens', docs: [{ id: file, ids }], records: 1, tokens: ids.length, eosId: tokenizer.eosId, warnings: [] };
  }

  const eosText = opts.specialTokens?.eos ?? (tokenizer.eosId === null ? null : tokenizer.tokenText(tokenizer.eosId));
  const ctx: RecordContext = {
    file,
    chat: new ChatFormatter(opts.chatTemplate, { bos_token: opts.specialTokens?.bos ?? '', eos_token: eosText ?? '' }),
  };
  const read = { signal, chunkBytes };
  let batches: AsyncGenerator<RecordBatch>;
  if (format === 'text') batches = textRecords(source, { ...read, markers: ['<|endoftext|>', ...(eosText === null ? [] : [eosText])] });
  else if (format === 'jsonl') batches = jsonRecords(source, ctx, read);
  else batches = csvRecords(source, ctx, { ...read, delimiter: /\.tsv$/i.test(file) ? '\t' : ',' });

  const docs: DatasetDoc[] = [];
  const empty = new Tally();
  const untrained = new Tally();
  const duplicates = new Tally();
  const seen = new Set<string>();
  let first: DatasetRecord | null = null;
  let records = 0;
  let tokens = 0;
  let before = 0; // bytes consumed before the current batch
  for await (const batch of batches) {
    const n = batch.records.length;
    for (let k = 0; k < n; k++) {
      const record = batch.records[k]!;
      records++;
      if (first === null) first = record;
      else if (record.kind !== first.kind) {
        throw new UserError(
          file,
          `${record.id} is a ${KIND_LABELS[record.kind]} record, but the records before it (from ${first.id}) are ${KIND_LABELS[first.kind]} records.`,
          'One file must hold one kind of record; split it into separate files.',
        );
      }
      const doc = tokenizeRecord(record, tokenizer, file);
      if (doc.ids.length === 0) empty.add(record.id);
      else if (doc.lossMask !== undefined && !doc.lossMask.includes(1)) untrained.add(record.id);
      else {
        const key = recordKey(record.segments);
        if (seen.has(key)) duplicates.add(record.id);
        else seen.add(key);
        docs.push(doc);
        tokens += doc.ids.length;
      }
      // Progress moves through the batch's bytes in proportion to the records done.
      signal?.throwIfAborted();
      if (pacer.due()) await pacer.pause(before + ((batch.bytesDone - before) * (k + 1)) / n);
    }
    before = batch.bytesDone;
    if (pacer.due()) await pacer.pause(before);
  }
  if (first === null) throw new UserError(file, 'has no records: it holds only blank lines or an empty list.', 'Pick the file that holds the training data.');
  if (docs.length === 0) {
    throw new UserError(file, `has nothing to train on: all ${records} records are empty or have no part that is trained.`);
  }
  opts.onProgress?.(total, total);

  const warnings: DatasetWarning[] = [];
  empty.report(warnings, 'empty_records', (n) => `${plural(n, 'record is', 'records are')} empty and left out.`);
  untrained.report(
    warnings,
    'no_trained_tokens',
    (n) =>
      `${plural(n, 'record has', 'records have')} nothing to train on (${first!.kind === 'chat' ? 'no assistant turn' : 'an empty completion'}) and ${n === 1 ? 'is' : 'are'} left out.`,
  );
  duplicates.report(
    warnings,
    'duplicates',
    (n) => `${plural(n, 'record repeats', 'records repeat')} an earlier record word for word; repeats are kept, and are learnt more strongly.`,
  );
  return { file, format, kind: first.kind, docs, records, tokens, eosId: tokenizer.eosId, warnings };
}

const KIND_LABELS: Readonly<Record<RecordKind, string>> = {
  text: 'text',
  prompt_completion: 'prompt/completion',
  alpaca: 'Alpaca (instruction/output)',
  chat: 'chat (messages)',
  tokens: 'token',
};

/**
 * The longest run of characters without a space, tab or line break that is tokenized. Such a run is one pre-token
 * that nothing can cut, and byte-pair merging over it takes seconds per MB and gigabytes of memory (a 50 MB line of
 * one letter ran Node out of a 4 GB heap after four minutes), so it is refused, naming the record, instead.
 */
export const MAX_UNBROKEN_CHARS = 1024 * 1024;

/** The length of the longest run in `text` with no space, tab, CR or LF. */
function longestUnbrokenRun(text: string): number {
  let longest = 0;
  let run = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 32 || c === 10 || c === 13 || c === 9) run = 0;
    else if (++run > longest) longest = run;
  }
  return longest;
}

function tokenizeRecord(record: DatasetRecord, tokenizer: TextTokenizer, file: string): DatasetDoc {
  for (const segment of record.segments) {
    // Only texts long enough to hold such a run are scanned.
    if (segment.text.length <= MAX_UNBROKEN_CHARS) continue;
    const run = longestUnbrokenRun(segment.text);
    if (run > MAX_UNBROKEN_CHARS) {
      throw new UserError(
        file,
        `${record.id} holds ${run.toLocaleString('en-US')} characters with no space or line break; LoRA Lab tokenizes at most ${MAX_UNBROKEN_CHARS.toLocaleString('en-US')} in one run.`,
        'Break the text with spaces or line breaks, or leave that record out.',
      );
    }
  }
  const parts = record.segments.map((s) => tokenizer.encode(s.text));
  const prefix = documentPrefix(parts, tokenizer.prefixIds);
  // Most records are one or two segments; concat copies once instead of pushing id by id.
  const ids = parts.length === 1 && prefix.length === 0 ? parts[0]! : prefix.concat(...parts);
  if (record.kind === 'text') return { id: record.id, ids };
  const lossMask = new Uint8Array(ids.length);
  let at = prefix.length; // the BOS belongs to the prompt: read, not trained
  parts.forEach((part, i) => {
    if (record.segments[i]!.trained) lossMask.fill(1, at, at + part.length);
    at += part.length;
  });
  return { id: record.id, ids, lossMask };
}

/**
 * The tokenizer's BOS (prefixIds) goes before every document, as `tokenizer(text)` puts it in transformers, unless
 * the document already starts with it: chat templates write `bos_token` themselves (Llama 3's does), and
 * apply_chat_template then adds nothing. An empty record stays empty, so it is still reported as empty.
 */
function documentPrefix(parts: readonly number[][], prefixIds: readonly number[]): number[] {
  if (prefixIds.length === 0) return [];
  const head: number[] = [];
  for (const part of parts) {
    for (let i = 0; i < part.length && head.length < prefixIds.length; i++) head.push(part[i]!);
  }
  if (head.length === 0) return [];
  return prefixIds.every((id, i) => head[i] === id) ? [] : [...prefixIds];
}

/**
 * A 64-bit hash of a record's segments (text and trained flags), to find exact repeats without keeping every
 * record's text in memory. Two different records collide with odds around n²/2^65: none in practice.
 */
function recordKey(segments: readonly Segment[]): string {
  let a = 0x811c9dc5;
  let b = 0x9747b28c;
  let length = 0;
  for (const s of segments) {
    // The flag is mixed in as a value outside the UTF-16 range, so it never reads as text.
    const flag = s.trained ? 0x10001 : 0x10002;
    a = Math.imul(a ^ flag, 0x01000193);
    b = Math.imul(b ^ flag, 0x5bd1e995);
    const text = s.text;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      b = Math.imul(b ^ c, 0x5bd1e995);
      b ^= b >>> 15;
    }
    length += text.length;
  }
  return `${(a >>> 0).toString(36)}:${(b >>> 0).toString(36)}:${length}`;
}

/** Up to five example ids and a count, for one warning. */
class Tally {
  count = 0;
  readonly examples: string[] = [];

  add(id: string): void {
    this.count++;
    if (this.examples.length < 5) this.examples.push(id);
  }

  report(into: DatasetWarning[], code: DatasetWarning['code'], message: (n: number) => string): void {
    if (this.count > 0) into.push({ code, count: this.count, message: message(this.count), examples: [...this.examples] });
  }
}

function plural(n: number, one: string, many: string): string {
  return `${n} ${n === 1 ? one : many}`;
}

/**
 * Keeps a long read responsive: checks for cancellation at every step and, every few tens of milliseconds, reports
 * progress and yields to the event loop. Awaiting already-resolved reads only queues microtasks, which would never
 * let a cancel message (a macrotask) in.
 */
class Pacer {
  private last = Date.now();

  constructor(
    private readonly signal: AbortSignal | undefined,
    private readonly report: (done: number) => void,
  ) {}

  /** Whether it is time to report and yield (cheap enough to ask after every record). */
  due(): boolean {
    return Date.now() - this.last >= 25;
  }

  /** Reports `done` and yields to the event loop, then checks for cancellation. */
  async pause(done: number): Promise<void> {
    this.signal?.throwIfAborted();
    this.report(Math.floor(done));
    await new Promise((resolve) => setTimeout(resolve, 0));
    this.last = Date.now();
    this.signal?.throwIfAborted();
  }
}

export interface DatasetStats {
  /** Records read from the file (including those left out). */
  records: number;
  /** Tokens in the documents, without separators. */
  tokens: number;
  /** Length of the packed stream: the documents plus one eos after each (packStream). */
  streamTokens: number;
  /** Tokens of the packed stream that count in the loss (the eos separators always do). */
  trainedTokens: number;
  /**
   * Windows of seqLen the whole stream makes, as packing cuts them: floor((streamTokens - 1) / seqLen). Training
   * sees fewer when part of the data is held out for validation.
   */
  windows: number;
  longestRecord: { id: string; tokens: number };
  /** The dataset's warnings, plus too_long for this seqLen. */
  warnings: DatasetWarning[];
}

export function datasetStats(ds: TokenizedDataset, seqLen: number): DatasetStats {
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new RangeError(`seqLen must be a positive integer, got ${seqLen}`);
  const sep = ds.eosId === null ? 0 : 1;
  let tokens = 0;
  let trained = 0;
  let longest = { id: '', tokens: -1 };
  const tooLong = new Tally();
  for (const doc of ds.docs) {
    tokens += doc.ids.length;
    trained += doc.lossMask === undefined ? doc.ids.length : countOnes(doc.lossMask);
    if (doc.ids.length > longest.tokens) longest = { id: doc.id, tokens: doc.ids.length };
    if (doc.ids.length > seqLen) tooLong.add(doc.id);
  }
  const streamTokens = tokens + sep * ds.docs.length;
  const warnings = [...ds.warnings];
  // A token stream (.bin) is one document by nature, so it being longer than a window says nothing.
  if (ds.kind !== 'tokens') {
    tooLong.report(
      warnings,
      'too_long',
      (n) =>
        `${plural(n, 'record is', 'records are')} longer than seq_len (${seqLen} tokens), so ${n === 1 ? 'it is' : 'they are'} cut across training windows and never seen whole. Raise seq_len or shorten ${n === 1 ? 'it' : 'them'}.`,
    );
  }
  return {
    records: ds.records,
    tokens,
    streamTokens,
    trainedTokens: trained + sep * ds.docs.length,
    windows: streamTokens > seqLen ? Math.floor((streamTokens - 1) / seqLen) : 0,
    longestRecord: { id: longest.id, tokens: Math.max(0, longest.tokens) },
    warnings,
  };
}

function countOnes(mask: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < mask.length; i++) n += mask[i] === 0 ? 0 : 1;
  return n;
}
