import type { TokenizedDataset } from './dataset';
import type { TextTokenizer } from './tokenizer';

/**
 * What the model sees, for the Data panel's preview: each record as its tokens, trained ones marked, followed by
 * the end-of-text separator that packing adds (which always counts in the loss).
 */

export interface PreviewToken {
  /** The token's text. A character split over several byte tokens is shown once, on a single entry. */
  text: string;
  /** Counts in the loss (shown normally); false = read but not learnt (shown dimmed). */
  trained: boolean;
  /** The token ids behind `text`: one, or a few for a character split over byte tokens. */
  ids: number[];
}

export interface PreviewRecord {
  id: string;
  tokens: PreviewToken[];
  /** Tokens left out after maxTokens (the separator included), 0 when the whole record is shown. */
  omitted: number;
}

/** The first `count` documents, each cut after `maxTokens` tokens so a huge one (a .bin stream) stays cheap. */
export function previewRecords(ds: TokenizedDataset, tokenizer: TextTokenizer, count: number, maxTokens = 512): PreviewRecord[] {
  return ds.docs.slice(0, Math.max(0, count)).map((doc) => {
    const ids = ds.eosId === null ? doc.ids : [...doc.ids.slice(0, maxTokens + 1), ds.eosId];
    const all = ds.eosId === null ? doc.ids.length : doc.ids.length + 1;
    const shown = Math.min(all, maxTokens);
    const trained = (i: number) => i >= doc.ids.length || doc.lossMask === undefined || doc.lossMask[i] !== 0;
    const tokens: PreviewToken[] = [];
    for (let i = 0; i < shown; ) {
      let text = tokenizer.tokenText(ids[i]!);
      let end = i + 1;
      // A byte-level tokenizer splits a multi-byte character over tokens that each decode to U+FFFD; decode up
      // to four together (the longest UTF-8 character) when that gives real text, and the mask agrees.
      if (text.includes('\uFFFD')) {
        for (let k = 2; k <= 4 && i + k <= shown; k++) {
          if (trained(i + k - 1) !== trained(i)) break;
          const joined = tokenizer.decode(ids.slice(i, i + k));
          if (!joined.includes('\uFFFD')) {
            text = joined;
            end = i + k;
            break;
          }
        }
      }
      tokens.push({ text, trained: trained(i), ids: ids.slice(i, end) });
      i = end;
    }
    return { id: doc.id, tokens, omitted: all - shown };
  });
}
