import type { Batch, EvalLossFn } from './batch.js';
import type { ExampleSet } from './examples.js';

export interface EvalResult {
  /** Weighted mean loss (token-weighted cross-entropy for windows); NaN when nothing counts. */
  readonly loss: number;
  /** What the examples weighed in all (ExampleSet.weightOf): unmasked targets for windows, images for an image set. */
  readonly weight: number;
  readonly examples: number;
}

/**
 * The eval loss over every example, as packing.ts's evalWindows defines it for text: the mean cross-entropy over
 * every unmasked target of every window (for images: the mean over the images of their fixed-noise loss).
 *
 * `lossFn` gives each batch's mean over what counts in it, so weighting it by that count (weightOf) and dividing by
 * the total recovers the weighted mean whatever the batch size: batches of unequal token counts (the short last
 * batch, masked prompts) are not averaged as equals. The sum is kept in float64 on the host.
 */
export async function evaluate<B = Batch>(examples: ExampleSet<B>, lossFn: EvalLossFn<B>, batchSize: number): Promise<EvalResult> {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`eval batch size must be a positive integer, got ${batchSize}`);
  let sum = 0;
  let weight = 0;
  for (let start = 0; start < examples.count; start += batchSize) {
    const indices: number[] = [];
    for (let i = start; i < Math.min(start + batchSize, examples.count); i++) indices.push(i);
    const w = examples.weightOf(indices);
    // A batch with nothing to score adds nothing; skipping it also saves the forward pass.
    if (w === 0) continue;
    const batch = examples.upload(indices);
    try {
      const loss = lossFn(batch);
      try {
        const [mean] = await loss.data();
        sum += mean! * w;
        weight += w;
      } finally {
        loss.dispose();
      }
    } finally {
      examples.release(batch);
    }
  }
  return { loss: weight === 0 ? Number.NaN : sum / weight, weight, examples: examples.count };
}
