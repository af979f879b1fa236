import type { LoraLabDb } from '../../../src/storage/db';
import type { RunEvent } from '../../../src/worker/protocol';

/** Anything a dead tab asks for: every property is another void, every call or await never answers. */
const VOID: unknown = new Proxy(() => undefined, { get: () => VOID, apply: () => new Promise(() => undefined) });

/** The database as a tab sees it until it dies: from `dead()` on, no call ever answers (no error, no stop message). */
function mortal(real: LoraLabDb, dead: () => boolean): LoraLabDb {
  return new Proxy(real, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop);
      if (typeof value !== 'function') return value;
      // idb's methods find the underlying IDBDatabase through `this`, so they must stay bound to idb's own proxy.
      return (...args: unknown[]) => (dead() ? VOID : (value as (...a: unknown[]) => unknown).apply(target, args));
    },
  });
}

/**
 * Starts a run (`train`, given the tab's view of `db` and an event listener) in a tab that dies as step
 * `crashAfter + 1` ends, before anything of it is stored; resolves with the run's id.
 */
export async function crashingRun(db: LoraLabDb, train: (tabDb: LoraLabDb, onEvent: (e: RunEvent) => void) => Promise<unknown>, crashAfter: number): Promise<string> {
  let dead = false;
  let runId: string | null = null;
  let resolveFailure!: (e: unknown) => void;
  const failed = new Promise<unknown>((resolve) => (resolveFailure = resolve));
  const reachedCrash = new Promise<void>((resolve) => {
    // Never settles: the dead tab's run is left hanging, as the page's JavaScript is when a tab is killed.
    train(
      mortal(db, () => dead),
      (e) => {
        if (e.kind === 'started') runId = e.runId;
        if (e.kind === 'step' && e.step === crashAfter + 1) {
          dead = true;
          resolve();
        }
      },
    ).catch((e: unknown) => resolveFailure(e));
  });
  // A run that failed instead of hanging would be a broken test, not a crash: say so.
  const outcome = await Promise.race([reachedCrash.then(() => 'crashed'), failed]);
  if (outcome !== 'crashed') throw outcome;
  return runId!;
}
