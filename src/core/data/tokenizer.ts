import { Tokenizer } from '@huggingface/tokenizers';
import { UserError } from '../errors';

/** The slice of a Hugging Face tokenizer that LoRA Lab needs. */
export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
  /** The id of one token as text (e.g. a byte or word piece), for previews. */
  tokenText(id: number): string;
  /** End-of-text token, put between documents when packing; null if the tokenizer has none. */
  readonly eosId: number | null;
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
  return {
    // add_special_tokens: false — LoRA Lab places BOS/EOS itself when it packs documents.
    encode: (text) => tokenizer.encode(text, { add_special_tokens: false }).ids,
    decode: (ids) => tokenizer.decode([...ids], { skip_special_tokens: false }),
    tokenText: (id) => tokenizer.decode([id], { skip_special_tokens: false }),
    eosId,
    vocabSize,
  };
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
