import { inStepOrder } from './context';
import type { DenoisingThresholds } from './denoising-thresholds';
import * as fmt from './format';
import { lrFacts, type LrFacts } from './format';
import { median } from './stats';
import type { CurvePoint, RunHistory } from './types';

/** A diffusion run's history as its rules read it: curves in step order, one point per step. */
export interface DenoisingContext {
  readonly train: readonly CurvePoint[];
  /** The fixed-noise validation loss; the first point is the start (step 0 with eval_on_start). */
  readonly evalLoss: readonly CurvePoint[];
  readonly lr: LrFacts;
  readonly totalSteps: number;
  readonly t: DenoisingThresholds;
  /** levels[i]: the median of the smoothPoints training-loss points ending at point i (NaN before the first full window); computed once per diagnosis. */
  readonly levels: readonly number[];
}

/** Something a rule saw: where it began and the sentence that says what. */
export interface Sighting {
  readonly step: number;
  readonly message: string;
}

export function makeDenoisingContext(history: RunHistory, t: DenoisingThresholds): DenoisingContext {
  const train = inStepOrder(history.trainLoss);
  return {
    train,
    levels: train.map((_, i) => (i + 1 < t.smoothPoints ? Number.NaN : median(train.slice(i + 1 - t.smoothPoints, i + 1).map((p) => p.value)))),
    evalLoss: inStepOrder(history.evalLoss),
    lr: lrFacts(inStepOrder(history.learningRate)),
    totalSteps: Number.isFinite(history.totalSteps) && history.totalSteps > 0 ? history.totalSteps : 0,
    t,
  };
}

/** The first step at which not_learning may be judged: notLearningMinSteps or notLearningMinFraction of the plan, whichever comes first. */
export function notLearningFrom(ctx: DenoisingContext): number {
  const { t, totalSteps } = ctx;
  return totalSteps > 0 ? Math.min(t.notLearningMinSteps, t.notLearningMinFraction * totalSteps) : t.notLearningMinSteps;
}

/** The learning rate as the person configured it, for a suggestion ("from 0.5 to 0.25"); unet_lr wins over learning_rate in image runs. */
export function lowerLr(ctx: DenoisingContext, divisor: number, verb: string): string {
  const { peak } = ctx.lr;
  return peak !== undefined && peak > 0
    ? `${verb} the UNet's learning rate (unet_lr when set, else learning_rate) from ${fmt.learningRate(peak)} to ${fmt.learningRate(peak / divisor)}`
    : `${verb} the UNet's learning rate (unet_lr when set, else learning_rate) to 1/${divisor} of its value`;
}
