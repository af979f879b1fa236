import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import type { UnetInputs } from './pages/sd-checks';
import { SD_DIR } from './support/fixtures';
import { useWebGpuPage } from './support/webgpu-suite';

// The Stable Diffusion UNet on WebGPU (SwiftShader here, a real GPU on the device machine): the fixture's noise
// prediction from its independent PyTorch implementation, and a LoRA step's gradients (the fused LoRA kernels inside
// the UNet's attention) against the cpu backend.

const page = useWebGpuPage('/tests/browser/pages/sd-checks.ts');

interface Forward {
  inputs: { latents: number[][][][]; timesteps: number[] };
  outputs: { text_last_hidden_state: number[][][]; unet_sample: number[][][][] };
}
const forward = JSON.parse(readFileSync(join(SD_DIR, 'expected', 'unet_forward_seed0.json'), 'utf8')) as Forward;
const inputs: UnetInputs = {
  files: Object.fromEntries(
    ['unet/config.json', 'unet/diffusion_pytorch_model.safetensors'].map((p) => [p, readFileSync(join(SD_DIR, 'tiny-sd', p)).toString('base64')]),
  ),
  latents: forward.inputs.latents,
  timesteps: forward.inputs.timesteps,
  context: forward.outputs.text_last_hidden_state,
};

test("predicts the reference noise on webgpu within 1e-4 of PyTorch's", async () => {
  const got = await page.call<number[]>('unetForward', inputs);
  const want = forward.outputs.unet_sample.flat(3);
  expect(got).toHaveLength(want.length);
  expect(Math.max(...got.map((g, i) => Math.abs(g - want[i]!)))).toBeLessThan(1e-4);
}, 180_000);

test('a LoRA step on the UNet gives the cpu backend\'s loss and gradients', async () => {
  const { loss, lossDiff, gradErr, gradScale } = await page.call<{ loss: number; lossDiff: number; gradErr: number; gradScale: number }>('loraStep', inputs);
  expect(gradScale).toBeGreaterThan(1e-3); // the gradients are not all zero
  console.info(`UNet LoRA step, webgpu vs cpu: loss ${loss.toFixed(5)} (|Δ| ${lossDiff.toExponential(2)}), gradients' relative error ${gradErr.toExponential(2)}`);
  // The predictions agree within ~1e-4 (as the forward test shows against PyTorch); the loss (a mean of squared
  // differences of size ~1) then within 2·1e-4.
  expect(lossDiff).toBeLessThan(2e-4);
  // Backpropagated through ~40 convolutions, group norms and attention softmaxes whose sums the GPU orders its own
  // way: measured 9e-4 of the largest gradient on SwiftShader. A wrong kernel (a transposed or dropped term) is off by
  // the gradient itself, hundreds of times more.
  expect(gradErr).toBeLessThan(5e-3);
  expect(page.errors()).toEqual([]);
}, 300_000);
