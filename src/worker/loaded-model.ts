import type { LoraLabDb } from '../storage/db';
import { loadStoredModel, type RunnableModel } from '../storage/model-weights';
import { getModel } from '../storage/models';

export interface LoadedModel extends RunnableModel {
  readonly id: string;
}

let current: LoadedModel | null = null;

/** The model on the backend; one at a time, since base weights are what fills GPU memory. */
export async function useModel(db: LoraLabDb, id: string, onProgress?: (done: number, total: number) => void): Promise<LoadedModel> {
  if (current?.id === id) return current;
  const stored = await getModel(db, id);
  if (!stored) throw new Error(`Model ${id} is not in the library (it may have been deleted).`);
  release();
  current = { id, ...(await loadStoredModel(db, stored, onProgress)) };
  return current;
}

/** Frees the loaded model's weights (before loading another, or when it was deleted). */
export function release(): void {
  current?.model.dispose();
  current = null;
}
