import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { WindowSet } from '../../src/core/data/packing';
import { causalLmLoss } from '../../src/core/models/index';
import { accumulateGradients, Trainer, windowExamples, type LossFn } from '../../src/core/train/index';

// Token-weighted gradient accumulation (Hugging Face Trainer): over the micro-batches of one optimizer step, the
// loss is the sum of every unmasked target's cross-entropy divided by the number of unmasked targets in all of
// them. Checked against the same quantity computed here in float64 for a bigram model (logits = W[input]), whose
// gradient has a closed form: d/dW[i][j] of -log softmax(W[i])[t] is softmax(W[i])[j] - [j = t].

const VOCAB = 5;
const SEQ = 4;

/** Six windows in three micro-batches of two. Masks are uneven on purpose, and micro-batch 1 has no target at all. */
const inputs = [
  [0, 1, 2, 3], [4, 0, 1, 2],
  [3, 3, 4, 0], [1, 2, 0, 4],
  [2, 4, 1, 1], [0, 0, 3, 2],
];
const targets = [
  [1, 2, 3, 4], [0, 1, 2, 3],
  [3, 4, 0, 1], [2, 0, 4, 4],
  [4, 1, 1, 0], [0, 3, 2, 2],
];
const mask = [
  [1, 1, 1, 1], [0, 0, 0, 1], // 5 targets
  [0, 0, 0, 0], [0, 0, 0, 0], // none
  [0, 1, 0, 0], [0, 0, 0, 0], // 1 target
];
const GROUP = [[0, 1], [2, 3], [4, 5]];

const windows: WindowSet = {
  seqLen: SEQ,
  count: inputs.length,
  inputs: Int32Array.from(inputs.flat()),
  targets: Int32Array.from(targets.flat()),
  mask: Uint8Array.from(mask.flat()),
  targetTokens: mask.flat().reduce((a, b) => a + b, 0),
};

/** Fixed weights from a small LCG, so the reference and the model start from the same numbers. */
function weights(): number[][] {
  let state = 12345;
  const next = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 4 - 2;
  return Array.from({ length: VOCAB }, () => Array.from({ length: VOCAB }, next));
}

/** Float64: the loss and dW of the windows `indices`, as sums over their unmasked targets (not yet divided). */
function sums(W: number[][], indices: readonly number[]): { loss: number; grad: number[][]; tokens: number } {
  const grad = W.map((row) => row.map(() => 0));
  let loss = 0;
  let tokens = 0;
  for (const w of indices) {
    for (let t = 0; t < SEQ; t++) {
      if (!mask[w]![t]) continue;
      const i = inputs[w]![t]!;
      const target = targets[w]![t]!;
      const row = W[i]!;
      const max = Math.max(...row);
      const exp = row.map((x) => Math.exp(x - max));
      const z = exp.reduce((a, b) => a + b, 0);
      loss += -Math.log(exp[target]! / z);
      exp.forEach((e, j) => (grad[i]![j]! += e / z - (j === target ? 1 : 0)));
      tokens++;
    }
  }
  return { loss, grad, tokens };
}

/** HF's accumulated loss and gradient: all micro-batches' sums over the step's total target count. */
function tokenWeighted(W: number[][], group: readonly (readonly number[])[]) {
  const total = sums(W, group.flat());
  return { loss: total.loss / total.tokens, grad: total.grad.map((row) => row.map((g) => g / total.tokens)) };
}

/** What averaging micro-batch means would give (an empty micro-batch counting as loss 0): the old, wrong rule. */
function meanOfMeans(W: number[][], group: readonly (readonly number[])[]) {
  const parts = group.map((g) => sums(W, g));
  const loss = parts.reduce((s, p) => s + (p.tokens ? p.loss / p.tokens : 0), 0) / group.length;
  const grad = W.map((row, i) => row.map((_, j) => parts.reduce((s, p) => s + (p.tokens ? p.grad[i]![j]! / p.tokens : 0), 0) / group.length));
  return { loss, grad };
}

function bigramLoss(W: tf.Variable): LossFn {
  return (batch) =>
    tf.tidy(() => {
      const [b, s] = batch.inputs.shape;
      const logits = tf.gather(W, batch.inputs.reshape([b * s])).reshape([b, s, VOCAB]) as tf.Tensor3D;
      return causalLmLoss(logits, batch.targets, batch.mask);
    });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('token-weighted gradient accumulation', () => {
  it('matches a float64 computation of the same micro-batches (uneven masks, one micro-batch fully masked)', async () => {
    const W0 = weights();
    const W = tf.variable(tf.tensor2d(W0));
    const expected = tokenWeighted(W0, GROUP);
    const { grads, loss } = accumulateGradients([W], bigramLoss(W), windowExamples(windows), GROUP, 0, 0);
    expect(maxAbsDiff(await grads[0]!.data(), expected.grad.flat())).toBeLessThan(1e-6);
    expect(Math.abs((await loss.data())[0]! - expected.loss)).toBeLessThan(1e-6);

    // The data tells the two rules apart by far more than the tolerance.
    const wrong = meanOfMeans(W0, GROUP);
    expect(maxAbsDiff(wrong.grad.flat(), expected.grad.flat())).toBeGreaterThan(1e-2);
    expect(Math.abs(wrong.loss - expected.loss)).toBeGreaterThan(1e-2);
    tf.dispose([...grads, loss, W]);
  });

  it('a fully masked micro-batch is neither run nor counted in the divisor', async () => {
    const W0 = weights();
    const W = tf.variable(tf.tensor2d(W0));
    const seen: number[] = [];
    const inner = bigramLoss(W);
    const counting: LossFn = (batch, ctx) => {
      seen.push(ctx.microBatch);
      return inner(batch, ctx);
    };
    const withEmpty = accumulateGradients([W], counting, windowExamples(windows), GROUP, 0, 0);
    expect(seen).toEqual([0, 2]);
    const without = accumulateGradients([W], bigramLoss(W), windowExamples(windows), [GROUP[0]!, GROUP[2]!], 0, 0);
    expect(maxAbsDiff(await withEmpty.grads[0]!.data(), await without.grads[0]!.data())).toBeLessThan(1e-7);
    expect(maxAbsDiff(await withEmpty.loss.data(), await without.loss.data())).toBeLessThan(1e-7);
    tf.dispose([...withEmpty.grads, withEmpty.loss, ...without.grads, without.loss, W]);
  });

  it('a step with no target in any micro-batch has zero gradients and loss 0', async () => {
    const W = tf.variable(tf.tensor2d(weights()));
    const { grads, loss } = accumulateGradients([W], bigramLoss(W), windowExamples(windows), [[2], [3], [5]], 0, 0);
    expect(Array.from(await grads[0]!.data()).every((g) => g === 0)).toBe(true);
    expect((await loss.data())[0]).toBe(0);
    tf.dispose([...grads, loss, W]);
  });

  it('through the Trainer: 3 micro-batches of 2 take the same step as one batch of 6, masks and all', async () => {
    // One step covers all six windows whatever order the shuffle picks, so both runs see the same targets.
    const stepWith = async (batchSize: number, gradAccumSteps: number) => {
      const W = tf.variable(tf.tensor2d(weights()));
      const losses: number[] = [];
      const trainer = new Trainer({
        variables: [W],
        lossFn: bigramLoss(W),
        train: windowExamples(windows),
        options: { batchSize, gradAccumSteps, maxSteps: 1, learningRate: 0.05, scheduler: 'constant', maxGradNorm: 0, seed: 4 },
        callbacks: { onStepEnd: (m) => void losses.push(m.loss) },
      });
      await trainer.run();
      const values = Array.from(await W.data());
      W.dispose();
      return { loss: losses[0]!, values };
    };
    const accumulated = await stepWith(2, 3);
    const whole = await stepWith(6, 1);
    expect(Math.abs(accumulated.loss - tokenWeighted(weights(), GROUP).loss)).toBeLessThan(1e-6);
    expect(Math.abs(accumulated.loss - whole.loss)).toBeLessThan(1e-6);
    expect(maxAbsDiff(accumulated.values, whole.values)).toBeLessThan(1e-6);
  });
});
