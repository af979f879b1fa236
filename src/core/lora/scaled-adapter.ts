import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../models/model.js';
import { LoraAdapter, type LoraModuleTensors } from './adapter.js';

/** The playground's adapter-scale slider goes from 0 (the base model) to 2 (twice the trained change). */
export const MAX_ADAPTER_SCALE = 2;

/**
 * A copy of `adapter` whose change to every weight is `scale` times the trained one: ΔW = scale·scaling·B·A,
 * made by scaling B, so every kernel that runs an adapter runs this one unchanged. Scale 0 returns null: the
 * caller runs the base model itself (a zero B would add exact zeros, but the base path is the base path).
 * The caller owns (and disposes) the copy.
 */
export async function scaledAdapter(model: CausalLM, adapter: LoraAdapter, scale: number): Promise<LoraAdapter | null> {
  if (!(scale >= 0 && scale <= MAX_ADAPTER_SCALE)) throw new RangeError(`adapter scale must be from 0 to ${MAX_ADAPTER_SCALE}, not ${scale}`);
  if (scale === 0) return null;
  const tensors = new Map<string, LoraModuleTensors>();
  for (const m of adapter.modules) {
    const B = tf.tidy(() => tf.mul(m.B, scale));
    tensors.set(m.path, { A: (await m.A.data()) as Float32Array, B: (await B.data()) as Float32Array });
    B.dispose();
  }
  return LoraAdapter.fromTensors(model, adapter.settings, tensors);
}
