import { UserError } from '../core/errors';
import type { LoraLabDb } from '../storage/db';
import { loadStoredModel, type RunnableModel } from '../storage/model-weights';
import { getModel } from '../storage/models';

export interface LoadedModel extends RunnableModel {
  readonly id: string;
}

let current: LoadedModel | null = null;

/**
 * The model on the backend; one at a time, since base weights are what fills GPU memory. The
 * library is asked every time (one small IndexedDB read), so a model deleted from another part of
 * the app is never run from this cache, and its weights are freed here.
 */
export async function useModel(db: LoraLabDb, id: string, onProgress?: (done: number, total: number) => void): Promise<LoadedModel> {
  const stored = await getModel(db, id);
  if (!stored) {
    if (current?.id === id) release();
    throw new UserError('model', 'is not in the library any more (it was deleted).', 'Pick or import a model.');
  }
  if (current?.id === id) return current;
  release();
  current = { id, ...(await loadStoredModel(db, stored, onProgress)) };
  return current;
}

/** Frees the loaded model's weights (before loading another, or when it was deleted). */
function release(): void {
  current?.model.dispose();
  current = null;
}
