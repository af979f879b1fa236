import { isStorageFull } from '../storage/quota';

/**
 * A full disk during a run pauses it instead of failing it. The training run's writes (a curve row, an event-file
 * slice, a checkpoint's adapter files, a checkpoint) go through `write`: when one hits the quota, the run is shown
 * and stored as paused with a message, and the write waits, holding the trainer inside its callback, so no step
 * is taken and nothing is skipped or written twice. Resume tries the same write again (the same bytes: the caller's
 * closure holds them), and the run continues exactly as if the disk had never filled. Everything written before
 * stays as it was: a write that failed on the quota stored nothing (a checkpoint is one transaction).
 *
 * Stop while a write waits tries it once more and, if the disk is still full, lets the error end the run.
 */
export interface StorageFullPause {
  /** Runs `write`; on a full disk, pauses the run and retries after Resume. `what` names it in the message. */
  write<T>(what: string, write: () => Promise<T>): Promise<T>;
  /** Resume was pressed: a waiting write is tried again (and waits again if the disk is still full). */
  resume(): void;
  /** Stop was pressed: a waiting write is tried once more; if it fails again, its error ends the run. */
  stop(): void;
  /** Whether a write is waiting for space now. */
  readonly waiting: boolean;
}

export interface StorageFullHooks {
  /** The run is held for space: show and store it as paused with `message` (best effort: the disk is full). */
  paused(message: string): void;
}

/** The message a person sees: what could not be stored, and what to do. One line. */
export function storageFullMessage(what: string): string {
  return `Storage is full: the run's ${what} could not be stored. Free space (Storage panel) and press Resume.`;
}

export function pauseOnFullStorage(hooks: StorageFullHooks): StorageFullPause {
  let release: ((decision: 'retry' | 'last-try') => void) | null = null;
  let stopping = false;
  return {
    async write<T>(what: string, write: () => Promise<T>): Promise<T> {
      for (;;) {
        try {
          return await write();
        } catch (e) {
          if (!isStorageFull(e) || stopping) throw e;
          hooks.paused(storageFullMessage(what));
          // Stop may come from inside `paused` itself (a listener answering at once): then the last try is now.
          if (stopping) continue;
          const decision = await new Promise<'retry' | 'last-try'>((resolve) => (release = resolve));
          release = null;
          if (decision === 'last-try') stopping = true;
        }
      }
    },
    resume() {
      release?.('retry');
    },
    stop() {
      stopping = true;
      release?.('last-try');
    },
    get waiting() {
      return release !== null;
    },
  };
}
