import * as tf from '@tensorflow/tfjs';
import { activation } from '../kernels/activation.js';
import { embeddingLookup } from '../kernels/embedding.js';
import { normalize } from '../kernels/norm.js';
import { rowBlockedLookup } from '../kernels/row_blocks.js';
import type { HeldWeight } from '../weights/hold.js';
import { isRowBlocks, type ModelMatrix } from '../weights/row-blocks.js';

/** torch.nn.LayerNorm over the last axis (fused on webgpu: see kernels/norm). */
export function layerNorm(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor, eps: number): tf.Tensor2D {
  return normalize(x, weight, bias, eps, 'layer');
}

/** Llama's RMSNorm over the last axis (fused on webgpu: see kernels/norm). */
export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor, eps: number): tf.Tensor2D {
  return normalize(x, weight, null, eps, 'rms');
}

/** GELU, tanh approximation (HF `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`); fused on webgpu (kernels/activation). */
export function geluTanh(x: tf.Tensor): tf.Tensor {
  return activation(x, 'gelu_tanh');
}

/** Exact GELU (HF `gelu`); fused on webgpu. */
export function geluErf(x: tf.Tensor): tf.Tensor {
  return activation(x, 'gelu_erf');
}

/** SiLU (Llama's MLP gate); fused on webgpu. */
export function silu(x: tf.Tensor): tf.Tensor {
  return activation(x, 'silu');
}

/**
 * A weight the model uses as plain float32 values (norms, biases). The manifest guarantees it, so a miss
 * here is a bug, not a user error.
 */
export function requireWeight(weights: ReadonlyMap<string, HeldWeight>, name: string): tf.Tensor {
  const t = weights.get(name);
  if (!t) throw new Error(`weight "${name}" was not provided to buildModel`);
  if (!(t instanceof tf.Tensor)) throw new Error(`weight "${name}" is held packed; only matrices may be`);
  return t;
}

/** Rows of an embedding table by id, however the table is held. */
export function embed(table: ModelMatrix, ids: tf.Tensor1D): tf.Tensor2D {
  return isRowBlocks(table) ? rowBlockedLookup(table, ids) : embeddingLookup(table, ids);
}

/** A matrix the model multiplies by or gathers rows from: float32 or packed, the kernels read either. */
export function requireMatrix(weights: ReadonlyMap<string, HeldWeight>, name: string): ModelMatrix {
  const t = weights.get(name);
  if (!t) throw new Error(`weight "${name}" was not provided to buildModel`);
  if (t instanceof tf.Tensor && t.rank !== 2) throw new Error(`weight "${name}" must be 2-D, got [${t.shape.join(', ')}]`);
  return t as ModelMatrix;
}
