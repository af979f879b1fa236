import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { diagnosisCallbacks } from '../../src/core/diagnose/callbacks';
import type { StepMetrics } from '../../src/core/train/trainer';
import {
  DEFAULT_DENOISING_THRESHOLDS,
  diagnose,
  diagnoseDenoising,
  shouldStop,
  type CurvePoint,
  type DenoisingThresholds,
  type Finding,
  type FindingCode,
  type RunHistory,
} from '../../src/core/diagnose';

// The diagnosis of diffusion runs (RunHistory.loss 'denoising'). The expected findings of the recorded curves come
// from what the runs did, read independently of the rules: lr 0.5 took the fixed-noise validation loss from 0.293 to
// 1.29 at its first evaluation and it never came back, lr 0 left it bit-identical, lr 3e-3 and 3e-4 lowered it.

// ---------------------------------------------------------------- recorded runs

interface RecordedRun {
  readonly learningRate: number;
  readonly captions: string;
  readonly totalSteps: number;
  /** The per-step training loss of steps 1..n. */
  readonly train: readonly number[];
  /** [step, fixed-noise validation loss], step 0 first (eval_on_start). */
  readonly eval: readonly (readonly [number, number])[];
}

const RECORDED = (JSON.parse(readFileSync(new URL('./fixtures/diffusion-curves.json', import.meta.url), 'utf8')) as { runs: Record<string, RecordedRun> }).runs;

function recorded(name: string, what: { validation?: boolean; learningRate?: boolean } = {}): RunHistory {
  const run = RECORDED[name];
  if (!run) throw new Error(`no recorded run ${name}`);
  const trainLoss = run.train.map((value, i) => ({ step: i + 1, value }));
  return {
    loss: 'denoising',
    trainLoss,
    evalLoss: what.validation === false ? [] : run.eval.map(([step, value]) => ({ step, value })),
    gradNorm: [],
    learningRate: what.learningRate === false ? [] : trainLoss.map((p) => ({ step: p.step, value: run.learningRate })),
    totalSteps: run.totalSteps,
  };
}

/** The history as the trainer had it right after training step `count` (and the evaluation at that step). */
function prefix(h: RunHistory, count: number): RunHistory {
  const last = h.trainLoss[count - 1]?.step ?? 0;
  const upTo = (c: readonly CurvePoint[]) => c.filter((p) => p.step <= last);
  return { ...h, trainLoss: h.trainLoss.slice(0, count), evalLoss: upTo(h.evalLoss), gradNorm: upTo(h.gradNorm), learningRate: upTo(h.learningRate) };
}

/** Every diagnosis the trainer would make during the run, in order. */
function live(h: RunHistory, options?: Partial<DenoisingThresholds>): Finding[][] {
  return h.trainLoss.map((_, i) => diagnoseDenoising(prefix(h, i + 1), options));
}

const codes = (fs: readonly Finding[]) => fs.map((f) => f.code);
const firstCall = (calls: readonly Finding[][], code: FindingCode) => calls.findIndex((fs) => fs.some((f) => f.code === code)) + 1;

/** Each problem finding appears at most once during the run, at one step that never moves. */
function expectStable(calls: readonly Finding[][]): void {
  for (const code of ['diverged', 'lr_too_high', 'overfitting', 'not_learning'] as const) {
    const seen = calls.map((fs) => fs.find((f) => f.code === code));
    let flips = 0;
    for (let i = 1; i < seen.length; i++) if ((seen[i] !== undefined) !== (seen[i - 1] !== undefined)) flips++;
    expect(flips, code).toBeLessThanOrEqual(1);
    expect(new Set(seen.filter((f) => f !== undefined).map((f) => f.step)).size, code).toBeLessThanOrEqual(1);
  }
}

describe('recorded image LoRA runs on the tiny SD fixture', () => {
  test.each([
    ['healthy', 'lr 3e-3'],
    ['healthy-s1', 'lr 3e-3, seed 1: its first 3 steps drew easy timesteps (median 0.134, later medians up to 1.38× that)'],
    ['const', 'lr 3e-3 with one constant caption'],
    ['lr3e-4', 'lr 3e-4 (ten times lower: the validation loss falls 0.6% by step 20, 2.9% by step 60)'],
    ['lr3e-2', 'lr 3e-2 (ten times higher: the validation loss wobbles, +1.4% then +4.4% at steps 25 and 30, +6.4% at 80)'],
    ['long1e-2', 'lr 1e-2 for 240 steps, 48 epochs (validation rises twice in a row at steps 140-150 and 230-240)'],
  ])('%s (%s): healthy at every step, with and without validation images', (name) => {
    const [withVal, withoutVal] = [live(recorded(name)), live(recorded(name, { validation: false }))];
    for (const calls of [withVal, withoutVal]) expect(calls.find((fs) => codes(fs).join() !== 'healthy')).toBeUndefined();
    const run = RECORDED[name]!;
    expect(withVal.at(-1)![0]!.message).toBe(
      `The validation loss fell from ${String(Number(run.eval[0]![1].toPrecision(3)))} at step 0 to ${String(Number(run.eval.at(-1)![1].toPrecision(3)))} at step ${run.totalSteps}.`,
    );
  });

  test('lr 0.5: diverged at the first evaluation (validation 4.4× its start), seen at the second, and the run stops', () => {
    const calls = live(recorded('lr05'));
    expectStable(calls);
    expect(firstCall(calls, 'diverged')).toBe(10);
    const final = calls.at(-1)!;
    expect(final.map((f) => [f.code, f.step])).toEqual([['diverged', 5]]);
    expect(final[0]!.message).toBe(
      'The validation loss rose from 0.293 at step 0 to 1.29 (4.39× its start) at step 5, and was still 1.34 at step 10: training has blown up, and the adapter now predicts the noise worse than before it was trained.',
    );
    expect(final[0]!.suggestion).toMatch(/from 0\.5 to 0\.17/);
    expect(shouldStop(final)).toBe(true);
    // Nothing was wrong before the second evaluation confirmed it.
    expect(calls.slice(0, 9).every((fs) => fs[0]!.code === 'healthy')).toBe(true);
  });

  test('lr 0.1: lr_too_high when the validation loss is 6% above its start at step 10 (1.54× at 15), then diverged at 3.1× from step 20', () => {
    const calls = live(recorded('lr1e-1'));
    expect(firstCall(calls, 'lr_too_high')).toBe(15);
    expect(calls[14]!.map((f) => [f.code, f.step])).toEqual([['lr_too_high', 10]]);
    expect(calls[14]![0]!.message).toBe('The validation loss rose from 0.293 at step 0 to 0.311 (1.06× its start) at step 10, and was still 0.452 at step 15.');
    expect(calls[14]![0]!.suggestion).toMatch(/^Halve the UNet's learning rate \(unet_lr when set, else learning_rate\) from 0\.1 to 0\.05; add warmup_steps/);
    // It escalates: diverged replaces it once the second evaluation at 2× confirms, and stops the run.
    expect(firstCall(calls, 'diverged')).toBe(25);
    expectStable(calls.slice(0, 24));
    expectStable(calls.slice(24));
    expect(calls.at(-1)!.map((f) => [f.code, f.step])).toEqual([['diverged', 20]]);
    // Before step 10 the validation loss had fallen (0.267 at step 5): nothing was wrong yet.
    expect(calls.slice(0, 14).every((fs) => fs[0]!.code === 'healthy')).toBe(true);
  });

  test('lr 0.1 and 0.2 without validation: the climbing training loss is lr_too_high or diverged, never not_learning', () => {
    const slow = live(recorded('lr1e-1', { validation: false }));
    expect(slow.flat().some((f) => f.code === 'not_learning')).toBe(false);
    expect(firstCall(slow, 'lr_too_high')).toBe(45);
    expect(firstCall(slow, 'diverged')).toBe(48);
    expect(slow.at(-1)!.map((f) => [f.code, f.step])).toEqual([['diverged', 29]]);
    const fast = live(recorded('lr2e-1', { validation: false }));
    expect(fast.flat().some((f) => f.code === 'not_learning' || f.code === 'lr_too_high')).toBe(false);
    expect(fast.at(-1)!.map((f) => [f.code, f.step])).toEqual([['diverged', 20]]);
    expect(diagnoseDenoising(recorded('lr2e-1')).map((f) => [f.code, f.step])).toEqual([['diverged', 5]]);
  });

  test('lr 0.5 without validation: diverged from the smoothed training loss (5.8× the first 3 steps), once a window of windows agrees', () => {
    const calls = live(recorded('lr05', { validation: false }));
    expectStable(calls);
    // 20-step windows, 20 of them in a row: the first judgement possible is after step 39.
    expect(firstCall(calls, 'diverged')).toBe(39);
    expect(calls.at(-1)!.map((f) => [f.code, f.step])).toEqual([['diverged', 20]]);
    expect(calls.at(-1)![0]!.message).toMatch(/^The training loss rose from 0\.193 \(median of the first 3 steps\) to 1\.12 /);
  });

  test('lr 0: not_learning at once from the learning rate; from the bit-identical validation loss when no rate is logged', () => {
    const fromRate = diagnoseDenoising(recorded('lr0'));
    expect(fromRate.map((f) => [f.code, f.step])).toEqual([['not_learning', 1]]);
    expect(fromRate[0]!.suggestion).toMatch(/learning_rate\) is 0/);

    const calls = live(recorded('lr0', { learningRate: false }));
    expectStable(calls);
    // Judged from 30 steps (30% of 100 planned), at 2 evaluations in a row: steps 30 and 35.
    expect(firstCall(calls, 'not_learning')).toBe(35);
    const final = calls.at(-1)!;
    expect(final.map((f) => [f.code, f.step])).toEqual([['not_learning', 30]]);
    expect(final[0]!.message).toBe('The validation loss has not gone down: 0.293 at step 0, 0.293 at step 100; a working run lowers it by more than 0.2%.');
    expect(final[0]!.suggestion).toMatch(/^Check that the captions describe the images: /);
  });

  test('lr 0 without validation or rate: 100 steps of draw noise are too few for the training loss to call it flat, so it stays quiet', () => {
    expect(codes(diagnoseDenoising(recorded('lr0', { validation: false, learningRate: false })))).toEqual(['healthy']);
  });

  test("the text rules miss lr 0.5's blow-up without validation (their rise must be a whole nat): why these runs get their own", () => {
    expect(codes(diagnose({ ...recorded('lr05', { validation: false }), loss: 'causal_lm' }))).not.toContain('diverged');
    expect(codes(diagnose(recorded('lr05', { validation: false })))).toEqual(['diverged']);
  });
});

// ---------------------------------------------------------------- synthetic edge cases

/** mulberry32, then Box–Muller: the same noise on every machine. */
function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

interface SyntheticSpec {
  readonly steps: number;
  /** The noiseless training loss at step s (1-based). */
  readonly loss: (step: number) => number;
  /** Draw noise, multiplicative, per step: 0.27 is what the lr 0 run measured at fixed weights. */
  readonly noise?: number;
  readonly seed?: number;
  /** Validation loss at each evaluation (step 0 first), every evalEvery steps. */
  readonly evalEvery?: number;
  readonly evalLoss?: (step: number) => number;
  readonly learningRate?: number;
}

function synthetic(spec: SyntheticSpec): RunHistory {
  const noise = gaussian(spec.seed ?? 1);
  const trainLoss: CurvePoint[] = [];
  const evalLoss: CurvePoint[] = [];
  if (spec.evalEvery && spec.evalLoss) evalLoss.push({ step: 0, value: spec.evalLoss(0) });
  for (let step = 1; step <= spec.steps; step++) {
    trainLoss.push({ step, value: Math.max(0.001, spec.loss(step) * (1 + (spec.noise ?? 0.27) * noise())) });
    if (spec.evalEvery && spec.evalLoss && step % spec.evalEvery === 0) evalLoss.push({ step, value: spec.evalLoss(step) });
  }
  const learningRate = trainLoss.map((p) => ({ step: p.step, value: spec.learningRate ?? 1e-4 }));
  return { loss: 'denoising', trainLoss, evalLoss, gradNorm: [], learningRate, totalSteps: spec.steps };
}

const falling = (step: number) => 0.1 + 0.1 * Math.exp(-step / 30);
/** A fixed-noise validation loss that falls from 0.3 to a floor. */
const valFalling = (step: number) => 0.2 + 0.1 * Math.exp(-step / 30);

describe('diverged', () => {
  test('a NaN training or validation loss, at its step, before anything else', () => {
    const h = synthetic({ steps: 40, loss: falling, evalEvery: 10, evalLoss: (s) => (s === 30 ? Number.NaN : valFalling(s)) });
    expect(diagnoseDenoising(h).map((f) => [f.code, f.step])).toEqual([['diverged', 30]]);
    const t = synthetic({ steps: 40, loss: (s) => (s === 12 ? Number.POSITIVE_INFINITY : falling(s)) });
    expect(diagnoseDenoising(t).map((f) => [f.code, f.step])).toEqual([['diverged', 12]]);
    // Even before minPoints steps.
    expect(codes(diagnoseDenoising(synthetic({ steps: 3, loss: (s) => (s === 2 ? Number.NaN : 0.2) })))).toEqual(['diverged']);
  });

  test('five skipped updates in a row (the trainer stops there)', () => {
    const h = synthetic({ steps: 20, loss: falling });
    const skipped = [1, 2, 3, 4, 5].map((inRow) => ({ step: 21, inRow, problem: 'the loss was NaN' }));
    expect(diagnoseDenoising({ ...h, skippedUpdates: skipped }).map((f) => [f.code, f.step])).toEqual([['diverged', 21]]);
    expect(codes(diagnoseDenoising({ ...h, skippedUpdates: skipped.slice(0, 4) }))).toEqual(['healthy']);
  });

  test('the validation loss at 2× its start at two evaluations in a row; one such evaluation is not enough', () => {
    const twice = synthetic({ steps: 40, loss: falling, evalEvery: 10, evalLoss: (s) => (s >= 20 ? 0.61 : 0.3) });
    expect(diagnoseDenoising(twice).map((f) => [f.code, f.step])).toEqual([['diverged', 20]]);
    const once = synthetic({ steps: 40, loss: falling, evalEvery: 10, evalLoss: (s) => (s === 30 ? 0.9 : valFalling(s)) });
    expect(codes(diagnoseDenoising(once))).toEqual(['healthy']);
    // 1.9× at every evaluation is far too high, but not blown up.
    const high = synthetic({ steps: 40, loss: falling, evalEvery: 10, evalLoss: (s) => (s === 0 ? 0.3 : 0.57) });
    expect(diagnoseDenoising(high).map((f) => [f.code, f.step])).toEqual([['lr_too_high', 10]]);
  });

  test('no judgement before minPoints steps except NaN: a validation loss 4× its start at steps 3 and 6 waits for step 8', () => {
    const h = synthetic({ steps: 8, loss: falling, evalEvery: 3, evalLoss: (s) => (s === 0 ? 0.3 : 1.2) });
    expect(codes(diagnoseDenoising(prefix(h, 7)))).toEqual(['healthy']);
    expect(diagnoseDenoising(prefix(h, 7))[0]!.message).toBe('Only 7 training-loss points so far (8 are needed to judge).');
    expect(diagnoseDenoising(h).map((f) => [f.code, f.step])).toEqual([['diverged', 3]]);
  });
});

describe('lr_too_high', () => {
  test('the validation loss 5% above its start at two evaluations in a row', () => {
    const h = synthetic({ steps: 60, loss: falling, evalEvery: 10, evalLoss: (s) => (s < 30 ? valFalling(s) : 0.3 * 1.06) });
    const fs = diagnoseDenoising(h);
    expect(fs.map((f) => [f.code, f.step])).toEqual([['lr_too_high', 30]]);
    expect(fs[0]!.suggestion).toMatch(/^Halve the UNet's learning rate \(unet_lr when set, else learning_rate\) from 1e-4 to 5e-5; add warmup_steps/);
    // 4% above is not yet.
    const near = synthetic({ steps: 60, loss: falling, evalEvery: 10, evalLoss: (s) => (s < 30 ? valFalling(s) : 0.3 * 1.04) });
    expect(codes(diagnoseDenoising(near))).not.toContain('lr_too_high');
  });

  test('the smoothed training loss bouncing back up 1.5× above its best for 20 windows; a 10-step burst is not', () => {
    const bounce = synthetic({ steps: 120, loss: (s) => (s < 50 ? falling(s) : 0.4), seed: 3 });
    const calls = live(bounce);
    expectStable(calls);
    expect(codes(calls.at(-1)!)).toEqual(['lr_too_high']);
    const burst = synthetic({ steps: 120, loss: (s) => (s >= 50 && s < 60 ? 0.5 : falling(s)), seed: 3 });
    expect(codes(diagnoseDenoising(burst))).toEqual(['healthy']);
  });
});

describe('overfitting', () => {
  /** Falls to 0.2 at step 40, then rises 2% per evaluation: the fourth rise (step 80) is 8% above the lowest. */
  const valUShape = (s: number) => (s <= 40 ? 0.3 - 0.0025 * s : 0.2 * (1 + 0.02 * ((s - 40) / 10)));

  test('the validation loss rises 4 evaluations in a row, more than 3% above its lowest, while the training loss keeps falling', () => {
    const h = synthetic({ steps: 100, loss: falling, evalEvery: 10, evalLoss: valUShape });
    const calls = live(h);
    expectStable(calls);
    const fs = calls.at(-1)!;
    expect(fs.map((f) => [f.code, f.step, f.bestStep])).toEqual([['overfitting', 80, 40]]);
    expect(firstCall(calls, 'overfitting')).toBe(80);
    expect(fs[0]!.message).toBe(
      'The validation loss rose for 4 evaluations in a row, from 0.2 at step 40 to 0.216 at step 80, while the training loss did not rise: the adapter is memorizing the training images.',
    );
    expect(fs[0]!.suggestion).toMatch(/adapter at step 40 generalizes best.*early_stopping_patience to 4.*lora_dropout/);
  });

  test('not when the training loss rises too (unstable updates, not memorizing), nor when the validation sets a new low', () => {
    const rising = synthetic({ steps: 100, loss: (s) => (s <= 40 ? falling(s) : falling(40) * (1 + (s - 40) / 20)), noise: 0.05, evalEvery: 10, evalLoss: valUShape });
    expect(codes(diagnoseDenoising(rising))).not.toContain('overfitting');
    const recovered = synthetic({ steps: 120, loss: falling, evalEvery: 10, evalLoss: (s) => (s === 120 ? 0.19 : valUShape(s)) });
    expect(codes(diagnoseDenoising(recovered))).toEqual(['healthy']);
  });

  test('three rises, or four rises of 2.4% in all, are not enough', () => {
    const three = synthetic({ steps: 70, loss: falling, evalEvery: 10, evalLoss: valUShape });
    expect(codes(diagnoseDenoising(three))).toEqual(['healthy']);
    const two = synthetic({ steps: 60, loss: falling, evalEvery: 10, evalLoss: valUShape });
    expect(codes(diagnoseDenoising(two))).toEqual(['healthy']);
    const small = synthetic({ steps: 80, loss: falling, evalEvery: 10, evalLoss: (s) => (s <= 40 ? valUShape(s) : 0.2 * (1 + 0.006 * ((s - 40) / 10))) });
    expect(codes(diagnoseDenoising(small))).toEqual(['healthy']);
  });
});

describe('not_learning', () => {
  test('a validation loss within 0.2% of its start, judged from 30% of the planned steps, cleared once it falls', () => {
    const flat = synthetic({ steps: 200, loss: () => 0.2, evalEvery: 10, evalLoss: (s) => 0.3 * (1 - 0.000005 * s) });
    const calls = live(flat);
    expectStable(calls);
    // min(30 steps, 30% of 200) = 30: evaluations at 30 and 40.
    expect(firstCall(calls, 'not_learning')).toBe(40);
    expect(calls.at(-1)!.map((f) => [f.code, f.step])).toEqual([['not_learning', 30]]);

    const late = synthetic({ steps: 200, loss: () => 0.2, evalEvery: 10, evalLoss: (s) => (s < 100 ? 0.3 : 0.29) });
    const lateCalls = live(late);
    expect(firstCall(lateCalls, 'not_learning')).toBe(40);
    expect(codes(lateCalls.at(-1)!)).toEqual(['healthy']);
    // A drop of 0.3% by the first judged evaluation is learning.
    const slow = synthetic({ steps: 200, loss: () => 0.2, evalEvery: 10, evalLoss: (s) => 0.3 * (1 - 0.0001 * s) });
    expect(live(slow).every((fs) => codes(fs).join() === 'healthy')).toBe(true);
  });

  test('without validation: a flat training loss with the measured draw noise is called after a few hundred steps; a 30% fall never', () => {
    // Gaussian noise of 27% per step: 16 of 20 seeds are called by step 400 (the first at step 112, most at 180–300); seed 3 at 186.
    const flat = synthetic({ steps: 400, loss: () => 0.2, seed: 3, learningRate: 1e-4 });
    const fs = diagnoseDenoising(flat);
    expect(codes(fs)).toEqual(['not_learning']);
    expect(fs[0]!.step).toBeGreaterThan(30);
    expect(fs[0]!.message).toMatch(/^The training loss has not gone down: its trend line starts at 0\.\d+ and the last 20 steps to step 400 sit at 0\.\d+\.$/);
    expect(fs[0]!.suggestion).toMatch(/^Check that the captions describe the images: .* learning rate \(1e-4\) may be too low: try 1e-3/);
    for (const seed of [1, 2, 3, 4, 5]) {
      const learning = synthetic({ steps: 400, loss: (s) => 0.2 * (1 - (0.3 * s) / 400), seed });
      expect(codes(diagnoseDenoising(learning)), `seed ${seed}`).toEqual(['healthy']);
    }
  });
});

describe('API', () => {
  test('text runs are judged exactly as before: no loss field and causal_lm give the same findings', () => {
    const text: RunHistory = {
      trainLoss: Array.from({ length: 60 }, (_, i) => ({ step: i + 1, value: 3 })),
      evalLoss: [],
      gradNorm: [],
      learningRate: Array.from({ length: 60 }, (_, i) => ({ step: i + 1, value: 2e-4 })),
      totalSteps: 60,
    };
    const before = diagnose(text);
    expect(codes(before)).toEqual(['not_learning']);
    expect(before[0]!.message).toMatch(/nats/);
    expect(diagnose({ ...text, loss: 'causal_lm' })).toEqual(before);
    // The same curve as a diffusion run is judged by the denoising rules (no nats, no statistical call on 60 flat steps).
    expect(diagnose({ ...text, loss: 'denoising' })).toEqual(diagnoseDenoising({ ...text, loss: 'denoising' }));
  });

  test('bad options are a RangeError; text thresholds do not apply to a denoising run', () => {
    const h = recorded('healthy');
    expect(() => diagnose(h, { windowPoints: 12 })).toThrow(/diagnoseDenoising/);
    expect(() => diagnoseDenoising(h, { smoothPoints: 2 })).toThrow(/smoothPoints must be at least 3/);
    expect(() => diagnoseDenoising(h, { divergeRatio: 1 })).toThrow(/divergeRatio must be above 1/);
    expect(() => diagnoseDenoising(h, { valConfirmEvals: 1.5 })).toThrow(/whole number/);
    expect(() => diagnoseDenoising(h, { windowPoints: 12 } as Partial<DenoisingThresholds>)).toThrow(/unknown denoising threshold windowPoints/);
    expect(diagnoseDenoising(h, { smoothPoints: undefined })).toEqual(diagnoseDenoising(h));
    expect(Object.isFrozen(DEFAULT_DENOISING_THRESHOLDS)).toBe(true);
  });

  test('every message is one sentence without nats; every suggestion names a config key', () => {
    const findings = [
      ...diagnoseDenoising(recorded('lr05')),
      ...diagnoseDenoising(recorded('lr05', { validation: false })),
      ...diagnoseDenoising(recorded('lr0', { learningRate: false })),
      ...diagnoseDenoising(recorded('lr0')),
      ...diagnoseDenoising(synthetic({ steps: 100, loss: falling, evalEvery: 10, evalLoss: (s) => (s <= 40 ? 0.3 - 0.0025 * s : 0.2 * (1 + 0.02 * ((s - 40) / 10))) })),
      ...diagnoseDenoising(synthetic({ steps: 60, loss: falling, evalEvery: 10, evalLoss: (s) => (s < 30 ? valFalling(s) : 0.32) })),
    ];
    expect(new Set(codes(findings))).toEqual(new Set(['diverged', 'not_learning', 'overfitting', 'lr_too_high']));
    for (const f of findings) {
      expect(f.message, f.code).toMatch(/^[A-Z][^]*\.$/);
      expect(f.message.slice(0, -1), f.code).not.toMatch(/\.\s/);
      expect(f.message, f.code).not.toMatch(/nats/);
      expect(f.suggestion, f.code).toMatch(/learning_rate|unet_lr|warmup_steps|max_steps|epochs|lora_dropout|early_stopping_patience/);
    }
  });

  test('diagnosisCallbacks({ loss: "denoising" }) judges with the denoising rules and stops the lr 0.5 run at step 10', async () => {
    const run = RECORDED['lr05']!;
    const reported: Finding[][] = [];
    const callbacks = diagnosisCallbacks({ totalSteps: run.totalSteps, loss: 'denoising', onFindings: (f) => void reported.push(f) });
    await callbacks.onEval!({ step: 0, loss: run.eval[0]![1] });
    let stoppedAt = 0;
    for (let i = 0; i < run.train.length && stoppedAt === 0; i++) {
      const step = i + 1;
      const m: StepMetrics = { step, epoch: step / 5, loss: run.train[i]!, gradNorm: 1, learningRate: run.learningRate, tokensPerSecond: 0, secondsLeft: 0, skippedSteps: 0 };
      if ((await callbacks.onStepEnd!(m)) !== undefined) stoppedAt = step;
      const evalAt = run.eval.find(([s]) => s === step);
      if (evalAt && (await callbacks.onEval!({ step, loss: evalAt[1] })) !== undefined) stoppedAt = step;
    }
    expect(stoppedAt).toBe(10);
    expect(callbacks.history().loss).toBe('denoising');
    expect(reported.at(-1)!.map((f) => [f.code, f.step])).toEqual([['diverged', 5]]);
    // A text run's callbacks are unchanged: the same curve is no divergence in nats.
    expect(diagnosisCallbacks({ totalSteps: 100, onFindings: () => {} }).history().loss).toBe('causal_lm');
  });

  test('the Diffusion runs thresholds table in README.md matches DEFAULT_DENOISING_THRESHOLDS', () => {
    const readme = readFileSync(new URL('../../src/core/diagnose/README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('## Diffusion runs'));
    const table = new Map([...section.matchAll(/^\| (\w+) \| ([\d.]+) \|/gm)].map((m) => [m[1]!, Number(m[2])]));
    expect(Object.fromEntries(table)).toEqual({ ...DEFAULT_DENOISING_THRESHOLDS });
  });
});
