import * as tf from '@tensorflow/tfjs';
import { causalAttentionReference, releaseCausalMasks, type AttentionShape } from '../../../src/core/kernels/attention';
import '../../../src/worker/backend'; // registers wasm as the app does
import { onBackend, relErr } from './webgpu-page';

export { setup } from './webgpu-page';

export interface MaskCacheResult {
  /** The stock reference on webgpu (masks kept) against the same on cpu (masks rebuilt), per call. */
  errors: number[];
  /** tf.memory().numTensors minus the count before the first call, after each call. */
  kept: number[];
  /** After a call on the cpu backend (which keeps no mask and frees none). */
  keptAfterCpu: number;
  /** After a call on wasm, then after one more on webgpu: each change frees the other backend's masks. */
  keptAfterWasm: number;
  keptAfterWebgpuAgain: number;
  /** After releaseCausalMasks(). */
  keptAfterRelease: number;
}

const SHAPE: Omit<AttentionShape, 'seq' | 'slidingWindow'> = { batch: 2, heads: 4, kvHeads: 2, headDim: 8, scale: 0.35 };

async function attend(seq: number, slidingWindow: number | null): Promise<Float32Array> {
  const shape = { ...SHAPE, seq, slidingWindow };
  const qkv = tf.randomUniform([shape.batch * seq, (shape.heads + 2 * shape.kvHeads) * shape.headDim], -1.5, 1.5, 'float32', seq * 31 + (slidingWindow ?? 0)) as tf.Tensor2D;
  const out = causalAttentionReference(qkv, shape);
  const values = (await out.data()) as Float32Array;
  tf.dispose([qkv, out]);
  return values;
}

/**
 * The stock attention's kept masks: correct for every key (windows shorter and longer than seq), one tensor
 * per key, at most two at once (a third key frees the least recently used), freed when another backend
 * (other than cpu, which keeps none) takes over.
 */
export async function checkMaskCache(): Promise<MaskCacheResult> {
  releaseCausalMasks();
  const before = tf.memory().numTensors;
  const keys: [number, number | null][] = [[13, null], [13, null], [13, 5], [13, null], [9, 40], [13, 5]];
  const errors: number[] = [];
  const kept: number[] = [];
  for (const [seq, window] of keys) {
    const gpu = await attend(seq, window);
    kept.push(tf.memory().numTensors - before);
    const cpu = await onBackend('cpu', () => attend(seq, window));
    errors.push(relErr(gpu, cpu));
  }
  await onBackend('cpu', () => attend(7, null));
  const keptAfterCpu = tf.memory().numTensors - before;
  await tf.setBackend('wasm');
  try {
    await attend(7, null);
  } finally {
    await tf.setBackend('webgpu');
  }
  const keptAfterWasm = tf.memory().numTensors - before;
  await attend(7, null);
  const keptAfterWebgpuAgain = tf.memory().numTensors - before;
  releaseCausalMasks();
  return { errors, kept, keptAfterCpu, keptAfterWasm, keptAfterWebgpuAgain, keptAfterRelease: tf.memory().numTensors - before };
}
