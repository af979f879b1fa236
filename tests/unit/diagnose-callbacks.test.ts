import { describe, expect, it } from 'vitest';
import { diagnose, type Finding } from '../../src/core/diagnose';
import { diagnosisCallbacks } from '../../src/core/diagnose/callbacks';
import type { StepMetrics } from '../../src/core/train';

// diagnosisCallbacks as the trainer drives it: every step's loss goes in (log_steps plays no part), the findings are
// reported when they change, and on long runs the diagnosis is spaced out without changing what it finds.

const step = (n: number, loss: number): StepMetrics => ({ step: n, epoch: 0, loss, learningRate: 1e-3, gradNorm: 1, tokensPerSecond: 0, secondsLeft: 0, skippedSteps: 0 });
/** A gently falling loss with a little deterministic wobble: healthy. */
const healthyLoss = (n: number) => 2 + Math.exp(-n / 300) + 0.02 * Math.sin(n * 1.7);

describe('diagnosisCallbacks', () => {
  it('judges every step: a 60-step run is judged, whatever log_steps is, and reports a problem when it is confirmed', async () => {
    const reports: Finding[][] = [];
    const cb = diagnosisCallbacks({ totalSteps: 60, onFindings: (f) => void reports.push(f) });
    // The shape of the run: 2.7 at step 1, thrown up to 5.8 right after, then sitting at 3.0–3.5.
    const loss = (n: number) => (n === 1 ? 2.72 : n < 5 ? 5.84 : 3.25 + 0.2 * Math.sin(n * 2.1));
    let raisedAt = 0;
    for (let n = 1; n <= 60; n++) {
      await cb.onStepEnd!(step(n, loss(n)));
      if (!raisedAt && cb.findings().some((f) => f.code === 'lr_too_high')) raisedAt = n;
    }
    await cb.onTrainEnd!({ step: 60, reason: 'completed' });
    expect(cb.history().trainLoss).toHaveLength(60);
    const found = cb.findings().find((f) => f.code === 'lr_too_high')!;
    expect(found.suggestion).toMatch(/^Halve learning_rate, from 1e-3 to 5e-4/);
    // Raised at the very step a diagnosis of the curve so far first finds it (every step judged), well before the end.
    const h = cb.history();
    const firstByReplay = h.trainLoss.findIndex((_, i) =>
      diagnose({ ...h, trainLoss: h.trainLoss.slice(0, i + 1), gradNorm: h.gradNorm.slice(0, i + 1), learningRate: h.learningRate.slice(0, i + 1) }).some((f) => f.code === 'lr_too_high'),
    );
    expect(raisedAt).toBe(firstByReplay + 1);
    expect(raisedAt).toBeLessThan(40);
    expect(reports.findIndex((fs) => fs[0]!.code === 'lr_too_high')).toBeGreaterThanOrEqual(0);
    expect(reports.at(-1)).toEqual(cb.findings());
  });

  it('a long healthy run is reported healthy once, not at every step, and its final words at the end', async () => {
    const reports: Finding[][] = [];
    const cb = diagnosisCallbacks({ totalSteps: 3000, onFindings: (f) => void reports.push(f) });
    for (let n = 1; n <= 3000; n++) await cb.onStepEnd!(step(n, healthyLoss(n)));
    await cb.onTrainEnd!({ step: 3000, reason: 'completed' });
    // "Only 1 training-loss point so far", then the final "fell from … to …": two reports in 3,000 steps.
    expect(reports.map((fs) => fs.map((f) => f.code))).toEqual([['healthy'], ['healthy']]);
    expect(reports.at(-1)).toEqual(diagnose(cb.history()));
  });

  it('on a long run the diagnosis is spaced out, yet a divergence is caught within 1/200 of the run, at its exact step', async () => {
    const cb = diagnosisCallbacks({ totalSteps: 4000, onFindings: () => undefined });
    const blowUpAt = 3001;
    let stoppedAt = 0;
    for (let n = 1; n <= 4000 && !stoppedAt; n++) {
      const result = await cb.onStepEnd!(step(n, n >= blowUpAt ? 9 : healthyLoss(n)));
      if (result && 'stop' in result) stoppedAt = n;
    }
    // The replayed answer is the one a diagnosis at every step would give: diverged where the climb began.
    const expected = diagnose(cb.history());
    expect(expected[0]).toMatchObject({ code: 'diverged', step: blowUpAt });
    expect(cb.findings()).toEqual(expected);
    // Confirmed after 3 points in a row; judged at most ceil(3000 / 200) = 15 steps later than that.
    expect(stoppedAt).toBeGreaterThanOrEqual(blowUpAt + 2);
    expect(stoppedAt).toBeLessThanOrEqual(blowUpAt + 2 + Math.ceil(blowUpAt / 200));
  });
});
