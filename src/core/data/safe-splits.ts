/**
 * Where a text can be cut into pieces that tokenize, one by one, to exactly the ids of the whole text.
 *
 * Encoding word-sized pieces lets the tokenizer cache them (chunked-encoder.ts): most words of a corpus repeat, so
 * most pieces are a map lookup instead of a trip through the tokenizer's pipeline. That is only right where a cut
 * provably changes nothing, so the cut points are derived per tokenizer layout, and a layout not recognised here
 * is never cut (its texts are encoded whole, as before).
 *
 * Two layouts are recognised, covering GPT-2, Llama 3, Qwen 2/3 and the SentencePiece BPE models (Llama 2,
 * Mistral, TinyLlama):
 *
 * 'pretokenized': byte-level BPE behind one of the known pre-tokenizer regexes (GPT-2's, Llama 3's, Qwen 2's). The
 *   text is cut before a space (U+0020) that follows a non-whitespace character. Why that is safe: BPE runs inside
 *   each regex match, so it is enough that every match of the whole text ends or starts at the cut and that each
 *   piece matches the same way on its own. In all of these regexes a match that contains a non-whitespace character
 *   never continues with a space (letters, digits and punctuation runs stop at whitespace; whitespace runs are
 *   whitespace only; a space may only open a match), so a match ends at the cut. The regexes have no lookbehind and
 *   their only lookahead, `\s+(?!\S)`, cannot end at a cut (the character before a cut is not whitespace), so each
 *   match depends on nothing across the cut. Added tokens (`<|endoftext|>`) are found before the regex runs; one
 *   that holds no whitespace cannot span a cut, and none may strip the whitespace next to it (lstrip/rstrip).
 *   NFC, the only normalizer allowed here, never composes across a space.
 *   A piece the cache has not seen is cut once more, into its pre-tokens (the regex's matches), which are cached
 *   too: a pre-token encoded on its own is its own only match (the alternative that matched it in context matches
 *   it again, to the end of the text; `\s+(?!\S)` at the end of a text matches the same run that `\s+` did), so
 *   its ids are those it has inside the text. New numbers then cost nothing (Qwen's digits are pre-tokens of one
 *   digit, Llama 3's of up to three), nor does a known word with new punctuation. This needs the text to be
 *   already normalized and free of added tokens, which the regex would cut apart (see chunked-encoder.ts).
 *
 * 'metaspace': the SentencePiece conversion with `legacy` spaces: the normalizer prepends "▁" and turns every space
 *   into "▁", there is no pre-tokenizer, and BPE runs over the whole text. The text is cut at a space that follows a
 *   character other than a space or "▁", and that space is dropped from the piece after the cut, because encoding
 *   the piece prepends the "▁" it stood for. No merge can cross the cut when no vocabulary token holds a "▁" after
 *   another character (checked on the vocabulary: SentencePiece words only start with "▁", and the runs of "▁" for
 *   indentation hold nothing else). Added tokens would restart the prepending in the middle of a text, so a text that
 *   contains one is encoded whole.
 *   A piece the cache has not seen is normalized (as the tokenizer would) and cut once more, wherever two
 *   neighbouring characters occur side by side in no vocabulary token: no merge can join them, so BPE runs on
 *   each side alone (digits, for one, are never merged with anything in these vocabularies). The pieces then go to
 *   the BPE model directly, without the normalizer's "▁" in front. Byte fallback must cover every byte, or a run of
 *   unknown characters fused into one <unk> could span such a cut.
 */

export type SplitRule =
  | {
      readonly kind: 'pretokenized';
      /** The normalizer is NFC (Qwen); otherwise there is none. */
      readonly nfc: boolean;
      /**
       * The tokenizer.json config of its Split pre-tokenizer (the regex), for cutting a piece further into its
       * pre-tokens (see ChunkedEncoder); null when the regex is ByteLevel's built-in one.
       */
      readonly regexSplit: Record<string, unknown> | null;
      readonly addedTokens: readonly string[];
    }
  | {
      readonly kind: 'metaspace';
      readonly addedTokens: readonly string[];
      /**
       * Pairs of code points (pairKey) that stand side by side in some vocabulary token, for cutting normalized
       * pieces between the others (see forEachModelPiece); null when the vocabulary's byte fallback is incomplete.
       */
      readonly adjacent: ReadonlySet<number> | null;
    };

/**
 * Pre-tokenizer regexes (as tokenizer.json writes them) for which the cut rule above was checked by reading them.
 * Another regex may well be safe too, but it stays uncut until someone reads it.
 */
const KNOWN_SPLIT_REGEXES: ReadonlySet<string> = new Set([
  // Llama 3 (and OpenAI's cl100k, which it took over): digits in runs of up to three.
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  // Qwen 2 and 3: single digits.
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  // GPT-2's, when a file spells it out instead of using ByteLevel's built-in one.
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
]);

const METASPACE = '\u2581';

/** The cut rule for a tokenizer.json (+ tokenizer_config.json), or null when its texts must be encoded whole. */
export function splitRuleOf(spec: Record<string, unknown>, config: Record<string, unknown>): SplitRule | null {
  const model = asRecord(spec.model);
  if (model?.type !== 'BPE' || config.remove_space === true || config.do_lowercase_and_remove_accent === true) return null;
  const added = Array.isArray(spec.added_tokens) ? spec.added_tokens.map(asRecord) : [];
  for (const token of added) {
    if (typeof token?.content !== 'string' || token.lstrip === true || token.rstrip === true) return null;
    if (/[\s\u2581\u001c-\u001f]/u.test(token.content)) return null;
  }
  const addedTokens = added.map((t) => t!.content as string);
  const normalizer = asRecord(spec.normalizer)?.type ?? null;
  if (isByteLevelPretokenizer(spec.pre_tokenizer) && (normalizer === null || normalizer === 'NFC')) {
    const pre = asRecord(spec.pre_tokenizer)!;
    const regexSplit = pre.type === 'Sequence' ? asRecord((pre.pretokenizers as unknown[])[0]) : null;
    return { kind: 'pretokenized', nfc: normalizer === 'NFC', regexSplit, addedTokens };
  }
  if (spec.pre_tokenizer == null && isLegacyMetaspaceNormalizer(spec.normalizer) && added.every((t) => t?.normalized !== true)) {
    const vocab = asRecord(model.vocab);
    if (vocab === null) return null;
    // Any "▁" after a token's first character must follow another "▁".
    for (const token of Object.keys(vocab)) if (/[^\u2581]\u2581/u.test(token)) return null;
    return { kind: 'metaspace', addedTokens, adjacent: model.byte_fallback === true && hasEveryByte(vocab) ? adjacentPairs([...Object.keys(vocab), ...addedTokens]) : null };
  }
  return null;
}

function hasEveryByte(vocab: Record<string, unknown>): boolean {
  for (let b = 0; b < 256; b++) if (!(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>` in vocab)) return false;
  return true;
}

/** A number for two neighbouring code points. */
const pairKey = (a: number, b: number) => a * 0x110000 + b;

function adjacentPairs(tokens: readonly string[]): Set<number> {
  const pairs = new Set<number>();
  for (const token of tokens) {
    let previous = -1;
    for (const char of token) {
      const c = char.codePointAt(0)!;
      if (previous >= 0) pairs.add(pairKey(previous, c));
      previous = c;
    }
  }
  return pairs;
}

function isByteLevelPretokenizer(value: unknown): boolean {
  const pre = asRecord(value);
  if (pre === null) return false;
  // ByteLevel alone applies GPT-2's regex itself.
  if (pre.type === 'ByteLevel') return pre.add_prefix_space !== true && pre.use_regex !== false;
  if (pre.type !== 'Sequence' || !Array.isArray(pre.pretokenizers) || pre.pretokenizers.length !== 2) return false;
  const split = asRecord(pre.pretokenizers[0]);
  const byteLevel = asRecord(pre.pretokenizers[1]);
  const regex = asRecord(split?.pattern)?.Regex;
  return (
    split?.type === 'Split' &&
    split.behavior === 'Isolated' &&
    split.invert !== true &&
    typeof regex === 'string' &&
    KNOWN_SPLIT_REGEXES.has(regex) &&
    byteLevel?.type === 'ByteLevel' &&
    byteLevel.add_prefix_space !== true &&
    byteLevel.use_regex === false
  );
}

function isLegacyMetaspaceNormalizer(value: unknown): boolean {
  const normalizer = asRecord(value);
  if (normalizer?.type !== 'Sequence' || !Array.isArray(normalizer.normalizers) || normalizer.normalizers.length !== 2) return false;
  const prepend = asRecord(normalizer.normalizers[0]);
  const replace = asRecord(normalizer.normalizers[1]);
  return (
    prepend?.type === 'Prepend' &&
    prepend.prepend === METASPACE &&
    replace?.type === 'Replace' &&
    asRecord(replace.pattern)?.String === ' ' &&
    replace.content === METASPACE
  );
}

function asRecord(value: unknown): Record<string, unknown> | null {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : null;
}

/**
 * Calls `piece` with the pieces of `text` under `rule`, in order. Their encodings, concatenated, are the encoding
 * of `text`. A text with nowhere to cut is one piece.
 */
export function forEachPiece(text: string, rule: SplitRule, piece: (text: string) => void): void {
  // indexOf finds the spaces natively; only they are looked at.
  if (rule.kind === 'pretokenized') {
    let start = 0;
    for (let p = text.indexOf(' ', 1); p > 0; p = text.indexOf(' ', p + 1)) {
      if (!isWhitespace(text.charCodeAt(p - 1))) {
        piece(text.slice(start, p));
        start = p;
      }
    }
    piece(text.slice(start));
    return;
  }
  if (containsAddedToken(text, rule.addedTokens)) {
    piece(text);
    return;
  }
  let start = 0;
  // The last character is never cut at: the space there would leave an empty piece, which encodes to nothing.
  for (let p = text.indexOf(' ', 1); p > 0 && p < text.length - 1; p = text.indexOf(' ', p + 1)) {
    const before = text.charCodeAt(p - 1);
    if (before !== 0x20 && before !== 0x2581) {
      piece(text.slice(start, p));
      start = p + 1;
    }
  }
  piece(text.slice(start));
}

/**
 * Calls `piece` with the pieces of an already normalized text ("▁" for every space, the leading "▁" included)
 * cut between neighbouring code points that no vocabulary token has side by side (a metaspace rule's `adjacent`).
 * The BPE model's tokens for them, concatenated, are its tokens for the whole text.
 */
export function forEachModelPiece(normalized: string, adjacent: ReadonlySet<number>, piece: (text: string) => void): void {
  let start = 0;
  let previous = -1;
  for (let i = 0; i < normalized.length; ) {
    const c = normalized.codePointAt(i)!;
    if (previous >= 0 && !adjacent.has(pairKey(previous, c))) {
      piece(normalized.slice(start, i));
      start = i;
    }
    previous = c;
    i += c > 0xffff ? 2 : 1;
  }
  piece(normalized.slice(start));
}

/**
 * Whitespace as any of the regex engines involved may read `\s`: Unicode's White_Space, JavaScript's `\s` (which
 * adds U+FEFF) and Python's str.isspace (which adds U+001C–U+001F). Reading too much as whitespace only means
 * fewer cuts, never a wrong one.
 */
function isWhitespace(c: number): boolean {
  if (c <= 0x20) return c === 0x20 || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f);
  if (c < 0x85) return false;
  return (
    c === 0x85 || c === 0xa0 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 || c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff
  );
}

/** Whether `text` holds one of the added tokens' texts. Cheap when none of their first characters occurs. */
export function containsAddedToken(text: string, addedTokens: readonly string[]): boolean {
  if (addedTokens.length === 0) return false;
  let firsts = FIRST_CHARS.get(addedTokens);
  if (firsts === undefined) {
    const chars = [...new Set(addedTokens.map((t) => t.charAt(0)))];
    firsts = new RegExp(`[${chars.map((c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`).join('')}]`);
    FIRST_CHARS.set(addedTokens, firsts);
  }
  const at = text.search(firsts);
  return at >= 0 && addedTokens.some((token) => text.includes(token, at));
}

/** A character class of each rule's added tokens' first characters (most tokenizers' all start with "<"). */
const FIRST_CHARS = new WeakMap<readonly string[], RegExp>();
