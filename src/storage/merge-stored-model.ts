import { writeMergedModel, type BaseTensor, type FolderSink, type MergedModelOptions, type MergedModelPlan } from '../core/export/merged-model';
import type { LoraDeltas } from '../core/lora/merge';
import type { LoraLabDb, StoredModel } from './db';
import { readTensorBytes } from './models';

/** A stored model's tensors as the streaming merge reads them: each one's slices fetched from IndexedDB when its turn comes. */
export function storedBaseTensors(db: LoraLabDb, stored: StoredModel): BaseTensor[] {
  return stored.tensors.map((info) => ({
    name: info.nameInFile ?? info.name,
    canonicalName: info.name,
    dtype: info.dtype,
    shape: info.shape,
    read: () => readTensorBytes(db, stored.id, info),
  }));
}

/**
 * Merges an adapter (a trained run's, or an imported one) into a stored model and writes the model folder
 * into `sink`, one tensor at a time: the model is never loaded, and memory holds one tensor and one slice.
 */
export function mergeIntoStoredModel(
  db: LoraLabDb,
  stored: StoredModel,
  deltas: LoraDeltas,
  sink: FolderSink,
  options?: MergedModelOptions,
): Promise<MergedModelPlan> {
  const files = {
    config: stored.files.config,
    tokenizer: stored.files.tokenizer,
    tokenizerConfig: stored.files.tokenizerConfig,
    generationConfig: stored.files.generationConfig ?? null,
  };
  return writeMergedModel({ tensors: storedBaseTensors(db, stored), files }, deltas, sink, options);
}
