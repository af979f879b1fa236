import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { evalWindows, packStream, trainWindows, type TokenStream, type WindowSet } from '../../src/core/data/packing';
import { LoraAdapter } from '../../src/core/lora/adapter';
import type { LoraSettings } from '../../src/core/lora/settings';
import {
  buildModel,
  causalLmLoss,
  loadWeightsFromSafetensors,
  parseModelConfigText,
  type CausalLM,
  type ModelConfig,
} from '../../src/core/models/index';
import { bytesSource } from '../../src/core/safetensors/index';
import {
  AdamW,
  accumulateGradients,
  clipByGlobalNorm,
  evaluate,
  globalNorm,
  learningRateAt,
  loraEvalLossFn,
  loraLossFn,
  modelLossFn,
  Trainer,
  type EvalLossFn,
  type LossFn,
  type StepMetrics,
  type TrainerCallbacks,
  type TrainerOptions,
  type TrainEnd,
  windowExamples,
} from '../../src/core/train/index';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

interface LossSpec {
  text: string;
  seq_len: number;
  windows: number;
  loss: number;
}

const configOf = (dir: string): ModelConfig => parseModelConfigText(readFileSync(join(FIXTURES, dir, 'config.json'), 'utf8'));
const lossSpecOf = (dir: string): LossSpec =>
  (JSON.parse(readFileSync(join(FIXTURES, `${dir}.expected.json`), 'utf8')) as { loss_base: LossSpec }).loss_base;
/** The fixtures' tokenizer maps each UTF-8 byte to its value, with 256 = <|endoftext|>. */
const bytesOf = (text: string): number[] => [...new TextEncoder().encode(text)];
const EOS = 256;

async function loadWeights(dir: string): Promise<{ cfg: ModelConfig; weights: Map<string, tf.Tensor> }> {
  const cfg = configOf(dir);
  const bytes = new Uint8Array(readFileSync(join(FIXTURES, dir, 'model.safetensors')));
  return { cfg, weights: await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', bytes)]) };
}

async function loadModel(dir: string): Promise<CausalLM> {
  const { cfg, weights } = await loadWeights(dir);
  return buildModel(cfg, weights);
}

const valuesOf = (vars: readonly tf.Tensor[]): Float32Array[] => vars.map((v) => v.dataSync() as Float32Array);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/**
 * A bigram language model, logits = W[input]: cheap enough to drive the loop mechanics many times,
 * and its weight is an ordinary variable, the way a model trained from scratch would be.
 */
function bigram(vocab: number, seed = 1): { W: tf.Variable; lossFn: LossFn & EvalLossFn } {
  const init = tf.randomNormal([vocab, vocab], 0, 0.5, 'float32', seed);
  const W = tf.variable(init);
  init.dispose();
  const lossFn = (batch: { inputs: tf.Tensor2D; targets: tf.Tensor2D; mask: tf.Tensor2D }): tf.Scalar =>
    tf.tidy(() => {
      const [b, s] = batch.inputs.shape;
      const logits = tf.gather(W, batch.inputs.reshape([b * s])).reshape([b, s, vocab]) as tf.Tensor3D;
      return causalLmLoss(logits, batch.targets, batch.mask);
    });
  return { W, lossFn };
}

/** A stream with a learnable pattern: 0 1 2 … 7 repeated, with a little noise. */
function patternStream(length: number): TokenStream {
  const ids = Int32Array.from({ length }, (_, i) => (i % 13 === 5 ? (i * 7) % 8 : i % 8));
  return { ids, lossMask: new Uint8Array(length).fill(1) };
}

const baseOptions: TrainerOptions = {
  batchSize: 4,
  learningRate: 0.1,
  scheduler: 'constant',
  maxGradNorm: 1,
  seed: 3,
};

async function trainBigram(
  options: Partial<TrainerOptions>,
  callbacks: TrainerCallbacks = {},
  extra: { train?: WindowSet; wrap?: (fn: LossFn) => LossFn; onTrainer?: (t: Trainer, W: tf.Variable) => void } = {},
) {
  const model = bigram(8);
  const train = extra.train ?? trainWindows(patternStream(8 * 40 + 1), 8); // 40 windows
  const evalSet = evalWindows(patternStream(8 * 6 + 1), 8);
  const metrics: StepMetrics[] = [];
  const trainer = new Trainer({
    variables: [model.W],
    lossFn: extra.wrap ? extra.wrap(model.lossFn) : model.lossFn,
    train: windowExamples(train),
    eval: { examples: windowExamples(evalSet), lossFn: model.lossFn },
    options: { ...baseOptions, ...options },
    callbacks: {
      ...callbacks,
      onStepEnd: (m) => {
        metrics.push(m);
        return callbacks.onStepEnd?.(m);
      },
    },
  });
  extra.onTrainer?.(trainer, model.W);
  const end = await trainer.run();
  return { end, metrics, trainer, W: model.W, model };
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('learningRateAt', () => {
  const base = 1e-3;
  const at = (step: number, scheduler: 'constant' | 'linear' | 'cosine', warmupSteps = 10, totalSteps = 110) =>
    learningRateAt(step, { base, scheduler, warmupSteps, totalSteps });

  it('warms up linearly from 0 for every scheduler (step k uses lr_lambda(k))', () => {
    for (const s of ['constant', 'linear', 'cosine'] as const) {
      expect(at(0, s)).toBe(0);
      expect(at(5, s)).toBeCloseTo(5e-4, 12);
      expect(at(9, s)).toBeCloseTo(9e-4, 12);
      expect(at(10, s)).toBeCloseTo(base, 12);
    }
  });

  it('constant stays at base after warmup', () => {
    expect(at(11, 'constant')).toBe(base);
    expect(at(500, 'constant')).toBe(base);
    expect(at(0, 'constant', 0)).toBe(base);
  });

  it('linear decays to 0 at totalSteps', () => {
    expect(at(60, 'linear')).toBeCloseTo(0.5 * base, 12);
    expect(at(85, 'linear')).toBeCloseTo(0.25 * base, 12);
    expect(at(110, 'linear')).toBe(0);
    expect(at(120, 'linear')).toBe(0);
    // Without warmup step 0 uses the full rate and the last step (99 of 100) 1/100 of it.
    expect(at(0, 'linear', 0, 100)).toBe(base);
    expect(at(99, 'linear', 0, 100)).toBeCloseTo(base / 100, 12);
  });

  it('cosine: half the base half-way through the decay, 0 at the end', () => {
    expect(at(60, 'cosine')).toBeCloseTo(0.5 * base, 12);
    expect(at(35, 'cosine')).toBeCloseTo(0.5 * (1 + Math.cos(Math.PI * 0.25)) * base, 12);
    expect(at(110, 'cosine')).toBeCloseTo(0, 12);
    expect(at(0, 'cosine', 0, 100)).toBe(base);
  });
});

describe('clipByGlobalNorm', () => {
  it('returns the pre-clip norm and scales by min(1, max / (norm + 1e-6))', async () => {
    const a = tf.tensor1d([3, 4]);
    const b = tf.tensor2d([[12]]);
    const before = tf.memory().numTensors;
    const { grads, norm } = clipByGlobalNorm([a, b], 6.5);
    expect(await norm.data()).toEqual(new Float32Array([13]));
    const coef = 6.5 / (13 + 1e-6);
    expect(maxAbsDiff(await grads[0]!.data(), [3 * coef, 4 * coef])).toBeLessThan(1e-6);
    expect(maxAbsDiff(await grads[1]!.data(), [12 * coef])).toBeLessThan(1e-6);
    tf.dispose([...grads, norm]);
    expect(tf.memory().numTensors).toBe(before);

    const loose = clipByGlobalNorm([a, b], 20);
    expect([...(await loose.grads[0]!.data())]).toEqual([3, 4]);
    tf.dispose([...loose.grads, loose.norm]);

    const off = clipByGlobalNorm([a, b], 0);
    expect(off.grads[0]).toBe(a);
    expect(await off.norm.data()).toEqual(new Float32Array([13]));
    off.norm.dispose();
    const n = globalNorm([]);
    expect(await n.data()).toEqual(new Float32Array([0]));
    tf.dispose([a, b, n]);
  });
});

describe('AdamW', () => {
  // PyTorch's torch.optim.AdamW single-tensor update, written out in float64 with no tf involved.
  function reference(p0: number[], grads: number[][], lrs: number[], wd: number, b1 = 0.9, b2 = 0.999, eps = 1e-8) {
    const p = [...p0];
    const m = p.map(() => 0);
    const v = p.map(() => 0);
    grads.forEach((g, k) => {
      const t = k + 1;
      const lr = lrs[k]!;
      for (let i = 0; i < p.length; i++) {
        p[i]! *= 1 - lr * wd;
        m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
        v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
        const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** t) + eps;
        p[i]! -= (lr / (1 - b1 ** t)) * (m[i]! / denom);
      }
    });
    return p;
  }

  const p0 = [0.5, -1.0, 2.0, 0.25, -0.75, 1.5];
  // The tiny gradients of the 4th parameter make ε matter, so misplacing it fails the test.
  const grads = [
    [0.1, -0.2, 0.3, 1e-7, -2.0, 0.0],
    [-0.05, 0.4, 0.1, 3e-8, -1.0, 0.5],
    [0.2, 0.1, -0.3, -1e-7, 3.0, -0.25],
  ];
  const lrs = [1e-2, 5e-3, 2e-2];

  it.each([0, 0.1])('matches the PyTorch update for 3 steps (weight decay %s)', async (wd) => {
    const a = tf.variable(tf.tensor1d(p0.slice(0, 2)));
    const b = tf.variable(tf.tensor2d(p0.slice(2), [2, 2]));
    const start = tf.memory().numTensors;
    const opt = new AdamW([a, b], { weightDecay: wd });
    const before = tf.memory().numTensors;
    expect(before).toBe(start + 4); // m and v per variable, nothing else
    grads.forEach((g, k) => {
      const ga = tf.tensor1d(g.slice(0, 2));
      const gb = tf.tensor2d(g.slice(2), [2, 2]);
      // Both accepted forms: aligned array, and the name map tf.variableGrads returns.
      opt.step(k % 2 === 0 ? [ga, gb] : { [a.name]: ga, [b.name]: gb }, lrs[k]!);
      tf.dispose([ga, gb]);
    });
    expect(tf.memory().numTensors).toBe(before);
    expect(opt.stepCount).toBe(3);
    const expected = reference(p0, grads, lrs, wd);
    const actual = [...(await a.data()), ...(await b.data())];
    expect(maxAbsDiff(actual, expected)).toBeLessThan(1e-6);
    // Not trivially satisfied: the parameters did move by about lr per step.
    expect(maxAbsDiff(actual, p0)).toBeGreaterThan(1e-2);
    opt.dispose();
    expect(tf.memory().numTensors).toBe(start);
    tf.dispose([a, b]);
  });

  it('prepare() reports an update that would overflow; discarding it leaves everything as it was', async () => {
    const a = tf.variable(tf.tensor1d([3e38, 1]));
    const opt = new AdamW([a]);
    const start = tf.memory().numTensors;
    const g = tf.tensor1d([-1, 1]);
    const bad = opt.prepare([g], 1e38); // 3e38 + 1e38 overflows float32
    expect([...(await bad.finiteCheck.data())]).toEqual([0]);
    bad.discard();
    expect(opt.stepCount).toBe(0);
    expect([...(await a.data())]).toEqual([Math.fround(3e38), 1]);
    const good = opt.prepare([g], 0.5);
    expect([...(await good.finiteCheck.data())]).toEqual([1]);
    good.commit();
    good.discard(); // harmless after commit
    expect(() => good.commit()).toThrow(/already/);
    expect(opt.stepCount).toBe(1);
    // Adam's first step moves each weight by lr against the gradient's sign.
    expect((await a.data())[1]).toBeCloseTo(0.5, 6);
    g.dispose();
    expect(tf.memory().numTensors).toBe(start);
    opt.dispose();
    a.dispose();
  });

  it('rejects misaligned gradients', () => {
    const a = tf.variable(tf.zeros([2]));
    const opt = new AdamW([a]);
    const g = tf.zeros([3]);
    expect(() => opt.step([g], 0.1)).toThrow(/does not match/);
    expect(() => opt.step({}, 0.1)).toThrow(/no gradient/);
    opt.dispose();
    tf.dispose([a, g]);
  });
});

describe('eval loss definition', () => {
  let model: CausalLM;
  beforeAll(async () => {
    model = await loadModel('tiny-gpt2');
  });
  afterAll(() => model.dispose());

  it.each(['tiny-gpt2', 'tiny-llama'])('%s: evalWindows + evaluate reproduce the fixture loss_base', async (dir) => {
    const spec = lossSpecOf(dir);
    const m = dir === 'tiny-gpt2' ? model : await loadModel(dir);
    // The fixture's text is one validation document (it holds the repetitions already).
    const windows = evalWindows(packStream([{ ids: bytesOf(spec.text) }], EOS), spec.seq_len);
    expect(windows.count).toBe(spec.windows);
    for (const batchSize of [2, 9]) {
      const r = await evaluate(windowExamples(windows), modelLossFn(m), batchSize);
      expect(Math.abs(r.loss - spec.loss)).toBeLessThan(1e-4);
      expect(r.weight).toBe(spec.windows * spec.seq_len);
    }
    if (m !== model) m.dispose();
  });

  it('is token-weighted over all targets, not a mean of per-window means', async () => {
    const spec = lossSpecOf('tiny-gpt2');
    const ids = bytesOf(spec.text);
    // Mask most of the first document so the windows hold very different numbers of targets.
    const docs = [
      { ids: ids.slice(0, 60), lossMask: Uint8Array.from(ids.slice(0, 60), (_, i) => (i % 5 === 0 ? 1 : 0)) },
      { ids: ids.slice(60) },
    ];
    const windows = evalWindows(packStream(docs, EOS), 32);
    // Host-side cross-entropy per target, from the model's logits.
    const logits = model.forward(tf.tensor2d(windows.inputs, [windows.count, 32], 'int32'));
    const data = await logits.data();
    logits.dispose();
    let sum = 0;
    let tokens = 0;
    const perWindow: number[] = [];
    for (let w = 0; w < windows.count; w++) {
      let ws = 0;
      let wn = 0;
      for (let t = 0; t < 32; t++) {
        if (!windows.mask[w * 32 + t]) continue;
        const row = data.subarray((w * 32 + t) * 257, (w * 32 + t + 1) * 257);
        let max = -Infinity;
        for (const x of row) max = Math.max(max, x);
        let z = 0;
        for (const x of row) z += Math.exp(x - max);
        const nll = max + Math.log(z) - row[windows.targets[w * 32 + t]!]!;
        ws += nll;
        wn++;
      }
      sum += ws;
      tokens += wn;
      if (wn > 0) perWindow.push(ws / wn);
    }
    const tokenWeighted = sum / tokens;
    const meanOfMeans = perWindow.reduce((s, x) => s + x, 0) / perWindow.length;
    expect(Math.abs(tokenWeighted - meanOfMeans)).toBeGreaterThan(1e-3);
    for (const batchSize of [2, 5]) {
      const r = await evaluate(windowExamples(windows), modelLossFn(model), batchSize);
      expect(r.weight).toBe(tokens);
      expect(Math.abs(r.loss - tokenWeighted)).toBeLessThan(1e-5);
    }
  });
});

describe('Trainer mechanics (bigram model)', () => {
  it('trains, counts steps and fractional epochs, logs, evaluates per epoch, saves', async () => {
    // 10 windows, micro-batches of 4 → 3 per epoch; 2 per step → 2 steps per epoch.
    const train = trainWindows(patternStream(8 * 10 + 1), 8);
    const logs: { step: number; meanLoss: number }[] = [];
    const evals: { step: number; loss: number }[] = [];
    const saves: number[] = [];
    let trainEnd: TrainEnd | null = null;
    const { end, metrics, trainer, W } = await trainBigram(
      { gradAccumSteps: 2, epochs: 3, logSteps: 2, saveSteps: 4 },
      {
        onLog: (m) => void logs.push({ step: m.step, meanLoss: m.meanLoss }),
        onEval: (e) => void evals.push(e),
        onSave: (s) => void saves.push(s.step),
        onTrainEnd: (r) => void (trainEnd = r),
      },
      { train },
    );
    expect(trainer.stepsPerEpoch).toBe(2);
    expect(trainer.totalSteps).toBe(6);
    expect(end).toEqual({ step: 6, reason: 'completed' });
    expect(trainEnd).toEqual(end);
    expect(trainer.state).toBe('ended');
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(metrics.map((m) => m.epoch)).toEqual([2 / 3, 1, 1 + 2 / 3, 2, 2 + 2 / 3, 3]);
    expect(logs.map((l) => l.step)).toEqual([2, 4, 6]);
    expect(logs[1]!.meanLoss).toBeCloseTo((metrics[2]!.loss + metrics[3]!.loss) / 2, 6);
    expect(evals.map((e) => e.step)).toEqual([2, 4, 6]);
    expect(evals[2]!.loss).toBeLessThan(evals[0]!.loss);
    expect(saves).toEqual([4]);
    for (const m of metrics) {
      expect(m.learningRate).toBe(0.1);
      expect(m.gradNorm).toBeGreaterThan(0);
      expect(m.tokensPerSecond).toBeGreaterThan(0);
    }
    expect(metrics.at(-1)!.secondsLeft).toBe(0);
    W.dispose();
  });

  it('maxSteps wins over epochs; evalSteps and logSteps 0; the schedule runs over the total', async () => {
    const evals: number[] = [];
    let logged = 0;
    const { end, metrics, W } = await trainBigram(
      { epochs: 1, maxSteps: 25, evalSteps: 10, scheduler: 'linear', warmupSteps: 5 },
      { onEval: (e) => void evals.push(e.step), onLog: () => void logged++ },
    );
    expect(end).toEqual({ step: 25, reason: 'completed' });
    expect(metrics.at(-1)!.epoch).toBe(2.5); // 10 micro-batches of 4 per epoch
    expect(evals).toEqual([10, 20]);
    expect(logged).toBe(0);
    const expectedLr = metrics.map((_, k) => learningRateAt(k, { base: 0.1, scheduler: 'linear', warmupSteps: 5, totalSteps: 25 }));
    expect(metrics.map((m) => m.learningRate)).toEqual(expectedLr);
    expect(metrics[0]!.learningRate).toBe(0);
    W.dispose();
  });

  it('gradient accumulation 2 × 4 gives the gradients and loss of one batch of 8', async () => {
    const { W, lossFn } = bigram(8, 5);
    const windows = trainWindows(patternStream(8 * 8 + 1), 8);
    const split = accumulateGradients([W], lossFn, windowExamples(windows), [[0, 1, 2, 3], [4, 5, 6, 7]], 0, 0);
    const whole = accumulateGradients([W], lossFn, windowExamples(windows), [[0, 1, 2, 3, 4, 5, 6, 7]], 0, 0);
    const single = accumulateGradients([W], lossFn, windowExamples(windows), [[0, 1, 2, 3]], 0, 0);
    expect(maxAbsDiff(await split.grads[0]!.data(), await whole.grads[0]!.data())).toBeLessThan(1e-5);
    expect(Math.abs((await split.loss.data())[0]! - (await whole.loss.data())[0]!)).toBeLessThan(1e-5);
    // The comparison has teeth: half the batch alone gives other gradients.
    expect(maxAbsDiff(await single.grads[0]!.data(), await whole.grads[0]!.data())).toBeGreaterThan(1e-3);
    tf.dispose([...split.grads, split.loss, ...whole.grads, whole.loss, ...single.grads, single.loss, W]);

    // Through the trainer: same first windows (the shuffle does not depend on the batch size).
    const a = await trainBigram({ batchSize: 4, gradAccumSteps: 2, maxSteps: 1 });
    const b = await trainBigram({ batchSize: 8, maxSteps: 1 });
    expect(Math.abs(a.metrics[0]!.loss - b.metrics[0]!.loss)).toBeLessThan(1e-5);
    expect(Math.abs(a.metrics[0]!.gradNorm - b.metrics[0]!.gradNorm)).toBeLessThan(1e-5);
    expect(maxAbsDiff(await a.W.data(), await b.W.data())).toBeLessThan(1e-5);
    tf.dispose([a.W, b.W]);
  });

  it('is reproducible: same seed → identical losses; another seed → other losses', async () => {
    const run = async (seed: number) => {
      const r = await trainBigram({ maxSteps: 8, seed, gradAccumSteps: 2 });
      r.W.dispose();
      return r.metrics.map((m) => m.loss);
    };
    const first = await run(11);
    expect(await run(11)).toEqual(first);
    expect(await run(12)).not.toEqual(first);
  });

  it('pause holds the loop at a step boundary; resume continues; stop ends after the current step', async () => {
    let trainer: Trainer | null = null;
    let steps = 0;
    let finished = false;
    const done = trainBigram(
      { maxSteps: 50 },
      {
        onStepEnd: (m) => {
          steps = m.step;
          if (m.step === 3) trainer!.pause();
          if (m.step === 6) trainer!.stop();
        },
      },
      { onTrainer: (t) => (trainer = t) },
    );
    void done.then(() => (finished = true));
    // Wait for the pause to take hold, then make sure nothing moves while paused.
    for (let i = 0; i < 200 && trainer!.state !== 'paused'; i++) await new Promise((r) => setTimeout(r, 5));
    expect(trainer!.state).toBe('paused');
    await new Promise((r) => setTimeout(r, 50));
    expect(steps).toBe(3);
    expect(finished).toBe(false);
    trainer!.resume();
    expect(trainer!.state).toBe('running');
    const { end, metrics, W } = await done;
    expect(metrics.map((m) => m.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(end).toEqual({ step: 6, reason: 'stopped' });
    W.dispose();
  });

  it('stop while paused ends the run; a callback can request early stopping by its return value', async () => {
    let trainer: Trainer | null = null;
    const paused = trainBigram(
      { maxSteps: 50 },
      { onStepEnd: (m) => (m.step === 2 ? trainer!.pause() : undefined) },
      { onTrainer: (t) => (trainer = t) },
    );
    for (let i = 0; i < 200 && trainer!.state !== 'paused'; i++) await new Promise((r) => setTimeout(r, 5));
    trainer!.stop();
    const r1 = await paused;
    expect(r1.end).toEqual({ step: 2, reason: 'stopped' });
    r1.W.dispose();

    let best = Infinity;
    const r2 = await trainBigram(
      { maxSteps: 50, evalSteps: 1, learningRate: 2 },
      {
        onEval: (e) => {
          if (e.loss >= best) return { stop: 'early_stopped' };
          best = e.loss;
        },
      },
    );
    expect(r2.end.reason).toBe('early_stopped');
    expect(r2.end.step).toBeLessThan(50);
    r2.W.dispose();
  });

  it('a NaN loss from step 5 on: five skipped updates in a row end with "diverged", the variables at their last good values', async () => {
    let snapshot: Float32Array | null = null;
    let W: tf.Variable | null = null;
    const onNaN = (fn: LossFn): LossFn => (batch, ctx) => {
      const loss = fn(batch, ctx);
      if (ctx.step < 4) return loss;
      // Inject the failure inside the differentiated function, as a real blow-up would be.
      return tf.tidy(() => tf.mul(loss, tf.scalar(Number.NaN)));
    };
    const r = await trainBigram(
      { maxSteps: 20 },
      { onStepEnd: (m) => void (m.step === 4 ? (snapshot = W!.dataSync().slice() as Float32Array) : undefined) },
      {
        wrap: onNaN,
        onTrainer: (_, w) => (W = w),
      },
    );
    expect(r.end.reason).toBe('diverged');
    expect(r.end.step).toBe(4);
    expect(r.end.detail).toMatch(/step 5 the loss was NaN/);
    expect(r.end.skippedSteps).toBe(5);
    expect(r.metrics).toHaveLength(4);
    expect(snapshot).not.toBeNull();
    expect([...(await r.W.data())]).toEqual([...snapshot!]);
    r.W.dispose();
  });

  it('a learning rate so large the weights would overflow ends with "diverged", weights still finite', async () => {
    // Adam moves each weight by about lr per step, so float32 (max 3.4e38) overflows on step 4.
    const r = await trainBigram({ maxSteps: 20, learningRate: 1e38, maxGradNorm: 0 });
    expect(r.end.reason).toBe('diverged');
    expect(r.end.step).toBeLessThan(20);
    expect(r.end.detail).toMatch(/the loss was Infinity|non-finite/);
    expect((await r.W.data()).every(Number.isFinite)).toBe(true);
    r.W.dispose();
  });

  it('leaks no tensors: flat across steps (accumulation, clipping, eval) and back to the start after', async () => {
    const before = tf.memory().numTensors;
    const counts: number[] = [];
    const { W } = await trainBigram(
      { maxSteps: 12, gradAccumSteps: 2, evalSteps: 3, logSteps: 2 },
      { onStepEnd: () => void counts.push(tf.memory().numTensors) },
    );
    expect(new Set(counts).size).toBe(1);
    W.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('Trainer on the tiny models', () => {
  // A short period, so every 32-token window repeats itself and LoRA on the attention can learn
  // to copy: the loss falls fast enough for 30 small steps to show it clearly.
  const text = 'zebra quilt jinx! '.repeat(20);
  const seqLen = 32;
  const settings: LoraSettings = { rank: 4, alpha: 8, dropout: 0, targetModules: ['c_attn'], useRslora: false };
  let model: CausalLM;
  let windows: WindowSet;
  beforeAll(async () => {
    model = await loadModel('tiny-gpt2');
    windows = trainWindows(packStream([{ ids: bytesOf(text) }], EOS), seqLen);
  });
  afterAll(() => model.dispose());

  async function trainLora(s: LoraSettings, options: Partial<TrainerOptions>, seed = 1) {
    const adapter = LoraAdapter.create(model, s, seed);
    const losses: number[] = [];
    const trainer = new Trainer({
      variables: adapter.variables(),
      lossFn: loraLossFn(model, adapter, seed),
      train: windowExamples(windows),
      options: { batchSize: 2, learningRate: 1e-2, scheduler: 'constant', seed, ...options },
      callbacks: { onStepEnd: (m) => void losses.push(m.loss) },
    });
    const end = await trainer.run();
    return { adapter, losses, end };
  }

  it('LoRA rank 4 on c_attn, lr 1e-2, 30 steps: the loss falls clearly, the base model is untouched', async () => {
    const baseBefore = await (model.weights.get('transformer.h.0.attn.c_attn.weight') as tf.Tensor).data();
    const before = await evaluate(windowExamples(windows), modelLossFn(model), 11);
    const tensorsBefore = tf.memory().numTensors;
    const { adapter, losses, end } = await trainLora(settings, { maxSteps: 30 });
    expect(end).toEqual({ step: 30, reason: 'completed' });
    const after = await evaluate(windowExamples(windows), loraEvalLossFn(model, adapter), 11);
    console.info(`LoRA: eval loss ${before.loss.toFixed(3)} → ${after.loss.toFixed(3)}; step losses ${losses[0]!.toFixed(3)} → ${losses.at(-1)!.toFixed(3)}`);
    expect(after.loss).toBeLessThan(before.loss - 0.7);
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(mean(losses.slice(-5))).toBeLessThan(mean(losses.slice(0, 5)) - 0.5);
    expect(await (model.weights.get('transformer.h.0.attn.c_attn.weight') as tf.Tensor).data()).toEqual(baseBefore);
    adapter.dispose();
    expect(tf.memory().numTensors).toBe(tensorsBefore);
  });

  it('LoRA with dropout is reproducible: same seed → identical losses', async () => {
    const withDropout = { ...settings, dropout: 0.1 };
    const options = { batchSize: 1, maxSteps: 3, gradAccumSteps: 2 };
    const a = await trainLora(withDropout, options);
    const b = await trainLora(withDropout, options);
    expect(b.losses).toEqual(a.losses);
    expect(valuesOf(b.adapter.variables())).toEqual(valuesOf(a.adapter.variables()));
    const c = await trainLora(withDropout, options, 2);
    expect(c.losses).not.toEqual(a.losses);
    for (const r of [a, b, c]) r.adapter.dispose();
  });

  it('trains every weight of a model built from variables (the from-scratch path)', async () => {
    const { cfg, weights } = await loadWeights('tiny-gpt2');
    const variables = new Map<string, tf.Variable>();
    for (const [name, t] of weights) {
      variables.set(name, tf.variable(t));
      t.dispose();
    }
    const scratch = buildModel(cfg, variables);
    const lossFn = modelLossFn(scratch);
    const before = await evaluate(windowExamples(windows), lossFn, 11);
    const trainer = new Trainer({
      variables: [...variables.values()],
      lossFn,
      train: windowExamples(windows),
      options: { batchSize: 2, learningRate: 3e-3, scheduler: 'constant', maxSteps: 5, seed: 1 },
    });
    expect((await trainer.run()).reason).toBe('completed');
    const after = await evaluate(windowExamples(windows), lossFn, 11);
    console.info(`from scratch: eval loss ${before.loss.toFixed(3)} → ${after.loss.toFixed(3)}`);
    expect(after.loss).toBeLessThan(before.loss - 0.3);
    scratch.dispose();
  });
});
