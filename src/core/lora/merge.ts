import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../models/model.js';
import { unpackModelMatrix } from '../kernels/row_blocks.js';
import type { LoraAdapter } from './adapter.js';

/**
 * The model's weights with the adapter folded in, as PEFT's merge_and_unload computes them:
 * W + scaling·(B·A) for nn.Linear weights [out, in], and its transpose, W + scaling·(B·A)ᵀ, for GPT-2's
 * Conv1D weights stored [in, out] (PEFT's fan_in_fan_out). Every tensor in the map is new float32,
 * untouched ones included (clones, or packed matrices unpacked), so the result can go straight to
 * buildModel, which takes ownership, without the base model losing its weights; the caller owns the map.
 */
export function mergedWeights(model: CausalLM, adapter: LoraAdapter): Map<string, tf.Tensor> {
  const byWeight = new Map(adapter.modules.map((m) => [`${m.path}.weight`, m]));
  for (const name of byWeight.keys()) {
    if (!model.weights.has(name)) throw new Error(`mergedWeights: the model has no weight ${name}; is the adapter for another model?`);
  }
  const out = new Map<string, tf.Tensor>();
  try {
    for (const [name, held] of model.weights) {
      const m = byWeight.get(name);
      const w = held instanceof tf.Tensor ? held : unpackModelMatrix(held);
      if (!m) {
        out.set(name, held instanceof tf.Tensor ? tf.clone(w) : w);
        continue;
      }
      out.set(
        name,
        tf.tidy(() => {
          // (B·A)ᵀ = Aᵀ·Bᵀ: computing the transposed product directly avoids a transpose.
          const delta = m.linear.layout === 'in_out' ? tf.matMul(m.A, m.B, true, true) : tf.matMul(m.B, m.A);
          if (!tf.util.arraysEqual(delta.shape, w.shape)) {
            throw new Error(`mergedWeights: ${name} is [${w.shape.join(', ')}] but B·A is [${delta.shape.join(', ')}]`);
          }
          return tf.add(w, tf.mul(delta, adapter.scaling));
        }),
      );
      if (!(held instanceof tf.Tensor)) w.dispose();
    }
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

/** One adapted projection's matrices as plain arrays (DOM- and tfjs-free), for the streaming merge. */
export interface LoraDelta {
  /** The HF module path; the weight it changes is `${path}.weight`. */
  readonly path: string;
  /** `in_out`: GPT-2's Conv1D, weight stored [in, out], so ΔW is added transposed. */
  readonly layout: 'in_out' | 'out_in';
  readonly rank: number;
  readonly inFeatures: number;
  readonly outFeatures: number;
  /** lora_A.weight [r, in], row-major. */
  readonly A: Float32Array;
  /** lora_B.weight [out, r], row-major. */
  readonly B: Float32Array;
}

/** An adapter as the streaming merge (core/export/merged-model.ts) takes it: ΔW = scaling·B·A per module. */
export interface LoraDeltas {
  readonly scaling: number;
  readonly modules: readonly LoraDelta[];
}

/** Reads an adapter's matrices off the device (small: r·(in + out) values per module). */
export async function loraDeltasOf(adapter: LoraAdapter): Promise<LoraDeltas> {
  const modules = await Promise.all(
    adapter.modules.map(async (m) => ({
      path: m.path,
      layout: m.linear.layout,
      rank: adapter.settings.rank,
      inFeatures: m.linear.inFeatures,
      outFeatures: m.linear.outFeatures,
      A: (await m.A.data()) as Float32Array,
      B: (await m.B.data()) as Float32Array,
    })),
  );
  return { scaling: adapter.scaling, modules };
}
