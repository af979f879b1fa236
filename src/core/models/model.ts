import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from './config.js';
import { buildGpt2 } from './gpt2.js';
import { applyLinear, type Linear, type LinearApply } from './linear.js';
import { buildLlama } from './llama.js';
import { checkTensors } from './manifest.js';
import { disposeWeights, type HeldWeight } from '../weights/hold.js';

export interface ForwardOptions {
  /** Replaces the plain projection for every Linear; LoRA passes its own here. */
  readonly linear?: LinearApply;
  /**
   * Recompute each transformer block in the backward pass instead of keeping its activations (see
   * checkpointing.ts). With a LoRA apply, that apply must be the adapter's own (it names its trainable
   * tensors and replays its dropout draws). Default false.
   */
  readonly gradientCheckpointing?: boolean;
}

export interface CausalLM {
  readonly config: ModelConfig;
  /** Every projection in module order (layer by layer, then `lm_head`). */
  readonly linears: readonly Linear[];
  /** The base weights under canonical names, for merging and export. Owned by the model. */
  readonly weights: ReadonlyMap<string, HeldWeight>;
  /**
   * ids: int32 [batch, seq] with seq ≤ config.maxPositions; returns float32 logits [batch, seq, vocab].
   * Intermediates are released before returning, so only the result needs disposing.
   */
  forward(ids: tf.Tensor2D, opts?: ForwardOptions): tf.Tensor3D;
  /**
   * The final hidden states [batch·seq, hidden], after the final norm: what `lmHead` projects to the
   * logits. For losses that never hold the whole [tokens, vocab] logits (see loss.ts). Tidied like forward.
   */
  hidden(ids: tf.Tensor2D, opts?: ForwardOptions): tf.Tensor2D;
  /** The output projection, hidden → vocab (also listed last in `linears`); run it through the same apply as the blocks. */
  readonly lmHead: Linear;
  /** Releases the weights. */
  dispose(): void;
}

/**
 * Wraps weights under canonical names (see manifest.ts) into a runnable model: float32 tensors, or
 * packed matrices (weights/hold.ts decides which) that the kernels decode as they read them.
 * The model takes ownership of the tensors: dispose() releases them. If this throws, they stay the
 * caller's to release.
 */
export function buildModel(cfg: ModelConfig, weights: Map<string, HeldWeight>): CausalLM {
  checkTensors(
    cfg,
    [...weights].map(([name, t]) => ({ name, shape: t.shape })),
    ['model weights'],
  );
  for (const [name, t] of weights) {
    if (t instanceof tf.Tensor && t.dtype !== 'float32') throw new Error(`weight "${name}" is ${t.dtype}; buildModel needs float32`);
  }
  const parts = cfg.arch === 'gpt2' ? buildGpt2(cfg, weights) : buildLlama(cfg, weights);
  let disposed = false;
  const hidden = (ids: tf.Tensor2D, opts: ForwardOptions | undefined): tf.Tensor2D => {
    if (disposed) throw new Error('forward() called on a disposed model');
    const [, seq] = ids.shape;
    if (seq < 1 || seq > cfg.maxPositions) {
      throw new Error(`sequence length ${seq} is outside 1..${cfg.maxPositions}`);
    }
    const intIds = ids.dtype === 'int32' ? ids : tf.cast(ids, 'int32');
    return parts.hidden(intIds, opts?.linear ?? applyLinear, opts?.gradientCheckpointing ?? false);
  };
  const { lmHead } = parts;
  return {
    config: cfg,
    linears: parts.linears,
    weights,
    lmHead,
    hidden: (ids, opts) => tf.tidy(() => hidden(ids, opts)),
    forward(ids, opts) {
      return tf.tidy(() => {
        const [batch, seq] = ids.shape;
        const logits = (opts?.linear ?? applyLinear)(lmHead, hidden(ids, opts));
        return logits.reshape([batch, seq, cfg.vocabSize]);
      });
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      disposeWeights(weights.values());
    },
  };
}

/** What each architecture contributes; buildModel adds validation, tidying and ownership. */
export interface ModelParts {
  /** Every projection in module order, `lm_head` last. */
  readonly linears: readonly Linear[];
  readonly lmHead: Linear;
  /** ids int32 [batch, seq] → the final norm's output [batch·seq, hidden]; blocks checkpointed when asked. */
  hidden(ids: tf.Tensor2D, apply: LinearApply, checkpointing: boolean): tf.Tensor2D;
}
