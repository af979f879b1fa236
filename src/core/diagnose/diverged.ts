import { firstNonFinite, type Context } from './context';
import * as fmt from './format';
import { median } from './stats';
import type { CurvePoint, Finding } from './types';

/**
 * Diverged: a loss that is NaN or infinite, or a training loss that has climbed far above where it
 * started and stayed there for a few logged points. Only this finding makes shouldStop() true.
 *
 * A single point above the limit is not enough: one unlucky batch (a long, odd text) can spike the
 * logged mean, and stopping a healthy run for it would throw away good work. Checking from the
 * first point on, not only the latest ones, keeps the finding once raised even if the loss later
 * comes back down, so callers see it exactly once and at the step where it began.
 */
export function findDiverged(ctx: Context): Finding | null {
  const { train, t } = ctx;
  const nonFinite = earliestNonFinite(ctx);
  const limitEnd = nonFinite ? train.findIndex((p) => p.step >= nonFinite.point.step) : -1;
  const finiteTrain = limitEnd >= 0 ? train.slice(0, limitEnd) : train;
  const rise = findSustainedRise(finiteTrain, t.divergeStartPoints, t.divergeRatio, t.divergeMarginNats, t.divergeConfirmPoints);
  // Skipped updates never reach the loss curve (nothing was applied), so they are judged on their own: the trainer
  // stops at this many in a row, and this is the finding that says why. Earlier NaN points or a rise come first.
  const skipped = ctx.skipped.find((s) => s.inRow >= t.divergeSkippedInRow);
  if (skipped && (!nonFinite || skipped.step < nonFinite.point.step) && (!rise || skipped.step < rise.at.step)) {
    const lastGood = skipped.step - 1;
    return {
      code: 'diverged',
      severity: 'error',
      step: skipped.step,
      message: `${skipped.inRow} updates in a row were not finite (at step ${skipped.step}, ${skipped.problem}); none was applied, so training stopped, keeping the adapter after step ${lastGood}.`,
      suggestion: lowerLrSuggestion(ctx),
    };
  }

  if (nonFinite && (!rise || nonFinite.point.step <= rise.at.step)) {
    const what = nonFinite.curve === 'train' ? 'training loss' : 'eval loss';
    const value = Number.isNaN(nonFinite.point.value) ? 'NaN (not a number)' : 'infinite';
    return {
      code: 'diverged',
      severity: 'error',
      step: nonFinite.point.step,
      message: `The ${what} became ${value} at step ${nonFinite.point.step}, so the weights have blown up.`,
      suggestion: lowerLrSuggestion(ctx),
    };
  }
  if (rise) {
    return {
      code: 'diverged',
      severity: 'error',
      step: rise.at.step,
      message: `The training loss climbed to ${fmt.nats(rise.at.value)} at step ${rise.at.step}, far above its start of ${fmt.nats(rise.start)}, and stayed there: training has blown up.`,
      suggestion: lowerLrSuggestion(ctx),
    };
  }
  return null;
}

function earliestNonFinite(ctx: Context): { curve: 'train' | 'eval'; point: CurvePoint } | null {
  const i = firstNonFinite(ctx.train);
  const j = firstNonFinite(ctx.evalLoss);
  const train = i >= 0 ? ctx.train[i]! : undefined;
  const evalPoint = j >= 0 ? ctx.evalLoss[j]! : undefined;
  if (train && (!evalPoint || train.step <= evalPoint.step)) return { curve: 'train', point: train };
  if (evalPoint) return { curve: 'eval', point: evalPoint };
  return null;
}

/**
 * The first point of the first run of `confirm` points in a row above the limit, looking only after
 * the points that define the start. The start is a median so that one odd first batch does not set it.
 */
function findSustainedRise(
  train: readonly CurvePoint[],
  startPoints: number,
  ratio: number,
  marginNats: number,
  confirm: number,
): { at: CurvePoint; start: number } | null {
  if (train.length < startPoints + confirm) return null;
  const start = median(train.slice(0, startPoints).map((p) => p.value));
  const limit = Math.max(start * ratio, start + marginNats);
  let run = 0;
  for (let i = startPoints; i < train.length; i++) {
    run = train[i]!.value > limit ? run + 1 : 0;
    if (run === confirm) return { at: train[i - confirm + 1]!, start };
  }
  return null;
}

function lowerLrSuggestion(ctx: Context): string {
  const { peak, warmupSteps } = ctx.lr;
  const lower =
    peak !== undefined && peak > 0
      ? `Lower learning_rate to about a third, from ${fmt.learningRate(peak)} to ${fmt.learningRate(peak / 3)}, and train again`
      : 'Lower learning_rate to about a third of its current value and train again';
  const warmup =
    warmupSteps === 0 ? `; also set warmup_steps to about ${fmt.proposedWarmup(ctx.totalSteps, 0)} so the first updates are small` : '';
  return `${lower}${warmup}.`;
}
