import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { NormGradProgram, NormProgram } from './norm_webgpu';
import { fusedKernelBackend, isTrainable, runProgram } from './webgpu_run';

/** 'layer': torch.nn.LayerNorm (mean and biased variance, weight and bias); 'rms': RMSNorm (weight only). */
export type NormKind = 'layer' | 'rms';

/**
 * LayerNorm or RMSNorm of each row of x as a composition of stock tfjs ops (the models' own
 * composition): it runs on every backend, `tf.grads` of it is the gradient the fused kernels are
 * checked against, and it is their benchmark baseline.
 *   layer: (x − mean)·rsqrt(var + eps)·weight + bias, var biased
 *   rms:   weight·(x·rsqrt(mean(x²) + eps))
 */
export function normalizeReference(
  x: tf.Tensor2D,
  weight: tf.Tensor,
  bias: tf.Tensor | null,
  eps: number,
  kind: NormKind,
): tf.Tensor2D {
  checkArgs(x, weight, bias, eps, kind);
  return stockNormalize(x, weight, bias, eps, kind);
}

/** normalizeReference's composition, for arguments already checked. */
function stockNormalize(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor | null, eps: number, kind: NormKind): tf.Tensor2D {
  return tf.tidy(() => {
    if (kind === 'rms') {
      const meanSquare = tf.mean(tf.square(x), -1, true);
      return tf.mul(weight, tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps)))) as tf.Tensor2D;
    }
    const mean = tf.mean(x, -1, true);
    const centered = tf.sub(x, mean);
    const variance = tf.mean(tf.square(centered), -1, true);
    const scaled = tf.mul(tf.mul(centered, tf.rsqrt(tf.add(variance, eps))), weight);
    return (bias ? tf.add(scaled, bias) : scaled) as tf.Tensor2D;
  });
}

/**
 * LayerNorm or RMSNorm of each row of x ([rows, C]; weight and bias [C]; float32). On the webgpu
 * backend, with a frozen weight and bias (neither a trainable tf.Variable: the LoRA case), this is one
 * fused dispatch forward (NormProgram) and one backward (NormGradProgram), and the gradient flows to x
 * only. Otherwise it is `normalizeReference`, which also gives the weight and bias their gradients.
 * A frozen weight passed to tf.grads as one of its inputs gets no gradient on the fused path.
 */
export function normalize(
  x: tf.Tensor2D,
  weight: tf.Tensor,
  bias: tf.Tensor | null,
  eps: number,
  kind: NormKind,
): tf.Tensor2D {
  checkArgs(x, weight, bias, eps, kind);
  const backend = fusedKernelBackend();
  if (!backend || isTrainable(weight) || isTrainable(bias)) return stockNormalize(x, weight, bias, eps, kind);
  return fusedNormalize(backend, x, weight, bias, eps, kind);
}

function fusedNormalize(
  backend: WebGPUBackend,
  x: tf.Tensor2D,
  weight: tf.Tensor,
  bias: tf.Tensor | null,
  eps: number,
  kind: NormKind,
): tf.Tensor2D {
  const [rows, cols] = x.shape;
  const params = { rows, cols, eps, kind };

  // The frozen weight and bias are closed over rather than passed in, so that no gradient is computed
  // for them. The weight is saved all the same, because tf.grads disposes whatever its function created
  // before the backward pass runs. Only inputs are saved (nothing the op made): with tfjs's IS_TEST flag
  // set, a saved intermediate counts as a leak. mean and rstd are recomputed by the backward kernel.
  const op = tf.customGrad((...inputs) => {
    const [input, save] = inputs as [tf.Tensor2D, tf.GradSaveFunc];
    const y = runProgram(
      backend,
      new NormProgram({ ...params, hasBias: bias !== null }),
      // An absent bias is bound to a stand-in tensor that the kernel never reads.
      [input, weight, bias ?? input],
    );
    save([input, weight]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor => {
      const [sx, sw] = saved as [tf.Tensor, tf.Tensor];
      return runProgram(backend, new NormGradProgram(params), [sx, dy, sw]);
    };
    return { value: y as tf.Tensor2D, gradFunc };
  });
  return op(x) as tf.Tensor2D;
}

function checkArgs(x: tf.Tensor, weight: tf.Tensor, bias: tf.Tensor | null, eps: number, kind: NormKind): void {
  const fail = (what: string): never => {
    throw new Error(`normalize: ${what}`);
  };
  const shape = (t: tf.Tensor): string => `[${t.shape.join(', ')}]`;
  if (kind !== 'layer' && kind !== 'rms') fail(`kind must be 'layer' or 'rms', got ${String(kind)}`);
  for (const [name, t] of Object.entries({ x, weight, bias })) {
    if (t && t.dtype !== 'float32') fail(`${name} must be float32, got ${t.dtype}`);
  }
  if (x.rank !== 2) fail(`x must be [rows, C], got ${shape(x)}`);
  const [rows, cols] = x.shape as [number, number];
  if (rows < 1 || cols < 1) fail(`x must have at least one row and one column, got ${shape(x)}`);
  if (weight.rank !== 1 || weight.shape[0] !== cols) fail(`weight must be [${cols}], got ${shape(weight)}`);
  if (bias && kind === 'rms') fail('rms normalization has no bias');
  if (bias && (bias.rank !== 1 || bias.shape[0] !== cols)) fail(`bias must be [${cols}], got ${shape(bias)}`);
  if (!Number.isFinite(eps) || eps < 0) fail(`eps must be a finite number ≥ 0, got ${eps}`);
}
