/**
 * How numbers appear in findings. Losses get two decimals and their unit, because differences of a
 * few hundredths of a nat are what people compare; learning rates are written the way config files
 * write them (3e-4), so a suggestion can be pasted back.
 */
import type { CurvePoint } from './types';

export function nats(value: number): string {
  return `${value.toFixed(2)} nats`;
}

export function learningRate(value: number): string {
  if (value === 0) return '0';
  if (!Number.isFinite(value)) return String(value);
  if (value >= 0.01 && value < 1000) return String(Number(value.toPrecision(2)));
  // toExponential gives "1.5e-4" / "3.0e-4"; drop a ".0" and the "+" of positive exponents.
  return value.toExponential(1).replace('.0e', 'e').replace('e+', 'e');
}

/** A plain number with three significant digits (gradient norms, ratios). */
export function plain(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  return String(Number(value.toPrecision(3)));
}

export function percent(fraction: number): string {
  return `${Math.round(fraction * 100)}%`;
}

/**
 * What the learning-rate history says about the config: the peak is the configured learning_rate
 * (every schedule here warms up to it and then stays or decays), and a peak reached after the first
 * logged point means warmup_steps is set, roughly to the step of that peak.
 */
export interface LrFacts {
  /** The configured learning_rate, or undefined when no learning rate was logged. */
  readonly peak: number | undefined;
  /** Roughly the configured warmup_steps; 0 when the first logged rate is already the peak. */
  readonly warmupSteps: number | undefined;
  /** True when every logged learning rate is exactly 0. */
  readonly allZero: boolean;
}

export function lrFacts(points: readonly CurvePoint[]): LrFacts {
  const finite = points.filter((p) => Number.isFinite(p.value));
  if (finite.length === 0) return { peak: undefined, warmupSteps: undefined, allZero: false };
  let peakIndex = 0;
  for (let i = 1; i < finite.length; i++) if (finite[i]!.value > finite[peakIndex]!.value) peakIndex = i;
  const peak = finite[peakIndex]!.value;
  const first = finite[0]!;
  // A schedule that starts below its peak has warmup; it reaches the peak at about warmup_steps.
  const warmupSteps = peakIndex > 0 && first.value < peak * 0.99 ? finite[peakIndex]!.step : 0;
  return { peak, warmupSteps, allZero: peak === 0 && finite.every((p) => p.value === 0) };
}

/** A warmup length to propose: about 5% of the planned run, as is common for LoRA recipes, at least 10 steps. */
export function proposedWarmup(totalSteps: number, currentWarmup: number | undefined): number {
  const fromRun = totalSteps > 0 ? Math.round(totalSteps * 0.05) : 0;
  const doubled = currentWarmup !== undefined && currentWarmup > 0 ? currentWarmup * 2 : 0;
  return Math.max(10, fromRun, doubled);
}

/**
 * A denoising loss (a mean squared error of the predicted noise, no unit): three significant digits, because these
 * losses sit between about 0.05 and 1 and a change in the third digit (0.293 to 0.279) is the move people compare.
 */
export function denoisingLoss(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  return String(Number(value.toPrecision(3)));
}
