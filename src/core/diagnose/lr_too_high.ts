import type { Context } from './context';
import * as fmt from './format';
import { fitLine, median } from './stats';
import type { CurvePoint, Finding } from './types';

/**
 * Learning rate too high, seen either way it shows:
 *
 * 1. The loss bounces: over a window of logged points its median sits well above the best (lowest)
 *    window median seen so far, AND the points scatter widely about the window's own trend line.
 *    Both are needed. A high level alone is also what an unshuffled, harder second half of a dataset
 *    looks like; wide scatter alone is what a small batch logged every step looks like. Measuring the
 *    scatter about a fitted line, not about the median, keeps a steep but steady early drop (every
 *    point far from the window median, none far from the line) from counting as swings. Window
 *    medians and the median scatter ignore one odd batch: a single spike that recovers is not a
 *    finding, by design, because one long or odd text in a batch does that in healthy runs.
 * 2. The gradient norm explodes: the median of the latest few values is many times the median of
 *    the first few.
 *
 * Windows are fixed positions in the history and every window is checked, from the first, on each
 * call, so the answer after point k never changes when later points arrive: the finding, once
 * raised, stays, at the step where it was first confirmed.
 */
export function findLrTooHigh(ctx: Context): Finding | null {
  const bounce = findBounce(ctx);
  const explosion = findGradExplosion(ctx);
  if (!bounce && !explosion) return null;
  const first = bounce && (!explosion || bounce.step <= explosion.step) ? bounce : explosion!;
  return {
    code: 'lr_too_high',
    severity: 'warning',
    step: first.step,
    message: first.message,
    suggestion: suggestion(ctx),
  };
}

interface Sighting {
  readonly step: number;
  readonly message: string;
}

function findBounce(ctx: Context): Sighting | null {
  const { train, t } = ctx;
  const w = t.windowPoints;
  let best = Number.POSITIVE_INFINITY;
  let run = 0;
  for (let end = w - 1; end < train.length; end++) {
    const window = train.slice(end - w + 1, end + 1);
    const steps = window.map((p) => p.step);
    const values = window.map((p) => p.value);
    const level = median(values);
    best = Math.min(best, level);
    const line = fitLine(steps, values);
    const swing = median(values.map((v, i) => Math.abs(v - (line.intercept + line.slope * steps[i]!))));
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
