import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  DEFAULT_THRESHOLDS,
  diagnose,
  shouldStop,
  type CurvePoint,
  type Finding,
  type FindingCode,
  type RunHistory,
  type Thresholds,
} from '../../src/core/diagnose';

// ---------------------------------------------------------------- synthetic runs

/** mulberry32: tiny, seedable, good enough to make noise that is the same on every machine. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal noise (Box–Muller) from a uniform source. */
function gaussian(uniform: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

interface RunSpec {
  /** Logged training-loss points. */
  readonly points: number;
  /** The noiseless loss at logged point i. */
  readonly loss: (i: number) => number;
  /** Multiplicative noise: each logged value is loss(i)·(1 + noise·N(0,1)). */
  readonly noise?: number;
  readonly seed?: number;
  /** Optimizer steps per logged point (log_steps). */
  readonly every?: number;
  /** Planned optimizer steps; defaults to exactly the logged span. */
  readonly totalSteps?: number;
  /** Learning rate at logged point i; defaults to 2e-4 with a warmup over the first 5 points. */
  readonly lr?: (i: number) => number;
  /** Gradient norm at logged point i (noise added); defaults to a healthy slow decay. */
  readonly grad?: (i: number) => number;
  /** Eval every this many logged points, with evalLoss(k) for the k-th evaluation. */
  readonly evalEvery?: number;
  readonly evalLoss?: (k: number) => number;
  readonly evalNoise?: number;
}

const EVERY = 10;

function makeRun(spec: RunSpec): RunHistory {
  const every = spec.every ?? EVERY;
  const noise = gaussian(prng(spec.seed ?? 1));
  const trainLoss: CurvePoint[] = [];
  const gradNorm: CurvePoint[] = [];
  const learningRate: CurvePoint[] = [];
  const evalLoss: CurvePoint[] = [];
  for (let i = 0; i < spec.points; i++) {
    const step = (i + 1) * every;
    trainLoss.push({ step, value: spec.loss(i) * (1 + (spec.noise ?? 0) * noise()) });
    gradNorm.push({ step, value: (spec.grad ?? ((j) => 0.6 + Math.exp(-j / 30)))(i) * (1 + 0.15 * noise()) });
    learningRate.push({ step, value: (spec.lr ?? ((j) => 2e-4 * Math.min(1, (j + 1) / 5)))(i) });
    if (spec.evalEvery && spec.evalLoss && (i + 1) % spec.evalEvery === 0) {
      const k = (i + 1) / spec.evalEvery - 1;
      evalLoss.push({ step, value: spec.evalLoss(k) * (1 + (spec.evalNoise ?? 0) * noise()) });
    }
  }
  return { trainLoss, evalLoss, gradNorm, learningRate, totalSteps: spec.totalSteps ?? spec.points * every };
}

/** The history as it looked right after logged training point `count` (1-based). */
function prefix(h: RunHistory, count: number): RunHistory {
  const last = h.trainLoss[count - 1]?.step ?? 0;
  const upTo = (c: readonly CurvePoint[]) => c.filter((p) => p.step <= last);
  return { ...h, trainLoss: h.trainLoss.slice(0, count), evalLoss: upTo(h.evalLoss), gradNorm: upTo(h.gradNorm), learningRate: upTo(h.learningRate) };
}

/** Every call the trainer would make during the run, in order. */
function live(h: RunHistory, options?: Partial<Thresholds>): Finding[][] {
  return h.trainLoss.map((_, i) => diagnose(prefix(h, i + 1), options));
}

const codes = (fs: readonly Finding[]) => fs.map((f) => f.code);
const stepOf = (i: number) => (i + 1) * EVERY;
function only(fs: readonly Finding[], code: FindingCode): Finding {
  const f = fs.find((x) => x.code === code);
  if (!f) throw new Error(`expected a ${code} finding, got ${JSON.stringify(fs, null, 1)}`);
  return f;
}

/** A healthy fine-tune: a fast then slow exponential decay from start to floor. */
const decay = (start: number, floor: number, tau: number) => (i: number) => floor + (start - floor) * Math.exp(-i / tau);

const SEEDS = [1, 2, 3, 4, 5, 6];

// ---------------------------------------------------------------- healthy

describe('healthy runs', () => {
  test.each([0.01, 0.03, 0.06, 0.1])('exponential decay with %s noise is healthy at every call, for several seeds', (noise) => {
    for (const seed of SEEDS) {
      const h = makeRun({
        points: 150,
        loss: decay(3.2, 1.4, 25),
        noise,
        seed,
        evalEvery: 10,
        evalLoss: decay(3.1, 1.6, 2.5),
        evalNoise: 0.002,
      });
      for (const fs of live(h)) expect(codes(fs), `seed ${seed}`).toEqual(['healthy']);
    }
  });

  test('says how far the loss fell, in nats, and that nothing needs changing, once', () => {
    const [f] = diagnose(makeRun({ points: 60, loss: decay(3.1, 2.4, 8) }));
    expect(f).toMatchObject({ code: 'healthy', severity: 'info', step: 600 });
    expect(f!.message).toBe('The training loss fell from 3.10 nats to 2.40 nats.');
    // Shown together as "message suggestion": they used to read "…; nothing to fix. Nothing to change."
    expect(f!.suggestion).toBe('Nothing to change.');
    expect(`${f!.message} ${f!.suggestion}`).not.toMatch(/nothing to fix/i);
  });

  test('too few points: too early to judge', () => {
    const fs = diagnose(makeRun({ points: 5, loss: () => 3 }));
    expect(codes(fs)).toEqual(['healthy']);
    expect(fs[0]!.message).toMatch(/^Only 5 training-loss points so far/);
  });

  test('nothing logged yet', () => {
    const fs = diagnose({ trainLoss: [], evalLoss: [], gradNorm: [], learningRate: [], totalSteps: 100 });
    expect(fs).toEqual([expect.objectContaining({ code: 'healthy', severity: 'info', step: 0 })]);
    expect(shouldStop(fs)).toBe(false);
  });
});

// ---------------------------------------------------------------- diverged

describe('diverged', () => {
  test('a NaN training loss is an error at its step, with the learning rate cut to a third', () => {
    const base = makeRun({ points: 50, loss: decay(3.2, 1.4, 15), noise: 0.03 });
    const trainLoss = base.trainLoss.map((p, i) => (i === 40 ? { ...p, value: Number.NaN } : p));
    const fs = diagnose({ ...base, trainLoss });
    expect(fs).toHaveLength(1);
    expect(fs[0]).toMatchObject({ code: 'diverged', severity: 'error', step: stepOf(40) });
    expect(fs[0]!.message).toContain('NaN');
    expect(fs[0]!.suggestion).toContain('learning_rate');
    expect(fs[0]!.suggestion).toContain('from 2e-4 to 6.7e-5');
    expect(shouldStop(fs)).toBe(true);
  });

  test('an infinite eval loss is an error at the eval step', () => {
    const base = makeRun({ points: 40, loss: decay(3.2, 1.4, 15), noise: 0.03, evalEvery: 10, evalLoss: decay(3, 1.6, 2) });
    const evalLoss = base.evalLoss.map((p, k) => (k === 2 ? { ...p, value: Number.POSITIVE_INFINITY } : p));
    const fs = diagnose({ ...base, evalLoss });
    expect(fs).toEqual([expect.objectContaining({ code: 'diverged', severity: 'error', step: 300 })]);
    expect(fs[0]!.message).toMatch(/eval loss became infinite at step 300/);
  });

  test('NaN is caught even before there are enough points to judge anything else', () => {
    const trainLoss = [
      { step: 1, value: 3.1 },
      { step: 2, value: Number.NaN },
    ];
    const fs = diagnose({ trainLoss, evalLoss: [], gradNorm: [], learningRate: [], totalSteps: 100 });
    expect(fs[0]).toMatchObject({ code: 'diverged', step: 2 });
    // No learning-rate history: no numbers to quote, still the key to change.
    expect(fs[0]!.suggestion).toBe('Lower learning_rate to about a third of its current value and train again.');
  });

  test('a loss that shoots far above its start and stays there diverged where the climb began', () => {
    const fs = diagnose(makeRun({ points: 50, loss: (i) => (i < 40 ? decay(3.2, 1.4, 15)(i) : 6 + (i - 40) * 0.5), noise: 0.02, seed: 3 }));
    expect(fs).toHaveLength(1);
    expect(fs[0]).toMatchObject({ code: 'diverged', severity: 'error', step: stepOf(40) });
    expect(fs[0]!.message).toMatch(/^The training loss climbed to 6\.\d\d nats at step 410, far above its start of 2\.\d\d nats/);
    expect(shouldStop(fs)).toBe(true);
  });

  test('no warmup in the learning-rate history: the suggestion adds warmup_steps', () => {
    const fs = diagnose(makeRun({ points: 50, loss: (i) => (i < 40 ? 3 : 9), lr: () => 3e-4, totalSteps: 2000 }));
    expect(fs[0]!.code).toBe('diverged');
    expect(fs[0]!.suggestion).toBe(
      'Lower learning_rate to about a third, from 3e-4 to 1e-4, and train again; also set warmup_steps to about 100 so the first updates are small.',
    );
  });

  test('near miss: one or two points far above the start, then recovery, is not divergence (nor lr_too_high)', () => {
    for (const spikes of [[30], [30, 31], [20, 45]]) {
      const h = makeRun({ points: 80, loss: (i) => (spikes.includes(i) ? 8 : decay(3.2, 1.4, 15)(i)), noise: 0.03 });
      for (const fs of live(h)) expect(codes(fs), `spikes at ${spikes.join(',')}`).toEqual(['healthy']);
    }
  });

  test('near miss: a rise that stays under 1.5× the start is not divergence', () => {
    const fs = diagnose(makeRun({ points: 60, loss: (i) => (i < 30 ? 3 - i * 0.02 : 3.9), noise: 0.01 }));
    expect(codes(fs)).not.toContain('diverged');
  });

  test('a diverged run reports only that', () => {
    const h = makeRun({
      points: 60,
      loss: (i) => (i < 50 ? 3 : Number.NaN),
      evalEvery: 10,
      evalLoss: (k) => [2, 1.9, 2.1, 2.3, 2.5, 2.7][k]!,
    });
    expect(codes(diagnose(h))).toEqual(['diverged']);
  });
});

// ---------------------------------------------------------------- lr_too_high

/** Healthy down to about 1.2 nats by point 40, then bouncing between 1.45 and 2.35 nats. */
const bounce = (i: number) => (i < 40 ? decay(3.2, 1.2, 8)(i) : i % 2 === 0 ? 1.45 : 2.35);

describe('lr_too_high', () => {
  test('a loss bouncing well above its best: halve the learning rate, lengthen warmup', () => {
    for (const seed of SEEDS) {
      const fs = diagnose(makeRun({ points: 100, loss: bounce, noise: 0.03, seed }));
      expect(codes(fs), `seed ${seed}`).toEqual(['lr_too_high']);
      const f = fs[0]!;
      expect(f.severity).toBe('warning');
      // Seen once more than half of a window is bouncing, confirmed over lrConfirmWindows more.
      expect(f.step).toBeGreaterThanOrEqual(stepOf(40 + DEFAULT_THRESHOLDS.windowPoints / 2));
      expect(f.step).toBeLessThanOrEqual(stepOf(40 + DEFAULT_THRESHOLDS.windowPoints));
      expect(f.message).toMatch(/bounces about 0\.\d\d nats above and below 1\.\d\d nats, well above its best of 1\.\d\d nats\.$/);
      // The default schedule warms up over the first 5 points (50 steps); the proposal doubles that.
      expect(f.suggestion).toBe('Halve learning_rate, from 2e-4 to 1e-4, and lengthen warmup_steps from about 50 to 100 so the first updates are small.');
      expect(shouldStop(fs)).toBe(false);
    }
  });

  test('without warmup in the history the suggestion adds warmup_steps', () => {
    const fs = diagnose(makeRun({ points: 100, loss: bounce, noise: 0.03, lr: () => 5e-4, totalSteps: 4000 }));
    expect(fs[0]!.suggestion).toBe('Halve learning_rate, from 5e-4 to 2.5e-4, and add warmup_steps (about 200) so the first updates are small.');
  });

  test('an exploding gradient norm: found where the median of the last 5 norms crosses 10× the early one', () => {
    const h = makeRun({ points: 80, loss: decay(3.2, 1.4, 15), noise: 0.02, grad: (i) => (i < 60 ? 1 : 30) });
    const fs = diagnose(h);
    expect(codes(fs)).toEqual(['lr_too_high']);
    // Norms 60, 61 and 62 are high: the window of 5 ending at 62 is the first whose median is high.
    expect(fs[0]!.step).toBe(stepOf(62));
    expect(fs[0]!.message).toMatch(/^The gradient norm rose to [\d.]+ by step 630, more than 10 times its early level of [\d.]+\.$/);
  });

  test('a non-finite gradient norm counts as exploded', () => {
    const h = makeRun({ points: 40, loss: decay(3.2, 1.4, 15), grad: (i) => (i < 30 ? 1 : Number.POSITIVE_INFINITY) });
    expect(only(diagnose(h), 'lr_too_high').step).toBe(stepOf(32));
  });

  test('near miss: one or two gradient-norm spikes are not an explosion', () => {
    const h = makeRun({ points: 80, loss: decay(3.2, 1.4, 15), noise: 0.02, grad: (i) => (i === 50 || i === 52 ? 100 : 1) });
    expect(codes(diagnose(h))).toEqual(['healthy']);
  });

  test('near miss: a large early drop then a plateau at a low level is convergence', () => {
    for (const noise of [0.03, 0.06, 0.1]) {
      for (const seed of SEEDS) {
        const h = makeRun({ points: 150, loss: decay(3.0, 1.0, 3), noise, seed });
        for (const fs of live(h)) expect(codes(fs), `noise ${noise} seed ${seed}`).toEqual(['healthy']);
      }
    }
  });

  test('near miss: a noisy but falling curve', () => {
    for (const seed of SEEDS) {
      const h = makeRun({ points: 200, loss: (i) => 3 - i * 0.006, noise: 0.12, seed });
      for (const fs of live(h)) expect(codes(fs), `seed ${seed}`).toEqual(['healthy']);
    }
  });

  test('near miss: a loss that steps up to a higher level and stays there smoothly is not called lr_too_high', () => {
    // A harder second half of an unshuffled dataset looks like this; without swings, the learning
    // rate is not the likely cause.
    for (const seed of SEEDS) {
      const h = makeRun({ points: 100, loss: (i) => (i < 40 ? decay(3.2, 1.2, 8)(i) : 2.0), noise: 0.04, seed });
      expect(codes(diagnose(h)), `seed ${seed}`).not.toContain('lr_too_high');
      expect(codes(diagnose(h, { lrSwingRel: 0.01 })), `seed ${seed}`).toContain('lr_too_high');
    }
  });

  test('near miss: bouncing, but not far enough above the best level', () => {
    const h = makeRun({ points: 100, loss: (i) => (i < 40 ? decay(3.2, 1.2, 8)(i) : i % 2 === 0 ? 1.1 : 1.6) });
    expect(codes(diagnose(h))).toEqual(['healthy']);
  });

  test('the threshold can be tuned: a lower gap catches that smaller bounce', () => {
    const h = makeRun({ points: 100, loss: (i) => (i < 40 ? decay(3.2, 1.2, 8)(i) : i % 2 === 0 ? 1.1 : 1.6) });
    expect(codes(diagnose(h, { lrGapRel: 0.1 }))).toEqual(['lr_too_high']);
  });
});

// ---------------------------------------------------------------- overfitting

/** Eval losses: down to a low at evaluation 4, then up by 2% per evaluation. */
const overfitEval = (k: number) => (k <= 4 ? 2.6 - 0.2 * k : 1.8 * 1.02 ** (k - 4));

describe('worse than the start', () => {
  /** The shape of the run: a good start, a jump after the first updates, then a level above the start. */
  const jumpThenAbove = (start: number, level: number) => (i: number) => (i === 0 ? start : i < 4 ? level * 1.6 : level);

  test('a loss that jumps after the first updates and settles above its start: lr_too_high, halve the rate', () => {
    const h = makeRun({ points: 60, every: 1, loss: jumpThenAbove(1.95, 3.1), noise: 0.05, lr: () => 0.5 });
    const f = only(diagnose(h), 'lr_too_high');
    expect(f.message).toMatch(/^The training loss jumped to 4\.\d\d nats right after step 1 \(the median of the next 5 steps\) and has sat at about 3\.\d\d nats since step \d+ \(the median of 12 steps\), 1\.\d\d nats \(\d+%\) above its start of \d\.\d\d nats: the updates made the model worse, not better\.$/);
    expect(f.suggestion).toMatch(/^Halve learning_rate, from 0\.5 to 0\.25/);
    // Found at the end of the first of 10 windows in a row above the start: no earlier than the first window (12 points).
    expect(f.step).toBeGreaterThanOrEqual(DEFAULT_THRESHOLDS.windowPoints);
    // Raised once the 10th window confirms it, and from then on at the same step at every call.
    const calls = live(h);
    const raisedAt = calls.findIndex((fs) => codes(fs).includes('lr_too_high'));
    expect(raisedAt + 1).toBe(f.step + DEFAULT_THRESHOLDS.lrConfirmWindows - 1);
    const later = calls.slice(raisedAt).map((fs) => only(fs, 'lr_too_high').step);
    expect(new Set(later)).toEqual(new Set([f.step]));
  });

  test('near miss: a flat, noisy run whose first batch was an easy one is not lr_too_high', () => {
    for (const seed of SEEDS) {
      // The first point 8% under a level that then holds, with 8% noise per step (as in the real runs): the luck of one batch.
      const h = makeRun({ points: 60, every: 1, seed, loss: (i) => (i === 0 ? 2.1 * 0.92 : 2.1), noise: 0.08 });
      for (const fs of live(h)) expect(fs.filter((f) => f.code === 'lr_too_high').map((f) => f.message), `seed ${seed}`).toEqual([]);
    }
  });

  const evalRun = (train: (i: number) => number) => {
    const h = makeRun({ points: 60, every: 1, loss: train, noise: 0.03 });
    return { ...h, evalLoss: [{ step: 0, value: 2.29 }, { step: 30, value: 3.2 }, { step: 60, value: 3.16 }] };
  };

  test('an eval loss above the untrained model\'s (step 0) while the training loss is no better: lr_too_high', () => {
    // The training loss level with its start, so only the eval comparison can find it.
    const fs = diagnose(evalRun(() => 2.6));
    const f = only(fs, 'lr_too_high');
    expect(f.step).toBe(30);
    expect(f.message).toBe("At step 30 the eval loss 3.20 nats is 0.91 nats above the untrained model's 2.29 nats, and the training loss has not fallen either: training has made the model worse.");
    expect(codes(fs)).not.toContain('overfitting');
  });

  test('the same while the training loss fell: overfitting, and the untrained model (step 0) was best', () => {
    const fs = diagnose(evalRun(decay(2.6, 1.2, 10)));
    const f = only(fs, 'overfitting');
    expect(f).toMatchObject({ step: 30, bestStep: 0 });
    expect(f.message).toMatch(/^At step 30 the eval loss 3\.20 nats is 0\.91 nats above the untrained model's 2\.29 nats, while the training loss fell/);
    expect(codes(fs)).not.toContain('lr_too_high');
  });

  test('near miss: an eval loss just above the untrained one (under 5%), or an eval with no step 0, is no finding', () => {
    const small = { ...evalRun(() => 2.6), evalLoss: [{ step: 0, value: 2.29 }, { step: 30, value: 2.29 * 1.04 }] };
    expect(codes(diagnose(small))).toEqual(['healthy']);
    const noStart = { ...evalRun(() => 2.6), evalLoss: [{ step: 30, value: 3.2 }, { step: 60, value: 3.16 }] };
    expect(codes(diagnose(noStart))).toEqual(['healthy']);
  });
});

describe('overfitting', () => {
  test('eval loss rising 3 evaluations in a row while training loss falls', () => {
    const h = makeRun({ points: 100, loss: decay(3.2, 0.8, 30), noise: 0.03, evalEvery: 10, evalLoss: overfitEval });
    const fs = diagnose(h);
    expect(codes(fs)).toEqual(['overfitting']);
    const f = fs[0]!;
    expect(f).toMatchObject({ severity: 'warning', bestStep: 500, step: 800 });
    expect(f.message).toBe(
      'The eval loss rose for 3 evaluations in a row, from 1.80 nats at step 500 to 1.91 nats at step 800, while the training loss kept falling: the adapter is memorizing the training texts.',
    );
    expect(f.suggestion).toBe(
      'The adapter at step 500 generalizes best; train for fewer epochs (the best came at 50% of the planned steps), or set early_stopping_patience to 3 so training stops by itself, and raise lora_dropout (e.g. to 0.1).',
    );
  });

  test('found at the same step, with the same best step, as later evaluations arrive', () => {
    const h = makeRun({ points: 100, loss: decay(3.2, 0.8, 30), noise: 0.03, evalEvery: 10, evalLoss: overfitEval });
    const seen = live(h)
      .map((fs) => fs.find((f) => f.code === 'overfitting'))
      .filter((f) => f !== undefined);
    expect(seen).toHaveLength(100 - 79);
    for (const f of seen) expect(f).toMatchObject({ step: 800, bestStep: 500 });
  });

  test('goes away if the eval loss later sets a new low: it was not overfitting', () => {
    const evalLoss = (k: number) => (k <= 7 ? overfitEval(k) : 1.7);
    const h = makeRun({ points: 100, loss: decay(3.2, 0.8, 30), noise: 0.03, evalEvery: 10, evalLoss });
    expect(codes(diagnose(prefix(h, 80)))).toEqual(['overfitting']);
    expect(codes(diagnose(h))).toEqual(['healthy']);
  });

  test.each([
    ['one bump', [2.6, 2.4, 2.2, 2.3, 2.1, 2.0, 1.95, 1.9, 1.88, 1.87]],
    ['two rises then a fall', [2.6, 2.4, 2.2, 2.3, 2.35, 2.1, 2.0, 1.95, 1.9, 1.88]],
    ['two separate bumps', [2.6, 2.4, 2.5, 2.2, 2.1, 2.2, 2.0, 1.95, 1.97, 1.9]],
    ['two rises at the end', [2.6, 2.4, 2.2, 2.1, 2.0, 1.95, 1.9, 1.88, 1.95, 2.0]],
    ['three tiny rises', [2.6, 2.4, 2.2, 2.1, 2.0, 1.9, 1.902, 1.904, 1.906, 1.908]],
  ])('near miss: %s is not overfitting', (_, evals) => {
    const h = makeRun({ points: 100, loss: decay(3.2, 0.8, 30), noise: 0.03, evalEvery: 10, evalLoss: (k) => evals[k]! });
    expect(codes(diagnose(h))).toEqual(['healthy']);
  });

  test('near miss: eval and training loss rising together is not overfitting', () => {
    const loss = (i: number) => (i < 50 ? decay(3.2, 1.6, 10)(i) : 1.6 + 0.01 * (i - 50));
    const h = makeRun({ points: 100, loss, noise: 0.01, evalEvery: 10, evalLoss: overfitEval });
    expect(codes(diagnose(h))).not.toContain('overfitting');
  });

  test('overfitRises can be raised, e.g. to a patience of 5', () => {
    const h = makeRun({ points: 100, loss: decay(3.2, 0.8, 30), noise: 0.03, evalEvery: 10, evalLoss: overfitEval });
    expect(only(diagnose(h, { overfitRises: 5 }), 'overfitting').step).toBe(1000);
    expect(codes(diagnose(prefix(h, 90), { overfitRises: 5 }))).toEqual(['healthy']);
  });
});

// ---------------------------------------------------------------- not_learning

describe('not_learning', () => {
  test('a flat curve after 20 points: check the data, or a higher learning rate', () => {
    const fs = diagnose(makeRun({ points: 40, loss: () => 3.05, noise: 0.002, totalSteps: 4000 }));
    expect(codes(fs)).toEqual(['not_learning']);
    // Judged from the 20th point; passes there and at the four after, so it dates from the 20th.
    expect(fs[0]).toMatchObject({ severity: 'warning', step: stepOf(19) });
    expect(fs[0]!.message).toMatch(/^The training loss has not gone down: 3\.0\d nats at the start, 3\.0\d nats by step 400\.$/);
    expect(fs[0]!.suggestion).toContain('texts that do not match their labels');
    expect(fs[0]!.suggestion).toContain('learning_rate (2e-4) may be too low: try 5e-4.');
  });

  test('a learning rate of 0 is named as the cause', () => {
    const fs = diagnose(makeRun({ points: 30, loss: () => 2.7, noise: 0.005, lr: () => 0 }));
    expect(codes(fs)).toEqual(['not_learning']);
    expect(fs[0]!.suggestion).toMatch(/^learning_rate is 0, so the weights never change/);
  });

  test('a learning rate of 0 is not learning even while batch noise makes the loss wander down', () => {
    // What a real lr-0 run logs: different batches, the same weights. The statistical rule cannot
    // tell this from slow learning at 8 points; the all-zero learning rate can.
    const fs = diagnose(makeRun({ points: 8, loss: (i) => 4.4 - 0.02 * i, noise: 0.02, lr: () => 0 }));
    expect(codes(fs)).toEqual(['not_learning']);
    expect(fs[0]!.message).toMatch(/learning rate has been 0 at every step/);
    expect(codes(diagnose(makeRun({ points: 7, loss: () => 4.4, noise: 0.02, lr: () => 0 })))).toEqual(['healthy']);
  });

  test('judged at 30% of the planned steps when that comes before 20 points', () => {
    // 30% of 3000 steps is step 900, the 9th point; with the four after it, 13 points confirm it.
    const h = makeRun({ points: 13, loss: () => 3, noise: 0.005, every: 100, totalSteps: 3000 });
    const fs = diagnose(h);
    expect(codes(fs)).toEqual(['not_learning']);
    expect(fs[0]!.step).toBe(900);
    expect(codes(diagnose(prefix(h, 12)))).toEqual(['healthy']);
  });

  test('near miss: a flat curve too short to judge', () => {
    for (const points of [6, 12, 19]) {
      const fs = diagnose(makeRun({ points, loss: () => 3, noise: 0.005, totalSteps: 1000 }));
      expect(codes(fs), `${points} points`).toEqual(['healthy']);
    }
  });

  test('near miss: a slow but real decrease never counts as stuck', () => {
    // 3.0 → 2.4 nats over the run, much of it late: at the 20th point it has fallen only about 6%.
    const slow = (i: number) => 2.4 + 0.6 * (Math.exp(-i / 60) - Math.exp(-100 / 60)) / (1 - Math.exp(-100 / 60));
    for (const noise of [0.01, 0.03, 0.05]) {
      for (const seed of SEEDS) {
        for (const fs of live(makeRun({ points: 100, loss: slow, noise, seed }))) expect(codes(fs), `noise ${noise} seed ${seed}`).toEqual(['healthy']);
      }
    }
  });

  test('near miss: converged in the first few points, then flat for a long time', () => {
    // The trend line over 1000 points barely slopes; the first window below the start says it learned.
    for (const seed of [1, 2, 3]) {
      const h = makeRun({ points: 1000, loss: (i) => (i < 3 ? 3 - i * 0.8 : 1.2), noise: 0.02, seed });
      expect(codes(diagnose(h)), `seed ${seed}`).toEqual(['healthy']);
    }
  });

  test('near miss: fell, then drifted back up part of the way', () => {
    const h = makeRun({ points: 120, loss: (i) => (i < 30 ? decay(3, 1.5, 6)(i) : 1.5 + 0.01 * (i - 30)), noise: 0.01 });
    expect(codes(diagnose(h))).toEqual(['healthy']);
    // Without the guard the trend line alone would call it stuck.
    expect(codes(diagnose(h, { notLearningLearnedDropRel: 1 }))).toEqual(['not_learning']);
  });

  test('a high first point alone does not count as having learned', () => {
    // Flat at 3 nats, swinging ±5% from point to point, but the first logged point came out 12%
    // high: within 3 standard deviations of the points, so not a sign of learning.
    const flat = makeRun({ points: 400, loss: (i) => (i === 0 ? 3.36 : i % 2 === 0 ? 3.15 : 2.85) });
    expect(codes(diagnose(flat))).toEqual(['not_learning']);
    // Judged by the first point alone, 10% below it would have been "learned".
    expect(codes(diagnose(flat, { notLearningLearnedSigmas: 0 }))).toEqual(['healthy']);
  });

  test('stuck, then learning: the finding is raised once and cleared once', () => {
    const h = makeRun({ points: 100, loss: (i) => (i < 40 ? 3 : decay(3, 1.5, 10)(i - 40)), noise: 0.005 });
    const on = live(h).map((fs) => codes(fs).includes('not_learning'));
    expect(transitions(on)).toBe(2);
    expect(on[30]).toBe(true);
    expect(on[99]).toBe(false);
  });

  test('a loss of exactly 0 means nothing is scored: check the masking', () => {
    const fs = diagnose(makeRun({ points: 10, loss: () => 0 }));
    expect(fs).toEqual([expect.objectContaining({ code: 'not_learning', step: stepOf(0) })]);
    expect(fs[0]!.message).toBe('The training loss has been exactly 0 nats since step 10, which means no token is being scored.');
    expect(fs[0]!.suggestion).toMatch(/^Check the masking/);
  });
});

// ---------------------------------------------------------------- stability and API

function transitions(flags: readonly boolean[]): number {
  let n = flags[0] ? 1 : 0;
  for (let i = 1; i < flags.length; i++) if (flags[i] !== flags[i - 1]) n++;
  return n;
}

describe('stability as points arrive', () => {
  const scenarios: [FindingCode, RunHistory][] = [
    ['lr_too_high', makeRun({ points: 120, loss: bounce, noise: 0.05, seed: 9 })],
    ['not_learning', makeRun({ points: 120, loss: () => 2.8, noise: 0.03, seed: 9 })],
    ['overfitting', makeRun({ points: 120, loss: decay(3.2, 0.8, 30), noise: 0.05, seed: 9, evalEvery: 10, evalLoss: overfitEval })],
    ['healthy', makeRun({ points: 200, loss: decay(3.2, 1.4, 25), noise: 0.08, seed: 9 })],
  ];
  test.each(scenarios)('%s: each finding appears at most once, at a step that never moves', (expected, h) => {
    const calls = live(h);
    for (const code of ['diverged', 'lr_too_high', 'overfitting', 'not_learning'] as const) {
      const seen = calls.map((fs) => fs.find((f) => f.code === code));
      expect(transitions(seen.map((f) => f !== undefined)), code).toBeLessThanOrEqual(1);
      expect(new Set(seen.filter((f) => f !== undefined).map((f) => f.step)).size, code).toBeLessThanOrEqual(1);
    }
    // and each scenario does end up showing what it was built to show
    expect(codes(calls.at(-1)!)).toEqual([expected]);
  });

  test('the same answer however the points are delivered: unsorted, or a resumed run that logs steps again', () => {
    const h = makeRun({ points: 100, loss: bounce, noise: 0.03 });
    const shuffled = [...h.trainLoss].reverse();
    // Resumed from the checkpoint at step 600: steps 610 to 700 are logged again, and the values
    // logged the second time are the ones that describe the weights.
    const stale = h.trainLoss.slice(60, 70).map((p) => ({ ...p, value: 99 }));
    const resumed = [...h.trainLoss.slice(0, 60), ...stale, ...h.trainLoss.slice(60)];
    const expected = diagnose(h);
    expect(codes(expected)).toEqual(['lr_too_high']);
    expect(diagnose({ ...h, trainLoss: shuffled })).toEqual(expected);
    expect(diagnose({ ...h, trainLoss: resumed })).toEqual(expected);
  });
});

describe('API', () => {
  test('several findings at once, in step order within a severity', () => {
    const h = makeRun({
      points: 100,
      loss: decay(3.2, 0.8, 30),
      noise: 0.03,
      grad: (i) => (i < 60 ? 1 : 30),
      evalEvery: 10,
      evalLoss: overfitEval,
    });
    const fs = diagnose(h);
    expect(fs.map((f) => [f.code, f.step])).toEqual([
      ['lr_too_high', 630],
      ['overfitting', 800],
    ]);
  });

  test('shouldStop is true only for diverged', () => {
    const f = (code: FindingCode): Finding => ({ code, severity: 'warning', step: 1, message: '', suggestion: '' });
    expect(shouldStop([f('lr_too_high'), f('overfitting'), f('not_learning'), f('healthy')])).toBe(false);
    expect(shouldStop([f('lr_too_high'), f('diverged')])).toBe(true);
    expect(shouldStop([])).toBe(false);
  });

  test('bad options are a RangeError; undefined ones keep the default', () => {
    const h = makeRun({ points: 30, loss: decay(3, 2, 5) });
    expect(() => diagnose(h, { windowPoints: 0 })).toThrow(RangeError);
    expect(() => diagnose(h, { windowPoints: 2 })).toThrow(/windowPoints must be at least 3/);
    expect(() => diagnose(h, { minPoints: 2.5 })).toThrow(/whole number/);
    expect(() => diagnose(h, { divergeRatio: -1 })).toThrow(/divergeRatio/);
    expect(() => diagnose(h, { divergeRatio: Number.NaN })).toThrow(RangeError);
    expect(() => diagnose(h, { nonsense: 1 } as Partial<Thresholds>)).toThrow(/unknown threshold nonsense/);
    expect(diagnose(h, { windowPoints: undefined })).toEqual(diagnose(h));
  });

  test('DEFAULT_THRESHOLDS cannot be changed by accident', () => {
    expect(Object.isFrozen(DEFAULT_THRESHOLDS)).toBe(true);
  });

  test('every message is one sentence; every suggestion names a config key', () => {
    const runs = [
      makeRun({ points: 50, loss: (i) => (i < 40 ? 3 : 9) }),
      makeRun({ points: 100, loss: bounce, noise: 0.03 }),
      makeRun({ points: 100, loss: decay(3.2, 0.8, 30), evalEvery: 10, evalLoss: overfitEval }),
      makeRun({ points: 40, loss: () => 3 }),
    ];
    const keys = /learning_rate|warmup_steps|epochs|lora_dropout|early_stopping_patience/;
    for (const f of runs.flatMap((h) => diagnose(h))) {
      expect(f.code).not.toBe('healthy');
      expect(f.message, f.code).toMatch(/^[A-Z][^]*\.$/);
      expect(f.message.slice(0, -1), f.code).not.toMatch(/\.\s/);
      expect(f.message, f.code).toMatch(/\d nats/);
      expect(f.suggestion, f.code).toMatch(keys);
    }
  });

  test('the thresholds table in README.md matches DEFAULT_THRESHOLDS', () => {
    const readme = readFileSync(new URL('../../src/core/diagnose/README.md', import.meta.url), 'utf8');
    const table = new Map([...readme.matchAll(/^\| `(\w+)` \| ([\d.]+) \|/gm)].map((m) => [m[1]!, Number(m[2])]));
    expect(Object.fromEntries(table)).toEqual({ ...DEFAULT_THRESHOLDS });
  });
});
