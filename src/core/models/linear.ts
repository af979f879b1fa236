import * as tf from '@tensorflow/tfjs';
import { frozenLinear } from '../kernels/frozen_linear.js';

/**
 * One learned projection of the model. Both architectures route every projection through this,
 * so LoRA can find its targets by HF module path and substitute its own `LinearApply` without
 * knowing how GPT-2 or Llama are wired.
 */
export interface Linear {
  /** HF module path, e.g. `transformer.h.0.attn.c_attn` or `model.layers.0.self_attn.q_proj`; the output head is `lm_head`. */
  readonly path: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly weight: tf.Tensor2D;
  /** `in_out`: GPT-2 Conv1D, weight [in, out], y = x·W. `out_in`: nn.Linear, weight [out, in], y = x·Wᵀ. */
  readonly layout: 'in_out' | 'out_in';
  readonly bias: tf.Tensor1D | null;
}

/** Computes a projection of `x` [tokens, in] to [tokens, out]. */
export type LinearApply = (linear: Linear, x: tf.Tensor2D) => tf.Tensor2D;

/** The plain projection: on webgpu our matmul kernel, elsewhere tf.matMul (see frozenLinear). */
export const applyLinear: LinearApply = (linear, x) => frozenLinear({ x, weight: linear.weight, layout: linear.layout, bias: linear.bias });

export function makeLinear(
  path: string,
  weight: tf.Tensor,
  layout: Linear['layout'],
  bias: tf.Tensor | null,
): Linear {
  if (weight.rank !== 2) throw new Error(`${path}: weight must be 2-D, got shape [${weight.shape.join(', ')}]`);
  const [a, b] = weight.shape as [number, number];
  const [inFeatures, outFeatures] = layout === 'in_out' ? [a, b] : [b, a];
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outFeatures)) {
    throw new Error(`${path}: bias shape [${bias.shape.join(', ')}] does not match ${outFeatures} outputs`);
  }
  return {
    path,
    inFeatures,
    outFeatures,
    weight: weight as tf.Tensor2D,
    layout,
    bias: (bias as tf.Tensor1D | null) ?? null,
  };
}
