// The Stable Diffusion UNet on WebGPU in Chromium: its noise prediction against the shared fixture's PyTorch
// reference, and a LoRA training step's gradients against the same step on the cpu backend.
import * as tf from '@tensorflow/tfjs';
import { LoraAdapter } from '../../../src/core/lora/adapter';
import { loadDiffusersComponent } from '../../../src/core/models/diffusion/component';
import { loraTargetsOf } from '../../../src/core/models/diffusion/lora-targets';
import { buildUnet } from '../../../src/core/models/diffusion/unet';
import { bytesSource } from '../../../src/core/safetensors/index';
import { onBackend, relErr } from './webgpu-page';

export { setup } from './webgpu-page';

export interface UnetInputs {
  /** The UNet folder's files as base64, by path (`unet/config.json`, `unet/diffusion_pytorch_model.safetensors`). */
  readonly files: Record<string, string>;
  readonly latents: number[][][][];
  readonly timesteps: number[];
  readonly context: number[][][];
}

function folderOf(files: Record<string, string>) {
  return new Map(Object.entries(files).map(([path, b64]) => [path, bytesSource(path, Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)))]));
}

/** The noise prediction [2, 4, 8, 8] on webgpu, flattened. */
export async function unetForward(inputs: UnetInputs): Promise<number[]> {
  const unet = buildUnet(await loadDiffusersComponent(folderOf(inputs.files), 'unet'));
  try {
    const out = unet.forward(tf.tensor4d(inputs.latents), inputs.timesteps, tf.tensor3d(inputs.context));
    const values = Array.from(await out.data());
    out.dispose();
    return values;
  } finally {
    unet.dispose();
  }
}

/** A LoRA (random A and B on every attention projection) step's loss and A/B gradients, on `backend`. */
async function loraGradients(inputs: UnetInputs, backend: 'cpu' | 'webgpu'): Promise<{ loss: number; grads: number[] }> {
  return onBackend(backend, async () => {
    const unet = buildUnet(await loadDiffusersComponent(folderOf(inputs.files), 'unet'));
    const adapter = LoraAdapter.create(loraTargetsOf(unet, 'sd-unet'), { rank: 4, alpha: 8, dropout: 0, targetModules: ['to_q', 'to_k', 'to_v', 'to_out.0'], useRslora: false }, 3);
    try {
      // B = 0 would leave A without gradient: give B seeded values too.
      for (const [i, m] of adapter.modules.entries()) m.B.assign(tf.mul(tf.sin(tf.add(tf.range(0, m.B.size), i)).reshape(m.B.shape), 0.05));
      const latents = tf.tensor4d(inputs.latents);
      const context = tf.tensor3d(inputs.context);
      const target = tf.tidy(() => tf.cos(tf.range(0, latents.size)).reshape(latents.shape));
      const { value, grads } = tf.variableGrads(() => tf.mean(tf.squaredDifference(unet.forward(latents, inputs.timesteps, context, { linear: adapter.apply({ training: false }) }), target)), adapter.variables());
      const flat: number[] = [];
      for (const v of adapter.variables()) flat.push(...(await grads[v.name]!.data()));
      const loss = (await value.data())[0]!;
      tf.dispose([value, ...Object.values(grads), latents, context, target]);
      return { loss, grads: flat };
    } finally {
      adapter.dispose();
      unet.dispose();
    }
  });
}

/** The step on webgpu against cpu: the loss's difference, the gradients' relative error and their scale. */
export async function loraStep(inputs: UnetInputs): Promise<{ loss: number; lossDiff: number; gradErr: number; gradScale: number }> {
  const gpu = await loraGradients(inputs, 'webgpu');
  const cpu = await loraGradients(inputs, 'cpu');
  return { loss: cpu.loss, lossDiff: Math.abs(gpu.loss - cpu.loss), gradErr: relErr(Float32Array.from(gpu.grads), Float32Array.from(cpu.grads)), gradScale: Math.max(...cpu.grads.map(Math.abs)) };
}
