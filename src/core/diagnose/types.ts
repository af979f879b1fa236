/** One logged value of a curve: the optimizer step it belongs to and the value (loss in nats, or a norm, or a learning rate). */
export interface CurvePoint {
  readonly step: number;
  readonly value: number;
}

/** What a run has logged so far. The diagnosis reads only this, so it works the same live and on a finished run. */
export interface RunHistory {
  /** Training loss of every step (the trainer's per-step loss, whatever log_steps is), in nats. */
  readonly trainLoss: readonly CurvePoint[];
  /** Loss on the held-out set at each evaluation, in nats; step 0 is the untrained model (eval_on_start); empty when the run has no validation data. */
  readonly evalLoss: readonly CurvePoint[];
  /** Gradient norm (before clipping) at every step; may be empty. */
  readonly gradNorm: readonly CurvePoint[];
  /** Learning rate the schedule gave at every step; may be empty. */
  readonly learningRate: readonly CurvePoint[];
  /** Optimizer steps the run is planned to take (0 when unknown). */
  readonly totalSteps: number;
  /** Updates the trainer skipped because a loss or gradient was not finite, in order; absent or empty when none. */
  readonly skippedUpdates?: readonly SkippedPoint[];
  /**
   * What the loss measures, which decides the rules that read it (absent: 'causal_lm'). 'denoising' is a diffusion
   * run's mean squared error of the noise prediction: each step draws its own timesteps, so the per-step loss swings
   * far more than a language model's, and the fixed-noise validation loss is the curve to judge (denoising.ts).
   */
  readonly loss?: LossKind;
}

/** The loss a run trains on: next-token cross-entropy (text) or the diffusion denoising MSE (images). */
export type LossKind = 'causal_lm' | 'denoising';

/** One skipped update: the step it would have been, how many were skipped in a row with it, and what was not finite. */
export interface SkippedPoint {
  readonly step: number;
  readonly inRow: number;
  readonly problem: string;
}

export type FindingCode = 'lr_too_high' | 'diverged' | 'overfitting' | 'not_learning' | 'healthy';

export type Severity = 'info' | 'warning' | 'error';

export interface Finding {
  readonly code: FindingCode;
  readonly severity: Severity;
  /** The optimizer step at which the problem was first seen. */
  readonly step: number;
  /** What is wrong, in one plain sentence, numbers with their units. */
  readonly message: string;
  /** What to change, naming the config keys (learning_rate, warmup_steps, epochs, lora_dropout, early_stopping_patience). */
  readonly suggestion: string;
  /** For overfitting: the step of the lowest eval loss, i.e. the adapter worth keeping. */
  readonly bestStep?: number;
}

/**
 * Every number the diagnosis compares against. DEFAULT_THRESHOLDS documents each value and why it
 * was chosen; src/core/diagnose/README.md has the same list as a table.
 */
export interface Thresholds {
  /** Fewer logged training-loss points than this: no judgement at all, except NaN/Inf. */
  readonly minPoints: number;
  /** Logged points per window, wherever a level is a window median: the oscillation check and the lowest level reached. */
  readonly windowPoints: number;

  /** Number of first logged points whose median is the run's starting loss. */
  readonly divergeStartPoints: number;
  /** Diverged when the loss exceeds this multiple of the starting loss... */
  readonly divergeRatio: number;
  /** ...and also exceeds the starting loss by this many nats. */
  readonly divergeMarginNats: number;
  /** ...for this many logged points in a row. */
  readonly divergeConfirmPoints: number;
  /** Diverged when this many updates in a row were skipped for a non-finite loss or gradient (the trainer stops there). */
  readonly divergeSkippedInRow: number;

  /** A window's median loss must be this fraction above the best (lowest) window median so far... */
  readonly lrGapRel: number;
  /** ...and at least this many nats above it. */
  readonly lrGapMinNats: number;
  /** The median distance of the window's points from their trend line must be this fraction of the window median... */
  readonly lrSwingRel: number;
  /** ...and at least this many nats. */
  readonly lrSwingMinNats: number;
  /** Both must hold for this many windows in a row (each window one point later than the last); also for lrAboveStart*. */
  readonly lrConfirmWindows: number;
  /** Settled above the start: a window median above the first training loss by this fraction of it... */
  readonly lrAboveStartRel: number;
  /** ...and by this many times the window's scatter about its trend line (and lrGapMinNats). */
  readonly lrAboveStartSwings: number;
  /** First logged gradient norms whose median is the run's early gradient norm. */
  readonly gradEarlyPoints: number;
  /** Latest gradient norms whose median is compared with the early one. */
  readonly gradRecentPoints: number;
  /** Gradient norm exploded when the recent median exceeds the early median by this factor. */
  readonly gradExplodeFactor: number;

  /** Overfitting needs this many evaluations in a row, each higher than the one before. */
  readonly overfitRises: number;
  /** A rise counts only when it is larger than this fraction of the previous eval loss. */
  readonly overfitRiseRel: number;
  /** The eval loss must end up at least this fraction above its lowest value. */
  readonly overfitTotalRiseRel: number;
  /** Worse than before training: an eval loss above the one at step 0 by this fraction of it (and lrGapMinNats). */
  readonly evalAboveUntrainedRel: number;

  /** not_learning is judged once this many points are logged... */
  readonly notLearningMinPoints: number;
  /** ...or once this fraction of the planned steps is done, whichever comes first. */
  readonly notLearningMinFraction: number;
  /** Stuck when the loss is confidently down by less than this fraction of its start; learning again once it is confidently down by more. */
  readonly notLearningMaxDropRel: number;
  /** Whatever its trend, the loss has learned once a window median has been this fraction below the first logged value... */
  readonly notLearningLearnedDropRel: number;
  /** ...and by this many standard deviations of the points about their trend line. */
  readonly notLearningLearnedSigmas: number;
  /** How many standard errors "confidently" means, in both directions. */
  readonly notLearningConfidence: number;
  /** The stuck test must pass at this many logged points in a row before the finding is raised. */
  readonly notLearningConfirmPoints: number;
}
