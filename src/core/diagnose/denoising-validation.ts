import { notLearningFrom, type DenoisingContext, type Sighting } from './denoising-context';
import * as fmt from './format';
import { RunningLine } from './stats';

/**
 * Rules on the fixed-noise validation loss of a diffusion run. Every evaluation scores the same held-out latents
 * with the same noise at the same timesteps (validationImages), so it has no draw noise: it moves only when the
 * weights do. Its start is the first evaluation, the untrained adapter when eval_on_start is set (step 0).
 *
 * Each rule replays the evaluations from the first, so its answer after evaluation k never depends on later ones.
 */

/** The validation loss at valConfirmEvals evaluations in a row at or above `ratio` × the start: the first of them. */
export function findValAbove(ctx: DenoisingContext, ratio: number): (Sighting & { readonly start: number; readonly value: number }) | null {
  const { evalLoss, t } = ctx;
  const start = evalLoss[0];
  if (!start || !(start.value > 0)) return null;
  let run = 0;
  for (let i = 1; i < evalLoss.length; i++) {
    const p = evalLoss[i]!;
    run = p.value >= ratio * start.value ? run + 1 : 0;
    if (run < t.valConfirmEvals) continue;
    const first = evalLoss[i - run + 1]!;
    const times = first.value / start.value;
    return {
      step: first.step,
      start: start.value,
      value: first.value,
      message: `The validation loss rose from ${fmt.denoisingLoss(start.value)} at step ${start.step} to ${fmt.denoisingLoss(first.value)} (${fmt.plain(times)}× its start) at step ${first.step}, and was still ${fmt.denoisingLoss(p.value)} at step ${p.step}.`,
    };
  }
  return null;
}

/**
 * Not learning: from notLearningFrom(ctx) on, no evaluation has been valNotLearningDropRel below the start, at
 * valConfirmEvals evaluations in a row. Learned for good once one has: what the loss does afterwards is the other
 * rules' business.
 */
export function findValFlat(ctx: DenoisingContext): Sighting | null {
  const { evalLoss, t } = ctx;
  const start = evalLoss[0];
  if (!start || !(start.value > 0)) return null;
  const from = notLearningFrom(ctx);
  const bar = start.value * (1 - t.valNotLearningDropRel);
  let flat = 0;
  let stuckSince: number | undefined;
  for (let i = 1; i < evalLoss.length; i++) {
    const p = evalLoss[i]!;
    if (p.value <= bar) return null;
    if (p.step < from) continue;
    flat++;
    if (stuckSince === undefined && flat >= t.valConfirmEvals) stuckSince = evalLoss[i - flat + 1]!.step;
  }
  if (stuckSince === undefined) return null;
  const last = evalLoss[evalLoss.length - 1]!;
  return {
    step: stuckSince,
    message: `The validation loss has not gone down: ${fmt.denoisingLoss(start.value)} at step ${start.step}, ${fmt.denoisingLoss(last.value)} at step ${last.step}; a working run lowers it by more than ${Number((t.valNotLearningDropRel * 100).toPrecision(2))}%.`,
  };
}

/**
 * Overfitting: the validation loss fell below its start, then from its lowest point rose overfitRises evaluations in
 * a row (each by more than overfitRiseRel) to more than overfitTotalRiseRel above the lowest, while the training loss
 * over the same steps did not confidently rise (its least-squares slope minus notLearningConfidence standard errors
 * is below 0: the per-step loss is too noisy for "it kept falling" to be read from a short stretch, but a rising
 * one would mean unstable updates, not memorizing). Cleared when the validation loss sets a new low.
 */
export function findValRisingFromBest(ctx: DenoisingContext): (Sighting & { readonly bestStep: number }) | null {
  const { evalLoss, train, t } = ctx;
  if (evalLoss.length < t.overfitRises + 2) return null;
  let bestIndex = 0;
  for (let i = 1; i < evalLoss.length; i++) if (evalLoss[i]!.value < evalLoss[bestIndex]!.value) bestIndex = i;
  if (bestIndex === 0) return null;
  const best = evalLoss[bestIndex]!;
  let rises = 0;
  for (let j = bestIndex + 1; j < evalLoss.length; j++) {
    const prev = evalLoss[j - 1]!.value;
    const cur = evalLoss[j]!;
    rises = cur.value - prev > t.overfitRiseRel * prev ? rises + 1 : 0;
    if (rises < t.overfitRises || cur.value - best.value <= t.overfitTotalRiseRel * best.value) continue;
    const line = new RunningLine();
    for (const p of train) if (p.step > best.step && p.step <= cur.step) line.add(p.step, p.value);
    if (line.count < 3 || line.slope - t.notLearningConfidence * line.slopeStdErr > 0) continue;
    return {
      step: cur.step,
      bestStep: best.step,
      message: `The validation loss rose for ${rises} evaluations in a row, from ${fmt.denoisingLoss(best.value)} at step ${best.step} to ${fmt.denoisingLoss(cur.value)} at step ${cur.step}, while the training loss did not rise: the adapter is memorizing the training images.`,
    };
  }
  return null;
}
