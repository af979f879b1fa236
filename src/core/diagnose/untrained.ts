import type { Context } from './context';
import { median } from './stats';
import type { CurvePoint } from './types';

/**
 * "Worse than before training", from an evaluation at step 0 (eval_on_start: the untrained model's
 * loss on the held-out texts): the first later evaluation above it by more than evalAboveUntrainedRel
 * of it and lrGapMinNats. Eval loss is measured on the same texts each time, with no batch noise, so
 * one evaluation is enough; what it means (updates too large, or memorizing the training texts) is
 * decided by the rule that reports it, from the training loss (see trainingImproved).
 */
export interface UntrainedComparison {
  /** The evaluation at step 0. */
  readonly untrained: CurvePoint;
  /** The first later evaluation clearly above it. */
  readonly worse: CurvePoint;
}

export function findEvalWorseThanUntrained(ctx: Context): UntrainedComparison | null {
  const { evalLoss, t } = ctx;
  const untrained = evalLoss[0];
  if (!untrained || untrained.step !== 0 || !(untrained.value > 0) || !Number.isFinite(untrained.value)) return null;
  const limit = untrained.value + Math.max(t.evalAboveUntrainedRel * untrained.value, t.lrGapMinNats);
  const worse = evalLoss.find((p) => p.step > 0 && p.value > limit);
  return worse ? { untrained, worse } : null;
}

/**
 * Whether the training loss by `step` has clearly fallen: the median of the last windowPoints points up to
 * `step` below the first point (the untrained model on the first batch) by notLearningLearnedDropRel of it,
 * the same "has learned" margin not_learning uses. A model that learns its training texts while its held-out
 * loss gets worse is memorizing them; one whose training loss did not fall is being thrown around by updates
 * that are too large.
 */
export function trainingImproved(ctx: Context, step: number): boolean {
  const upTo = ctx.train.filter((p) => p.step <= step);
  if (upTo.length < 2) return false;
  const level = median(upTo.slice(-ctx.t.windowPoints).map((p) => p.value));
  return upTo[0]!.value - level > ctx.t.notLearningLearnedDropRel * upTo[0]!.value;
}
