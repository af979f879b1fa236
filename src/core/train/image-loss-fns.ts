import * as tf from '@tensorflow/tfjs';
import type { LinearApply } from '../models/linear.js';
import { denoisingLossPerSample } from '../models/diffusion/loss.js';
import type { NoiseSchedule } from '../models/diffusion/noise.js';
import type { Unet } from '../models/diffusion/unet.js';
import { normalArray, streamKey, uint32Stream } from '../random.js';
import type { EvalLossFn, LossFn } from './batch.js';
import type { ImageBatch } from './image-examples.js';
import type { AdapterHook } from './loss-fns.js';

/** The text encoder a text-encoder LoRA trains through: ids in, last hidden states out, projections through `linear`. */
export interface TextEncoderHook {
  forward(ids: readonly (readonly number[])[], opts: { linear: LinearApply }): { lastHiddenState: tf.Tensor3D; pooled: tf.Tensor2D };
}

export interface ImageLossOptions {
  /** The run's seed: every draw of a training pass comes from (seed, pass), so a resumed run draws the same. */
  readonly seed: number;
  /** kohya's noise_offset: ε + offset·n with n one normal draw per image and channel (darker darks, brighter brights). 0 = off. */
  readonly noiseOffset: number;
  /** Min-SNR-γ loss weighting (Hang et al. 2023, kohya's min_snr_gamma); 0 = off, every timestep weighs alike. */
  readonly minSnrGamma: number;
  /** Recompute each UNet block in the backward pass instead of keeping its activations (run config gradient_checkpointing). */
  readonly gradientCheckpointing?: boolean;
}

/** What is trained: the UNet's LoRA, and optionally a text encoder's (then batches carry token ids). */
export interface ImageLoraParts {
  readonly unet: Unet;
  readonly schedule: NoiseSchedule;
  readonly unetAdapter: AdapterHook;
  readonly textEncoder?: { readonly model: TextEncoderHook; readonly adapter: AdapterHook } | null;
}

// Stream keys' first parts, apart from LoRA's (1, 2) and validation's (11, 12).
const TIMESTEP_STREAM = 21;
const NOISE_STREAM = 22;
const OFFSET_STREAM = 23;
const FLIP_STREAM = 24;
const TEXT_ENCODER_LORA_STREAM = 25;

/**
 * The seed of the text-encoder LoRA's own draws (its A's initialisation, its dropout masks). Both adapters key their
 * draws by (seed, module index, …), so with the run's own seed the text encoder's module 0 would start from, and
 * drop, the same values as the UNet's module 0.
 */
export const textEncoderLoraSeed = (seed: number): number => streamKey(TEXT_ENCODER_LORA_STREAM, seed);

/**
 * The per-sample weight of min-SNR-γ: min(SNR, γ)/SNR for ε-prediction, min(SNR, γ)/(SNR + 1) for v-prediction,
 * SNR_t = ᾱ_t / (1 − ᾱ_t); as sd-scripts' apply_snr_weight.
 */
export function minSnrWeights(schedule: NoiseSchedule, timesteps: readonly number[], gamma: number): Float32Array {
  return Float32Array.from(timesteps, (t) => {
    const a = schedule.alphasCumprod[t]!;
    const snr = a / (1 - a);
    return Math.min(snr, gamma) / (schedule.predictionType === 'v_prediction' ? snr + 1 : snr);
  });
}

function contextOf(batch: ImageBatch, parts: ImageLoraParts, textLinear: LinearApply | null): tf.Tensor3D {
  if (batch.text.kind === 'states') return batch.text.context;
  const encoder = parts.textEncoder;
  if (!encoder || !textLinear) throw new Error('image batch carries token ids but no text encoder is being trained');
  const out = encoder.model.forward(batch.text.ids, { linear: textLinear });
  out.pooled.dispose();
  return out.lastHiddenState;
}

/**
 * The training loss of one micro-batch, as kohya's train_network computes it: timesteps uniform in
 * [0, num_train_timesteps), ε standard normal (plus the noise offset), each image flipped or not at even odds when
 * flip_aug cached both, the denoising MSE per image, min-SNR weighted when asked, averaged over the images.
 */
export function imageLoraLossFn(parts: ImageLoraParts, opts: ImageLossOptions): LossFn<ImageBatch> {
  const { schedule } = parts;
  return (batch, ctx) =>
    tf.tidy(() => {
      const [n, c, h, w] = batch.latents.shape;
      const pass = ctx.pass;
      const nextT = uint32Stream(streamKey(TIMESTEP_STREAM, opts.seed, pass));
      const timesteps = Array.from({ length: n }, () => Math.floor((nextT() / 4294967296) * schedule.numTrainTimesteps));
      let noise = tf.tensor4d(normalArray(streamKey(NOISE_STREAM, opts.seed, pass), n * c * h * w), [n, c, h, w]);
      if (opts.noiseOffset > 0) {
        const offset = tf.tensor4d(normalArray(streamKey(OFFSET_STREAM, opts.seed, pass), n * c), [n, c, 1, 1]);
        noise = tf.add(noise, tf.mul(offset, opts.noiseOffset));
      }
      let latents = batch.latents;
      if (batch.flippedLatents) {
        const nextFlip = uint32Stream(streamKey(FLIP_STREAM, opts.seed, pass));
        const flip = tf.tensor4d(Float32Array.from({ length: n }, () => (nextFlip() < 2147483648 ? 1 : 0)), [n, 1, 1, 1]);
        latents = tf.add(tf.mul(batch.flippedLatents, flip), tf.mul(batch.latents, tf.sub(1, flip)));
      }
      const textLinear = parts.textEncoder ? parts.textEncoder.adapter.apply({ training: true, seed: textEncoderLoraSeed(opts.seed), step: pass }) : null;
      const context = contextOf(batch, parts, textLinear);
      const linear = parts.unetAdapter.apply({ training: true, seed: opts.seed, step: pass });
      const perImage = denoisingLossPerSample(parts.unet, schedule, { latents, noise, timesteps, context }, { linear, gradientCheckpointing: opts.gradientCheckpointing ?? false });
      if (opts.minSnrGamma > 0) {
        return tf.mean(tf.mul(perImage, tf.tensor1d(minSnrWeights(schedule, timesteps, opts.minSnrGamma))));
      }
      return tf.mean(perImage);
    });
}

/**
 * The validation loss: the plain denoising MSE with each image's fixed noise and timestep, no dropout, no
 * weighting, so eval_loss moves only when the adapter does.
 */
export function imageLoraEvalLossFn(parts: ImageLoraParts): EvalLossFn<ImageBatch> {
  return (batch) =>
    tf.tidy(() => {
      if (!batch.fixed) throw new Error('a validation image batch needs its fixed draws');
      const textLinear = parts.textEncoder ? parts.textEncoder.adapter.apply({ training: false }) : null;
      const context = contextOf(batch, parts, textLinear);
      const linear = parts.unetAdapter.apply({ training: false });
      const perImage = denoisingLossPerSample(parts.unet, parts.schedule, { latents: batch.latents, noise: batch.fixed.noise, timesteps: batch.fixed.timesteps, context }, { linear });
      return tf.mean(perImage);
    });
}
