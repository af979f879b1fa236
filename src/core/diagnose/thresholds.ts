import type { Thresholds } from './types';

/**
 * The defaults. They were tuned on synthetic runs (exponential decays, plateaus, bounces, flat
 * curves and slow decreases, each with 2% to 15% multiplicative noise per logged point, 100 seeds
 * each) so that clean cases are caught and noise alone stays quiet; README.md in this folder gives
 * the rates measured, and tests/unit/diagnose.test.ts keeps the behaviour from drifting.
 */
export const DEFAULT_THRESHOLDS: Thresholds = Object.freeze({
  /**
   * 8 points. Below this there is no median or trend worth trusting, and the first few logged
   * points of every run are the steep part of the curve; only NaN/Inf is judged earlier.
   */
  minPoints: 8,
  /**
   * 12 points. Enough for a median and a trend line that one spike cannot move, short enough to
   * follow a change in behaviour within a few dozen logged steps.
   */
  windowPoints: 12,

  /**
   * 5 points. The starting loss is the median of the first five, not the first value alone, so one
   * unusual first batch neither hides a blow-up nor invents one.
   */
  divergeStartPoints: 5,
  /**
   * 1.5×. A LoRA run starts from a pretrained model whose loss is already sensible; a healthy run
   * never climbs half again above it, while a blown-up one shoots far past it.
   */
  divergeRatio: 1.5,
  /**
   * 1 nat. Guards low starting losses (0.5 nats × 1.5 is only 0.75): the loss must also be a whole
   * nat worse, i.e. the model gives the right token about e (2.7) times less probability.
   */
  divergeMarginNats: 1,
  /**
   * 3 points in a row. One long or odd batch can spike a logged mean once; three in a row do not
   * happen by chance, and three points late is still early enough to save the rest of the run.
   */
  divergeConfirmPoints: 3,
  /**
   * 5 skipped updates in a row: the trainer's MAX_SKIPPED_IN_ROW, at which it ends the run, so the
   * finding explains that stop. One non-finite batch can be bad luck; five in a row are not.
   */
  divergeSkippedInRow: 5,

  /**
   * 30% above the best window median. Noise of 15% per logged point moves a 12-point median by
   * about 5%, and the lowest of many such medians sits a few of those below the typical one; 30%
   * stays clear of that, while a learning rate that is really too high typically throws the loss
   * back up by half or more.
   */
  lrGapRel: 0.3,
  /** 0.1 nats: with a very low loss, 30% can be a difference nobody should act on. */
  lrGapMinNats: 0.1,
  /**
   * 8% of the level: the median distance from the window's own trend line. Steady decay (even
   * steep) stays close to its line; bouncing between two levels does not.
   */
  lrSwingRel: 0.08,
  /** 0.03 nats: the same guard for very low losses. */
  lrSwingMinNats: 0.03,
  /**
   * 10 windows in a row: about one window length of new points must agree, so a stretch of bad
   * luck in the noise does not raise a warning that then stays for the rest of the run.
   */
  lrConfirmWindows: 10,
  /**
   * 10% above the first training loss (the untrained model on the first batch). A fine-tune that
   * works goes down from its start; one whose first updates threw it somewhere worse sits well above
   * it (15–60% in the lr 0.5 runs of the demo and fixture models, at most 12% in their lr 0.01 runs,
   * whose first batch happened to be an easy one).
   */
  lrAboveStartRel: 0.1,
  /**
   * 2.5 times the points' scatter (the median, over every window so far, of the median distance of a
   * window's points from their trend line; about 1.7 standard deviations of one step's noise): the start
   * is a single batch, as noisy as any other, so the level must be further above it than the luck of that
   * batch (at least 3.2 in the lr 0.5 runs above, at most 1.5 at lr 0.01). With the early jump this rule
   * also needs (lrGapRel, see lr_too_high.ts), flat runs of 100 steps with 5%, 8% and 12% noise per step
   * were called lr_too_high in 0, 0.3% and 3% of 300 seeds.
   */
  lrAboveStartSwings: 2.5,
  /** 10 points: the early gradient norm, after the first step's unusual one is outvoted. */
  gradEarlyPoints: 10,
  /** 5 points: a median of five needs three high values, so one spiky batch is not an explosion. */
  gradRecentPoints: 5,
  /**
   * 10×. Gradient norms wander by a factor of two or three in healthy runs, usually downwards; an
   * order of magnitude up means the updates are being thrown around.
   */
  gradExplodeFactor: 10,

  /**
   * 3 evaluations: the usual early-stopping patience, and the point from which a rise is a trend,
   * not one unlucky evaluation (eval loss uses the same texts each time, so it has no batch noise).
   */
  overfitRises: 3,
  /** 0.2% of the eval loss per rise: smaller moves are rounding and numeric noise. */
  overfitRiseRel: 0.002,
  /**
   * 1% above the lowest eval loss, at the end of the rises: enough to matter for the adapter kept,
   * small enough to warn before much compute is spent past the best point.
   */
  overfitTotalRiseRel: 0.01,
  /**
   * 5% above the eval loss at step 0 (the untrained model, with eval_on_start), and at least
   * lrGapMinNats: eval uses the same texts each time, so this is no noise; a fine-tune that works
   * brings the held-out loss down, and one that makes it 5% worse than no training at all is harming
   * the model (lr_too_high when the training loss got no lower either, overfitting when it fell).
   */
  evalAboveUntrainedRel: 0.05,

  /** 20 points: a trend line over fewer is too uncertain to call anything flat. */
  notLearningMinPoints: 20,
  /**
   * 30% of the planned steps: a working fine-tune has clearly moved by then, and 70% of the run is
   * still left to save by fixing the config.
   */
  notLearningMinFraction: 0.3,
  /**
   * 2% of the starting loss: a fine-tune that works moves the loss by much more than this early on;
   * less is what a learning rate of 0 or a broken dataset gives.
   */
  notLearningMaxDropRel: 0.02,
  /**
   * 10%. Guards the trend line, which misreads curves that are not straight: a loss that fell and
   * then bounced back up has no downward trend, and one that converged in its first few points and
   * sat flat for a thousand more has almost none, yet both learned. A whole window 10% below the
   * first point is far beyond what noise moves a 12-point median (about 2% at 5% noise per point).
   */
  notLearningLearnedDropRel: 0.1,
  /**
   * 3 standard deviations. The first point is one noisy value; with 10% noise per point it can sit
   * 10% above the true start by itself, and a finding that flips off for that reason flickers.
   */
  notLearningLearnedSigmas: 3,
  /**
   * 1.5 standard errors: about 93% one-sided confidence. More would miss flat but noisy runs for a
   * long time; less would call slow but real decreases stuck in their first few dozen points.
   */
  notLearningConfidence: 1.5,
  /**
   * 5 points in a row: the stuck test, near its threshold, can pass at one point by chance; five
   * consecutive passes make a false alarm on a slowly falling curve rare.
   */
  notLearningConfirmPoints: 5,
});

/** Counts of points, windows or evaluations: whole numbers, at least 1. */
const COUNTS: ReadonlySet<keyof Thresholds> = new Set<keyof Thresholds>([
  'minPoints',
  'divergeStartPoints',
  'divergeConfirmPoints',
  'divergeSkippedInRow',
  'windowPoints',
  'lrConfirmWindows',
  'gradEarlyPoints',
  'gradRecentPoints',
  'overfitRises',
  'notLearningMinPoints',
  'notLearningConfirmPoints',
]);

/** The defaults with the caller's overrides on top; an override left undefined keeps the default. */
export function resolveThresholds(options: Partial<Thresholds> | undefined): Thresholds {
  const merged: Record<keyof Thresholds, number> = { ...DEFAULT_THRESHOLDS };
  for (const [key, value] of Object.entries(options ?? {})) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_THRESHOLDS)) throw new RangeError(`diagnose: unknown threshold ${key}`);
    const isCount = COUNTS.has(key as keyof Thresholds);
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (isCount && (!Number.isInteger(value) || value < 1))) {
      throw new RangeError(`diagnose: threshold ${key} must be ${isCount ? 'a whole number of at least 1' : 'a finite number of at least 0'}, got ${String(value)}`);
    }
    merged[key as keyof Thresholds] = value;
  }
  // A trend line through fewer than 3 points has no scatter to measure.
  if (merged.windowPoints < 3) throw new RangeError(`diagnose: threshold windowPoints must be at least 3, got ${merged.windowPoints}`);
  return merged;
}
