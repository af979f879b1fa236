import * as tf from '@tensorflow/tfjs';
import { activation } from '../kernels/activation.js';
import { normalize } from '../kernels/norm.js';

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

/** Fetches a weight the manifest guarantees; a miss here is a bug, not a user error. */
export function requireWeight(weights: ReadonlyMap<string, tf.Tensor>, name: string): tf.Tensor {
  const t = weights.get(name);
  if (!t) throw new Error(`weight "${name}" was not provided to buildModel`);
  return t;
}
