import type { LoraLabDb, StoredModel, StoredTensorInfo } from './db';
import { lockName, type Locks } from './locks';

/** Models ready to use, newest first. */
export async function listModels(db: LoraLabDb): Promise<StoredModel[]> {
  const all = await db.getAll('models');
  return all.filter((m) => m.status === 'ready').sort((a, b) => b.importedAt - a.importedAt);
}

export async function getModel(db: LoraLabDb, id: string): Promise<StoredModel | undefined> {
  const model = await db.get('models', id);
  return model?.status === 'ready' ? model : undefined;
}

/** Deletes a model's record and every chunk of its weights, in one transaction. */
export async function deleteModel(db: LoraLabDb, id: string): Promise<void> {
  const tx = db.transaction(['models', 'tensors'], 'readwrite');
  await Promise.all([
    tx.objectStore('models').delete(id),
    tx.objectStore('tensors').delete(IDBKeyRange.bound([id], [id, []])),
    tx.done,
  ]);
}

/**
 * Removes imports that never finished (their tab closed or crashed half-way). An import whose lock is held is
 * still being written by a live tab and is left alone; the status is read again inside the lock, since an
 * import that finished between the listing and the lock is a model, not a leftover.
 */
export async function sweepUnfinishedImports(db: LoraLabDb, locks: Locks): Promise<number> {
  const unfinished = (await db.getAll('models')).filter((m) => m.status === 'importing');
  let removed = 0;
  for (const m of unfinished) {
    const swept = await locks.ifFree(lockName.modelImport(m.id), () => deleteIfImporting(db, m.id));
    if (swept.taken && swept.value) removed++;
  }
  return removed;
}

async function deleteIfImporting(db: LoraLabDb, id: string): Promise<boolean> {
  const tx = db.transaction(['models', 'tensors'], 'readwrite');
  const record = await tx.objectStore('models').get(id);
  const unfinished = record?.status === 'importing';
  if (unfinished) {
    await tx.objectStore('models').delete(id);
    await tx.objectStore('tensors').delete(IDBKeyRange.bound([id], [id, []]));
  }
  await tx.done;
  return unfinished;
}

/** A tensor's raw bytes (original dtype), reassembled from its chunks. */
export async function readTensorBytes(db: LoraLabDb, modelId: string, info: StoredTensorInfo): Promise<Uint8Array> {
  const chunks = await db.getAll('tensors', IDBKeyRange.bound([modelId, info.name, 0], [modelId, info.name, info.chunkCount - 1]));
  if (chunks.length !== info.chunkCount) {
    throw new Error(`storage: tensor ${info.name} of model ${modelId} has ${chunks.length} of ${info.chunkCount} chunks`);
  }
  if (chunks.length === 1) return new Uint8Array(chunks[0]!.bytes);
  const out = new Uint8Array(info.byteLength);
  let offset = 0;
  for (const c of chunks) {
    out.set(new Uint8Array(c.bytes), offset);
    offset += c.bytes.byteLength;
  }
  return out;
}
