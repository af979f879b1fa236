import type { LoraLabDb, StoredModel, StoredTensorInfo } from './db';
import { deleteRecord, joinSlices, MODEL_RECORDS, sweepUnfinishedRecords } from './chunked-records';
import type { Locks } from './locks';

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
export function deleteModel(db: LoraLabDb, id: string): Promise<void> {
  return deleteRecord(db, MODEL_RECORDS, id);
}

/**
 * Removes imports that never finished (their tab closed or crashed half-way). An import whose lock is held is
 * still being written by a live tab and is left alone (see chunked-records.ts).
 */
export function sweepUnfinishedImports(db: LoraLabDb, locks: Locks): Promise<number> {
  return sweepUnfinishedRecords(db, MODEL_RECORDS, locks);
}

/** A tensor's raw bytes (original dtype), reassembled from its chunks. */
export async function readTensorBytes(db: LoraLabDb, modelId: string, info: StoredTensorInfo): Promise<Uint8Array> {
  const chunks = await db.getAll('tensors', IDBKeyRange.bound([modelId, info.name, 0], [modelId, info.name, info.chunkCount - 1]));
  if (chunks.length !== info.chunkCount) {
    throw new Error(`storage: tensor ${info.name} of model ${modelId} has ${chunks.length} of ${info.chunkCount} chunks`);
  }
  return joinSlices(chunks);
}
