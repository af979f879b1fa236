import { UserError } from '../core/errors';
import type { LoraLabDb, StoredRun } from './db';

/** Where a resumed run picks up: its checkpoint's step and the log slices that existed then (see checkpoints.ts). */
export interface RewindPoint {
  readonly step: number;
  readonly logChunks: number;
  /** The best eval loss as of the checkpoint; later evaluations are being undone. */
  readonly bestEvalLoss: number | null;
}

/**
 * Turns an interrupted run back into a running one at `to`, in one transaction: the curve rows after `to.step` and
 * the TensorBoard log slices written after the checkpoint are deleted (the resumed run writes them again, so each
 * step is stored once), and the interruption is added to the run's record. Refused unless the run is interrupted:
 * that, checked inside the transaction, is also what stops two tabs from resuming the same run.
 */
export async function rewindRun(db: LoraLabDb, runId: string, to: RewindPoint): Promise<StoredRun> {
  const tx = db.transaction(['runs', 'metrics', 'logs'], 'readwrite');
  const refuse = (problem: string): never => {
    tx.done.catch(() => undefined); // the abort rejects it; the refusal below is the error to report
    tx.abort();
    throw new UserError('run', problem);
  };
  const run = await tx.objectStore('runs').get(runId);
  if (!run) return refuse('is not stored any more.');
  if (run.status !== 'interrupted') return refuse(`is ${run.status}, not interrupted: only an interrupted run can be resumed.`);
  // The last step it stored anything for: where the interruption struck.
  const last = await tx.objectStore('metrics').openCursor(IDBKeyRange.bound([runId], [runId, []]), 'prev');
  const atStep = last?.value.step ?? 0;
  await tx.objectStore('metrics').delete(IDBKeyRange.bound([runId, to.step], [runId, []], true));
  await tx.objectStore('logs').delete(IDBKeyRange.bound([runId, to.logChunks], [runId, []]));
  const updated: StoredRun = {
    ...run,
    status: 'running',
    step: to.step,
    bestEvalLoss: to.bestEvalLoss,
    error: null,
    interruptions: [...(run.interruptions ?? []), { at_step: atStep, resumed_from_step: to.step }],
    updatedAt: Date.now(),
  };
  await tx.objectStore('runs').put(updated);
  await tx.done;
  return updated;
}
