import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { crc32c } from '../../src/core/logging/crc32c';
import { evalWindows, packStream, trainWindows, type WindowSet } from '../../src/core/data/packing';
import { LoraAdapter } from '../../src/core/lora/adapter';
import type { LoraSettings } from '../../src/core/lora/settings';
import { buildModel, loadWeightsFromSafetensors, parseModelConfigText, type CausalLM } from '../../src/core/models/index';
import { bytesSource } from '../../src/core/safetensors/index';
import {
  CheckpointFormatError,
  decodeCheckpoint,
  encodeCheckpoint,
  loraEvalLossFn,
  loraLossFn,
  Trainer,
  type CheckpointReason,
  type StopRequest,
  type TrainerCheckpoint,
  type TrainerOptions,
  windowExamples,
} from '../../src/core/train/index';

// Exact resume: a run cut at step K, its checkpoint put through bytes, and a NEW trainer (new adapter, new optimizer)
// continuing from it must take the very updates the uninterrupted run took: the same per-step numbers, the same
// evaluations and logged means, the same final LoRA weights, bit for bit on the cpu backend. Dropout and gradient
// accumulation are on, so the randomness and the micro-batch bookkeeping are both exercised.

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const EOS = 256;
const bytesOf = (text: string): number[] => [...new TextEncoder().encode(text)];

const SEED = 7;
const N = 8;
const settings: LoraSettings = { rank: 4, alpha: 8, dropout: 0.1, targetModules: ['c_attn', 'c_proj'], useRslora: false };
// 11 windows of 32 → 6 micro-batches of 2 per epoch → 3 steps of 2 micro-batches, the last of them on the
// short micro-batch; 8 steps cross two epoch boundaries. The schedule, decay and clipping all take part.
const options: TrainerOptions = {
  batchSize: 2,
  gradAccumSteps: 2,
  maxSteps: N,
  evalSteps: 2,
  logSteps: 3,
  learningRate: 2e-2,
  scheduler: 'cosine',
  warmupSteps: 2,
  weightDecay: 0.01,
  maxGradNorm: 0.5,
  seed: SEED,
};

let model: CausalLM;
let train: WindowSet;
let evalSet: WindowSet;

beforeAll(async () => {
  tf.setBackend('cpu');
  const cfg = parseModelConfigText(readFileSync(join(FIXTURES, 'tiny-gpt2', 'config.json'), 'utf8'));
  const bytes = new Uint8Array(readFileSync(join(FIXTURES, 'tiny-gpt2', 'model.safetensors')));
  model = buildModel(cfg, await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', bytes)]));
  train = trainWindows(packStream([{ ids: bytesOf('zebra quilt jinx! '.repeat(20)) }], EOS), 32);
  evalSet = evalWindows(packStream([{ ids: bytesOf('quilt zebra! jinx '.repeat(6)) }], EOS), 32);
});
afterAll(() => model.dispose());

/** What a run shows of itself, timing left out: per step, per evaluation, per log. */
interface Trace {
  steps: { step: number; epoch: number; loss: number; learningRate: number; gradNorm: number }[];
  evals: { step: number; loss: number }[];
  logs: { step: number; meanLoss: number }[];
  checkpoints: { step: number; reason: CheckpointReason; ck: TrainerCheckpoint }[];
}

interface RunSpec {
  readonly resumeFrom?: TrainerCheckpoint;
  readonly options?: Partial<TrainerOptions>;
  readonly train?: WindowSet;
  /** Ends the run after this step (a callback's stop request). */
  readonly stopAfter?: number;
  /** Pauses after this step; the 'pause' checkpoint then stops the run. */
  readonly pauseAfter?: number;
  /** Seeds the adapter's initial values: a resumed run must not depend on them. */
  readonly initSeed?: number;
}

async function runLora(spec: RunSpec = {}) {
  const adapter = LoraAdapter.create(model, settings, spec.initSeed ?? SEED);
  const trace: Trace = { steps: [], evals: [], logs: [], checkpoints: [] };
  const trainer: Trainer = new Trainer({
    variables: adapter.variables(),
    lossFn: loraLossFn(model, adapter, SEED),
    train: windowExamples(spec.train ?? train),
    eval: { examples: windowExamples(evalSet), lossFn: loraEvalLossFn(model, adapter) },
    options: { ...options, ...spec.options },
    resumeFrom: spec.resumeFrom ?? null,
    callbacks: {
      onStepEnd: (m): StopRequest | void => {
        trace.steps.push({ step: m.step, epoch: m.epoch, loss: m.loss, learningRate: m.learningRate, gradNorm: m.gradNorm });
        if (m.step === spec.pauseAfter) trainer.pause();
        if (m.step === spec.stopAfter) return { stop: 'stopped' };
      },
      onEval: (e) => void trace.evals.push(e),
      onLog: (m) => void trace.logs.push({ step: m.step, meanLoss: m.meanLoss }),
      onCheckpoint: (ck, reason) => {
        trace.checkpoints.push({ step: ck.step, reason, ck });
        if (reason === 'pause') trainer.stop();
      },
    },
  });
  const end = await trainer.run();
  const weights = adapter.variables().map((v) => (v.dataSync() as Float32Array).slice());
  adapter.dispose();
  return { end, trace, weights };
}

/** A checkpoint as it comes back from storage: through its byte encoding, no object shared with the original. */
const throughBytes = (ck: TrainerCheckpoint): TrainerCheckpoint => decodeCheckpoint(encodeCheckpoint(ck).slice());

describe('exact resume from a checkpoint (tiny GPT-2, LoRA dropout 0.1, accumulation 2, cpu)', () => {
  let straight: Awaited<ReturnType<typeof runLora>>;
  beforeAll(async () => {
    straight = await runLora({ options: { saveSteps: 3 } });
  }, 120_000);

  it('the uninterrupted run: 8 steps over 3 epochs, a checkpoint every 3 steps', () => {
    expect(straight.end).toEqual({ step: N, reason: 'completed' });
    expect(straight.trace.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(straight.trace.evals.map((e) => e.step)).toEqual([2, 4, 6, 8]);
    expect(straight.trace.logs.map((l) => l.step)).toEqual([3, 6]);
    expect(straight.trace.checkpoints.map((c) => [c.step, c.reason])).toEqual([
      [3, 'save'],
      [6, 'save'],
    ]);
    // Step 3 ends epoch 0: the checkpoint points at the start of epoch 1, with epoch 1's order.
    expect(straight.trace.checkpoints[0]!.ck.position).toEqual({ epoch: 1, microBatch: 0 });
    // Dropout is drawn: the same step without it gives another loss (checked once, so "identical" below means something).
    expect(new Set(straight.trace.steps.map((s) => s.loss)).size).toBe(N);
  });

  async function expectResumeMatches(ck: TrainerCheckpoint) {
    const K = ck.step;
    const tensorsBefore = tf.memory().numTensors;
    const resumed = await runLora({ resumeFrom: throughBytes(ck), initSeed: 999 });
    expect(tf.memory().numTensors).toBe(tensorsBefore);
    expect(resumed.end).toEqual({ step: N, reason: 'completed' });
    expect(resumed.trace.steps).toEqual(straight.trace.steps.slice(K));
    expect(resumed.trace.evals).toEqual(straight.trace.evals.filter((e) => e.step > K));
    expect(resumed.trace.logs).toEqual(straight.trace.logs.filter((l) => l.step > K));
    expect(resumed.weights).toEqual(straight.weights);
  }

  it('from a save_steps checkpoint at an epoch boundary (step 3): the same steps, evals, logs and weights', async () => {
    const ck = straight.trace.checkpoints[0]!.ck;
    expect(ck.step).toBe(3);
    // Step 3 is a log step, so nothing is pending; no evaluation at 3, the best is step 2's.
    expect(ck.pendingLogLosses).toEqual([]);
    expect(ck.bestEval).toEqual({ step: 2, loss: straight.trace.evals[0]!.loss, evalsSince: 0 });
    await expectResumeMatches(ck);
  });

  it('from a stop in the middle of an epoch (step 4): identical, including the log mean that spans the break', async () => {
    const cut = await runLora({ stopAfter: 4 });
    expect(cut.end).toEqual({ step: 4, reason: 'stopped' });
    expect(cut.trace.checkpoints.map((c) => [c.step, c.reason])).toEqual([[4, 'stop']]);
    const ck = cut.trace.checkpoints[0]!.ck;
    expect(ck.position).toEqual({ epoch: 1, microBatch: 2 });
    expect(ck.pendingLogLosses).toEqual([straight.trace.steps[3]!.loss]);
    expect(ck.optimizerSteps).toBe(4);
    await expectResumeMatches(ck);
  });

  it('from a pause (step 5), and a checkpoint of a resumed run resumes exactly too', async () => {
    const paused = await runLora({ pauseAfter: 5 });
    // The stop requested while paused ends the run without a second checkpoint of the same step.
    expect(paused.trace.checkpoints.map((c) => [c.step, c.reason])).toEqual([[5, 'pause']]);
    expect(paused.end).toEqual({ step: 5, reason: 'stopped' });
    const again = await runLora({ resumeFrom: throughBytes(paused.trace.checkpoints[0]!.ck), stopAfter: 7 });
    expect(again.trace.steps).toEqual(straight.trace.steps.slice(5, 7));
    expect(again.trace.checkpoints.map((c) => [c.step, c.reason])).toEqual([[7, 'stop']]);
    await expectResumeMatches(again.trace.checkpoints[0]!.ck);
  });

  it('refuses a checkpoint of another plan or other data, naming what differs', async () => {
    const ck = throughBytes(straight.trace.checkpoints[0]!.ck);
    const refusal = async (spec: RunSpec): Promise<string> => {
      try {
        await runLora(spec);
      } catch (e) {
        expect(isUserError(e)).toBe(true);
        return (e as Error).message;
      }
      throw new Error('the run was not refused');
    };
    expect(await refusal({ resumeFrom: ck, options: { batchSize: 1 } })).toMatch(/batch_size was 2, is 1/);
    expect(await refusal({ resumeFrom: ck, options: { maxSteps: 9 } })).toMatch(/number of steps .* was 8, is 9/);
    const other = trainWindows(packStream([{ ids: bytesOf('zebra quilt jinx? '.repeat(20)) }], EOS), 32);
    expect(other.count).toBe(train.count);
    expect(await refusal({ resumeFrom: ck, train: other })).toMatch(/the training data changed/);
  });
});

describe('checkpoint bytes', () => {
  const sample: TrainerCheckpoint = {
    step: 12,
    position: { epoch: 2, microBatch: 3 },
    order: Uint32Array.from([4, 0, 3, 1, 2]),
    plan: { seed: 42, batchSize: 2, gradAccumSteps: 1, totalSteps: 40, windows: 5, seqLen: 16, dataFingerprint: '0123456789abcdef' },
    params: [
      { shape: [2, 3], value: Float32Array.from([1, -2, 3.5, 1e-30, -0, 7]), m: new Float32Array(6).fill(0.25), v: new Float32Array(6).fill(1e-8) },
      { shape: [3], value: Float32Array.from([0.1, 0.2, 0.3]), m: Float32Array.from([1, 2, 3]), v: Float32Array.from([4, 5, 6]) },
    ],
    optimizerSteps: 12,
    bestEval: { step: 10, loss: 2.5, evalsSince: 1 },
    pendingLogLosses: [3.25, 3.125],
    trainSeconds: 1.5,
  };

  it('round-trips every field exactly', () => {
    expect(decodeCheckpoint(encodeCheckpoint(sample))).toEqual(sample);
  });

  it('refuses damaged bytes: a flipped bit, a cut, a foreign file, a header that lies about sizes', () => {
    const bytes = encodeCheckpoint(sample);
    const flipped = bytes.slice();
    flipped[bytes.length - 3]! ^= 0x10;
    expect(() => decodeCheckpoint(flipped)).toThrow(/checksum/);
    expect(() => decodeCheckpoint(bytes.subarray(0, bytes.length - 4))).toThrow(/checksum/);
    expect(() => decodeCheckpoint(new TextEncoder().encode('{"not": "a checkpoint"}'))).toThrow(CheckpointFormatError);
    // A header edited to claim a bigger tensor, checksum recomputed: the length check catches it.
    const forged = encodeCheckpoint(sample);
    const header = new TextDecoder().decode(forged.subarray(20, 20 + new DataView(forged.buffer).getUint32(12, true)));
    expect(header).toContain('"shapes":[[2,3],[3]]');
    forged.set(new TextEncoder().encode(header.replace('"shapes":[[2,3],[3]]', '"shapes":[[2,3],[4]]')), 20);
    new DataView(forged.buffer).setUint32(16, crc32c(forged.subarray(20)), true);
    expect(() => decodeCheckpoint(forged)).toThrow(/describes/);
  });
});
