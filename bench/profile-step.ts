import * as tf from '@tensorflow/tfjs';
import '../src/worker/backend';
import { FUSED_KERNELS_FLAG } from '../src/core/kernels/webgpu_run';
import { LoraAdapter } from '../src/core/lora';
import { causalLmLoss } from '../src/core/models/loss';
import { randomTinyGpt2 } from './train-step';

export interface StepProfile {
  readonly backend: string;
  readonly fused: boolean;
  /** One forward + backward (no optimizer), from the first op to the loss on the CPU. */
  readonly wallMs: number;
  /** Of wallMs, the time spent waiting for the device after the last op was enqueued (0 on wasm, which runs ops as they come). */
  readonly waitMs: number;
  /** GPU time per kernel (tfjs's kernel name; a fused op's programs run inside an "unnamed scope"), with its input shapes. */
  readonly kernels: { name: string; count: number; ms: number }[];
}

/**
 * Where a training step's time goes: tf.profile of one forward + backward of the tiny
 * GPT-2 (batch 8 × seq 64, LoRA r 8 on c_attn), GPU time summed per kernel and input shapes, largest
 * first (on wasm, kernel time is wall time). For finding the next thing to fuse
 * (`npm run bench -- --profile`); asserts nothing.
 */
export async function profileTrainStep(options: { backend: 'webgpu' | 'wasm'; fused: boolean }): Promise<StepProfile> {
  tf.env().set('WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD', 0);
  const { backend } = options;
  if (!(await tf.setBackend(backend)) || tf.getBackend() !== backend) throw new Error(`the ${backend} backend did not start`);
  tf.env().set(FUSED_KERNELS_FLAG, options.fused);
  const model = randomTinyGpt2();
  const adapter = LoraAdapter.create(model, { rank: 8, alpha: 16, dropout: 0, targetModules: ['c_attn'], useRslora: false }, 1);
  const linear = adapter.apply({ training: false });
  const ids = tf.tensor2d(Array.from({ length: 512 }, (_, i) => (i * 31 + 7) % 256), [8, 64], 'int32');
  const targets = tf.tensor2d(Array.from({ length: 512 }, (_, i) => (i * 17 + 3) % 256), [8, 64], 'int32');
  const step = async (): Promise<number> => {
    const { value, grads } = tf.variableGrads(() => causalLmLoss(model.forward(ids, { linear }), targets, null), adapter.variables());
    const enqueued = performance.now();
    await value.data();
    tf.dispose([value, ...Object.values(grads)]);
    return performance.now() - enqueued;
  };
  try {
    for (let i = 0; i < 2; i++) await step(); // pipelines compiled, buffer pools filled
    const begin = performance.now();
    const waitMs = await step();
    const wallMs = performance.now() - begin;
    const info = await tf.profile(async () => void (await step()));
    const byKey = new Map<string, { name: string; count: number; ms: number }>();
    for (const k of info.kernels) {
      const name = `${k.name} ${k.inputShapes.map((s) => `[${s.join(',')}]`).join('')}`;
      const entry = byKey.get(name) ?? { name, count: 0, ms: 0 };
      entry.count++;
      entry.ms += Number(await k.kernelTimeMs);
      byKey.set(name, entry);
    }
    const kernels = [...byKey.values()].filter((k) => k.ms > 0).sort((a, b) => b.ms - a.ms);
    return { backend, fused: options.fused, wallMs, waitMs, kernels };
  } finally {
    tf.env().set(FUSED_KERNELS_FLAG, true);
    tf.dispose([ids, targets]);
    adapter.dispose();
    model.dispose();
  }
}
