import type { Context } from './context';
import * as fmt from './format';
import { median, RunningLine } from './stats';
import type { Finding } from './types';

/**
 * Not learning: enough of the run has gone by and the training loss is still where it started.
 *
 * "Where it started" is judged from a least-squares line through every point so far: the drop is
 * how far the line falls from the first logged step to the latest, as a fraction of where it
 * starts, and its standard error comes from the scatter of the points about the line. The run is
 * stuck when even the optimistic end of that estimate (drop + k·error) is below
 * notLearningMaxDropRel, at notLearningConfirmPoints logged points in a row. So a noisy curve whose
 * drop cannot be told apart from a real one stays quiet, and a flat curve is caught once there are
 * enough points to be sure. It counts as learning again only when the pessimistic end
 * (drop − k·error) clears the same threshold: the 2·k·error between the two ends is hysteresis, so
 * a curve hovering near the threshold does not flip the finding on and off with each point.
 *
 * The line misreads curves that are not straight (one that fell and bounced back up, one that
 * converged in its first few points and then sat flat for a long time), so a second test overrides
 * it: once the median of a window of points has been clearly below the first logged point (by a
 * fraction of it and by several standard deviations of the points about the line), the run has
 * learned and this finding is off for good.
 *
 * The state is replayed from the point where judging starts on every call, so it depends only on
 * the history, never on how often diagnose() was called.
 *
 * A training loss of exactly 0 is its own case: no real model scores every token with certainty, so
 * it means nothing was scored at all.
 */
export function findNotLearning(ctx: Context): Finding | null {
  const { train, t } = ctx;
  if (train.length < t.minPoints) return null;

  const zeros = train.slice(-t.minPoints);
  if (zeros.every((p) => p.value === 0)) {
    const since = train[lastNonZeroIndex(train) + 1]!;
    return {
      code: 'not_learning',
      severity: 'warning',
      step: since.step,
      message: `The training loss has been exactly 0 nats since step ${since.step}, which means no token is being scored.`,
      suggestion:
        'Check the masking: the loss mask hides every token (for example, completion-only training on texts that have no completion, or a labels column that is all masked); also check that the texts are not empty after tokenizing.',
    };
  }

  // A learning rate of 0 at every logged step is certain, not statistical: the weights cannot move,
  // so whatever the loss does is batch-to-batch noise. Say so as soon as there is a curve to show.
  if (ctx.lr.allZero) {
    return {
      code: 'not_learning',
      severity: 'warning',
      step: train[0]!.step,
      message: `The learning rate has been 0 at every step, so the adapter has not changed since step ${train[0]!.step}; the loss only moves with the batches.`,
      suggestion: suggestion(ctx),
    };
  }

  const line = new RunningLine();
  const x0 = train[0]!.step;
  const first = train[0]!.value;
  let stuckSince: number | undefined;
  let flatRun = 0;
  for (let i = 0; i < train.length; i++) {
    const p = train[i]!;
    line.add(p.step, p.value);
    // Once a whole window sat well below the first point the run has learned, for good: what the
    // loss does afterwards is some other finding's business. "Well below" is also measured against
    // the scatter of the points, because the first point is a single noisy value.
    if (i + 1 >= t.windowPoints) {
      const level = median(train.slice(i + 1 - t.windowPoints, i + 1).map((q) => q.value));
      if (first - level > Math.max(t.notLearningLearnedDropRel * first, t.notLearningLearnedSigmas * line.residualStd)) return null;
    }
    if (!eligible(ctx, i)) continue;
    const start = line.at(x0);
    if (!(start > 0)) continue;
    const span = p.step - x0;
    const drop = (-line.slope * span) / start;
    const error = (line.slopeStdErr * span) / start;
    if (stuckSince === undefined) {
      flatRun = drop + t.notLearningConfidence * error < t.notLearningMaxDropRel ? flatRun + 1 : 0;
      if (flatRun >= t.notLearningConfirmPoints) stuckSince = train[i - flatRun + 1]!.step;
    } else if (drop - t.notLearningConfidence * error > t.notLearningMaxDropRel) {
      stuckSince = undefined;
      flatRun = 0;
    }
  }
  if (stuckSince === undefined) return null;

  // Now is a median of the last few points so one batch does not set it; the start is the first
  // point, the loss of the model before (almost) any training, as the chart shows it.
  const startLevel = train[0]!.value;
  const nowLevel = median(train.slice(-5).map((p) => p.value));
  const last = train[train.length - 1]!;
  return {
    code: 'not_learning',
    severity: 'warning',
    step: stuckSince,
    message: `The training loss has not gone down: ${fmt.nats(startLevel)} at the start, ${fmt.nats(nowLevel)} by step ${last.step}.`,
    suggestion: suggestion(ctx),
  };
}

function eligible(ctx: Context, index: number): boolean {
  const { t, totalSteps, train } = ctx;
  if (index + 1 < t.minPoints) return false;
  if (index + 1 >= t.notLearningMinPoints) return true;
  return totalSteps > 0 && train[index]!.step >= t.notLearningMinFraction * totalSteps;
}

function lastNonZeroIndex(train: Context['train']): number {
  for (let i = train.length - 1; i >= 0; i--) if (train[i]!.value !== 0) return i;
  return -1;
}

function suggestion(ctx: Context): string {
  const { peak, allZero } = ctx.lr;
  if (allZero) {
    return 'learning_rate is 0, so the weights never change: set learning_rate to a positive value, e.g. 1e-4 (the default).';
  }
  const data =
    "Check the data first: texts that do not match their labels, a loss mask that hides every token, or a tokenizer that is not the model's own all look like this";
  // 5e-4 is the top of the usual LoRA range; past it a higher rate is more likely to diverge than to help.
  const usualTop = 5e-4;
  let lr: string;
  if (peak === undefined) lr = 'if the data is right, learning_rate may be too low: try ten times higher.';
  else if (peak >= usualTop) lr = `learning_rate (${fmt.learningRate(peak)}) is already high for LoRA, so the data is the likely cause.`;
  else lr = `if the data is right, learning_rate (${fmt.learningRate(peak)}) may be too low: try ${fmt.learningRate(Math.min(peak * 10, usualTop))}.`;
  return `${data}; ${lr}`;
}
