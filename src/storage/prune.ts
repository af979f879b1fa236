import { UserError } from '../core/errors';
import { deleteRecord, DATASET_RECORDS, RUN_RECORDS, slicesOf } from './chunked-records';
import type { LoraLabDb, RunStatus, StoredRun } from './db';
import { lockName, type Locks } from './locks';
import { artifactSize } from './runs';
import { CHECKPOINT_FILE_PREFIX, usesDataset, usesImageDataset } from './usage';
import { deleteImageDataset } from './image-datasets';

/**
 * The Storage panel's one-click deletes. Each refuses, with a message saying why and what to do, what a run still
 * needs: a run some tab trains (its lock is held, or it is stored as running or paused), the checkpoints of a run
 * that can still be resumed, and the dataset of such a run. The deletes themselves are one transaction each.
 */

/** Runs whose checkpoints are of no more use: nothing resumes them. */
const FINISHED: ReadonlySet<RunStatus> = new Set(['completed', 'stopped', 'diverged', 'failed']);

/**
 * Deletes a finished run's checkpoints (for resuming) and the adapters it saved at save_steps (checkpoint-N/), keeping
 * its final adapter, other files, log and curves. Returns the bytes freed.
 */
export async function deleteRunCheckpoints(db: LoraLabDb, runId: string, locks: Locks): Promise<number> {
  return ownedRun(db, runId, locks, async (run) => {
    if (!FINISHED.has(run.status)) {
      throw new UserError(`run "${run.name}"`, `is ${run.status}: its checkpoints are what resuming it starts from.`, 'Resume it to the end or delete the whole run.');
    }
    const tx = db.transaction(['checkpoints', 'checkpointChunks', 'artifacts'], 'readwrite');
    let freed = 0;
    for (const record of await tx.objectStore('checkpoints').getAll(slicesOf(runId))) freed += record.byteLength;
    let cursor = await tx.objectStore('artifacts').openCursor(slicesOf(runId));
    while (cursor) {
      if (cursor.value.path.startsWith(CHECKPOINT_FILE_PREFIX)) {
        freed += artifactSize(cursor.value);
        await cursor.delete();
      }
      cursor = await cursor.continue();
    }
    await tx.objectStore('checkpoints').delete(slicesOf(runId));
    await tx.objectStore('checkpointChunks').delete(slicesOf(runId));
    await tx.done;
    return freed;
  });
}

/** Deletes a run and everything it stored, unless some tab trains it. */
export async function deleteStoredRun(db: LoraLabDb, runId: string, locks: Locks): Promise<void> {
  await ownedRun(db, runId, locks, () => deleteRecord(db, RUN_RECORDS, runId));
}

/** Deletes a dataset no run needs any more (finished runs keep what they produced, not their data). */
export async function deleteUnusedDataset(db: LoraLabDb, datasetId: string): Promise<void> {
  const dataset = await db.get('datasets', datasetId);
  if (!dataset) return;
  const users = (await db.getAll('runs')).filter((r) => (r.status === 'running' || r.status === 'paused' || r.status === 'interrupted') && usesDataset(r, datasetId));
  if (users.length > 0) {
    const names = users.map((r) => `"${r.name}"`).join(', ');
    throw new UserError(`dataset "${dataset.name}"`, `is the data of the run ${names}, which ${users.length > 1 ? 'are' : 'is'} training or can still be resumed.`, 'Let the run end, or delete it, then delete the dataset.');
  }
  await deleteRecord(db, DATASET_RECORDS, datasetId);
}

/**
 * Deletes an image folder (and the latents cached from it) unless an image run trains on it now or, interrupted,
 * can still be resumed from it (as deleteUnusedDataset keeps a text run's data).
 */
export async function deleteUnusedImageDataset(db: LoraLabDb, datasetId: string, locks: Locks): Promise<void> {
  const dataset = await db.get('imageDatasets', datasetId);
  if (!dataset) return;
  for (const run of await db.getAll('runs')) {
    if (!usesImageDataset(run, datasetId)) continue;
    if (run.status === 'interrupted') {
      throw new UserError(`dataset "${dataset.name}"`, `is the data of the run "${run.name}", which can still be resumed.`, 'Resume the run to the end, or delete it, then delete the dataset.');
    }
    if (run.status !== 'running' && run.status !== 'paused') continue;
    const probe = await locks.ifFree(lockName.run(run.id), async () => undefined);
    if (!probe.taken) {
      throw new UserError(`dataset "${dataset.name}"`, `is the data of the run "${run.name}", which is training right now.`, 'Let the run end, or stop it, then delete the dataset.');
    }
  }
  await deleteImageDataset(db, datasetId);
}

/**
 * Runs `work` on the stored run while holding its lock, so that no tab starts or resumes it meanwhile; refuses a
 * run whose lock another holder has (it trains in some tab) or that is stored as running or paused.
 */
async function ownedRun<T>(db: LoraLabDb, runId: string, locks: Locks, work: (run: StoredRun) => Promise<T>): Promise<T> {
  const taken = await locks.ifFree(lockName.run(runId), async () => {
    const run = await db.get('runs', runId);
    if (!run) throw new UserError('run', 'is not stored any more.');
    if (run.status === 'running' || run.status === 'paused') {
      throw new UserError(`run "${run.name}"`, `is ${run.status}.`, 'Stop it first.');
    }
    return work(run);
  });
  if (!taken.taken) {
    const run = await db.get('runs', runId);
    throw new UserError(`run "${run?.name ?? runId}"`, 'is training right now (in this tab or another).', 'Stop it first.');
  }
  return taken.value;
}
