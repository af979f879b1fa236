import * as tf from '@tensorflow/tfjs';
import { frozenLinear } from '../kernels/frozen_linear.js';
import { rowBlockedLinear } from '../kernels/row_blocks.js';
import { isRowBlocks, modelMatrixShape, type ModelMatrix } from '../weights/row-blocks.js';

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
  /** Float32 values or packed words the kernels decode (weights/packed.ts), or row blocks of either (weights/row-blocks.ts). */
  readonly weight: ModelMatrix;
  /** `in_out`: GPT-2 Conv1D, weight [in, out], y = x·W. `out_in`: nn.Linear, weight [out, in], y = x·Wᵀ. */
  readonly layout: 'in_out' | 'out_in';
  readonly bias: tf.Tensor1D | null;
}

/** Computes a projection of `x` [tokens, in] to [tokens, out]. */
export type LinearApply = (linear: Linear, x: tf.Tensor2D) => tf.Tensor2D;

/** The plain projection: on webgpu our matmul kernel, elsewhere tf.matMul (see frozenLinear); row blocks one block at a time. */
export const applyLinear: LinearApply = (linear, x) => {
  const { weight, layout, bias } = linear;
  return isRowBlocks(weight) ? rowBlockedLinear({ x, weight, layout, bias }) : frozenLinear({ x, weight, layout, bias });
};

export function makeLinear(
  path: string,
  weight: ModelMatrix,
  layout: Linear['layout'],
  bias: tf.Tensor | null,
): Linear {
  const [a, b] = modelMatrixShape(weight);
  const [inFeatures, outFeatures] = layout === 'in_out' ? [a, b] : [b, a];
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outFeatures)) {
    throw new Error(`${path}: bias shape [${bias.shape.join(', ')}] does not match ${outFeatures} outputs`);
  }
  return {
    path,
    inFeatures,
    outFeatures,
    weight,
    layout,
    bias: (bias as tf.Tensor1D | null) ?? null,
  };
}
