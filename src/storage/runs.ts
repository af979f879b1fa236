import type { LoraLabDb, MetricRow, RunArtifact, StoredRun } from './db';

/** Whole-run key ranges: every key of a compound [runId, …] store that starts with runId. */
const ofRun = (runId: string) => IDBKeyRange.bound([runId], [runId, []]);

export async function listRuns(db: LoraLabDb): Promise<StoredRun[]> {
  return (await db.getAll('runs')).sort((a, b) => b.createdAt - a.createdAt);
}

export function getRun(db: LoraLabDb, id: string): Promise<StoredRun | undefined> {
  return db.get('runs', id);
}

export async function putRun(db: LoraLabDb, run: StoredRun): Promise<void> {
  await db.put('runs', run);
}

export async function updateRun(db: LoraLabDb, id: string, change: Partial<Omit<StoredRun, 'id'>>): Promise<StoredRun> {
  const tx = db.transaction('runs', 'readwrite');
  const run = await tx.store.get(id);
  if (!run) throw new Error(`run ${id} is not stored`);
  const updated: StoredRun = { ...run, ...change, updatedAt: Date.now() };
  await tx.store.put(updated);
  await tx.done;
  return updated;
}

/** Deletes a run and everything it produced, in one transaction. */
export async function deleteRun(db: LoraLabDb, id: string): Promise<void> {
  const tx = db.transaction(['runs', 'metrics', 'logs', 'artifacts'], 'readwrite');
  await Promise.all([
    tx.objectStore('runs').delete(id),
    tx.objectStore('metrics').delete(ofRun(id)),
    tx.objectStore('logs').delete(ofRun(id)),
    tx.objectStore('artifacts').delete(ofRun(id)),
    tx.done,
  ]);
}

/** Adds or completes a row (an eval result lands on the same step as its training row). */
export async function putMetric(db: LoraLabDb, row: MetricRow): Promise<void> {
  const tx = db.transaction('metrics', 'readwrite');
  const existing = await tx.store.get([row.runId, row.step]);
  await tx.store.put(existing ? mergeRows(existing, row) : row);
  await tx.done;
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
    custom: { ...a.custom, ...b.custom },
  };
}

export function readMetrics(db: LoraLabDb, runId: string): Promise<MetricRow[]> {
  return db.getAll('metrics', ofRun(runId));
}

/** Appends the bytes written to the event file since the last flush. */
export async function appendLog(db: LoraLabDb, runId: string, bytes: Uint8Array): Promise<void> {
  if (bytes.byteLength === 0) return;
  const tx = db.transaction('logs', 'readwrite');
  const last = await tx.store.openCursor(ofRun(runId), 'prev');
  const index = last ? last.value.index + 1 : 0;
  await tx.store.put({ runId, index, bytes: bytes.slice().buffer });
  await tx.done;
}

/** The whole event file as flushed so far. */
export async function readLog(db: LoraLabDb, runId: string): Promise<Uint8Array> {
  const chunks = await db.getAll('logs', ofRun(runId));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.bytes.byteLength, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(new Uint8Array(c.bytes), offset);
    offset += c.bytes.byteLength;
  }
  return out;
}

export async function putArtifact(db: LoraLabDb, runId: string, path: string, bytes: Uint8Array | string): Promise<void> {
  const data = typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes.slice();
  await db.put('artifacts', { runId, path, bytes: data.buffer });
}

export function readArtifacts(db: LoraLabDb, runId: string): Promise<RunArtifact[]> {
  return db.getAll('artifacts', ofRun(runId));
}
