import * as tf from '@tensorflow/tfjs';
import { unpackMatrix } from './frozen_matrix';
import type { LoraLinearArgs } from './lora_linear';

/**
 * The LoRA linear as a composition of stock tfjs ops, in PEFT's order:
 * `x·W' + bias + (dropout(x)·Aᵀ·Bᵀ)·s`. It runs on every backend, `tf.grads` of it is the gradient
 * the fused kernels are checked against, and it is the baseline they are benchmarked against.
 */
export function loraLinearReference(args: LoraLinearArgs): tf.Tensor2D {
  const { x, weight, layout, bias, loraA, loraB, scaling, dropoutMask } = args;
  return tf.tidy(() => {
    const base = tf.matMul(x, unpackMatrix(weight), false, layout === 'out_in');
    const biased = bias ? tf.add(base, bias) : base;
    const dropped = dropoutMask ? tf.mul(x, dropoutMask) : x;
    // Scaling the [T, r] product is the cheapest place for s.
    const xa = tf.mul(tf.matMul(dropped, loraA, false, true), scaling);
    return tf.add(biased, tf.matMul(xa, loraB, false, true)) as tf.Tensor2D;
  });
}
