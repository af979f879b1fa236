import { CheckpointFormatError, decodeCheckpoint, encodeCheckpoint } from '../core/train/checkpoint-codec';
import type { TrainerCheckpoint } from '../core/train/checkpoint';
import type { MeasuredSoFar } from '../core/export/run-summary';
import type { LoraLabDb } from './db';
import { deleteSlices, joinSlices, slicesOf } from './chunked-records';
import { isQuotaError, StorageFullError, storageFullIf } from './quota';

/**
 * A run's checkpoints (core/train/checkpoint.ts) in IndexedDB: one record per checkpoint in `checkpoints`, its
 * encoded bytes in slices in `checkpointChunks`.
 *
 * Each checkpoint is written in ONE transaction together with the pruning of older ones: a tab that dies, a full
 * disk or any other failure part-way aborts the whole transaction, so the stored set is always the one before the
 * write or the one after it, never a half-written checkpoint or one pruned before its successor exists.
 */

/** The record of one checkpoint; its bytes are `chunkCount` slices in `checkpointChunks`. */
export interface StoredCheckpoint {
  readonly runId: string;
  /** Optimizer steps done when it was taken. */
  readonly step: number;
  readonly createdAt: number;
  readonly byteLength: number;
  readonly chunkCount: number;
  /**
   * Slices of the run's TensorBoard log (the `logs` store) when it was taken, counted in the same transaction:
   * a resume cuts the log back to them, so the steps after the checkpoint are logged once, by the resumed run.
   */
  readonly logChunks: number;
  /** What run_summary.json counts (step times, peak memory, time) through this step, for a run resumed from it. */
  readonly measured?: MeasuredSoFar;
}

/** A stored checkpoint read back: its record and what it holds. */
export interface LatestCheckpoint {
  readonly record: StoredCheckpoint;
  readonly checkpoint: TrainerCheckpoint;
}

export interface CheckpointChunk {
  readonly runId: string;
  readonly step: number;
  readonly index: number;
  readonly bytes: ArrayBuffer;
}

/** Slices small enough for every browser's IndexedDB to store without trouble, as the other chunked stores use. */
export const CHECKPOINT_CHUNK_BYTES = 16 * 1024 * 1024;

/** Checkpoints kept per run unless told otherwise: the newest, and one before it in case the newest is damaged. */
export const KEEP_CHECKPOINTS = 2;

const ofRun = slicesOf;
const ofCheckpoint = (runId: string, step: number) => IDBKeyRange.bound([runId, step], [runId, step, []]);

export interface SaveOptions {
  /** How many of the run's newest checkpoints to keep, this one included. Default KEEP_CHECKPOINTS. */
  readonly keep?: number;
  readonly chunkBytes?: number;
  /** Stored on the record (see StoredCheckpoint.measured), in the same transaction as the checkpoint. */
  readonly measured?: MeasuredSoFar;
}

/**
 * Stores `ck` as the newest checkpoint of run `runId` and prunes all but the newest `keep`, in one transaction.
 * A checkpoint of the same step replaces the stored one. A full disk becomes a UserError; whatever the failure,
 * the checkpoints stored before stay as they were.
 */
export async function saveCheckpoint(db: LoraLabDb, runId: string, ck: TrainerCheckpoint, options: SaveOptions = {}): Promise<StoredCheckpoint> {
  const keep = options.keep ?? KEEP_CHECKPOINTS;
  const chunkBytes = options.chunkBytes ?? CHECKPOINT_CHUNK_BYTES;
  if (!Number.isSafeInteger(keep) || keep < 1) throw new RangeError(`saveCheckpoint: keep must be a positive integer, not ${keep}`);
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 1) throw new RangeError(`saveCheckpoint: chunkBytes must be a positive integer, not ${chunkBytes}`);
  // Encoded before the transaction opens: an IndexedDB transaction commits on its own once nothing is pending.
  const bytes = encodeCheckpoint(ck);
  const tx = db.transaction(['checkpoints', 'checkpointChunks', 'logs'], 'readwrite');
  const records = tx.objectStore('checkpoints');
  const chunks = tx.objectStore('checkpointChunks');
  try {
    const record: StoredCheckpoint = {
      runId,
      step: ck.step,
      createdAt: Date.now(),
      byteLength: bytes.byteLength,
      chunkCount: Math.max(1, Math.ceil(bytes.byteLength / chunkBytes)),
      logChunks: await tx.objectStore('logs').count(ofRun(runId)),
      ...(options.measured ? { measured: options.measured } : {}),
    };
    // A rewrite of the same step may have had more slices: clear them first.
    await chunks.delete(ofCheckpoint(runId, ck.step));
    for (let index = 0; index < record.chunkCount; index++) {
      const slice = bytes.slice(index * chunkBytes, (index + 1) * chunkBytes);
      await chunks.put({ runId, step: ck.step, index, bytes: slice.buffer });
    }
    await records.put(record);
    // Pruned only after the new one is in, in the same transaction: never fewer than before unless the write commits.
    const steps = (await records.getAllKeys(ofRun(runId))).map((key) => key[1]).sort((a, b) => b - a);
    for (const step of steps.slice(keep)) {
      await records.delete([runId, step]);
      await chunks.delete(ofCheckpoint(runId, step));
    }
    await tx.done;
    return record;
  } catch (e) {
    abortQuietly(tx);
    // The transaction's own promise rejects too once aborted; that rejection is this one.
    tx.done.catch(() => undefined);
    const full = () => new StorageFullError('browser storage', `is full: the checkpoint at step ${ck.step} could not be stored (the previous one is kept).`, 'Delete models, datasets or runs you no longer need, then resume the run.');
    // The request's own error, or the aborted transaction's (where some browsers report the quota).
    throw storageFullIf(e, full) !== e || isQuotaError(tx.error) ? full() : e;
  }
}

/** The run's stored checkpoints, newest first. */
export async function listCheckpoints(db: LoraLabDb, runId: string): Promise<StoredCheckpoint[]> {
  return (await db.getAll('checkpoints', ofRun(runId))).sort((a, b) => b.step - a.step);
}

/**
 * The newest checkpoint of the run that reads back intact, or null when there is none. A damaged one (a checksum
 * that does not match, a slice missing) is passed over for the one before it, so one bad write costs only the
 * steps since that one.
 */
export async function latestCheckpoint(db: LoraLabDb, runId: string): Promise<LatestCheckpoint | null> {
  for (const record of await listCheckpoints(db, runId)) {
    try {
      return { record, checkpoint: decodeCheckpoint(await readBytes(db, record)) };
    } catch (e) {
      if (!(e instanceof CheckpointFormatError)) throw e;
    }
  }
  return null;
}

/** Every checkpoint of the run, in one transaction (a run's deletion includes them: see runs.ts, deleteRun). */
export function deleteCheckpoints(db: LoraLabDb, runId: string): Promise<void> {
  return deleteSlices(db, ['checkpoints', 'checkpointChunks'], runId);
}

async function readBytes(db: LoraLabDb, record: StoredCheckpoint): Promise<Uint8Array> {
  const chunks = await db.getAll('checkpointChunks', ofCheckpoint(record.runId, record.step));
  const total = chunks.reduce((n, c) => n + c.bytes.byteLength, 0);
  if (chunks.length !== record.chunkCount || total !== record.byteLength) {
    throw new CheckpointFormatError(`checkpoint at step ${record.step}: ${chunks.length} of ${record.chunkCount} slices, ${total} of ${record.byteLength} bytes.`);
  }
  return joinSlices(chunks);
}

function abortQuietly(tx: IDBTransaction | { abort(): void }): void {
  try {
    tx.abort();
  } catch {
    // Already aborted (the failed request did it) or already finished.
  }
}
