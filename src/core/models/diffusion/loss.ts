import * as tf from '@tensorflow/tfjs';
import { addNoise, denoisingTarget, type NoiseSchedule } from './noise.js';
import type { Unet, UnetForwardOptions } from './unet.js';

/**
 * The denoising loss Stable Diffusion is trained (and its LoRAs fine-tuned) with, as diffusers' train_text_to_image
 * and kohya's sd-scripts compute it: noise the clean latents to x_t at each sample's timestep, let the UNet predict
 * from x_t, the timestep and the caption's text states, and take the mean squared error against the scheduler's
 * target (ε, or v for v-prediction models).
 */
export interface DenoisingBatch {
  /** Clean latents x0 [batch, c, h, w]: the VAE encoder's mean × scaling_factor. */
  readonly latents: tf.Tensor4D;
  /** ε [batch, c, h, w], standard normal. */
  readonly noise: tf.Tensor4D;
  /** One integer timestep per sample, in 0 … num_train_timesteps − 1. */
  readonly timesteps: readonly number[];
  /** The text encoder's last hidden states for each sample's caption [batch, tokens, cross_attention_dim]. */
  readonly context: tf.Tensor3D;
}

/** Each sample's mean squared error over its latent elements [batch]: what min-SNR weighting and per-image logs need. */
export function denoisingLossPerSample(unet: Unet, schedule: NoiseSchedule, batch: DenoisingBatch, opts?: UnetForwardOptions): tf.Tensor1D {
  return tf.tidy(() => {
    const noisy = addNoise(schedule, batch.latents, batch.noise, batch.timesteps);
    const prediction = unet.forward(noisy, batch.timesteps, batch.context, opts);
    const target = denoisingTarget(schedule, batch.latents, batch.noise, batch.timesteps);
    return tf.mean(tf.squaredDifference(prediction, target), [1, 2, 3]);
  });
}

/** The batch's loss: the mean squared error over every element (= the mean of the per-sample losses, all equally sized). */
export function denoisingLoss(unet: Unet, schedule: NoiseSchedule, batch: DenoisingBatch, opts?: UnetForwardOptions): tf.Scalar {
  return tf.tidy(() => tf.mean(denoisingLossPerSample(unet, schedule, batch, opts)));
}
