/**
 * How the loss cuts the tokens into chunks (see causalLmLossFromHidden in loss.ts). Plain arithmetic,
 * without tfjs, so that the run estimate counts the same chunks the loss makes.
 */

/** One chunk's float32 logits stay under this: a 128,256-token vocabulary then takes 130 tokens a chunk. */
export const LOGITS_CHUNK_BYTES = 64 * 1024 * 1024;

/** Tokens per chunk so that a chunk's float32 logits [tokens, vocab] stay within `maxChunkBytes` (at least one token). */
export function logitsChunkRows(vocab: number, maxChunkBytes = LOGITS_CHUNK_BYTES): number {
  return Math.max(1, Math.floor(maxChunkBytes / (4 * vocab)));
}
