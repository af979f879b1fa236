import { UserError } from '../../errors';
import type { DiffusersFolder } from './component';

/**
 * CLIP's byte-level BPE tokenizer as transformers' CLIPTokenizer runs it, from the `tokenizer/` folder of a
 * diffusers pipeline (`vocab.json` + `merges.txt`, which every SD 1.x folder has; `tokenizer.json` is optional
 * there, so it is not required here).
 *
 * Written out rather than taken from @huggingface/tokenizers because real SD folders ship no tokenizer.json, and
 * CLIP's BPE differs from GPT-2's in ways a generic loader must be told: text is cleaned (NFC, whitespace runs
 * to one space, trimmed) and lower-cased, and the last symbol of every word carries the `</w>` suffix before
 * merging. The unit test checks the ids against the reference ids of the SD fixture and against the
 * library's reading of the fixture's equivalent tokenizer.json.
 */

export interface ClipTokenizer {
  /** The BPE ids of a prompt, without start/end tokens and without truncation. */
  encode(text: string): number[];
  /**
   * The model input: `[bos] + ids[:length − 2] + [eos]`, padded with the pad id to `length` (77 for SD 1.x), as
   * diffusers' pipelines call the tokenizer (`padding="max_length", truncation=True`).
   */
  encodeForModel(text: string): number[];
  /** How many tokens of the prompt the model sees at most (75 for SD 1.x); a longer caption is cut. */
  readonly maxPromptTokens: number;
  readonly length: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
}

export interface ClipTokenizerFiles {
  /** `tokenizer/vocab.json`: token → id. */
  readonly vocabJson: string;
  /** `tokenizer/merges.txt`: a `#version` line, then one merge "a b" per line, highest priority first. */
  readonly mergesTxt: string;
  /** `tokenizer/tokenizer_config.json` (model_max_length, pad/bos/eos tokens), when the folder has it. */
  readonly tokenizerConfigJson?: string | null;
  /** `tokenizer/special_tokens_map.json`, when the folder has it (older folders keep the pad token only here). */
  readonly specialTokensMapJson?: string | null;
}

const BOS_TOKEN = '<|startoftext|>';
const EOS_TOKEN = '<|endoftext|>';
const END_OF_WORD = '</w>';
const DEFAULT_LENGTH = 77;

/**
 * transformers' CLIP pattern (compiled with re.IGNORECASE there; the text is lower-cased first, so the flag
 * changes nothing except for the special tokens, which are split off before this runs).
 */
const WORD_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/gu;

/** GPT-2's bytes_to_unicode: every byte as a printable character, so BPE symbols are plain strings. */
function byteEncoder(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const table = new Array<string>(256);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = String.fromCodePoint(printable.includes(b) ? b : 256 + next++);
  }
  return table;
}

function parseObject(text: string, file: string): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new UserError(file, `is not valid JSON (${(e as Error).message}).`, 'Use the file that came with the model.');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new UserError(file, 'must be a JSON object.', 'Use the file that came with the model.');
  }
  return json as Record<string, unknown>;
}

/** A special token entry is either a string or `{ "content": string, ... }` (AddedToken as transformers saves it). */
function tokenContent(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return null;
}

/** transformers' whitespace_clean after ftfy's NFC fix-up, then lower-casing (tokenizer.json spells out the same). */
function cleanText(text: string): string {
  return text.normalize('NFC').replace(/\s+/gu, ' ').trim().toLowerCase();
}

export function loadClipTokenizer(files: ClipTokenizerFiles): ClipTokenizer {
  const vocabRaw = parseObject(files.vocabJson, 'tokenizer/vocab.json');
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(vocabRaw)) {
    if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 0) {
      throw new UserError('tokenizer/vocab.json', `the id of ${JSON.stringify(token)} must be a whole number, but it is ${JSON.stringify(id)}.`);
    }
    vocab.set(token, id);
  }

  const ranks = new Map<string, number>();
  const lines = files.mergesTxt.split(/\r?\n/);
  let rank = 0;
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '' || (i === 0 && line.startsWith('#version'))) continue;
    const parts = line.split(' ');
    if (parts.length !== 2) {
      throw new UserError('tokenizer/merges.txt', `line ${i + 1} must be two symbols separated by one space, but it is ${JSON.stringify(line.slice(0, 40))}.`);
    }
    // The first listed merge wins a tie of ranks, so a duplicate keeps its first rank.
    if (!ranks.has(line)) ranks.set(line, rank);
    rank++;
  }

  const config = files.tokenizerConfigJson ? parseObject(files.tokenizerConfigJson, 'tokenizer/tokenizer_config.json') : {};
  const specialMap = files.specialTokensMapJson ? parseObject(files.specialTokensMapJson, 'tokenizer/special_tokens_map.json') : {};
  const special = (key: string, fallback: string): string => tokenContent(config[key]) ?? tokenContent(specialMap[key]) ?? fallback;
  const idOf = (token: string, role: string): number => {
    const id = vocab.get(token);
    if (id === undefined) {
      throw new UserError('tokenizer/vocab.json', `has no id for the ${role} token ${JSON.stringify(token)}.`, 'Use the vocab.json that came with the model.');
    }
    return id;
  };
  const bosToken = special('bos_token', BOS_TOKEN);
  const eosToken = special('eos_token', EOS_TOKEN);
  const bosId = idOf(bosToken, 'start');
  const eosId = idOf(eosToken, 'end');
  // SD 1.x pads with <|endoftext|>, SD 2.x with "!": the tokenizer's pad_token decides (the text encoder's
  // config.json pad_token_id is a leftover that the pipelines never use).
  const padId = idOf(special('pad_token', eosToken), 'padding');
  const unkToken = special('unk_token', EOS_TOKEN);
  const unkId = vocab.get(unkToken) ?? eosId;
  const maxLength = config.model_max_length;
  // Tokenizers saved without a limit store a huge sentinel (1e30); CLIP's position table is 77 long.
  const length = typeof maxLength === 'number' && Number.isSafeInteger(maxLength) && maxLength >= 2 && maxLength <= 4096 ? maxLength : DEFAULT_LENGTH;

  const bytes = byteEncoder();
  const encoder = new TextEncoder();
  const cache = new Map<string, number[]>();

  /** BPE of one pre-tokenized word: merge the lowest-ranked adjacent pair until none is in merges.txt. */
  const bpe = (word: string): number[] => {
    const cached = cache.get(word);
    if (cached) return cached;
    const symbols = Array.from(encoder.encode(word), (b) => bytes[b]!);
    symbols[symbols.length - 1] += END_OF_WORD;
    for (;;) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = symbols[best]!;
      const second = symbols[best + 1]!;
      // Like the reference, merge every occurrence of the winning pair in one left-to-right pass.
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; ) {
        if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(symbols[i]!);
          i += 1;
        }
      }
      symbols.splice(0, symbols.length, ...merged);
    }
    const ids = symbols.map((s) => vocab.get(s) ?? unkId);
    if (cache.size < 10_000) cache.set(word, ids);
    return ids;
  };

  const specialIds = new Map([
    [bosToken, bosId],
    [eosToken, eosId],
  ]);
  const specialSplit = new RegExp(`(${[...specialIds.keys()].map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|')})`);

  const encode = (text: string): number[] => {
    const ids: number[] = [];
    // Special tokens typed into a prompt stay single tokens, as transformers splits added tokens out first.
    for (const part of cleanText(text).split(specialSplit)) {
      const id = specialIds.get(part);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      for (const match of part.matchAll(WORD_PATTERN)) ids.push(...bpe(match[0]));
    }
    return ids;
  };

  const maxPromptTokens = length - 2;
  return {
    encode,
    encodeForModel(text: string): number[] {
      const ids = [bosId, ...encode(text).slice(0, maxPromptTokens), eosId];
      while (ids.length < length) ids.push(padId);
      return ids;
    },
    maxPromptTokens,
    length,
    bosId,
    eosId,
    padId,
  };
}

async function readText(folder: DiffusersFolder, path: string, required: boolean): Promise<string | null> {
  const source = folder.get(path);
  if (!source) {
    if (!required) return null;
    throw new UserError(path, 'is missing from the diffusers folder.', 'Pick the whole model folder, including tokenizer/.');
  }
  return new TextDecoder().decode(await source.read(0, source.size));
}

/** The tokenizer of a diffusers folder (`tokenizer/vocab.json`, `merges.txt`, and the two optional configs). */
export async function loadClipTokenizerFromFolder(folder: DiffusersFolder): Promise<ClipTokenizer> {
  return loadClipTokenizer({
    vocabJson: (await readText(folder, 'tokenizer/vocab.json', true))!,
    mergesTxt: (await readText(folder, 'tokenizer/merges.txt', true))!,
    tokenizerConfigJson: await readText(folder, 'tokenizer/tokenizer_config.json', false),
    specialTokensMapJson: await readText(folder, 'tokenizer/special_tokens_map.json', false),
  });
}
