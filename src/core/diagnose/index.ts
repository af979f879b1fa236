/**
 * # Training-curve diagnosis
 *
 * `diagnose(history)` reads the curves of a run (training loss, eval loss, gradient norm, learning
 * rate) and says in plain words what is wrong and which config key to change. It is pure and
 * DOM-free: the trainer calls it after every step (see callbacks.ts) and once at the end, and stops the run
 * when `shouldStop(findings)` is true. Findings: `diverged` (error), `lr_too_high`, `overfitting`,
 * `not_learning` (warnings), or `healthy` (info) when none applies.
 *
 * Every threshold, its default and the reason for it: [README.md](./README.md) in this folder
 * (DEFAULT_THRESHOLDS carries the same text as doc comments).
 */
import { makeContext, type Context } from './context';
import { diagnoseDenoising } from './denoising';
import { findDiverged } from './diverged';
import * as fmt from './format';
import { findLrTooHigh } from './lr_too_high';
import { findNotLearning } from './not_learning';
import { findOverfitting } from './overfitting';
import { median } from './stats';
import { resolveThresholds } from './thresholds';
import type { Finding, RunHistory, Severity, Thresholds } from './types';

export { DEFAULT_THRESHOLDS } from './thresholds';
export { DEFAULT_DENOISING_THRESHOLDS, type DenoisingThresholds } from './denoising-thresholds';
export { diagnoseDenoising } from './denoising';
export type { CurvePoint, Finding, FindingCode, LossKind, RunHistory, Severity, Thresholds } from './types';

const SEVERITY_ORDER: Record<Severity, number> = { error: 0, warning: 1, info: 2 };

/**
 * Everything wrong with the run so far, most severe first (then by step); never empty: `healthy`
 * when nothing applies. Each rule depends only on the history, judged over fixed windows from the
 * first point on, so a finding does not come and go as points arrive. Throws RangeError for an
 * option that makes no sense (a window of 0 points, a negative ratio): that is a bug in the caller.
 */
export function diagnose(history: RunHistory, options?: Partial<Thresholds>): Finding[] {
  // A diffusion run's curves need rules of their own (denoising.ts); their thresholds are a different set, passed to diagnoseDenoising.
  if (history.loss === 'denoising') {
    if (options && Object.values(options).some((v) => v !== undefined)) throw new RangeError('diagnose: a denoising run takes DenoisingThresholds; call diagnoseDenoising(history, options)');
    return diagnoseDenoising(history);
  }
  const ctx = makeContext(history, resolveThresholds(options));

  // Once the weights have blown up, every later number describes garbage, so the other rules
  // would only add noise to the one thing that matters.
  const diverged = findDiverged(ctx);
  if (diverged) return [diverged];

  const findings = [findLrTooHigh(ctx), findOverfitting(ctx), findNotLearning(ctx)].filter((f): f is Finding => f !== null);
  if (findings.length === 0) return [healthy(ctx)];
  return findings.sort((a, b) => SEVERITY_ORDER[a.severity] - SEVERITY_ORDER[b.severity] || a.step - b.step);
}

/** True when the run should stop now (it diverged); the trainer then keeps the last good adapter. */
export function shouldStop(findings: readonly Finding[]): boolean {
  return findings.some((f) => f.code === 'diverged');
}

function healthy(ctx: Context): Finding {
  const { train, t } = ctx;
  const last = train[train.length - 1];
  // The message says what was seen, the suggestion what to do: "nothing to fix" there and "Nothing to change" here said it twice.
  const base = { code: 'healthy', severity: 'info', step: last?.step ?? 0, suggestion: 'Nothing to change.' } as const;
  if (!last) return { ...base, suggestion: 'Nothing to change yet.', message: 'No training loss has been recorded yet, so there is nothing to judge.' };
  if (train.length < t.minPoints) {
    return { ...base, suggestion: 'Nothing to change yet.', message: `Only ${train.length} training-loss points so far (${t.minPoints} are needed to judge).` };
  }
  // The start is the first point, as people read a chart; the end is a window median so one noisy batch does not set it.
  const start = train[0]!.value;
  const end = median(train.slice(-t.windowPoints).map((p) => p.value));
  const verb = end < start ? 'fell' : 'went';
  return { ...base, message: `The training loss ${verb} from ${fmt.nats(start)} to ${fmt.nats(end)}.` };
}
