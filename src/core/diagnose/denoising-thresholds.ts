/**
 * The numbers the diagnosis of a diffusion (denoising) run compares against. They are a separate set from the
 * language-model ones (thresholds.ts) because the curves are different animals: the per-step loss is a mean squared
 * error whose size depends on the timesteps the step happened to draw (near 0 for t near 0, near 1 for t near 999),
 * so one step says little, while the fixed-noise validation loss (same images, same noise, same timesteps at every
 * evaluation) has no draw noise at all and moves smoothly. Measured on real runs of the shared tiny SD fixture:
 * README.md in this folder, section "Diffusion runs".
 */
export interface DenoisingThresholds {
  /** Fewer training-loss points (steps) than this: no judgement at all, except NaN/Inf. */
  readonly minPoints: number;
  /** Points per window wherever the training loss is smoothed (a window median). */
  readonly smoothPoints: number;
  /** Diverged when updates in a row were skipped for a non-finite loss or gradient (the trainer's own stop). */
  readonly divergeSkippedInRow: number;
  /** Diverged when a level (validation loss, or smoothed training loss) reaches this multiple of its start. */
  readonly divergeRatio: number;
  /** Without validation, the training loss's start is the median of this many first steps... */
  readonly trainStartPoints: number;
  /** ...and it diverged when a window median reaches this multiple of that start (trainConfirmWindows windows in a row). */
  readonly trainDivergeRatio: number;
  /** Too high a rate when the validation loss sits this fraction above its start... */
  readonly valAboveStartRel: number;
  /** ...at this many evaluations in a row (also for divergeRatio and the not-learning test). */
  readonly valConfirmEvals: number;
  /** Without validation: too high a rate when a window median of the training loss is this fraction above the best one so far... */
  readonly trainAboveBestRel: number;
  /** ...for this many windows in a row (each one point later than the last). */
  readonly trainConfirmWindows: number;
  /** Overfitting: after its lowest point the validation loss rises this many evaluations in a row... */
  readonly overfitRises: number;
  /** ...each rise larger than this fraction of the previous value... */
  readonly overfitRiseRel: number;
  /** ...ending this fraction above the lowest. */
  readonly overfitTotalRiseRel: number;
  /** not_learning is judged from this step on... */
  readonly notLearningMinSteps: number;
  /** ...or from this fraction of the planned steps, whichever comes first. */
  readonly notLearningMinFraction: number;
  /** Stuck when no validation loss has been this fraction below the start. */
  readonly valNotLearningDropRel: number;
  /** Without validation: stuck when the training loss's fitted drop, plus notLearningConfidence standard errors, is below this fraction of its start. */
  readonly trainNotLearningDropRel: number;
  /** Standard errors of the fitted drop that "confidently" means. */
  readonly notLearningConfidence: number;
}

export const DEFAULT_DENOISING_THRESHOLDS: DenoisingThresholds = Object.freeze({
  /** 8 steps, as for text runs: no median or trend is worth anything before. */
  minPoints: 8,
  /**
   * 20 steps. At fixed weights (the lr 0 run) one step's loss scatters by 27% of its level; a 20-step median moves by
   * about 6% (1st–99th percentile 0.88–1.15× the level), a 12-step one (the text runs' window) by 8%.
   */
  smoothPoints: 20,
  /** 5 in a row: the trainer's MAX_SKIPPED_IN_ROW, at which it ends the run. */
  divergeSkippedInRow: 5,
  /**
   * 3 steps. Without validation the start is the median of the first three steps, the untrained adapter: lr 0.5 threw
   * the model away at step 3, so the first 20-step window (median 1.13) is no start.
   */
  trainStartPoints: 3,
  /**
   * 3×. A median of 3 steps sits below 0.45× the level 0.1% of the time and a 20-step median reaches 1.15×, so noise
   * alone gets to about 2.6× (the seed-1 healthy run, whose first steps drew easy timesteps, reached 1.38×); lr 0.5
   * sat at 4.78× to 5.82×.
   */
  trainDivergeRatio: 3,
  /**
   * 2×. At lr 0.5 the validation loss jumped from 0.293 to 1.29 (4.39×) at the first evaluation and never came back
   * below 1.03 (3.5×); the working runs never rose above 0.99× of their start after step 0.
   */
  divergeRatio: 2,
  /**
   * 5% above the start. The validation loss has no draw noise, and the working runs never came back above their start
   * after the first evaluation (lr 3e-2, ten times the working rate, stayed at 0.78× or below); lr 0.1 was 1.06× at
   * step 10 and 1.54× at 15, before it blew up at step 20. Held-out images 5% worse than no training is harm.
   */
  valAboveStartRel: 0.05,
  /** 2 evaluations: one can catch a single bad update, two in a row is where the weights are. */
  valConfirmEvals: 2,
  /**
   * 50% above the lowest 20-step median so far: such medians move between 0.88× and 1.15× from noise, so the lowest
   * of many sits near 0.88×, and 1.32× of the level for 20 windows in a row did not happen in any resampled run.
   */
  trainAboveBestRel: 0.5,
  /** 20 windows (for the flat test, 20 steps) in a row: a whole window of new steps must agree. */
  trainConfirmWindows: 20,
  /**
   * 4 evaluations, one more than the text runs' patience: the validation loss of a working run wobbles with its
   * updates, and at lr 3e-2 and 1e-2 it rose 2 evaluations in a row (by 1.4% then 4.4%; by 1.5% then 0.9%) before
   * falling to new lows. No run on this data overfitted (240 steps, 48 epochs at lr 1e-2 still set new lows), so this
   * is tuned against false alarms only.
   */
  overfitRises: 4,
  /** 0.5% per rise: smaller moves (+0.2%, +0.1% were seen between working evaluations) do not count either way. */
  overfitRiseRel: 0.005,
  /** 3% above the lowest, at the end of the rises. */
  overfitTotalRiseRel: 0.03,
  /** 30 steps... */
  notLearningMinSteps: 30,
  /** ...or 30% of the planned steps, whichever comes first: by then lr 3e-4 (ten times below the working rate) was 0.61% down. */
  notLearningMinFraction: 0.3,
  /**
   * 0.2% below the start: lr 0 leaves the validation loss bit-identical, lr 3e-4 was 0.61% down at its first judged
   * evaluation (3× this), lr 3e-3 4.9% down by step 10.
   */
  valNotLearningDropRel: 0.002,
  /**
   * 10% of the start, confidently: the working runs' 20-step medians halved in 100 steps; with 27% noise per step a
   * smaller bar could not be confirmed within a few hundred steps (flat runs are called around step 180–250).
   */
  trainNotLearningDropRel: 0.1,
  /** 1.5 standard errors, about 93% one-sided, as for text runs. */
  notLearningConfidence: 1.5,
});

const COUNTS: ReadonlySet<keyof DenoisingThresholds> = new Set<keyof DenoisingThresholds>([
  'minPoints',
  'smoothPoints',
  'divergeSkippedInRow',
  'trainStartPoints',
  'valConfirmEvals',
  'trainConfirmWindows',
  'overfitRises',
]);

/** The defaults with the caller's overrides on top; a value that makes no sense throws RangeError (a caller's bug). */
export function resolveDenoisingThresholds(options: Partial<DenoisingThresholds> | undefined): DenoisingThresholds {
  const merged: Record<keyof DenoisingThresholds, number> = { ...DEFAULT_DENOISING_THRESHOLDS };
  for (const [key, value] of Object.entries(options ?? {})) {
    if (value === undefined) continue;
    if (!(key in DEFAULT_DENOISING_THRESHOLDS)) throw new RangeError(`diagnose: unknown denoising threshold ${key}`);
    const isCount = COUNTS.has(key as keyof DenoisingThresholds);
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (isCount && (!Number.isInteger(value) || value < 1))) {
      throw new RangeError(`diagnose: denoising threshold ${key} must be ${isCount ? 'a whole number of at least 1' : 'a finite number of at least 0'}, got ${String(value)}`);
    }
    merged[key as keyof DenoisingThresholds] = value;
  }
  // A trend line through fewer than 3 points has no scatter to measure.
  if (merged.smoothPoints < 3) throw new RangeError(`diagnose: denoising threshold smoothPoints must be at least 3, got ${merged.smoothPoints}`);
  for (const key of ['divergeRatio', 'trainDivergeRatio'] as const) {
    if (merged[key] <= 1) throw new RangeError(`diagnose: denoising threshold ${key} must be above 1, got ${merged[key]}`);
  }
  return merged;
}
