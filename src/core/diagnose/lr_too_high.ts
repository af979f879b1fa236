import type { Context } from './context';
import * as fmt from './format';
import { fitLine, median } from './stats';
import type { CurvePoint, Finding } from './types';
import { findEvalWorseThanUntrained, trainingImproved } from './untrained';

/**
 * Learning rate too high, seen any of the ways it shows:
 *
 * 1. The loss bounces: over a window of points its median sits well above the best (lowest)
 *    window median seen so far, AND the points scatter widely about the window's own trend line.
 *    Both are needed. A high level alone is also what an unshuffled, harder second half of a dataset
 *    looks like; wide scatter alone is what a small batch looks like. Measuring the
 *    scatter about a fitted line, not about the median, keeps a steep but steady early drop (every
 *    point far from the window median, none far from the line) from counting as swings. Window
 *    medians and the median scatter ignore one odd batch: a single spike that recovers is not a
 *    finding, by design, because one long or odd text in a batch does that in healthy runs.
 * 2. The loss settles above its start: the first updates throw the model somewhere worse and it
 *    never gets back (a loss that jumps from 1.9 to 5 at step 3, then sits at 3.1). The window median
 *    stays above the first point, the untrained model's loss, by a fraction of it and by several
 *    times the points' scatter (the first point is one batch, as noisy as any other).
 * 3. The gradient norm explodes: the median of the latest few values is many times the median of
 *    the first few.
 * 4. With an evaluation at step 0 (the untrained model), a later eval loss clearly above it while the
 *    training loss is no better than at its start either (see untrained.ts; when the training loss
 *    did fall, that is memorizing, and overfitting.ts reports it).
 *
 * Windows are fixed positions in the history and every window is checked, from the first, on each
 * call, so the answer after point k never changes when later points arrive: the finding, once
 * raised, stays, at the step where it was first confirmed.
 */
export function findLrTooHigh(ctx: Context): Finding | null {
  const evalSighting = findEvalAboveUntrained(ctx);
  const sightings = [findBounce(ctx), findAboveStart(ctx), findGradExplosion(ctx), evalSighting].filter((s): s is Sighting => s !== null);
  if (sightings.length === 0) return null;
  const first = sightings.reduce((a, b) => (b.step < a.step ? b : a));
  // The held-out texts saying the same is the strongest evidence there is, so it is quoted whenever it exists.
  const agrees = evalSighting && evalSighting !== first ? `; ${evalSighting.agreement}` : '';
  return {
    code: 'lr_too_high',
    severity: 'warning',
    step: first.step,
    message: first.message.replace(/\.$/, `${agrees}.`),
    suggestion: suggestion(ctx),
  };
}

interface Sighting {
  readonly step: number;
  readonly message: string;
}

interface EvalSighting extends Sighting {
  /** The same evidence as a clause, for a finding first seen another way. */
  readonly agreement: string;
}

function findBounce(ctx: Context): Sighting | null {
  const { train, t } = ctx;
  const w = t.windowPoints;
  let best = Number.POSITIVE_INFINITY;
  let run = 0;
  for (let end = w - 1; end < train.length; end++) {
    const { level, swing } = windowShape(train, end, w);
    best = Math.min(best, level);
    const high = level - best > Math.max(t.lrGapRel * best, t.lrGapMinNats);
    const swinging = swing > Math.max(t.lrSwingRel * level, t.lrSwingMinNats);
    run = high && swinging ? run + 1 : 0;
    if (run === t.lrConfirmWindows) {
      const firstEnd = train[end - t.lrConfirmWindows + 1]!;
      return {
        step: firstEnd.step,
        message: `Since about step ${firstEnd.step} the training loss bounces about ${fmt.nats(swing)} above and below ${fmt.nats(level)}, well above its best of ${fmt.nats(best)}.`,
      };
    }
  }
  return null;
}

/** A window's level (median) and scatter (median distance of its points from their least-squares line). */
function windowShape(train: readonly CurvePoint[], end: number, w: number): { level: number; swing: number } {
  const window = train.slice(end - w + 1, end + 1);
  const steps = window.map((p) => p.step);
  const values = window.map((p) => p.value);
  const line = fitLine(steps, values);
  return { level: median(values), swing: median(values.map((v, i) => Math.abs(v - (line.intercept + line.slope * steps[i]!)))) };
}

function findAboveStart(ctx: Context): Sighting | null {
  const { train, t } = ctx;
  const w = t.windowPoints;
  const start = train[0];
  if (!start || !(start.value > 0) || !Number.isFinite(start.value)) return null;
  // The first updates threw the loss up: the median of the points right after the start (a median, so one odd
  // batch does not count) is lrGapRel above it. Without this jump a flat run whose first batch happened to be an
  // easy one would look "above its start" for long stretches: the start is a single batch.
  const early = train.slice(1, 1 + t.divergeStartPoints).map((p) => p.value);
  if (early.length < t.divergeStartPoints) return null;
  const jump = median(early);
  if (!(jump - start.value > Math.max(t.lrGapRel * start.value, t.lrGapMinNats))) return null;
  let run = 0;
  // The noise of one point is the median scatter of every window so far: one 12-point window's own scatter
  // is itself too noisy a yardstick (it dips for a stretch by chance), the pooled one is steady.
  // Kept sorted (binary insertion) so the median costs nothing per window: a re-sort each time would make
  // long runs quadratic-times-log.
  const swings: number[] = [];
  for (let end = w - 1; end < train.length; end++) {
    const { level, swing } = windowShape(train, end, w);
    swings.splice(sortedIndex(swings, swing), 0, swing);
    const mid = swings.length >> 1;
    const noise = swings.length % 2 === 1 ? swings[mid]! : (swings[mid - 1]! + swings[mid]!) / 2;
    const above = level - start.value > Math.max(t.lrAboveStartRel * start.value, t.lrAboveStartSwings * noise, t.lrGapMinNats);
    run = above ? run + 1 : 0;
    if (run === t.lrConfirmWindows) {
      const since = train[Math.max(1, end - w - t.lrConfirmWindows + 2)]!;
      const jumped = `jumped to ${fmt.nats(jump)} right after step ${start.step} (the median of the next ${early.length} steps)`;
      return {
        step: train[end - t.lrConfirmWindows + 1]!.step,
        message: `The training loss ${jumped} and has sat at about ${fmt.nats(level)} since step ${since.step} (the median of ${w} steps), ${fmt.nats(level - start.value)} (${fmt.percent((level - start.value) / start.value)}) above its start of ${fmt.nats(start.value)}: the updates made the model worse, not better.`,
      };
    }
  }
  return null;
}

/** Where `value` goes in the ascending `sorted` to keep it sorted. */
function sortedIndex(sorted: readonly number[], value: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function findEvalAboveUntrained(ctx: Context): EvalSighting | null {
  const found = findEvalWorseThanUntrained(ctx);
  if (!found || trainingImproved(ctx, found.worse.step)) return null;
  const { untrained, worse } = found;
  return {
    step: worse.step,
    agreement: `the eval loss agrees: ${fmt.nats(worse.value)} at step ${worse.step}, ${fmt.nats(worse.value - untrained.value)} above the untrained model's ${fmt.nats(untrained.value)}`,
    message: `At step ${worse.step} the eval loss ${fmt.nats(worse.value)} is ${fmt.nats(worse.value - untrained.value)} above the untrained model's ${fmt.nats(untrained.value)}, and the training loss has not fallen either: training has made the model worse.`,
  };
}

function findGradExplosion(ctx: Context): Sighting | null {
  const { grad, t } = ctx;
  // A norm that overflowed is as exploded as a norm can be; NaN would otherwise compare as "small".
  const values = grad.map((p: CurvePoint) => (Number.isFinite(p.value) ? p.value : Number.POSITIVE_INFINITY));
  if (values.length < t.gradEarlyPoints + t.gradRecentPoints) return null;
  const early = median(values.slice(0, t.gradEarlyPoints));
  if (!(early > 0) || !Number.isFinite(early)) return null;
  for (let end = t.gradEarlyPoints + t.gradRecentPoints - 1; end < values.length; end++) {
    const recent = median(values.slice(end - t.gradRecentPoints + 1, end + 1));
    if (recent > t.gradExplodeFactor * early) {
      const at = grad[end]!;
      return {
        step: at.step,
        message: `The gradient norm rose to ${fmt.plain(recent)} by step ${at.step}, more than ${fmt.plain(t.gradExplodeFactor)} times its early level of ${fmt.plain(early)}.`,
      };
    }
  }
  return null;
}

function suggestion(ctx: Context): string {
  const { peak, warmupSteps } = ctx.lr;
  const halve =
    peak !== undefined && peak > 0
      ? `Halve learning_rate, from ${fmt.learningRate(peak)} to ${fmt.learningRate(peak / 2)}`
      : 'Halve learning_rate';
  const proposed = fmt.proposedWarmup(ctx.totalSteps, warmupSteps);
  const warmup =
    warmupSteps !== undefined && warmupSteps > 0
      ? `lengthen warmup_steps from about ${warmupSteps} to ${proposed}`
      : `add warmup_steps (about ${proposed})`;
  return `${halve}, and ${warmup} so the first updates are small.`;
}
