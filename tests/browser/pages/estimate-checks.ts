import * as tf from '@tensorflow/tfjs';
import { LoraAdapter } from '../../../src/core/lora/adapter';
import { parseModelConfig } from '../../../src/core/models/config';
import { causalLmLoss } from '../../../src/core/models/loss';
import { expectedTensors } from '../../../src/core/models/manifest';
import { buildModel } from '../../../src/core/models/model';
import { estimateRun } from '../../../src/core/train/estimate';
import { takePrograms, webgpu } from './webgpu-page';

export { setup } from './webgpu-page';

export interface PeakCase {
  /** A model's config.json (weights are random: memory does not depend on their values). */
  config: Record<string, unknown>;
  targetModules: string[] | 'all-linear';
  batch: number;
  seq: number;
}

/** The slice of tfjs's WebGPU buffer manager that every tensor's GPU buffer goes through. */
interface BufferManager {
  acquireBuffer(size: number, usage: number, ...rest: unknown[]): GPUBuffer;
  releaseBuffer(buffer: GPUBuffer, ...rest: unknown[]): void;
}

/**
 * The peak of the tensor memory tfjs holds on the GPU during one training micro-batch on the fused
 * kernels, beyond what it held before (weights, adapter, inputs): storage buffers acquired and not
 * yet released, which also counts tensors already disposed whose buffers wait for the command queue's
 * submission. Measured on a second micro-batch, the first having uploaded the weights (randomNormal
 * draws them on the CPU). Beside it, estimateRun's activation figure for the same run.
 */
export async function measureFusedPeak(c: PeakCase): Promise<{ measured: number; estimated: number; fusedPrograms: number }> {
  const cfg = parseModelConfig(c.config);
  const weights = new Map<string, tf.Tensor>();
  let seed = 1;
  for (const [name, shape] of expectedTensors(cfg)) weights.set(name, tf.randomNormal(shape, 0, 0.02, 'float32', seed++));
  const model = buildModel(cfg, weights);
  const adapter = LoraAdapter.create(model, { rank: 8, alpha: 16, dropout: 0, targetModules: c.targetModules, useRslora: false }, 1);
  const n = c.batch * c.seq;
  const ids = tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 7) % cfg.vocabSize), [c.batch, c.seq], 'int32');
  const targets = tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 7 + 3) % cfg.vocabSize), [c.batch, c.seq], 'int32');
  const mask = tf.ones([c.batch, c.seq]) as tf.Tensor2D;
  const linear = adapter.apply({ training: true, seed: 1, step: 0 });
  const step = async () => {
    const { value, grads } = tf.variableGrads(
      () => tf.tidy(() => causalLmLoss(model.forward(ids, { linear }), targets, mask)),
      adapter.variables(),
    );
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
  };
  await step();

  // Tensor buffers only (STORAGE usage): uniform and staging buffers are tfjs's per-dispatch plumbing.
  const manager = (webgpu() as unknown as { bufferManager: BufferManager }).bufferManager;
  const { acquireBuffer: acquire, releaseBuffer: release } = manager;
  let live = 0;
  let peak = 0;
  manager.acquireBuffer = function (size, usage, ...rest) {
    const buffer = acquire.call(this, size, usage, ...rest);
    if (usage & GPUBufferUsage.STORAGE) {
      live += size;
      peak = Math.max(peak, live);
    }
    return buffer;
  };
  manager.releaseBuffer = function (buffer, ...rest) {
    if (buffer.usage & GPUBufferUsage.STORAGE) live -= buffer.size;
    release.call(this, buffer, ...rest);
  };
  takePrograms();
  try {
    await step();
  } finally {
    manager.acquireBuffer = acquire;
    manager.releaseBuffer = release;
  }
  const fusedPrograms = takePrograms().filter((p) => /^(lora|attention|norm|activation|crossEntropy)/.test(p)).length;
  const estimate = estimateRun({
    model: cfg,
    targets: adapter.modules.map((m) => m.linear),
    rank: 8,
    batchSize: c.batch,
    gradAccumSteps: 1,
    seqLen: c.seq,
    epochs: 1,
    maxSteps: 0,
    trainTokens: 10_000,
    fusedKernels: true,
  });
  tf.dispose([ids, targets, mask]);
  adapter.dispose();
  model.dispose();
  return { measured: peak, estimated: estimate.memory.activationsBytes, fusedPrograms };
}
