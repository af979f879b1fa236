import { makeContext } from './context';
import { lowerLr, makeDenoisingContext, type DenoisingContext, type Sighting } from './denoising-context';
import { resolveDenoisingThresholds, type DenoisingThresholds } from './denoising-thresholds';
import { findTrainAboveStart, findTrainBounce, findTrainFlat } from './denoising-train';
import { findValAbove, findValFlat, findValRisingFromBest } from './denoising-validation';
import { findDiverged } from './diverged';
import * as fmt from './format';
import { median } from './stats';
import { resolveThresholds } from './thresholds';
import type { Finding, RunHistory } from './types';

/**
 * The diagnosis of a diffusion run (RunHistory.loss 'denoising'): the same findings as a text run's, read from
 * curves of another kind. The fixed-noise validation loss decides whenever the run has one (it has no draw noise);
 * the per-step training loss, which swings with the timesteps each step drew, is judged only through long medians
 * and trend lines with their errors. Findings most severe first; never empty.
 */
export function diagnoseDenoising(history: RunHistory, options?: Partial<DenoisingThresholds>): Finding[] {
  const t = resolveDenoisingThresholds(options);
  const ctx = makeDenoisingContext(history, t);

  const diverged = findDenoisingDiverged(history, ctx);
  if (diverged) return [diverged];
  if (ctx.train.length < t.minPoints) return [healthy(ctx)];

  const tooHigh = findTooHigh(ctx);
  const overfitting = tooHigh ? null : findOverfitting(ctx);
  const notLearning = tooHigh ? null : findNotLearning(ctx);
  const findings = [tooHigh, overfitting, notLearning].filter((f): f is Finding => f !== null).sort((a, b) => a.step - b.step);
  return findings.length > 0 ? findings : [healthy(ctx)];
}

/**
 * NaN, infinity and skipped updates are judged exactly as for text runs (findDiverged, with its sustained rise in
 * nats switched off: a denoising loss is no cross-entropy); the rise is judged here, on the validation loss and on
 * the smoothed training loss, whichever showed it first.
 */
function findDenoisingDiverged(history: RunHistory, ctx: DenoisingContext): Finding | null {
  const { t } = ctx;
  const nonFinite = findDiverged(makeContext(history, resolveThresholds({ divergeSkippedInRow: t.divergeSkippedInRow, divergeConfirmPoints: Number.MAX_SAFE_INTEGER })));
  if (nonFinite) return nonFinite;
  if (ctx.train.length < t.minPoints) return null;
  const rise = earliest([findValAbove(ctx, t.divergeRatio), findTrainAboveStart(ctx, t.trainDivergeRatio)]);
  if (!rise) return null;
  return {
    code: 'diverged',
    severity: 'error',
    step: rise.step,
    message: rise.message.replace(/\.$/, ': training has blown up, and the adapter now predicts the noise worse than before it was trained.'),
    suggestion: `${lowerLr(ctx, 3, 'Lower')} and train again${ctx.lr.warmupSteps === 0 ? `; also set warmup_steps to about ${fmt.proposedWarmup(ctx.totalSteps, 0)} so the first updates are small` : ''}.`,
  };
}

function findTooHigh(ctx: DenoisingContext): Finding | null {
  const seen = earliest([findValAbove(ctx, 1 + ctx.t.valAboveStartRel), findTrainBounce(ctx)]);
  if (!seen) return null;
  const warmup = ctx.lr.warmupSteps === 0 ? `; add warmup_steps (about ${fmt.proposedWarmup(ctx.totalSteps, 0)})` : '; lengthen warmup_steps';
  return { code: 'lr_too_high', severity: 'warning', step: seen.step, message: seen.message, suggestion: `${lowerLr(ctx, 2, 'Halve')}${warmup}.` };
}

function findOverfitting(ctx: DenoisingContext): Finding | null {
  const seen = findValRisingFromBest(ctx);
  if (!seen) return null;
  const fraction = ctx.totalSteps > 0 ? ` (the best came at ${fmt.percent(seen.bestStep / ctx.totalSteps)} of the planned steps)` : '';
  return {
    code: 'overfitting',
    severity: 'warning',
    step: seen.step,
    bestStep: seen.bestStep,
    message: seen.message,
    suggestion: `The adapter at step ${seen.bestStep} generalizes best; train for fewer steps or epochs${fraction} (max_steps, epochs), or set early_stopping_patience to ${ctx.t.overfitRises} so training stops by itself; raise lora_dropout (e.g. to 0.1), or add images (flip_aug doubles them).`,
  };
}

function findNotLearning(ctx: DenoisingContext): Finding | null {
  const { train, evalLoss, lr } = ctx;
  // A rate of 0 at every step is certain, not statistical: the weights cannot move.
  if (lr.allZero) {
    return {
      code: 'not_learning',
      severity: 'warning',
      step: train[0]!.step,
      message: `The learning rate has been 0 at every step, so the adapter has not changed since step ${train[0]!.step}; the training loss only moves with the timesteps each step draws.`,
      suggestion: 'The learning rate (unet_lr when set, else learning_rate) is 0, so the weights never change: set it to a positive value, e.g. 1e-4.',
    };
  }
  // With validation images the fixed-noise loss decides; the per-step loss is far too noisy to overrule it.
  const seen = evalLoss.length >= 2 ? findValFlat(ctx) : findTrainFlat(ctx);
  if (!seen) return null;
  return { code: 'not_learning', severity: 'warning', step: seen.step, message: seen.message, suggestion: captionSuggestion(ctx) };
}

function captionSuggestion(ctx: DenoisingContext): string {
  const { peak } = ctx.lr;
  const lr =
    peak === undefined
      ? 'If the captions are right, the learning rate may be too low: try ten times higher (unet_lr, or learning_rate when unet_lr is not set).'
      : `If the captions are right, the learning rate (${fmt.learningRate(peak)}) may be too low: try ${fmt.learningRate(peak * 10)} (unet_lr, or learning_rate when unet_lr is not set).`;
  return `Check that the captions describe the images: each image needs its own caption (a metadata.csv text or a .txt file beside it) that says what it shows, plus the trigger word of what you train; empty, identical or mismatched captions give the UNet nothing to tie the images to. ${lr}`;
}

function healthy(ctx: DenoisingContext): Finding {
  const { train, evalLoss, t } = ctx;
  const last = train[train.length - 1];
  const base = { code: 'healthy', severity: 'info', step: last?.step ?? 0, suggestion: 'Nothing to change.' } as const;
  if (!last) return { ...base, suggestion: 'Nothing to change yet.', message: 'No training loss has been recorded yet, so there is nothing to judge.' };
  if (train.length < t.minPoints) {
    return { ...base, suggestion: 'Nothing to change yet.', message: `Only ${train.length} training-loss points so far (${t.minPoints} are needed to judge).` };
  }
  if (evalLoss.length >= 2) {
    const [first, now] = [evalLoss[0]!, evalLoss[evalLoss.length - 1]!];
    const verb = now.value < first.value ? 'fell' : 'went';
    return { ...base, message: `The validation loss ${verb} from ${fmt.denoisingLoss(first.value)} at step ${first.step} to ${fmt.denoisingLoss(now.value)} at step ${now.step}.` };
  }
  // One step's loss depends on its timesteps, so both ends are medians of several steps.
  const w = Math.min(t.smoothPoints, train.length);
  const start = median(train.slice(0, w).map((p) => p.value));
  const end = median(train.slice(-w).map((p) => p.value));
  const verb = end < start ? 'fell' : 'went';
  return { ...base, message: `The training loss (median of ${w} steps) ${verb} from ${fmt.denoisingLoss(start)} to ${fmt.denoisingLoss(end)}.` };
}

function earliest<S extends Sighting>(sightings: readonly (S | null)[]): S | null {
  let first: S | null = null;
  for (const s of sightings) if (s && (!first || s.step < first.step)) first = s;
  return first;
}
