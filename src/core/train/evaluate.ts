import type { WindowSet } from '../data/packing.js';
import { disposeBatch, uploadBatch, type EvalLossFn } from './batch.js';

export interface EvalResult {
  /** Token-weighted mean cross-entropy; NaN when no target counts. */
  readonly loss: number;
  readonly targetTokens: number;
  readonly windows: number;
}

/**
 * `eval/loss` exactly as packing.ts's evalWindows defines it: the mean cross-entropy over every
 * unmasked target of every window.
 *
 * `lossFn` gives each batch's mean over its own unmasked targets, so weighting it by that count
 * and dividing by the total recovers the token-weighted mean whatever the batch size: batches of
 * unequal token counts (the short last batch, masked prompts) are not averaged as equals. The sum
 * is kept in float64 on the host.
 */
export async function evaluate(windows: WindowSet, lossFn: EvalLossFn, batchSize: number): Promise<EvalResult> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`eval batch size must be a positive integer, got ${batchSize}`);
  let sum = 0;
  let tokens = 0;
  for (let start = 0; start < windows.count; start += batchSize) {
    const indices: number[] = [];
    for (let w = start; w < Math.min(start + batchSize, windows.count); w++) indices.push(w);
    const batch = uploadBatch(windows, indices);
    try {
      // A batch with nothing to score adds nothing; skipping it also saves the forward pass.
      if (batch.targetTokens === 0) continue;
      const loss = lossFn(batch);
      try {
        const [mean] = await loss.data();
        sum += mean! * batch.targetTokens;
        tokens += batch.targetTokens;
      } finally {
        loss.dispose();
      }
    } finally {
      disposeBatch(batch);
    }
  }
  return { loss: tokens === 0 ? Number.NaN : sum / tokens, targetTokens: tokens, windows: windows.count };
}
