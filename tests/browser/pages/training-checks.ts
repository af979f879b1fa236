import * as tf from '@tensorflow/tfjs';
import { packStream, trainWindows } from '../../../src/core/data/packing';
import { FUSED_KERNELS_FLAG } from '../../../src/core/kernels/webgpu_run';
import { LoraAdapter } from '../../../src/core/lora/adapter';
import { parseModelConfig } from '../../../src/core/models/config';
import { expectedTensors } from '../../../src/core/models/manifest';
import { buildModel } from '../../../src/core/models/model';
import { loraLossFn } from '../../../src/core/train/loss-fns';
import { windowExamples } from '../../../src/core/train/examples';
import { Trainer } from '../../../src/core/train/trainer';
import { takePrograms, webgpu, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface TrainingRun {
  losses: number[];
  gradNorms: number[];
  /** tf.memory().numTensors and the backend's data ids after each step. */
  tensorsAfterStep: number[];
  dataIdsAfterStep: number[];
  /** The programs the run dispatched, by the first part of their shader key, each once. */
  programs: string[];
  gpuErrors: string[];
}

/**
 * A few real optimizer steps (Trainer, AdamW, clipping, LoRA dropout 0.1 on every linear) of a model
 * with the given config.json and seeded random weights, on webgpu with the fused kernels on or off.
 */
export async function trainSteps(config: Record<string, unknown>, fused: boolean): Promise<TrainingRun> {
  tf.env().set(FUSED_KERNELS_FLAG, fused);
  try {
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
      // LoRA B starts at zero; a nonzero B makes the first step's gradients reach A and x as well.
      for (const m of adapter.modules) m.B.assign(tf.randomNormal(m.B.shape, 0, 0.05, 'float32', seed++));
      const ids = Array.from({ length: 4 * 4 * 24 + 1 }, (_, i) => (i * 37 + 11) % cfg.vocabSize);
      const run: TrainingRun = { losses: [], gradNorms: [], tensorsAfterStep: [], dataIdsAfterStep: [], programs: [], gpuErrors: [] };
      takePrograms();
      const trainer = new Trainer({
        variables: adapter.variables(),
        lossFn: loraLossFn(model, adapter, 3),
        train: windowExamples(trainWindows(packStream([{ ids }], null), 24)),
        options: { batchSize: 4, maxSteps: 4, learningRate: 1e-2, scheduler: 'constant', seed: 5, maxGradNorm: 1 },
        callbacks: {
          onStepEnd: (m) => {
            run.losses.push(m.loss);
            run.gradNorms.push(m.gradNorm);
            run.tensorsAfterStep.push(tf.memory().numTensors);
            run.dataIdsAfterStep.push(webgpu().numDataIds());
          },
        },
      });
      await trainer.run();
      const programs = takePrograms();
      run.programs = [...new Set(programs)].sort();
      adapter.dispose();
      model.dispose();
      return run;
    });
    return { ...value, gpuErrors };
  } finally {
    tf.env().set(FUSED_KERNELS_FLAG, true);
  }
}
