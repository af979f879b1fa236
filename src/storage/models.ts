import type { LoraLabDb, StoredModel, StoredTensorInfo } from './db';

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

/** Removes imports that never finished (the tab closed or crashed half-way). */
export async function sweepUnfinishedImports(db: LoraLabDb): Promise<number> {
  const unfinished = (await db.getAll('models')).filter((m) => m.status === 'importing');
  for (const m of unfinished) await deleteModel(db, m.id);
  return unfinished.length;
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
