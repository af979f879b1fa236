import type { LossFn } from '../core/train';
import type { RunEvent } from './protocol';

/**
 * The headless runner's `--crash-at-step N`: a crash at a known point, for showing that a resume gives what an
 * uninterrupted run gives. When step N+1 begins (so step N and everything it stores, its checkpoint included, are
 * done), the worker reports `halted` and then never runs another line: no status write, no stop, no lock release.
 * The page is then torn down from outside, which is what a closed tab or a crashed worker looks like to the run.
 */
export function haltingAfter<B>(step: number | undefined, report: (e: RunEvent) => void, lossFn: LossFn<B>): LossFn<B> {
  if (step === undefined) return lossFn;
  return (batch, ctx) => {
    if (ctx.step === step) {
      report({ kind: 'halted', step });
      // A busy loop rather than a throw or self.close(): either of those would still let the run's own error
      // handling write to storage (marking the run failed), which a crash never does.
      for (;;) {
        /* spins until the page is torn down */
      }
    }
    return lossFn(batch, ctx);
  };
}
