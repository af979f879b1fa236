import { containsAddedToken, forEachModelPiece, forEachPiece, type SplitRule } from './safe-splits';

/**
 * Encoding a long text as word-sized pieces with a cache of their ids.
 *
 * Hugging Face's JS tokenizer spends most of its time per pre-token on work that does not depend on context (the
 * byte-level mapping, a JSON key per BPE pair, LRU bookkeeping, array copies), and a SentencePiece-style model
 * without a pre-tokenizer runs one BPE over a whole paragraph. Cut where safe-splits.ts proves the ids cannot
 * change, a corpus becomes a stream of short pieces that mostly repeat (" the", " of"), and a repeat costs one map
 * lookup. A piece not seen before is cut further where the layout allows (into pre-tokens, or between characters
 * no merge joins), and those smaller pieces are cached too, so only text never seen at all reaches the tokenizer's
 * BPE. The ids are exactly those of encoding the whole text.
 */

/** The tokenizer's parts that pieces are encoded with. */
export interface PieceEncoders {
  /** The whole tokenizer on a text, without special tokens around it. */
  whole(text: string): number[];
  /** For 'pretokenized' rules with a regexSplit: the tokenizer's own regex pre-tokenizer. */
  pretokenize?: (text: string) => string[];
  /** For 'metaspace' rules with `adjacent`: the BPE model alone on normalized text (nothing prepended). */
  model?: (normalized: string) => number[];
}

/** Pieces longer than this are encoded but not kept: long pieces rarely repeat, and would crowd out short ones. */
const MAX_CACHED_PIECE = 64;
/** Distinct pieces kept, per cache, before it starts again from empty (some MB at most). */
const MAX_CACHED_PIECES = 1 << 17;

export class ChunkedEncoder {
  /** Text → encoders.whole(text), for pieces and pre-tokens alike (the same text has the same ids either way). */
  private readonly pieces = new Map<string, readonly number[]>();
  /** Normalized text → encoders.model(text), for metaspace rules' smaller pieces. */
  private readonly modelPieces = new Map<string, readonly number[]>();

  constructor(
    /** How this tokenizer's texts may be cut, or null: encode every text whole. */
    private readonly rule: SplitRule | null,
    private readonly encoders: PieceEncoders,
  ) {}

  encode(text: string): number[] {
    if (this.rule === null) return this.encoders.whole(text);
    const ids: number[] = [];
    forEachPiece(text, this.rule, (piece) => append(ids, this.pieces.get(piece) ?? remember(this.pieces, piece, this.encodeNewPiece(piece))));
    return ids;
  }

  /** A piece not in the cache: cut smaller where the rule allows, else encoded by the tokenizer. */
  private encodeNewPiece(piece: string): readonly number[] {
    const { rule, encoders } = this;
    if (rule === null || containsAddedToken(piece, rule.addedTokens)) return encoders.whole(piece);
    const ids: number[] = [];
    if (rule.kind === 'pretokenized') {
      const pretokenize = encoders.pretokenize;
      if (pretokenize === undefined || rule.regexSplit === null) return encoders.whole(piece);
      // The tokenizer normalizes before it pre-tokenizes; a pre-token that NFC would change on its own (a
      // substring of normalized text rarely can be) is not encoded apart.
      const pretokens = pretokenize(rule.nfc ? piece.normalize('NFC') : piece);
      if (rule.nfc && pretokens.some((p) => p.normalize('NFC') !== p)) return encoders.whole(piece);
      for (const pretoken of pretokens) append(ids, this.pieces.get(pretoken) ?? remember(this.pieces, pretoken, encoders.whole(pretoken)));
      return ids;
    }
    const model = encoders.model;
    if (model === undefined || rule.adjacent === null) return encoders.whole(piece);
    // The normalizer of this layout: "▁" in front, and for every space.
    const normalized = `\u2581${piece.replaceAll(' ', '\u2581')}`;
    forEachModelPiece(normalized, rule.adjacent, (part) => append(ids, this.modelPieces.get(part) ?? remember(this.modelPieces, part, model(part))));
    return ids;
  }
}

function remember(cache: Map<string, readonly number[]>, text: string, ids: readonly number[]): readonly number[] {
  if (text.length <= MAX_CACHED_PIECE) {
    // Clearing everything is crude but cheap, and a corpus's frequent pieces come back within a few lines.
    if (cache.size >= MAX_CACHED_PIECES) cache.clear();
    cache.set(text, ids);
  }
  return ids;
}

function append(into: number[], ids: readonly number[]): void {
  for (let i = 0; i < ids.length; i++) into.push(ids[i]!);
}
