import { loadClipTokenizer, type ClipTokenizerFiles } from '../models/diffusion/clip-tokenizer.js';

/**
 * A tiny CLIP BPE tokenizer for the image demo, in the files an SD 1.x `tokenizer/` folder holds (vocab.json,
 * merges.txt, tokenizer_config.json, special_tokens_map.json), built from the demo's words: every word is one token,
 * and anything else still encodes, byte by byte, as CLIP's base vocabulary spells every byte (alone and as a
 * word's last symbol with `</w>`). Its ids are this project's own, not OpenAI CLIP's.
 */

const BOS = '<|startoftext|>';
const EOS = '<|endoftext|>';
const END_OF_WORD = '</w>';
export const DEMO_TOKENIZER_LENGTH = 77;

/** GPT-2's bytes_to_unicode, the alphabet CLIP's vocabulary is written in. */
function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let moved = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(printable(b) ? b : 256 + moved++));
  return out;
}

export interface DemoTokenizerFiles extends ClipTokenizerFiles {
  readonly tokenizerConfigJson: string;
  readonly specialTokensMapJson: string;
  /** How many ids the vocabulary has (the text encoder's vocab_size). */
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
}

/**
 * Builds the files. Merges first spell each word left to right; BPE applies merges by rank across all words, so a
 * merge made for one word can strand another halfway. Each stranded word is then encoded with the project's own
 * CLIP tokenizer and its first two pieces merged (appended, so lowest priority), until every word is one token.
 */
export function demoTokenizerFiles(words: readonly string[]): DemoTokenizerFiles {
  const symbols = byteSymbols();
  const vocab: string[] = [...symbols, ...symbols.map((s) => s + END_OF_WORD)];
  const known = new Set(vocab);
  const merges: string[] = [];
  const addMerge = (a: string, b: string) => {
    merges.push(`${a} ${b}`);
    if (!known.has(a + b)) {
      known.add(a + b);
      vocab.push(a + b);
    }
  };
  const pieces = (word: string): string[] => {
    const chars = Array.from(new TextEncoder().encode(word.toLowerCase()), (b) => symbols[b]!);
    chars[chars.length - 1] += END_OF_WORD;
    return chars;
  };
  for (const word of words) {
    const chars = pieces(word);
    let prefix = chars[0]!;
    for (const next of chars.slice(1)) {
      if (!merges.includes(`${prefix} ${next}`)) addMerge(prefix, next);
      prefix += next;
    }
  }

  const files = (): DemoTokenizerFiles => {
    const ids = [...vocab, BOS, EOS];
    // Written in id order (JSON.stringify keeps insertion order for these non-numeric keys).
    const vocabJson = JSON.stringify(Object.fromEntries(ids.map((t, i) => [t, i])));
    const special = { bos_token: BOS, eos_token: EOS, pad_token: EOS, unk_token: EOS };
    return {
      vocabJson,
      mergesTxt: `#version: 0.2\n${merges.join('\n')}\n`,
      tokenizerConfigJson: JSON.stringify({ ...special, model_max_length: DEMO_TOKENIZER_LENGTH, do_lower_case: true, tokenizer_class: 'CLIPTokenizer' }, null, 2),
      specialTokensMapJson: JSON.stringify(special, null, 2),
      vocabSize: ids.length,
      bosId: ids.length - 2,
      eosId: ids.length - 1,
    };
  };

  for (let round = 0; ; round++) {
    const built = files();
    const tokenizer = loadClipTokenizer(built);
    const byId = [...vocab, BOS, EOS];
    const stranded = words.map((w) => tokenizer.encode(w)).find((ids) => ids.length > 1);
    if (!stranded) return built;
    if (round > 10 * words.length) throw new Error('demo tokenizer: merges do not converge');
    addMerge(byId[stranded[0]!]!, byId[stranded[1]!]!);
  }
}
