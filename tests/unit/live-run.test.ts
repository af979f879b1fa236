import { describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import type { MetricRow } from '../../src/storage/db';
import { localLocks } from '../../src/storage/locks';
import { LiveRunChannel, type LiveRunMessage } from '../../src/ui/live-run-channel';
import { addStoredRows, emptyCurves } from '../../src/ui/run-curves';
import { asTheOneTrainer } from '../../src/worker/one-trainer';

// The pieces of "one tab trains, another shows it live" that run without a browser: the one-trainer-per-origin
// lock, the typed channel between tabs, and how a joining tab's stored rows and live points make one curve.

const row = (step: number, extra: Partial<MetricRow> = {}): MetricRow => ({
  runId: 'r',
  step,
  epoch: step / 10,
  loss: 3 - step / 10,
  learningRate: 1e-3,
  gradNorm: 1 + step,
  tokensPerSecond: 100,
  evalLoss: null,
  custom: {},
  ...extra,
});

describe('one training run per origin', () => {
  it('refuses a second tab\'s run while one trains, in one line, and lets it start once that one ends', async () => {
    const origin = localLocks(); // one instance: what Web Locks are to every tab of the origin
    let finish!: () => void;
    const first = asTheOneTrainer(origin, () => new Promise<string>((resolve) => (finish = () => resolve('first done'))));
    await Promise.resolve();
    let secondRan = false;
    const refused = await asTheOneTrainer(origin, async () => (secondRan = true)).catch((e: unknown) => e);
    expect(secondRan).toBe(false);
    expect(isUserError(refused)).toBe(true);
    expect((refused as Error).message).toBe('training: is running in another tab: LoRA Lab trains one run at a time. Wait for that run to end (this tab shows it live), or stop it in its tab.');
    finish();
    await expect(first).resolves.toBe('first done');
    await expect(asTheOneTrainer(origin, async () => 'second done')).resolves.toBe('second done');
  });
});

describe('the live-run channel', () => {
  it('carries typed messages to the other tabs, not back to the sender', async () => {
    const heardByTrainer: LiveRunMessage[] = [];
    const heardByWatcher: LiveRunMessage[] = [];
    const name = `test-${Math.random()}`;
    const trainer = new LiveRunChannel((m) => heardByTrainer.push(m), name);
    const watcher = new LiveRunChannel((m) => heardByWatcher.push(m), name);
    try {
      watcher.post({ type: 'ask' });
      trainer.post({ type: 'event', event: { kind: 'eval', step: 4, loss: 1.5 } });
      trainer.post({ type: 'ended', runId: 'r', reason: 'completed', error: null });
      await expect.poll(() => heardByWatcher.length).toBe(2);
      expect(heardByWatcher).toEqual([
        { type: 'event', event: { kind: 'eval', step: 4, loss: 1.5 } },
        { type: 'ended', runId: 'r', reason: 'completed', error: null },
      ]);
      expect(heardByTrainer).toEqual([{ type: 'ask' }]);
    } finally {
      trainer.close();
      watcher.close();
    }
  });
});

describe('addStoredRows: the curve so far from storage, then the live points', () => {
  it('puts stored steps before the live ones, each step once (a live point wins over its stored copy)', () => {
    const c = emptyCurves();
    // Joined at step 5: steps 5 and 6 arrived live, step 5 also stored meanwhile (with another loss, to tell them apart).
    c.steps.push(5, 6);
    c.loss.push(2.5, 2.4);
    c.learningRate.push(1e-3, 1e-3);
    c.gradNorm.push(6, 7);
    c.tokensPerSecond.push(100, 100);
    c.evalSteps.push(4);
    c.evalLoss.push(2.2);
    const rows = [row(1), row(2), row(3), row(4, { evalLoss: 2.2, custom: { 'train/perplexity': 9 } }), row(5, { loss: 99 }), row(2, { loss: null, evalLoss: 2.6 })];
    addStoredRows(c, rows);
    expect(c.steps).toEqual([1, 2, 3, 4, 5, 6]);
    expect(c.loss).toEqual([2.9, 2.8, 2.7, 2.6, 2.5, 2.4]);
    expect(c.gradNorm).toEqual([2, 3, 4, 5, 6, 7]);
    expect(c.evalSteps).toEqual([2, 4]);
    expect(c.evalLoss).toEqual([2.6, 2.2]);
    expect(c.custom.get('train/perplexity')).toEqual({ steps: [4], values: [9] });
    // Read again (the refill at the first live step): nothing doubles.
    addStoredRows(c, rows);
    expect(c.steps).toEqual([1, 2, 3, 4, 5, 6]);
    expect(c.evalSteps).toEqual([2, 4]);
  });
});
