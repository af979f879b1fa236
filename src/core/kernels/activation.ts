import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { ActivationGradProgram, ActivationProgram } from './activation_webgpu';
import { fusedKernelBackend, runProgram } from './webgpu_run';

/** GELU with the tanh approximation (HF `gelu_new`), exact GELU (HF `gelu`), and SiLU. */
export type ActivationKind = 'gelu_tanh' | 'gelu_erf' | 'silu';

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/**
 * The activation as a composition of stock tfjs ops, the maths of geluTanh, geluErf and silu in
 * models/ops.ts. It runs on every backend and is what the fused kernels are checked against.
 */
export function activationReference(x: tf.Tensor, kind: ActivationKind): tf.Tensor {
  return tf.tidy(() => {
    switch (kind) {
      case 'gelu_tanh': {
        const inner = tf.mul(tf.add(x, tf.mul(tf.mul(tf.square(x), x), 0.044715)), SQRT_2_OVER_PI);
        return tf.mul(tf.mul(x, 0.5), tf.add(tf.tanh(inner), 1));
      }
      case 'gelu_erf':
        return tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
      case 'silu':
        return tf.mul(x, tf.sigmoid(x));
    }
  });
}

/**
 * `f(x)` elementwise, any shape, float32. On the webgpu backend one dispatch forward and one backward
 * (dx = dy·f'(x), f' recomputed from the saved x), in place of the 5-10 stock elementwise programs of
 * the composition and their intermediates. Elsewhere it is `activationReference`.
 *
 * The kernels agree with the reference to float32 rounding, except gelu_erf's erf, which is the
 * Abramowitz–Stegun 7.1.26 approximation (absolute error ≤ 1.5e-7; tfjs's erf uses it too).
 */
export function activation(x: tf.Tensor, kind: ActivationKind): tf.Tensor {
  if (x.dtype !== 'float32') throw new Error(`activation: x must be float32, got ${x.dtype}`);
  const backend = fusedKernelBackend();
  return backend ? fusedActivation(backend, x, kind) : activationReference(x, kind);
}

function fusedActivation(backend: WebGPUBackend, x: tf.Tensor, kind: ActivationKind): tf.Tensor {
  const { shape, size } = x;
  // The programs see flat tensors (reshapes share the buffer, no dispatch), so one pipeline per kind
  // serves every rank: the backend's pipeline key includes the ranks of the inputs.
  const flat = (t: tf.Tensor) => tf.reshape(t, [size]);
  const op = tf.customGrad((...inputs) => {
    const [input, save] = inputs as [tf.Tensor, tf.GradSaveFunc];
    const y = runProgram(backend, new ActivationProgram({ size, kind }), [flat(input)]);
    save([input]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor =>
      tf.tidy(() => {
        const dx = runProgram(backend, new ActivationGradProgram({ size, kind }), [flat(saved[0]!), flat(dy)]);
        return tf.reshape(dx, shape);
      });
    // customGrad runs this function inside a tidy: the flat tensors are released, their data kept.
    return { value: tf.reshape(y, shape), gradFunc };
  });
  return op(x);
}
