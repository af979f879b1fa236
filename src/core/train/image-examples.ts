import * as tf from '@tensorflow/tfjs';
import { fmix32, normalArray, streamKey } from '../random.js';
import type { ExampleSet } from './examples.js';

/**
 * An image set as the trainer walks it: each image's latents (encoded once by the VAE and cached, as kohya's
 * cache_latents does; with flip_aug also the latents of the mirrored image) and which caption it has. The text
 * states of every caption are computed once too when the text encoder is frozen; with a text-encoder LoRA the batch
 * carries the caption's token ids instead and the loss runs the encoder.
 */
export interface CachedImageSet {
  /** [channels, height, width] of one image's latents (4 × resolution/8 × resolution/8 for SD 1.x). */
  readonly latentShape: readonly [number, number, number];
  /** One entry per example: an image repeated n times by its kohya `n_name` folder appears n times. */
  readonly examples: readonly CachedImage[];
  readonly captions: CaptionTexts;
}

export interface CachedImage {
  /** The scaled latents (VAE encoder mean × scaling_factor), NCHW order, one image. */
  readonly latents: Float32Array;
  /** The latents of the horizontally flipped image; null without flip_aug. */
  readonly flippedLatents: Float32Array | null;
  /** Index into the set's captions. */
  readonly caption: number;
}

/** Every distinct caption, as the UNet sees it (frozen text encoder) or as the text encoder reads it. */
export type CaptionTexts =
  | { readonly kind: 'states'; readonly tokens: number; readonly width: number; readonly states: readonly Float32Array[] }
  | { readonly kind: 'ids'; readonly ids: readonly (readonly number[])[] };

/** Noise and timesteps fixed per validation image, drawn once from the run's seed: a loss comparable step to step. */
export interface FixedDraws {
  readonly noise: tf.Tensor4D;
  readonly timesteps: readonly number[];
}

/** One micro-batch on the device. */
export interface ImageBatch {
  readonly latents: tf.Tensor4D;
  /** The flipped images' latents, aligned with `latents`; null when flip_aug is off (or for validation). */
  readonly flippedLatents: tf.Tensor4D | null;
  readonly text: { readonly kind: 'states'; readonly context: tf.Tensor3D } | { readonly kind: 'ids'; readonly ids: readonly (readonly number[])[] };
  /** Present for validation batches only: the loss uses these draws instead of fresh ones. */
  readonly fixed: FixedDraws | null;
}

// Stream keys' first parts: validation draws stay apart from training draws and from LoRA's own streams.
const VALIDATION_NOISE_STREAM = 11;
const VALIDATION_TIMESTEP_STREAM = 12;

function stack(parts: readonly Float32Array[], size: number): Float32Array {
  const out = new Float32Array(parts.length * size);
  parts.forEach((p, i) => out.set(p, i * size));
  return out;
}

function hashSet(set: CachedImageSet): string {
  let a = fmix32(0x243f6a88 ^ set.examples.length);
  let b = fmix32(0x85a308d3 ^ set.latentShape.reduce((n, d) => n * d, 1));
  const mix = (x: number): void => {
    a = fmix32((a ^ x) + 0x9e3779b9);
    b = fmix32((b + Math.imul(x, 0x7feb352d)) ^ a);
  };
  const mixFloats = (values: Float32Array): void => {
    const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
    for (let i = 0; i < words.length; i++) mix(words[i]!);
  };
  for (const e of set.examples) {
    mixFloats(e.latents);
    mix(e.flippedLatents === null ? 0 : 1);
    mix(e.caption);
  }
  const captions = set.captions;
  // The captions as the loss reads them: token ids, or the frozen encoder's states (a changed caption changes them).
  if (captions.kind === 'ids') for (const ids of captions.ids) for (const id of ids) mix(id);
  else for (const states of captions.states) mixFloats(states);
  return a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0');
}

function uploadText(set: CachedImageSet, indices: readonly number[]): ImageBatch['text'] {
  const captions = set.captions;
  const of = indices.map((i) => set.examples[i]!.caption);
  if (captions.kind === 'ids') return { kind: 'ids', ids: of.map((c) => captions.ids[c]!) };
  const size = captions.tokens * captions.width;
  return { kind: 'states', context: tf.tensor3d(stack(of.map((c) => captions.states[c]!), size), [of.length, captions.tokens, captions.width]) };
}

function releaseBatch(batch: ImageBatch): void {
  tf.dispose([batch.latents, ...(batch.flippedLatents ? [batch.flippedLatents] : []), ...(batch.fixed ? [batch.fixed.noise] : [])]);
  if (batch.text.kind === 'states') batch.text.context.dispose();
}

function baseSet(set: CachedImageSet): Omit<ExampleSet<ImageBatch>, 'upload' | 'emptyProblem'> {
  const [c, h, w] = set.latentShape;
  return {
    count: set.examples.length,
    exampleSize: c * h * w,
    throughputUnitsPerExample: 1,
    // Every image counts alike: the loss is a mean over images (each a mean over its latent elements).
    weightOf: (indices) => indices.length,
    release: releaseBatch,
    fingerprint: () => hashSet(set),
  };
}

/** The training images: latents (and flipped latents with flip_aug) and caption text; the loss draws the noise. */
export function trainingImages(set: CachedImageSet): ExampleSet<ImageBatch> {
  const [c, h, w] = set.latentShape;
  const size = c * h * w;
  return {
    ...baseSet(set),
    upload: (indices) => {
      const chosen = indices.map((i) => set.examples[i]!);
      const flips = chosen.every((e) => e.flippedLatents !== null);
      return {
        latents: tf.tensor4d(stack(chosen.map((e) => e.latents), size), [chosen.length, c, h, w]),
        flippedLatents: flips ? tf.tensor4d(stack(chosen.map((e) => e.flippedLatents!), size), [chosen.length, c, h, w]) : null,
        text: uploadText(set, indices),
        fixed: null,
      };
    },
    emptyProblem: { subject: 'training images', problem: 'hold no image.', fix: 'Add images (png, jpg, webp) with captions to the folder.' },
  };
}

/**
 * The validation images with their fixed draws: image i's noise comes from (seed, i); the timesteps are stratified
 * over the schedule (image i's falls in the i-th of n equal slices, at a seeded place in it, slices dealt to images
 * in a seeded order), so a small validation set still covers noisy and nearly clean inputs alike. No flipping.
 */
export function validationImages(set: CachedImageSet, seed: number, numTrainTimesteps: number): ExampleSet<ImageBatch> {
  const [c, h, w] = set.latentShape;
  const size = c * h * w;
  const n = set.examples.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => streamKey(VALIDATION_TIMESTEP_STREAM, seed, 0, a) - streamKey(VALIDATION_TIMESTEP_STREAM, seed, 0, b));
  const timesteps = new Array<number>(n);
  order.forEach((image, slice) => {
    const within = streamKey(VALIDATION_TIMESTEP_STREAM, seed, 1, image) / 4294967296;
    timesteps[image] = Math.min(numTrainTimesteps - 1, Math.floor(((slice + within) / n) * numTrainTimesteps));
  });
  return {
    ...baseSet(set),
    upload: (indices) => ({
      latents: tf.tensor4d(stack(indices.map((i) => set.examples[i]!.latents), size), [indices.length, c, h, w]),
      flippedLatents: null,
      text: uploadText(set, indices),
      fixed: {
        noise: tf.tensor4d(stack(indices.map((i) => normalArray(streamKey(VALIDATION_NOISE_STREAM, seed, i), size)), size), [indices.length, c, h, w]),
        timesteps: indices.map((i) => timesteps[i]!),
      },
    }),
    emptyProblem: { subject: 'validation images', problem: 'hold no image.', fix: 'Add images to the validation folder or leave val_data empty.' },
  };
}
