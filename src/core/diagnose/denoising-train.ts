import { notLearningFrom, type DenoisingContext, type Sighting } from './denoising-context';
import * as fmt from './format';
import { median, RunningLine } from './stats';

/**
 * Rules on the per-step training loss of a diffusion run, for runs without validation images (and to back the
 * validation rules up). One step's loss depends on the timesteps it drew, so nothing here reads a single point
 * except the start: levels are medians of smoothPoints steps, trends are least-squares lines with their standard
 * errors, and every decision must hold over many windows in a row. Every rule replays the history from the first
 * point, so its answer after point k never depends on later points.
 */

/** Median of the smoothPoints steps ending at index `end` (inclusive). */
function level(ctx: DenoisingContext, end: number): number {
  return ctx.levels[end]!;
}

/**
 * The training loss's start: the median of the first trainStartPoints steps, i.e. the untrained adapter (the first
 * window's median would not do: a rate high enough to throw the model away at step 3 drags that window up with it).
 * Being a median of a few steps, it can sit well below the typical level by the luck of the timesteps, which is why
 * the ratios compared with it are large (see README.md).
 */
function startLevel(ctx: DenoisingContext): number {
  return median(ctx.train.slice(0, ctx.t.trainStartPoints).map((p) => p.value));
}

/**
 * A window median at or above `ratio` × the start for trainConfirmWindows windows in a row: the first such window
 * (the step where it ends).
 */
export function findTrainAboveStart(ctx: DenoisingContext, ratio: number): (Sighting & { readonly start: number; readonly value: number }) | null {
  const { train, t } = ctx;
  const w = t.smoothPoints;
  if (train.length < Math.max(w, t.trainStartPoints) + t.trainConfirmWindows - 1) return null;
  const start = startLevel(ctx);
  if (!(start > 0)) return null;
  let run = 0;
  for (let i = w - 1; i < train.length; i++) {
    const now = level(ctx, i);
    run = now >= ratio * start ? run + 1 : 0;
    if (run < t.trainConfirmWindows) continue;
    const at = i - run + 1;
    const first = level(ctx, at);
    return {
      step: train[at]!.step,
      start,
      value: first,
      message: `The training loss rose from ${fmt.denoisingLoss(start)} (median of the first ${t.trainStartPoints} steps) to ${fmt.denoisingLoss(first)} (median of the ${w} steps to step ${train[at]!.step}) and stayed there (${fmt.plain(first / start)}× its start).`,
    };
  }
  return null;
}

/** A window median trainAboveBestRel above the lowest window median so far, for trainConfirmWindows windows in a row. */
export function findTrainBounce(ctx: DenoisingContext): Sighting | null {
  const { train, t } = ctx;
  const w = t.smoothPoints;
  let best = Number.POSITIVE_INFINITY;
  let bestStep = 0;
  let run = 0;
  for (let i = w - 1; i < train.length; i++) {
    const now = level(ctx, i);
    run = now > (1 + t.trainAboveBestRel) * best ? run + 1 : 0;
    if (run >= t.trainConfirmWindows) {
      const at = i - run + 1;
      return {
        step: train[at]!.step,
        message: `The training loss (median of ${w} steps) went back up from ${fmt.denoisingLoss(best)} (the ${w} steps to step ${bestStep}) to ${fmt.denoisingLoss(level(ctx, at))} by step ${train[at]!.step} and stayed there: the updates are throwing the adapter around.`,
      };
    }
    if (now < best) {
      best = now;
      bestStep = train[i]!.step;
    }
  }
  return null;
}

/**
 * Flat: from notLearningFrom(ctx) on, the drop of a least-squares line through every point so far, plus
 * notLearningConfidence standard errors, is below trainNotLearningDropRel of the line's start, and the line does not
 * rise by that much either, at trainConfirmWindows points in a row. Learned for good once the drop minus the same margin clears the threshold. With one step's loss
 * scattering by about a third of its level, the error of the drop over n points is about 0.35·√(12/n) of the start,
 * so this needs a few hundred points to speak: it stays quiet rather than guess.
 */
export function findTrainFlat(ctx: DenoisingContext): Sighting | null {
  const { train, t } = ctx;
  if (train.length < t.minPoints) return null;
  const from = notLearningFrom(ctx);
  const line = new RunningLine();
  const x0 = train[0]!.step;
  let flat = 0;
  let stuckSince: number | undefined;
  let start = Number.NaN;
  for (let i = 0; i < train.length; i++) {
    const p = train[i]!;
    line.add(p.step, p.value);
    if (i + 1 < t.minPoints || p.step < from) continue;
    start = line.at(x0);
    if (!(start > 0)) continue;
    const span = p.step - x0;
    const drop = (-line.slope * span) / start;
    const error = (line.slopeStdErr * span) / start;
    if (drop - t.notLearningConfidence * error > t.trainNotLearningDropRel) return null;
    // A loss climbing away from its start is not "not learning" (lr 0.1 and 0.2 without validation climbed for 20
    // steps before the rise rules could confirm it), so the fitted line must not rise by the bar either.
    flat = drop + t.notLearningConfidence * error < t.trainNotLearningDropRel && drop > -t.trainNotLearningDropRel ? flat + 1 : 0;
    if (stuckSince === undefined && flat >= t.trainConfirmWindows) stuckSince = train[i - flat + 1]!.step;
  }
  if (stuckSince === undefined) return null;
  const last = train[train.length - 1]!;
  const now = median(train.slice(-t.smoothPoints).map((q) => q.value));
  return {
    step: stuckSince,
    message: `The training loss has not gone down: its trend line starts at ${fmt.denoisingLoss(start)} and the last ${Math.min(t.smoothPoints, train.length)} steps to step ${last.step} sit at ${fmt.denoisingLoss(now)}.`,
  };
}
