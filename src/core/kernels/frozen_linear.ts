import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { isPacked, matrixShape, tensorsOf, withTensors, type FrozenMatrix } from '../weights/packed';
import { unpackMatrix } from './frozen_matrix';
import { LoraMatMulProgram } from './lora_matmul_webgpu';
import { encodingOf, matrixBindings } from './packed_weight_webgpu';
import { fusedKernelBackend, isTrainable, runProgram } from './webgpu_run';

/** A projection without LoRA: the weight [in, out] ('in_out', GPT-2 Conv1D) or [out, in] ('out_in'). */
export interface FrozenLinearArgs {
  /** [T, in]. */
  x: tf.Tensor2D;
  /** Float32 values or packed words (see weights/packed.ts). */
  weight: FrozenMatrix;
  layout: 'in_out' | 'out_in';
  /** [out]. */
  bias: tf.Tensor1D | null;
}

/**
 * `y = x·W' + bias` where the weight and bias receive no gradient (the frozen base model of a LoRA
 * run). On the webgpu backend this is the LoRA matmul kernel with rank 0, forward and for dx (reading
 * the weight transposed in place), the bias added in its epilogue: on SwiftShader 1.2–2.9× faster than
 * tfjs's matmul at a small model's shapes, and one dispatch where stock tfjs needs two with a bias.
 * A weight or bias that is a trainable variable (training from scratch) takes the stock composition,
 * so that it gets its gradient.
 */
export function frozenLinear(args: FrozenLinearArgs): tf.Tensor2D {
  const backend = fusedKernelBackend();
  const trainableWeight = !isPacked(args.weight) && isTrainable(args.weight);
  if (!backend || trainableWeight || isTrainable(args.bias) || args.x.dtype !== 'float32') {
    return frozenLinearReference(args);
  }
  return fusedFrozenLinear(backend, args);
}

export function frozenLinearReference({ x, weight, layout, bias }: FrozenLinearArgs): tf.Tensor2D {
  return tf.tidy(() => {
    const y: tf.Tensor2D = tf.matMul(x, unpackMatrix(weight), false, layout === 'out_in');
    return bias ? tf.add<tf.Tensor2D>(y, bias) : y;
  });
}

function fusedFrozenLinear(backend: WebGPUBackend, { x, weight, layout, bias }: FrozenLinearArgs): tf.Tensor2D {
  const [tokens, inFeatures] = x.shape;
  const outFeatures = layout === 'in_out' ? matrixShape(weight)[1] : matrixShape(weight)[0];
  const rhsEncoding = encodingOf(weight);
  const matmul = (lhs: tf.Tensor, w: FrozenMatrix, dimN: number, dimK: number, rhsLayout: 'kn' | 'nk', withBias: tf.Tensor | null) => {
    const [rhs, rhsScale] = matrixBindings(w, lhs);
    return runProgram(
      backend,
      new LoraMatMulProgram({
        dimM: tokens, dimN, dimK, rank: 0, scale: 0, rhsLayout, rhsEncoding, upLayout: 'nr', hasBias: withBias !== null, hasMask: false,
      }),
      // Without a low-rank term its inputs, like an absent bias, are stand-ins the kernel never reads.
      [lhs, rhs, rhsScale, lhs, lhs, withBias ?? lhs, lhs],
    );
  };
  // The weight and bias are closed over, not inputs, so no gradient is computed for them; the weight is
  // saved anyway because tf.grads disposes what its function created before the backward pass runs.
  const op = tf.customGrad((...inputs) => {
    const [xIn, save] = inputs as [tf.Tensor2D, tf.GradSaveFunc];
    save(tensorsOf(weight));
    const y = matmul(xIn, weight, outFeatures, inFeatures, layout === 'in_out' ? 'kn' : 'nk', bias) as tf.Tensor2D;
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]) => [
      matmul(dy, withTensors(weight, saved), inFeatures, outFeatures, layout === 'in_out' ? 'nk' : 'kn', null),
    ];
    return { value: y, gradFunc };
  });
  return op(x) as tf.Tensor2D;
}
