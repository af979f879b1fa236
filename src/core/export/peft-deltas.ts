import { UserError } from '../errors.js';
import type { LoraDelta, LoraDeltas } from '../lora/merge.js';
import { loraScaling } from '../lora/settings.js';
import type { ModelConfig } from '../models/config.js';
import { readHeader, readTensorBytes, toFloat32, type ByteSource, type TensorEntry } from '../safetensors/index.js';

const LORA_KEY = /^(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight$/;

/**
 * A PEFT adapter's files as the streaming merge takes them, without loading the base model onto a backend:
 * what a finished run's "Merge into a model" needs, where the adapter is already stored next to the run.
 * Only the arithmetic is read here (r, lora_alpha, use_rslora, the A/B pairs); whether the adapter fits the
 * model is checked by importPeftAdapter on import and, shape by shape, by writeMergedModel before it writes.
 * GPT-2's transformer blocks use Conv1D (weights stored [in, out]); every other projection is an nn.Linear.
 */
export async function peftDeltas(model: ModelConfig, configJson: string, weights: ByteSource): Promise<LoraDeltas> {
  let config: { r?: unknown; lora_alpha?: unknown; use_rslora?: unknown };
  try {
    config = JSON.parse(configJson) as typeof config;
  } catch (e) {
    throw new UserError('adapter_config.json', `is not valid JSON (${(e as Error).message}).`);
  }
  const rank = config.r;
  const alpha = config.lora_alpha ?? 8;
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1 || typeof alpha !== 'number') {
    throw new UserError('adapter_config.json', `has r ${JSON.stringify(rank)} and lora_alpha ${JSON.stringify(alpha)}; both must be numbers.`);
  }
  const scaling = loraScaling({ rank, alpha, useRslora: config.use_rslora === true });

  const pairs = new Map<string, { A?: TensorEntry; B?: TensorEntry }>();
  for (const entry of (await readHeader(weights)).tensors) {
    const m = LORA_KEY.exec(entry.name);
    if (!m) throw new UserError(weights.name, `contains tensor "${entry.name}", which is not a lora_A/lora_B weight.`);
    const slot = pairs.get(m[1]!) ?? {};
    slot[m[2] as 'A' | 'B'] = entry;
    pairs.set(m[1]!, slot);
  }
  const modules: LoraDelta[] = [];
  for (const [path, { A, B }] of pairs) {
    if (!A || !B) throw new UserError(weights.name, `has lora_${A ? 'A' : 'B'} but no lora_${A ? 'B' : 'A'} for module ${path}.`);
    if (A.shape.length !== 2 || B.shape.length !== 2 || A.shape[0] !== rank || B.shape[1] !== rank) {
      throw new UserError(weights.name, `module ${path} has lora_A [${A.shape.join(', ')}] and lora_B [${B.shape.join(', ')}], which rank ${rank} does not fit.`);
    }
    modules.push({
      path,
      layout: model.arch === 'gpt2' && path.startsWith('transformer.') ? 'in_out' : 'out_in',
      rank,
      inFeatures: A.shape[1]!,
      outFeatures: B.shape[0]!,
      A: toFloat32(A.dtype, await readTensorBytes(weights, A)),
      B: toFloat32(B.dtype, await readTensorBytes(weights, B)),
    });
  }
  return { scaling, modules };
}
