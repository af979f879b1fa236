import * as tf from '@tensorflow/tfjs';
import { loadTokenizer, type TextTokenizer } from '../core/data/tokenizer';
import { parseModelConfigText } from '../core/models/config';
import { buildModel, type CausalLM } from '../core/models/model';
import { toFloat32 } from '../core/safetensors';
import type { LoraLabDb } from '../storage/db';
import { getModel, readTensorBytes } from '../storage/models';

export interface LoadedModel {
  readonly id: string;
  readonly model: CausalLM;
  readonly tokenizer: TextTokenizer;
}

let current: LoadedModel | null = null;

/** The model on the backend; one at a time, since base weights are what fills GPU memory. */
export async function useModel(db: LoraLabDb, id: string, onProgress?: (done: number, total: number) => void): Promise<LoadedModel> {
  if (current?.id === id) return current;
  const stored = await getModel(db, id);
  if (!stored) throw new Error(`Model ${id} is not in the library (it may have been deleted).`);
  release();
  const config = parseModelConfigText(stored.files.config);
  const tokenizer = loadTokenizer(stored.files.tokenizer, stored.files.tokenizerConfig);
  const weights = new Map<string, tf.Tensor>();
  try {
    let done = 0;
    for (const info of stored.tensors) {
      const values = toFloat32(info.dtype, await readTensorBytes(db, id, info));
      weights.set(info.name, tf.tensor(values, [...info.shape], 'float32'));
      done += info.byteLength;
      onProgress?.(done, stored.sizeBytes);
    }
    current = { id, model: buildModel(config, weights), tokenizer };
    return current;
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
}

/** Frees the loaded model's weights (before loading another, or when it was deleted). */
export function release(): void {
  current?.model.dispose();
  current = null;
}

export function loadedModelId(): string | null {
  return current?.id ?? null;
}
