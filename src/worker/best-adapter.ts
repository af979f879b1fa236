import type { AdapterOrigin } from '../core/export/run-summary';
import type { BestEval } from '../core/train/checkpoint';
import type { TrainerCallbacks } from '../core/train';
import { KEEP_CHECKPOINTS } from '../storage/checkpoints';
import { dropKeptAdapters, keepAdapter, readKeptAdapter, type AdapterFiles } from '../storage/best-adapter';
import type { LoraLabDb } from '../storage/db';

/** Where the last adapter goes in the output folder when the best one takes the top level. */
export const LAST_ADAPTER_DIR = 'last/';

/** The best evaluation so far: its step and loss. */
export interface BestPoint {
  readonly step: number;
  readonly loss: number;
}

export interface BestAdapterKeeper {
  /** onEval keeps the adapter of each new best; onCheckpoint notes which kept adapter a checkpoint relies on. */
  readonly callbacks: TrainerCallbacks;
  /** The best evaluation so far (the checkpoint's on a resume), or null before any. */
  best(): BestPoint | null;
  /**
   * The run's adapter files for its output folder, given the last adapter's: with a kept best, the best at the top
   * level and the last under last/; otherwise the last alone. Also says which step the top-level adapter is from.
   */
  outputFiles(last: AdapterFiles, lastStep: number): Promise<{ files: Record<string, Uint8Array | string>; origin: AdapterOrigin }>;
  /** Deletes the kept adapters once the output folder is stored. */
  discard(): Promise<void>;
}

/**
 * Keeps the adapter of the run's best evaluation in IndexedDB, replaced only when an evaluation beats it (strictly
 * lower, as the trainer's BestEval and early stopping count it). Held as run artifacts (storage/best-adapter.ts).
 *
 * A resume continues from a checkpoint whose BestEval names a step: that step's kept adapter stays stored until
 * the run ends, even when later evaluations (undone by the rewind, or new ones) beat it, because the last
 * KEEP_CHECKPOINTS checkpoints may each be the one resumed from. So the kept set is the current best plus the
 * bests the newest checkpoints point at: at most KEEP_CHECKPOINTS + 1 adapters, each a few MB at most.
 */
export function bestAdapterKeeper(
  db: LoraLabDb,
  runId: string,
  exportAdapter: () => Promise<AdapterFiles>,
  resumedBest: BestEval | null,
  /** How a write goes to storage: the run passes its full-disk pause (storage-full.ts), so a full disk waits, not fails. */
  write: <T>(what: string, store: () => Promise<T>) => Promise<T> = (_what, store) => store(),
): BestAdapterKeeper {
  let best: BestPoint | null = resumedBest === null ? null : { step: resumedBest.step, loss: resumedBest.loss };
  // The best steps of the newest checkpoints, newest last (on a resume: the one resumed from).
  const pinned: (number | null)[] = [resumedBest?.step ?? null];

  return {
    callbacks: {
      async onEval({ step, loss }) {
        // NaN never becomes the best: an adapter that scores NaN is not one to hand out.
        if (!Number.isFinite(loss) || (best !== null && !(loss < best.loss))) return;
        const files = await exportAdapter();
        const keep = new Set(pinned.filter((s): s is number => s !== null));
        await write(`best adapter (step ${step})`, () => keepAdapter(db, runId, step, files, keep));
        best = { step, loss };
      },
      onCheckpoint(ck) {
        pinned.push(ck.bestEval?.step ?? null);
        while (pinned.length > KEEP_CHECKPOINTS) pinned.shift();
      },
    },
    best: () => best,
    async outputFiles(last, lastStep) {
      const lastOnly = { files: { ...last }, origin: { best_eval: best === null ? null : { step: best.step, eval_loss: best.loss }, adapter_from_step: lastStep } };
      if (best === null) return lastOnly;
      // A run resumed from a checkpoint written before this feature has no kept adapter: its last one is what there is.
      const kept = await readKeptAdapter(db, runId, best.step);
      if (kept === null) return lastOnly;
      const files: Record<string, Uint8Array | string> = { ...kept };
      for (const [name, bytes] of Object.entries(last)) files[`${LAST_ADAPTER_DIR}${name}`] = bytes;
      return { files, origin: { best_eval: { step: best.step, eval_loss: best.loss }, adapter_from_step: best.step } };
    },
    discard: () => dropKeptAdapters(db, runId),
  };
}
