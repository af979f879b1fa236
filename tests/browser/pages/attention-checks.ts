import * as tf from '@tensorflow/tfjs';
import { causalAttention, causalAttentionReference, type AttentionShape } from '../../../src/core/kernels/attention';
import { onBackend, relErr, takePrograms, webgpu, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface AttentionCase extends AttentionShape {
  /** Run with tfjs's IS_TEST flag, under which an op that leaves tensors alive throws. */
  leakCheck?: boolean;
}

export interface AttentionResult {
  /** Max |fused − reference| / max(1, max |reference|) of the output and of the gradient of qkv. */
  errors: { out: number; dqkv: number };
  forwardPrograms: string[];
  gradPrograms: string[];
  leakedTensors: number;
  leakedDataIds: number;
  gpuErrors: string[];
}

type AttentionOp = typeof causalAttention;

/** Output and the gradient of the packed qkv under a random upstream gradient, read back; nothing left alive. */
async function forwardAndGrads(op: AttentionOp, c: AttentionCase, seed: number) {
  const rows = c.batch * c.seq;
  // Scores of a few units, so that softmax is neither uniform nor one-hot.
  const qkv = tf.randomUniform([rows, (c.heads + 2 * c.kvHeads) * c.headDim], -1.5, 1.5, 'float32', seed * 8 + 1) as tf.Tensor2D;
  const dy = tf.randomUniform([rows, c.heads * c.headDim], -1.5, 1.5, 'float32', seed * 8 + 2) as tf.Tensor2D;
  const apply = (x: tf.Tensor) => op(x as tf.Tensor2D, c);
  takePrograms();
  const out = tf.tidy(() => apply(qkv));
  const outData = (await out.data()) as Float32Array;
  const forwardPrograms = takePrograms();
  const grad = tf.grad(apply)(qkv, dy);
  const dqkv = (await grad.data()) as Float32Array;
  const gradPrograms = takePrograms();
  tf.dispose([out, grad, qkv, dy]);
  return { out: outData, dqkv, forwardPrograms, gradPrograms };
}

/** The fused op on webgpu against the stock-op reference on the cpu backend. */
export async function checkAttention(c: AttentionCase, seed: number): Promise<AttentionResult> {
  const tensorsBefore = tf.memory().numTensors;
  const dataIdsBefore = webgpu().numDataIds();
  if (c.leakCheck) tf.env().set('IS_TEST', true);
  const { value: fused, gpuErrors } = await withErrorScope(() => forwardAndGrads(causalAttention, c, seed)).finally(() =>
    tf.env().set('IS_TEST', false),
  );
  const reference = await onBackend('cpu', () => forwardAndGrads(causalAttentionReference, c, seed));
  return {
    errors: { out: relErr(fused.out, reference.out), dqkv: relErr(fused.dqkv, reference.dqkv) },
    forwardPrograms: fused.forwardPrograms,
    gradPrograms: fused.gradPrograms,
    leakedTensors: tf.memory().numTensors - tensorsBefore,
    leakedDataIds: webgpu().numDataIds() - dataIdsBefore,
    gpuErrors,
  };
}

/** On another backend causalAttention is the reference, dispatching no WebGPU program. */
export async function checkCpuFallback(): Promise<{ backend: string; maxDiff: number; programs: number }> {
  const c: AttentionCase = { batch: 2, seq: 5, heads: 4, kvHeads: 2, headDim: 3, scale: 0.5, slidingWindow: 3 };
  takePrograms();
  return onBackend('cpu', async () => {
    const rows = c.batch * c.seq;
    const qkv = tf.randomUniform([rows, 24], -1, 1, 'float32', 1) as tf.Tensor2D;
    const y = causalAttention(qkv, c);
    const yRef = causalAttentionReference(qkv, c);
    const maxDiff = relErr((await y.data()) as Float32Array, (await yRef.data()) as Float32Array);
    tf.dispose([qkv, y, yRef]);
    return { backend: tf.getBackend(), maxDiff, programs: takePrograms().length };
  });
}
