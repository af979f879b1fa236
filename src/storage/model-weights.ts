import type * as tf from '@tensorflow/tfjs';
import { loadTokenizer, type TextTokenizer } from '../core/data/tokenizer';
import { parseModelConfigText } from '../core/models/config';
import { tensorFromBytes } from '../core/models/load';
import { buildModel, type CausalLM } from '../core/models/model';
import type { LoraLabDb, StoredModel } from './db';
import { readTensorBytes } from './models';

export interface RunnableModel {
  readonly model: CausalLM;
  readonly tokenizer: TextTokenizer;
}

/** Builds a stored model on the current tfjs backend, reading its weights slice by slice. */
export async function loadStoredModel(
  db: LoraLabDb,
  stored: StoredModel,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): Promise<RunnableModel> {
  const config = parseModelConfigText(stored.files.config);
  const tokenizer = loadTokenizer(stored.files.tokenizer, stored.files.tokenizerConfig);
  const weights = new Map<string, tf.Tensor>();
  try {
    let done = 0;
    for (const info of stored.tensors) {
      weights.set(info.name, tensorFromBytes(info.dtype, info.shape, await readTensorBytes(db, stored.id, info)));
      done += info.byteLength;
      onProgress?.(done, stored.sizeBytes);
    }
    return { model: buildModel(config, weights), tokenizer };
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
}
