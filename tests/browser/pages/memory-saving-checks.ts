import * as tf from '@tensorflow/tfjs';
import { LoraAdapter } from '../../../src/core/lora/adapter';
import { parseModelConfig } from '../../../src/core/models/config';
import { causalLmLoss } from '../../../src/core/models/loss';
import { expectedTensors } from '../../../src/core/models/manifest';
import { buildModel } from '../../../src/core/models/model';
import { loraLossFn } from '../../../src/core/train/loss-fns';
import { relErr, takePrograms, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface MemorySavingCheck {
  /** max relative error of the loss and of each LoRA gradient, checkpointed + chunked against plain. */
  lossErr: number;
  gradErrs: number[];
  /** Smallest max |gradient| over the LoRA variables of the plain step: every one really reached. */
  smallestGrad: number;
  /** Programs of the checkpointed + chunked step, by the first part of their shader key, each once. */
  programs: string[];
  tensorsLeft: number;
  gpuErrors: string[];
}

/**
 * One training micro-batch on webgpu with the fused kernels (LoRA dropout 0.1 on every linear, random
 * weights of the given config.json): the loss with gradient checkpointing and a chunked loss (4 tokens'
 * logits a chunk) against the plain forward pass and the whole logits' loss.
 */
export async function checkpointedChunkedStep(config: Record<string, unknown>): Promise<MemorySavingCheck> {
  const before = tf.memory().numTensors;
  const { value, gpuErrors } = await withErrorScope(async () => {
    const cfg = parseModelConfig(config);
    const weights = new Map<string, tf.Tensor>();
    let seed = 1;
    for (const [name, shape] of expectedTensors(cfg)) {
      const isNorm = /norm|ln_/.test(name) && name.endsWith('weight');
      weights.set(name, isNorm ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.1, 'float32', seed++));
    }
    const model = buildModel(cfg, weights);
    const adapter = LoraAdapter.create(model, { rank: 4, alpha: 8, dropout: 0.1, targetModules: 'all-linear', useRslora: false }, 7);
    for (const m of adapter.modules) tf.tidy(() => m.B.assign(tf.randomNormal(m.B.shape, 0, 0.05, 'float32', seed++)));
    const [rows, seq] = [2, 12];
    const n = rows * seq;
    const batch = {
      inputs: tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 37 + 11) % cfg.vocabSize), [rows, seq], 'int32'),
      targets: tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 53 + 5) % cfg.vocabSize), [rows, seq], 'int32'),
      mask: tf.tensor2d(Array.from({ length: n }, (_, i) => (i % 5 === 1 ? 0 : 1)), [rows, seq], 'float32'),
      rows,
      targetTokens: n,
    };
    const ctx = { step: 0, microBatch: 0, pass: 2 };
    const vars = adapter.variables();
    const step = async (f: () => tf.Scalar) => {
      const { value: loss, grads } = tf.variableGrads(f, vars);
      const out = { loss: (await loss.data()) as Float32Array, grads: await Promise.all(vars.map(async (v) => (await grads[v.name]!.data()) as Float32Array)) };
      tf.dispose([loss, ...Object.values(grads)]);
      return out;
    };
    // The plain step as before this change: the whole logits, every activation kept. Same seed and pass,
    // so the same dropout masks.
    const plain = await step(() => {
      const linear = adapter.apply({ training: true, seed: 3, step: ctx.pass });
      return causalLmLoss(model.forward(batch.inputs, { linear }), batch.targets, batch.mask);
    });
    takePrograms();
    const saving = await step(() =>
      loraLossFn(model, adapter, 3, { gradientCheckpointing: true, maxLogitsChunkBytes: 4 * 4 * cfg.vocabSize })(batch, ctx),
    );
    const programs = [...new Set(takePrograms())].sort();
    tf.dispose([batch.inputs, batch.targets, batch.mask]);
    adapter.dispose();
    model.dispose();
    return {
      lossErr: relErr(saving.loss, plain.loss),
      gradErrs: saving.grads.map((g, i) => relErr(g, plain.grads[i]!)),
      smallestGrad: Math.min(...plain.grads.map((g) => g.reduce((m, x) => Math.max(m, Math.abs(x)), 0))),
      programs,
    };
  });
  return { ...value, tensorsLeft: tf.memory().numTensors - before, gpuErrors };
}
