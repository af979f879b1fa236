import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from './config.js';
import { buildGpt2 } from './gpt2.js';
import type { Linear, LinearApply } from './linear.js';
import { buildLlama } from './llama.js';
import { checkTensors } from './manifest.js';

export interface ForwardOptions {
  /** Replaces the plain projection for every Linear; LoRA passes its own here. */
  readonly linear?: LinearApply;
}

export interface CausalLM {
  readonly config: ModelConfig;
  /** Every projection in module order (layer by layer, then `lm_head`). */
  readonly linears: readonly Linear[];
  /** The base weights under canonical names, for merging and export. Owned by the model. */
  readonly weights: ReadonlyMap<string, tf.Tensor>;
  /**
   * ids: int32 [batch, seq] with seq ≤ config.maxPositions; returns float32 logits [batch, seq, vocab].
   * Intermediates are released before returning, so only the result needs disposing.
   */
  forward(ids: tf.Tensor2D, opts?: ForwardOptions): tf.Tensor3D;
  /** Releases the weights. */
  dispose(): void;
}

/**
 * Wraps float32 weights under canonical names (see manifest.ts) into a runnable model.
 * The model takes ownership of the tensors: dispose() releases them. If this throws, they stay the
 * caller's to release.
 */
export function buildModel(cfg: ModelConfig, weights: Map<string, tf.Tensor>): CausalLM {
  checkTensors(
    cfg,
    [...weights].map(([name, t]) => ({ name, shape: t.shape })),
    ['model weights'],
  );
  for (const [name, t] of weights) {
    if (t.dtype !== 'float32') throw new Error(`weight "${name}" is ${t.dtype}; buildModel needs float32`);
  }
  const parts = cfg.arch === 'gpt2' ? buildGpt2(cfg, weights) : buildLlama(cfg, weights);
  let disposed = false;
  return {
    config: cfg,
    linears: parts.linears,
    weights,
    forward(ids, opts) {
      if (disposed) throw new Error('forward() called on a disposed model');
      const [, seq] = ids.shape;
      if (seq < 1 || seq > cfg.maxPositions) {
        throw new Error(`sequence length ${seq} is outside 1..${cfg.maxPositions}`);
      }
      const apply = opts?.linear;
      return tf.tidy(() => {
        const intIds = ids.dtype === 'int32' ? ids : tf.cast(ids, 'int32');
        return parts.forward(intIds, apply);
      });
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      for (const t of weights.values()) t.dispose();
    },
  };
}

/** What each architecture contributes; buildModel adds validation, tidying and ownership. */
export interface ModelParts {
  readonly linears: readonly Linear[];
  forward(ids: tf.Tensor2D, linear: LinearApply | undefined): tf.Tensor3D;
}
