import type { LoraLabDb, MetricRow, RunArtifact, RunStatus, StoredRun } from './db';
import { deleteRecord, joinSlices, RUN_RECORDS, slicesOf, sweepUnowned } from './chunked-records';
import { lockName, type Locks } from './locks';
import { mappingFullDisk, StorageFullError } from './quota';

/** Whole-run key ranges: every key of a compound [runId, …] store that starts with runId. */
const ofRun = slicesOf;

export async function listRuns(db: LoraLabDb): Promise<StoredRun[]> {
  return (await db.getAll('runs')).sort((a, b) => b.createdAt - a.createdAt);
}

export function getRun(db: LoraLabDb, id: string): Promise<StoredRun | undefined> {
  return db.get('runs', id);
}

/**
 * Every write below goes through here: a full disk becomes one message the person can act on, naming what could
 * not be stored, instead of a bare DOMException whose name differs by browser.
 */
function storing<T>(what: string, write: () => Promise<T>): Promise<T> {
  return mappingFullDisk(write, () => new StorageFullError('browser storage', `is full: the run's ${what} could not be stored.`, 'Delete models, datasets or runs you no longer need, then start the run again.'));
}

export function putRun(db: LoraLabDb, run: StoredRun): Promise<void> {
  return storing('record', async () => void (await db.put('runs', run)));
}

export function updateRun(db: LoraLabDb, id: string, change: Partial<Omit<StoredRun, 'id'>>): Promise<StoredRun> {
  return storing('record', async () => {
    const tx = db.transaction('runs', 'readwrite');
    const run = await tx.store.get(id);
    if (!run) throw new Error(`run ${id} is not stored`);
    const updated: StoredRun = { ...run, ...change, updatedAt: Date.now() };
    await tx.store.put(updated);
    await tx.done;
    return updated;
  });
}

/** Statuses of a run that some tab is (or was, until it died) still writing. */
const LIVE: ReadonlySet<RunStatus> = new Set(['running', 'paused']);

/**
 * Marks runs stored as running or paused as `interrupted` when no live tab owns them: their owner holds the run's
 * lock while it trains, and a reloaded, closed or crashed tab has dropped it. Runs whose lock is held are another
 * tab's live runs and are left alone. Returns how many were marked.
 */
export function markInterruptedRuns(db: LoraLabDb, locks: Locks): Promise<number> {
  return sweepUnowned<StoredRun>(db, RUN_RECORDS, locks, (r) => LIVE.has(r.status), async (id) => {
    // Read again inside the lock: the run may have ended between the listing and the lock.
    const tx = db.transaction('runs', 'readwrite');
    const current = await tx.store.get(id);
    const orphaned = current !== undefined && LIVE.has(current.status);
    if (orphaned) await tx.store.put({ ...current, status: 'interrupted', updatedAt: Date.now() });
    await tx.done;
    return orphaned;
  });
}

/** A run on `modelId` that a live tab trains right now (its lock is held), if there is one. */
export async function liveRunOnModel(db: LoraLabDb, modelId: string, locks: Locks): Promise<StoredRun | undefined> {
  for (const run of await db.getAll('runs')) {
    if (run.modelId !== modelId || !LIVE.has(run.status)) continue;
    const probe = await locks.ifFree(lockName.run(run.id), async () => undefined);
    if (!probe.taken) return run;
  }
  return undefined;
}

/** Deletes a run and everything it produced, its checkpoints included, in one transaction. */
export function deleteRun(db: LoraLabDb, id: string): Promise<void> {
  return deleteRecord(db, RUN_RECORDS, id);
}

/** Adds or completes a row (an eval result lands on the same step as its training row). */
export function putMetric(db: LoraLabDb, row: MetricRow): Promise<void> {
  return storing('curves', async () => {
    const tx = db.transaction('metrics', 'readwrite');
    const existing = await tx.store.get([row.runId, row.step]);
    await tx.store.put(existing ? mergeRows(existing, row) : row);
    await tx.done;
  });
}

function mergeRows(a: MetricRow, b: MetricRow): MetricRow {
  return {
    runId: a.runId,
    step: a.step,
    epoch: b.epoch ?? a.epoch,
    loss: b.loss ?? a.loss,
    learningRate: b.learningRate ?? a.learningRate,
    gradNorm: b.gradNorm ?? a.gradNorm,
    tokensPerSecond: b.tokensPerSecond ?? a.tokensPerSecond,
    evalLoss: b.evalLoss ?? a.evalLoss,
    skippedSteps: b.skippedSteps ?? a.skippedSteps,
    custom: { ...a.custom, ...b.custom },
  };
}

export function readMetrics(db: LoraLabDb, runId: string): Promise<MetricRow[]> {
  return db.getAll('metrics', ofRun(runId));
}

/** Appends the bytes written to the event file since the last flush. */
export async function appendLog(db: LoraLabDb, runId: string, bytes: Uint8Array): Promise<void> {
  if (bytes.byteLength === 0) return;
  await storing('TensorBoard log', async () => {
    const tx = db.transaction('logs', 'readwrite');
    const last = await tx.store.openCursor(ofRun(runId), 'prev');
    const index = last ? last.value.index + 1 : 0;
    await tx.store.put({ runId, index, bytes: bytes.slice().buffer });
    await tx.done;
  });
}

/** The whole event file as flushed so far. */
export async function readLog(db: LoraLabDb, runId: string): Promise<Uint8Array> {
  return joinSlices(await db.getAll('logs', ofRun(runId)));
}

/**
 * Stores one file of the run's output under `path`, replacing any file there. A Blob is stored as it is: the
 * browser writes it to disk without reading it into the page, which is how a file too big to hold twice in memory
 * (a merged model's shard, see BlobFileWriter) is kept. Text and bytes are copied into a buffer of their own.
 */
export async function putArtifact(db: LoraLabDb, runId: string, path: string, bytes: Uint8Array | string | Blob): Promise<void> {
  const data = bytes instanceof Blob ? bytes : (typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes.slice()).buffer;
  await storing(`file ${path}`, async () => void (await db.put('artifacts', { runId, path, bytes: data })));
}

/**
 * One file written in slices and stored as a Blob made of them when it closes: each slice goes into a Blob of its
 * own as it arrives (the browser's blob store holds it, paging big ones to disk; the page keeps a handle), and
 * the file is a Blob of those parts, which joins them without copying. So no buffer larger than one slice is
 * ever in memory, however large the file.
 */
export class BlobFileWriter {
  private readonly parts: Blob[] = [];

  write(slice: Uint8Array): void {
    this.parts.push(new Blob([slice as Uint8Array<ArrayBuffer>]));
  }

  /** The file so far, as one Blob. */
  blob(): Blob {
    return new Blob(this.parts);
  }
}

export function readArtifacts(db: LoraLabDb, runId: string): Promise<RunArtifact[]> {
  return db.getAll('artifacts', ofRun(runId));
}

/** A stored file's size in bytes, whether kept as bytes or as a Blob. */
export function artifactSize(artifact: RunArtifact): number {
  return artifact.bytes instanceof Blob ? artifact.bytes.size : artifact.bytes.byteLength;
}

/** A stored file's bytes, whole: for the small files read as one (adapter, config, summary), not for merged shards. */
export async function artifactBytes(artifact: RunArtifact): Promise<Uint8Array> {
  return new Uint8Array(artifact.bytes instanceof Blob ? await artifact.bytes.arrayBuffer() : artifact.bytes);
}
