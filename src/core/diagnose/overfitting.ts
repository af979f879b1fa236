import type { Context } from './context';
import * as fmt from './format';
import { fitLine } from './stats';
import type { Finding } from './types';
import { findEvalWorseThanUntrained, trainingImproved } from './untrained';

/**
 * Overfitting: after its lowest point the eval loss rises for several evaluations in a row, each
 * rise more than a small margin, ending clearly above that lowest point, while the training loss
 * over the same stretch keeps falling (a least-squares slope below zero, so one noisy log point does
 * not decide it). If the training loss rises too, the model is not memorizing, it is unstable: that
 * is lr_too_high's business, not this one's.
 *
 * Eval loss is measured on the same held-out texts every time, so it has no batch noise; small
 * consecutive rises are therefore meaningful, and one or two bumps followed by a fall are not.
 * The search starts from the lowest eval loss so far, so the finding stays put as evaluations
 * arrive and goes away only if the eval loss later sets a new low (then it was not overfitting).
 *
 * With an evaluation at step 0 (the untrained model) there is a second way: a later eval loss clearly
 * above the untrained model's while the training loss sits below its start. The adapter fits its
 * training texts and makes the held-out ones worse than no training at all (see untrained.ts).
 */
export function findOverfitting(ctx: Context): Finding | null {
  return findRisingEval(ctx) ?? findWorseThanUntrained(ctx);
}

function findWorseThanUntrained(ctx: Context): Finding | null {
  const found = findEvalWorseThanUntrained(ctx);
  if (!found || !trainingImproved(ctx, found.worse.step)) return null;
  const { untrained, worse } = found;
  return {
    code: 'overfitting',
    severity: 'warning',
    step: worse.step,
    bestStep: 0,
    message: `At step ${worse.step} the eval loss ${fmt.nats(worse.value)} is ${fmt.nats(worse.value - untrained.value)} above the untrained model's ${fmt.nats(untrained.value)}, while the training loss fell: the adapter fits the training texts and makes held-out text worse than no training at all.`,
    suggestion: `Train for fewer epochs or with a lower learning_rate, set early_stopping_patience to ${ctx.t.overfitRises} so training stops by itself, and raise lora_dropout (e.g. to 0.1); check that the validation texts are like the training texts.`,
  };
}

function findRisingEval(ctx: Context): Finding | null {
  const { evalLoss, train, t } = ctx;
  if (evalLoss.length < t.overfitRises + 1) return null;
  let bestIndex = 0;
  for (let i = 1; i < evalLoss.length; i++) if (evalLoss[i]!.value < evalLoss[bestIndex]!.value) bestIndex = i;
  const best = evalLoss[bestIndex]!;

  let rises = 0;
  for (let j = bestIndex + 1; j < evalLoss.length; j++) {
    const prev = evalLoss[j - 1]!.value;
    const cur = evalLoss[j]!;
    rises = cur.value - prev > t.overfitRiseRel * Math.abs(prev) ? rises + 1 : 0;
    if (rises < t.overfitRises || cur.value - best.value <= t.overfitTotalRiseRel * Math.abs(best.value)) continue;
    const span = train.filter((p) => p.step >= best.step && p.step <= cur.step);
    if (span.length < 3) continue;
    const trend = fitLine(
      span.map((p) => p.step),
      span.map((p) => p.value),
    );
    if (!(trend.slope < 0)) continue;
    const fraction = ctx.totalSteps > 0 ? ` (the best came at ${fmt.percent(best.step / ctx.totalSteps)} of the planned steps)` : '';
    return {
      code: 'overfitting',
      severity: 'warning',
      step: cur.step,
      bestStep: best.step,
      message: `The eval loss rose for ${rises} evaluations in a row, from ${fmt.nats(best.value)} at step ${best.step} to ${fmt.nats(cur.value)} at step ${cur.step}, while the training loss kept falling: the adapter is memorizing the training texts.`,
      suggestion: `The adapter at step ${best.step} generalizes best; train for fewer epochs${fraction}, or set early_stopping_patience to ${t.overfitRises} so training stops by itself, and raise lora_dropout (e.g. to 0.1).`,
    };
  }
  return null;
}
