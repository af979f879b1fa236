import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { trainWindows, type TokenStream } from '../../src/core/data/packing';
import { diagnose, DEFAULT_THRESHOLDS, shouldStop, type Finding } from '../../src/core/diagnose';
import { diagnosisCallbacks } from '../../src/core/diagnose/callbacks';
import { metricsCsv } from '../../src/core/export/run-files';
import { causalLmLoss } from '../../src/core/models/index';
import {
  composeCallbacks,
  decodeCheckpoint,
  encodeCheckpoint,
  MAX_SKIPPED_IN_ROW,
  Trainer,
  type CheckpointReason,
  type LossFn,
  type SkippedUpdate,
  type StepMetrics,
  type TrainerCallbacks,
  type TrainerCheckpoint,
  type TrainerOptions,
  windowExamples,
} from '../../src/core/train/index';

// A non-finite loss or gradient skips that update and is counted; MAX_SKIPPED_IN_ROW in a row end the run as
// 'diverged' with the last good weights, and no checkpoint of the end. The loss function here turns NaN (or its
// gradient Inf) on chosen tries, counted by call (one call per try with gradAccumSteps 1), so the skips are exact.

const VOCAB = 8;
const options: TrainerOptions = { batchSize: 4, learningRate: 0.1, scheduler: 'constant', maxGradNorm: 1, seed: 3 };

/** A stream with a learnable pattern: 0 1 2 … 7 repeated, with a little noise. */
function patternStream(length: number): TokenStream {
  const ids = Int32Array.from({ length }, (_, i) => (i % 13 === 5 ? (i * 7) % 8 : i % 8));
  return { ids, lossMask: new Uint8Array(length).fill(1) };
}

/** A bigram model whose loss is NaN on the tries (0-based calls) in `nanAt`, and whose gradient is not finite on those in `infGradAt`. */
function poisoned(nanAt: ReadonlySet<number>, infGradAt: ReadonlySet<number> = new Set()) {
  const init = tf.randomNormal([VOCAB, VOCAB], 0, 0.5, 'float32', 1);
  const W = tf.variable(init);
  init.dispose();
  let calls = 0;
  const lossFn: LossFn = (batch) =>
    tf.tidy(() => {
      const call = calls++;
      const [b, s] = batch.inputs.shape;
      const logits = tf.gather(W, batch.inputs.reshape([b * s])).reshape([b, s, VOCAB]) as tf.Tensor3D;
      const loss = causalLmLoss(logits, batch.targets, batch.mask);
      if (nanAt.has(call)) return tf.mul(loss, tf.scalar(Number.NaN));
      // A finite loss (sqrt(0) adds 0) whose gradient is not: sqrt's slope at 0 is infinite, so the norm check catches it.
      if (infGradAt.has(call)) return tf.add(loss, tf.sum(tf.sqrt(tf.sub(W, W))));
      return loss;
    });
  return { W, lossFn, calls: () => calls };
}

async function train(nanAt: number[], opts: Partial<TrainerOptions>, callbacks: TrainerCallbacks = {}, extra: { resumeFrom?: TrainerCheckpoint; infGradAt?: number[] } = {}) {
  const model = poisoned(new Set(nanAt), new Set(extra.infGradAt ?? []));
  const metrics: StepMetrics[] = [];
  const skips: { skip: SkippedUpdate; weights: Float32Array }[] = [];
  const checkpoints: { ck: TrainerCheckpoint; reason: CheckpointReason }[] = [];
  const weightsAfter = new Map<number, Float32Array>([[0, model.W.dataSync().slice() as Float32Array]]);
  const trainer = new Trainer({
    variables: [model.W],
    lossFn: model.lossFn,
    train: windowExamples(trainWindows(patternStream(8 * 40 + 1), 8)), // 40 windows, 10 micro-batches per epoch
    options: { ...options, ...opts },
    resumeFrom: extra.resumeFrom ?? null,
    callbacks: composeCallbacks(callbacks, {
      onStepEnd: (m) => {
        metrics.push(m);
        weightsAfter.set(m.step, model.W.dataSync().slice() as Float32Array);
      },
      onSkip: (s) => void skips.push({ skip: s, weights: model.W.dataSync().slice() as Float32Array }),
      onCheckpoint: (ck, reason) => void checkpoints.push({ ck, reason }),
    }),
  });
  const end = await trainer.run();
  const weights = (await model.W.data()) as Float32Array;
  model.W.dispose();
  return { end, metrics, skips, checkpoints, weightsAfter, weights };
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('non-finite updates are skipped and counted', () => {
  it('skipped tries leave the weights as they were; the count rides on every step after; the run completes its steps', async () => {
    // Tries 0-1 apply steps 1-2; tries 2 and 3 are NaN (both would have been step 3); try 4 applies step 3; try 7 is NaN.
    const r = await train([2, 3, 7], { maxSteps: 8 });
    expect(r.end).toEqual({ step: 8, reason: 'completed', skippedSteps: 3 });
    expect(r.metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(r.metrics.map((m) => m.skippedSteps)).toEqual([0, 0, 2, 2, 2, 3, 3, 3]);
    expect(r.skips.map((s) => s.skip)).toEqual([
      { step: 3, problem: 'the loss was NaN', skippedSteps: 1, inRow: 1 },
      { step: 3, problem: 'the loss was NaN', skippedSteps: 2, inRow: 2 },
      { step: 6, problem: 'the loss was NaN', skippedSteps: 3, inRow: 1 },
    ]);
    // Bit for bit the weights of the last applied step: nothing of a skipped try reached them.
    expect([...r.skips[0]!.weights]).toEqual([...r.weightsAfter.get(2)!]);
    expect([...r.skips[1]!.weights]).toEqual([...r.weightsAfter.get(2)!]);
    expect([...r.skips[2]!.weights]).toEqual([...r.weightsAfter.get(5)!]);
    expect(r.metrics.every((m) => Number.isFinite(m.loss))).toBe(true);
    expect(r.weights.every(Number.isFinite)).toBe(true);
  });

  it('a non-finite gradient with a finite loss is skipped the same way, named by what was not finite', async () => {
    const r = await train([], { maxSteps: 3 }, {}, { infGradAt: [1] });
    expect(r.end).toEqual({ step: 3, reason: 'completed', skippedSteps: 1 });
    expect(r.skips).toHaveLength(1);
    expect(r.skips[0]!.skip.step).toBe(2);
    expect(r.skips[0]!.skip.problem).toMatch(/gradient norm was (NaN|Infinity)/);
    expect([...r.skips[0]!.weights]).toEqual([...r.weightsAfter.get(1)!]);
  });

  it(`${MAX_SKIPPED_IN_ROW - 1} in a row and then a good step go on; the count in a row starts again`, async () => {
    const r = await train([1, 2, 3, 4, 6, 7, 8, 9], { maxSteps: 4 });
    expect(r.end).toEqual({ step: 4, reason: 'completed', skippedSteps: 8 });
    expect(r.skips.map((s) => s.skip.inRow)).toEqual([1, 2, 3, 4, 1, 2, 3, 4]);
  });

  it(`${MAX_SKIPPED_IN_ROW} in a row end the run as diverged with the last good weights, and no checkpoint of the end`, async () => {
    // Steps 1-6 applied (checkpoints after 2, 4, 6); every try from the 7th on is NaN.
    const nan = Array.from({ length: 30 }, (_, i) => 6 + i);
    const r = await train(nan, { maxSteps: 20, saveSteps: 2 });
    expect(r.end.reason).toBe('diverged');
    expect(r.end.step).toBe(6);
    expect(r.end.skippedSteps).toBe(MAX_SKIPPED_IN_ROW);
    expect(r.end.detail).toMatch(/At step 7 the loss was NaN/);
    expect(r.skips.map((s) => s.skip.inRow)).toEqual([1, 2, 3, 4, 5]);
    expect([...r.weights]).toEqual([...r.weightsAfter.get(6)!]);
    // Checkpoints are the periodic ones only, the last holding exactly the weights the run ends with.
    expect(r.checkpoints.map((c) => [c.ck.step, c.reason])).toEqual([
      [2, 'save'],
      [4, 'save'],
      [6, 'save'],
    ]);
    expect([...r.checkpoints.at(-1)!.ck.params[0]!.value]).toEqual([...r.weights]);
  });

  it('a stop requested after skips checkpoints the good weights, not a bad state (stop on the 5th is not a stop)', async () => {
    const nan = [3, 4];
    const r = await train(nan, { maxSteps: 20 }, { onSkip: (s) => (s.inRow === 2 ? { stop: 'stopped' } : undefined) });
    expect(r.end).toEqual({ step: 3, reason: 'stopped', skippedSteps: 2 });
    expect(r.checkpoints.map((c) => [c.ck.step, c.reason])).toEqual([[3, 'stop']]);
    expect([...r.checkpoints[0]!.ck.params[0]!.value]).toEqual([...r.weightsAfter.get(3)!]);
    expect(r.checkpoints[0]!.ck.skippedSteps).toBe(2);
    // The position moved past the skipped micro-batches: tries 0-4 used micro-batches 0-4.
    expect(r.checkpoints[0]!.ck.position).toEqual({ epoch: 0, microBatch: 5 });
  });

  it('a resumed run goes on counting from its checkpoint (the codec keeps the count)', async () => {
    const first = await train([1], { maxSteps: 6, saveSteps: 3 });
    const ck = first.checkpoints.find((c) => c.ck.step === 3)!.ck;
    expect(ck.skippedSteps).toBe(1);
    const decoded = decodeCheckpoint(encodeCheckpoint(ck));
    expect(decoded.skippedSteps).toBe(1);
    // A checkpoint from before skips were counted decodes without the field, and resumes from 0.
    const older: TrainerCheckpoint = { ...ck, skippedSteps: undefined };
    expect(decodeCheckpoint(encodeCheckpoint(older)).skippedSteps).toBeUndefined();
    const resumed = await train([], { maxSteps: 6, saveSteps: 3 }, {}, { resumeFrom: decoded });
    expect(resumed.metrics.map((m) => [m.step, m.skippedSteps])).toEqual([
      [4, 1],
      [5, 1],
      [6, 1],
    ]);
    expect(resumed.end).toEqual({ step: 6, reason: 'completed', skippedSteps: 1 });
  });
});

describe('the diagnosis explains the stop', () => {
  it('the trainer and the diagnosis stop at the same count', () => {
    expect(DEFAULT_THRESHOLDS.divergeSkippedInRow).toBe(MAX_SKIPPED_IN_ROW);
  });

  it('skips below the limit are no finding; the limit in a row is diverged at its step, and shouldStop', () => {
    const trainLoss = Array.from({ length: 10 }, (_, i) => ({ step: i + 1, value: 3 - i * 0.1 }));
    const skip = (step: number, inRow: number) => ({ step, inRow, problem: 'the loss was NaN' });
    const four = [1, 2, 3, 4].map((n) => skip(11, n));
    const healthy = diagnose({ trainLoss, evalLoss: [], gradNorm: [], learningRate: [], totalSteps: 50, skippedUpdates: four });
    expect(healthy.map((f) => f.code)).not.toContain('diverged');
    const five = [...four, skip(11, 5)];
    const fs = diagnose({ trainLoss, evalLoss: [], gradNorm: [], learningRate: [], totalSteps: 50, skippedUpdates: five });
    expect(fs).toHaveLength(1);
    expect(fs[0]).toMatchObject({ code: 'diverged', severity: 'error', step: 11 });
    expect(fs[0]!.message).toContain('5 updates in a row were not finite');
    expect(fs[0]!.message).toContain('after step 10');
    expect(shouldStop(fs)).toBe(true);
  });

  it('in a run, the diverged stop comes with the diagnosis callbacks finding it', async () => {
    let reported: Finding[] = [];
    const diagnosis = diagnosisCallbacks({ totalSteps: 20, onFindings: (f) => void (reported = f) });
    const r = await train(Array.from({ length: 30 }, (_, i) => 4 + i), { maxSteps: 20 }, diagnosis);
    expect(r.end.reason).toBe('diverged');
    expect(r.end.step).toBe(4);
    expect(diagnosis.history().skippedUpdates).toHaveLength(MAX_SKIPPED_IN_ROW);
    expect(reported.map((f) => [f.code, f.step])).toEqual([['diverged', 5]]);
    expect(diagnosis.findings()).toEqual(reported);
  });
});

describe('metrics.csv', () => {
  it('has a skipped_steps column: the count on training rows, empty where not recorded', () => {
    const row = { epoch: 0.1, loss: 2, learningRate: 0.1, gradNorm: 1, evalLoss: null, tokensPerSecond: 10 };
    const csv = metricsCsv([
      { step: 1, ...row, skippedSteps: 0 },
      { step: 2, ...row, skippedSteps: 2 },
      { step: 3, ...row }, // a row stored before skips were counted
    ]);
    const [head, ...lines] = csv.trim().split('\n');
    const col = head!.split(',').indexOf('skipped_steps');
    expect(col).toBeGreaterThan(0);
    expect(lines.map((l) => l.split(',')[col])).toEqual(['0', '2', '']);
  });
});
