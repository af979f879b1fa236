import * as tf from '@tensorflow/tfjs';
import { expect } from 'vitest';
import { denoisingLossPerSample } from '../../../src/core/models/diffusion/loss';
import type { NoiseSchedule } from '../../../src/core/models/diffusion/noise';
import type { Unet } from '../../../src/core/models/diffusion/unet';
import { applyLoadedLora, type LoadedLora } from '../../../src/core/models/diffusion/unet-lora';

/**
 * Every input of a fixture denoising loss (`expected/loss_*.json`), spelled out so it does not depend on PyTorch's
 * generator: per-image latents and caption ids, then each draw's image, timestep, noise and loss.
 */
export interface LossFixture {
  loss: number;
  input_ids: number[][];
  latents: number[][][][];
  timesteps: number[];
  noise: number[][][][];
  draw_image: number[];
  per_draw_loss: number[];
}

/** The loss of each of the fixture's draws, in batches of 40, through `lora` when given. */
export async function perDrawLoss(unet: Unet, schedule: NoiseSchedule, captionStates: tf.Tensor3D, fixture: LossFixture, lora?: LoadedLora): Promise<number[]> {
  const applied = lora ? applyLoadedLora(lora) : null;
  const losses: number[] = [];
  try {
    for (let start = 0; start < fixture.timesteps.length; start += 40) {
      const draws = fixture.draw_image.slice(start, start + 40);
      const batch = tf.tidy(() => {
        const images = tf.tensor1d(draws, 'int32');
        return {
          latents: tf.gather(tf.tensor4d(fixture.latents), images) as tf.Tensor4D,
          noise: tf.tensor4d(fixture.noise.slice(start, start + 40)),
          context: tf.gather(captionStates, images) as tf.Tensor3D,
        };
      });
      const timesteps = fixture.timesteps.slice(start, start + 40);
      const loss = denoisingLossPerSample(unet, schedule, { ...batch, timesteps }, applied ? { linear: applied.linear } : undefined);
      losses.push(...(await loss.data()));
      tf.dispose([batch.latents, batch.noise, batch.context, loss]);
    }
  } finally {
    applied?.dispose();
  }
  return losses;
}

/** Each draw's loss within 1e-4 of the fixture's, and so their mean. */
export function expectFixtureLoss(losses: readonly number[], fixture: LossFixture): void {
  expect(losses).toHaveLength(fixture.per_draw_loss.length);
  const worst = Math.max(...losses.map((l, i) => Math.abs(l - fixture.per_draw_loss[i]!)));
  expect(worst).toBeLessThan(1e-4);
  const mean = losses.reduce((a, b) => a + b, 0) / losses.length;
  expect(Math.abs(mean - fixture.loss)).toBeLessThan(1e-4);
}
