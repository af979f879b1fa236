import { SplitPreTokenizer, Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '../errors';
import { ChunkedEncoder, type PieceEncoders } from './chunked-encoder';
import { splitRuleOf } from './safe-splits';

/** The slice of a Hugging Face tokenizer that LoRA Lab needs. */
export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
  /**
   * One token as text (e.g. a byte or word piece), for previews: as it reads inside a text, so a SentencePiece word
   * piece keeps its leading space ("▁world" is " world").
   */
  tokenText(id: number): string;
  /** End-of-text token, put between documents when packing; null if the tokenizer has none. */
  readonly eosId: number | null;
  /**
   * The special tokens the tokenizer puts before a text when asked for them, as `tokenizer(text)` does in
   * transformers (Llama 2's `<s>`); empty when it adds none (GPT-2, Qwen). Dataset reading puts them at the start
   * of every document, where the model saw them in pretraining.
   */
  readonly prefixIds: readonly number[];
  /** Largest id the tokenizer can produce, plus one. */
  readonly vocabSize: number;
}

/**
 * Loads `tokenizer.json` (+ `tokenizer_config.json` when present) with Hugging Face's own JS
 * tokenizers, so the ids are the ones `transformers` would produce. No network is involved.
 */
export function loadTokenizer(tokenizerJson: string, tokenizerConfigJson: string | null): TextTokenizer {
  const spec = parseJsonObject(tokenizerJson, 'tokenizer.json');
  const config = tokenizerConfigJson === null ? {} : parseJsonObject(tokenizerConfigJson, 'tokenizer_config.json');
  if (typeof spec.model !== 'object' || spec.model === null) {
    throw new UserError('tokenizer.json', 'has no "model" section, so it is not a Hugging Face tokenizer file.');
  }
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(spec, config);
  } catch (e) {
    throw new UserError('tokenizer.json', `could not be loaded (${(e as Error).message}).`, 'Use the tokenizer.json that came with the model.');
  }
  const eosId = eosTokenId(tokenizer, config);
  const vocabSize = tokenizerVocabSize(tokenizer);
  // add_special_tokens: false — LoRA Lab places BOS/EOS itself when it reads and packs documents.
  const encodeWhole = (text: string) => tokenizer.encode(text, { add_special_tokens: false }).ids;
  const chunked = new ChunkedEncoder(splitRuleOf(spec, config), pieceEncoders(tokenizer, spec, encodeWhole));
  // Exactly the text the ids stand for: no clean-up of spaces before punctuation (" ." stays " ."), which
  // tokenizer_config.json may ask for but which would make previews and round trips lie.
  const decode = (ids: readonly number[]) => (ids.length === 0 ? '' : tokenizer.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false }));
  return {
    encode: (text) => chunked.encode(text),
    decode,
    tokenText: tokenTextIn(decode, encodeWhole('a')),
    eosId,
    prefixIds: prefixIdsOf(tokenizer),
    vocabSize,
  };
}

/**
 * The parts of the tokenizer that ChunkedEncoder encodes smaller pieces with: its regex pre-tokenizer (built anew
 * from the same config, as the library's own is not exposed) and its BPE model, whose tokens map to ids as
 * Tokenizer.encode maps them (added tokens first).
 */
function pieceEncoders(tokenizer: Tokenizer, spec: Record<string, unknown>, whole: (text: string) => number[]): PieceEncoders {
  const encoders: PieceEncoders = { whole };
  const pre = spec.pre_tokenizer as { type?: unknown; pretokenizers?: unknown[] } | null | undefined;
  const split = pre?.type === 'Sequence' ? (pre.pretokenizers?.[0] as { type?: unknown } | undefined) : undefined;
  if (split?.type === 'Split') {
    const splitter = new SplitPreTokenizer(split as ConstructorParameters<typeof SplitPreTokenizer>[0]);
    encoders.pretokenize = (text) => splitter.pre_tokenize_text(text);
  }
  const model = tokenizer.model;
  if (model !== null) {
    const added = new Map<string, number>();
    for (const token of (spec.added_tokens ?? []) as { content: string; id: number }[]) added.set(token.content, token.id);
    encoders.model = (normalized) => model([normalized]).map((t) => added.get(t) ?? model.tokens_to_ids.get(t) ?? model.unk_token_id!);
  }
  return encoders;
}

/**
 * A token's text as it reads after another token. Decoders of SentencePiece models drop the space that opens a text
 * ("▁world" alone decodes to "world"), which would run a preview's words together, so each token is decoded after a
 * plain letter and that letter's text cut off again.
 */
function tokenTextIn(decode: (ids: readonly number[]) => string, anchor: readonly number[]): (id: number) => string {
  const anchorId = anchor.length === 1 ? anchor[0]! : null;
  const anchorText = anchorId === null ? '' : decode([anchorId]);
  return (id) => {
    if (anchorId === null) return decode([id]);
    const both = decode([anchorId, id]);
    return both.startsWith(anchorText) ? both.slice(anchorText.length) : decode([id]);
  };
}

/** The ids the tokenizer's post-processor adds before a text (its BOS), found by encoding with and without them. */
function prefixIdsOf(tokenizer: Tokenizer): number[] {
  const bare = tokenizer.encode('a', { add_special_tokens: false }).ids;
  const full = tokenizer.encode('a', { add_special_tokens: true }).ids;
  for (let at = 0; at + bare.length <= full.length; at++) {
    if (bare.every((id, i) => full[at + i] === id)) return full.slice(0, at);
  }
  return [];
}

function parseJsonObject(text: string, file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new UserError(file, `is not valid JSON (${(e as Error).message}).`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UserError(file, 'must hold a JSON object.');
  }
  return value as Record<string, unknown>;
}

function eosTokenId(tokenizer: Tokenizer, config: Record<string, unknown>): number | null {
  const eos = config.eos_token;
  const text = typeof eos === 'string' ? eos : typeof eos === 'object' && eos !== null ? (eos as { content?: unknown }).content : undefined;
  const candidates = [typeof text === 'string' ? text : undefined, '<|endoftext|>', '</s>', '<|end_of_text|>', '<|im_end|>'];
  for (const candidate of candidates) {
    if (candidate === undefined) continue;
    const id = tokenizer.token_to_id(candidate);
    if (id !== undefined) return id;
  }
  return null;
}

function tokenizerVocabSize(tokenizer: Tokenizer): number {
  let max = -1;
  for (const id of tokenizer.get_vocab(true).values()) max = Math.max(max, id);
  return max + 1;
}
