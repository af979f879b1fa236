import * as tf from '@tensorflow/tfjs';
import { causalAttention, causalAttentionReference, type AttentionShape } from '../../../src/core/kernels/attention';
import { onBackend, relErr, takePrograms, webgpu, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface AttentionCase extends AttentionShape {
  /** Run with tfjs's IS_TEST flag, under which an op that leaves tensors alive throws. */
  leakCheck?: boolean;
}

export interface AttentionResult {
  /** Max |fused − reference| / max(1, max |reference|) of the output and of each gradient. */
  errors: { out: number; dq: number; dk: number; dv: number };
  forwardPrograms: string[];
  gradPrograms: string[];
  leakedTensors: number;
  leakedDataIds: number;
  gpuErrors: string[];
}

type AttentionOp = typeof causalAttention;

/** Output and the gradients for q, k, v under a random upstream gradient, read back; nothing left alive. */
async function forwardAndGrads(op: AttentionOp, c: AttentionCase, seed: number) {
  const rows = c.batch * c.seq;
  // Scores of a few units, so that softmax is neither uniform nor one-hot.
  const u = (cols: number, s: number) => tf.randomUniform([rows, cols], -1.5, 1.5, 'float32', seed * 8 + s) as tf.Tensor2D;
  const q = u(c.heads * c.headDim, 1);
  const k = u(c.kvHeads * c.headDim, 2);
  const v = u(c.kvHeads * c.headDim, 3);
  const dy = u(c.heads * c.headDim, 4);
  const apply = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => op(a as tf.Tensor2D, b as tf.Tensor2D, d as tf.Tensor2D, c);
  takePrograms();
  const out = tf.tidy(() => apply(q, k, v));
  const outData = (await out.data()) as Float32Array;
  const forwardPrograms = takePrograms();
  const grads = tf.grads(apply)([q, k, v], dy);
  const [dq, dk, dv] = (await Promise.all(grads.map((g) => g.data()))) as Float32Array[];
  const gradPrograms = takePrograms();
  tf.dispose([out, ...grads, q, k, v, dy]);
  return { out: outData, dq: dq!, dk: dk!, dv: dv!, forwardPrograms, gradPrograms };
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
    errors: {
      out: relErr(fused.out, reference.out),
      dq: relErr(fused.dq, reference.dq),
      dk: relErr(fused.dk, reference.dk),
      dv: relErr(fused.dv, reference.dv),
    },
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
    const q = tf.randomUniform([rows, 12], -1, 1, 'float32', 1) as tf.Tensor2D;
    const kv = tf.randomUniform([rows, 6], -1, 1, 'float32', 2) as tf.Tensor2D;
    const y = causalAttention(q, kv, kv, c);
    const yRef = causalAttentionReference(q, kv, kv, c);
    const maxDiff = relErr((await y.data()) as Float32Array, (await yRef.data()) as Float32Array);
    tf.dispose([q, kv, y, yRef]);
    return { backend: tf.getBackend(), maxDiff, programs: takePrograms().length };
  });
}
