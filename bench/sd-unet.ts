/**
 * What gradient checkpointing costs and saves on the SD UNet: one LoRA training step (forward + backward) of the
 * shared fixture's tiny UNet at a few latent sizes, with and without checkpointing, on wasm in Node. Reports the
 * milliseconds per step (median) and the bytes of tensor data held at the step's peak above what was held before it
 * (train/device-memory.ts watchPeakBytes).
 *
 *   npx tsx --import ./scripts/vite-imports.mjs bench/sd-unet.ts [latent sizes, default 8 16 32]
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { LoraAdapter } from '../src/core/lora/index.js';
import { loadDiffusersComponent } from '../src/core/models/diffusion/component.js';
import { loraTargetsOf } from '../src/core/models/diffusion/lora-targets.js';
import { buildUnet, type Unet } from '../src/core/models/diffusion/unet.js';
import { watchPeakBytes } from '../src/core/train/device-memory.js';
import { diffusersFolderFromDisk } from '../tests/unit/support/diffusers-folder.js';
import { median } from './timing.js';

const BATCH = 2;
const STEPS = 3;

/** One training step's loss gradients; returns [ms, peak bytes above the start]. */
function step(unet: Unet, adapter: LoraAdapter, size: number, gradientCheckpointing: boolean, pass: number): [number, number] {
  const latents = tf.randomNormal([BATCH, unet.config.inChannels, size, size], 0, 1, 'float32', pass) as tf.Tensor4D;
  const context = tf.randomNormal([BATCH, 77, unet.config.crossAttentionDim], 0, 1, 'float32', pass + 1) as tf.Tensor3D;
  const timesteps = Array.from({ length: BATCH }, (_, i) => (pass * 137 + i * 401) % 1000);
  const base = tf.memory().numBytes;
  const watch = watchPeakBytes();
  const start = performance.now();
  const { value, grads } = tf.variableGrads(() => {
    const linear = adapter.apply({ training: true, seed: 1, step: pass });
    return tf.mean(tf.square(unet.forward(latents, timesteps, context, { linear, gradientCheckpointing })));
  }, adapter.variables());
  value.dataSync();
  const ms = performance.now() - start;
  watch.stop();
  tf.dispose([latents, context, value, ...Object.values(grads)]);
  return [ms, watch.peakBytes() - base];
}

async function main(): Promise<void> {
  await tf.setBackend('wasm');
  const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
  const unet = buildUnet(await loadDiffusersComponent(diffusersFolderFromDisk(), 'unet'));
  const adapter = LoraAdapter.create(
    loraTargetsOf(unet, 'sd-unet'),
    { rank: 8, alpha: 8, dropout: 0.1, targetModules: ['to_q', 'to_k', 'to_v', 'to_out.0'], useRslora: false },
    1,
  );
  console.log(`tiny-sd UNet, batch ${BATCH}, LoRA r 8 on the attention projections, wasm (${STEPS} steps each after a warm-up)`);
  console.log('latent  checkpointing  ms/step  peak MB');
  for (const size of sizes.length > 0 ? sizes : [8, 16, 32]) {
    for (const checkpointing of [false, true]) {
      step(unet, adapter, size, checkpointing, 0);
      const runs = Array.from({ length: STEPS }, (_, i) => step(unet, adapter, size, checkpointing, i + 1));
      const ms = median(runs.map((r) => r[0]));
      const peak = Math.max(...runs.map((r) => r[1]));
      console.log(`${`${size}×${size}`.padEnd(8)}${String(checkpointing).padEnd(15)}${ms.toFixed(0).padStart(7)}  ${(peak / 1e6).toFixed(1).padStart(7)}`);
    }
  }
  adapter.dispose();
  unet.dispose();
}

await main();
