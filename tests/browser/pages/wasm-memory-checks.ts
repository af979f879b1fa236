import * as tf from '@tensorflow/tfjs';
// The app's backend module: registers wasm with the app's own binaries and kernels.
import { wasmHeapBytes } from '../../../src/worker/backend';
import { LoraAdapter } from '../../../src/core/lora/adapter';
import { parseModelConfig } from '../../../src/core/models/config';
import { expectedTensors } from '../../../src/core/models/manifest';
import { buildModel } from '../../../src/core/models/model';
import { estimateRun, wasmMemoryBytes } from '../../../src/core/train/estimate';
import { loraLossFn } from '../../../src/core/train/loss-fns';
import { watchPeakBytes } from '../../../src/core/train/device-memory';

export async function setup(): Promise<{ backend: string }> {
  await tf.setBackend('wasm');
  await tf.ready();
  return { backend: tf.getBackend() };
}

export interface WasmCase {
  /** A model's config.json (weights are random: memory does not depend on their values). */
  config: Record<string, unknown>;
  targetModules: string[];
  batch: number;
  seq: number;
  steps: number;
}

/**
 * Training micro-batches (forward and backward through the app's loss function) on wasm at random
 * weights, in a page of its own: the wasm memory it grew to (it never shrinks, so this is the most the
 * steps needed), the peak of tensor data over the steps (what run_summary.json reports), the losses,
 * any error, and the estimate's figure for the same run.
 */
export async function measureWasmSteps(c: WasmCase) {
  const cfg = parseModelConfig(c.config);
  const weights = new Map<string, tf.Tensor>();
  let seed = 1;
  for (const [name, shape] of expectedTensors(cfg)) weights.set(name, tf.randomNormal(shape, 0, 0.02, 'float32', seed++));
  const model = buildModel(cfg, weights);
  const adapter = LoraAdapter.create(model, { rank: 8, alpha: 16, dropout: 0, targetModules: c.targetModules, useRslora: false }, 1);
  const n = c.batch * c.seq;
  const batch = {
    inputs: tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 7) % cfg.vocabSize), [c.batch, c.seq], 'int32'),
    targets: tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 7 + 3) % cfg.vocabSize), [c.batch, c.seq], 'int32'),
    mask: tf.ones([c.batch, c.seq]) as tf.Tensor2D,
    rows: c.batch,
    targetTokens: n,
  };
  const lossFn = loraLossFn(model, adapter, 1);
  const losses: number[] = [];
  let error: string | null = null;
  const watch = watchPeakBytes();
  try {
    for (let step = 0; step < c.steps; step++) {
      const { value, grads } = tf.variableGrads(() => lossFn(batch, { step, microBatch: 0, pass: step }), adapter.variables());
      losses.push((await value.data())[0]!);
      tf.dispose([value, ...Object.values(grads)]);
    }
  } catch (e) {
    error = String((e as Error).message);
  } finally {
    watch.stop();
  }
  const estimate = estimateRun({
    model: cfg,
    targets: adapter.modules.map((m) => ({ path: m.path, inFeatures: m.A.shape[1]!, outFeatures: m.B.shape[0]! })),
    rank: 8,
    batchSize: c.batch,
    gradAccumSteps: 1,
    seqLen: c.seq,
    epochs: 1,
    maxSteps: 1,
    trainTokens: 0,
  });
  return { heapBytes: wasmHeapBytes() ?? 0, tensorPeakBytes: watch.peakBytes(), losses, error, estimatedWasmBytes: wasmMemoryBytes(estimate) };
}
