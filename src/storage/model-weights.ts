import { loadTokenizer, type TextTokenizer } from '../core/data/tokenizer';
import { parseModelConfigText } from '../core/models/config';
import { buildModel, type CausalLM } from '../core/models/model';
import { disposeWeights, holdWeight, type HeldWeight, type WeightPlacement } from '../core/weights/hold';
import type { LoraLabDb, StoredModel } from './db';
import { readTensorBytes } from './models';

export interface RunnableModel {
  readonly model: CausalLM;
  readonly tokenizer: TextTokenizer;
}

/**
 * Builds a stored model on the current tfjs backend, reading its weights slice by slice and holding each
 * as `placement` says (packed, quantized), so the whole model never exists widened to float32.
 */
export async function loadStoredModel(
  db: LoraLabDb,
  stored: StoredModel,
  placement: WeightPlacement,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): Promise<RunnableModel> {
  const config = parseModelConfigText(stored.files.config);
  const tokenizer = loadTokenizer(stored.files.tokenizer, stored.files.tokenizerConfig);
  const weights = new Map<string, HeldWeight>();
  try {
    let done = 0;
    for (const info of stored.tensors) {
      const bytes = await readTensorBytes(db, stored.id, info);
      weights.set(info.name, holdWeight(config, info.name, info.dtype, info.shape, bytes, placement));
      done += info.byteLength;
      onProgress?.(done, stored.sizeBytes);
    }
    return { model: buildModel(config, weights), tokenizer };
  } catch (e) {
    disposeWeights(weights.values());
    throw e;
  }
}
