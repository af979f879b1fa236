/**
 * "A live tab owns this record." Records that a tab is still writing (an import marked `importing`, a run marked
 * `running` or `paused`) look, in IndexedDB, exactly like the leftovers of a tab that crashed. The owner holds a
 * named lock for as long as it writes; a start-up sweep touches only records whose lock nobody holds. A closed,
 * reloaded or crashed tab (or a terminated worker) drops its locks, so its leftovers become sweepable at once.
 *
 * In the browser the locks are Web Locks (`navigator.locks`), shared by every tab and worker of the origin. The
 * interface is small so that Node tests, which have no `navigator.locks`, can pass `localLocks()` (or two
 * separate instances, for two tabs that cannot see each other's locks).
 */
export interface Locks {
  /** Runs `work` holding the exclusive lock `name`, waiting while another holder has it; releases it when work settles. */
  hold<T>(name: string, work: () => Promise<T>): Promise<T>;
  /** Runs `work` holding `name` only if nobody holds or awaits it now; otherwise runs nothing. */
  ifFree<T>(name: string, work: () => Promise<T>): Promise<Taken<T>>;
}

export type Taken<T> = { readonly taken: true; readonly value: T } | { readonly taken: false };

/** The names, one place: a typo in one of two copies would make a lock that protects nothing. */
export const lockName = {
  run: (runId: string) => `lora-lab/run/${runId}`,
  /** Held by the worker that trains, from before its model loads to the run's end: one training run per origin. */
  training: 'lora-lab/training',
  modelImport: (modelId: string) => `lora-lab/import/model/${modelId}`,
  datasetImport: (datasetId: string) => `lora-lab/import/dataset/${datasetId}`,
} as const;

/** Locks through the Web Locks API: seen by every tab and worker of the origin. */
export function webLocks(manager: LockManager): Locks {
  // lib.dom types request() as resolving to the callback's return value itself (here a promise); awaiting it
  // unwraps both, as the API does at run time.
  return {
    async hold<T>(name: string, work: () => Promise<T>): Promise<T> {
      return await manager.request(name, () => work());
    },
    async ifFree<T>(name: string, work: () => Promise<T>): Promise<Taken<T>> {
      return await manager.request(name, { ifAvailable: true }, async (lock): Promise<Taken<T>> =>
        lock === null ? { taken: false } : { taken: true, value: await work() },
      );
    },
  };
}

/**
 * Locks seen only inside this JavaScript realm (one worker, one test): the same semantics as Web Locks' exclusive
 * mode, for Node tests and for a browser context without `navigator.locks` (an insecure origin).
 */
export function localLocks(): Locks {
  // Per name, the promise that settles when the last holder or waiter so far has released it.
  const tails = new Map<string, Promise<void>>();
  async function hold<T>(name: string, work: () => Promise<T>): Promise<T> {
    const previous = tails.get(name) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => mine);
    tails.set(name, tail);
    await previous;
    try {
      return await work();
    } finally {
      release();
      if (tails.get(name) === tail) tails.delete(name);
    }
  }
  return {
    hold,
    async ifFree(name, work) {
      if (tails.has(name)) return { taken: false };
      return { taken: true, value: await hold(name, work) };
    },
  };
}

/**
 * Whether some tab or worker of the origin holds `name` right now, asked without taking it: a tab that only watches
 * (another tab's run) must never hold a lock the owner might want next. Without Web Locks nothing is seen as held.
 */
export async function isLockHeld(name: string): Promise<boolean> {
  const manager = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
  if (!manager) return false;
  return ((await manager.query()).held ?? []).some((lock) => lock.name === name);
}

let fallback: Locks | undefined;

/** The origin-wide Web Locks where the platform has them; otherwise this realm's own (one shared instance). */
export function platformLocks(): Locks {
  const manager = (globalThis as { navigator?: { locks?: LockManager } }).navigator?.locks;
  if (manager) return webLocks(manager);
  fallback ??= localLocks();
  return fallback;
}
