import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors.js';
import { encodePng } from '../../image/png.js';
import { normalArray, streamKey } from '../../random.js';
import type { LinearApply } from '../linear.js';
import { buildClipTextModel, type ClipTextModel } from './clip-text.js';
import { loadClipTokenizerFromFolder, type ClipTokenizer } from './clip-tokenizer.js';
import { disposeComponent, loadDiffusersComponent, readComponentConfig, type DiffusersComponent, type DiffusersFolder } from './component.js';
import { ddimSample, parseDdimScheduler, type DdimScheduler } from './ddim.js';
import { buildUnet, type Unet } from './unet.js';
import { buildVae, bytesFromPixels, type Vae } from './vae.js';
import type { WeightPlacement } from '../../weights/hold.js';

/**
 * Sample images from a Stable Diffusion 1.x pipeline, as diffusers' StableDiffusionPipeline makes them with a
 * DDIMScheduler (η = 0): CLIP text states for the prompt and the negative prompt, seeded Gaussian latents,
 * classifier-free guidance, the DDIM loop, and the VAE decode to RGB bytes. A LoRA's projection hook (`linear`)
 * runs in the UNet and the text encoder, so the samples show what the adapter learned.
 */

/** The parts of a diffusers SD folder that sampling uses. */
export interface SamplingPipeline {
  readonly tokenizer: ClipTokenizer;
  readonly textEncoder: ClipTextModel;
  readonly unet: Unet;
  readonly vae: Vae;
  readonly scheduler: DdimScheduler;
}

export interface SampleOptions {
  /** DDIM steps (20–30 is what SD 1.x samplers usually take). */
  readonly steps: number;
  /** Classifier-free guidance scale; 7.5 by default. At 1 or below only the prompt's pass runs, as in diffusers. */
  readonly guidanceScale?: number;
  /** Prompt i's starting noise is drawn from (seed, i) alone: the same seed gives the same image in any batch. */
  readonly seed: number;
  /** What guidance steers away from; the empty prompt when absent. */
  readonly negativePrompt?: string;
  /** In pixels, multiples of the VAE's downscale (8 for SD). */
  readonly width: number;
  readonly height: number;
  /** The projection hook of a LoRA (AppliedLora.linear); the plain projections when absent. */
  readonly linear?: LinearApply;
  /** Awaited after every DDIM step of every prompt, e.g. to report progress. */
  readonly onStep?: (progress: { readonly prompt: number; readonly step: number; readonly steps: number }) => void | Promise<void>;
}

/** One sample: `rgb` holds width × height × 3 bytes, rows top to bottom. */
export interface SampleImage {
  readonly width: number;
  readonly height: number;
  readonly rgb: Uint8Array;
}

export const DEFAULT_GUIDANCE_SCALE = 7.5;

/** Stream tag of the samplers' starting noise, apart from LoRA initialisation's and dropout's (lora/adapter.ts). */
const SAMPLE_NOISE_STREAM = 0x53414d50;

/**
 * Loads the tokenizer, text encoder, UNet, VAE and scheduler config of a diffusers SD folder. `unetPlacement`: how
 * the UNet's frozen projections are held (a run's base_quantization, weights/hold.ts); float32 when absent.
 */
export async function loadSamplingPipeline(folder: DiffusersFolder, opts: { readonly unetPlacement?: WeightPlacement } = {}): Promise<SamplingPipeline & { dispose(): void }> {
  const scheduler = parseDdimScheduler(await readComponentConfig(folder, 'scheduler'));
  const tokenizer = await loadClipTokenizerFromFolder(folder);
  const built: { dispose(): void }[] = [];
  const build = async <T extends { dispose(): void }>(name: 'text_encoder' | 'unet' | 'vae', make: (c: DiffusersComponent) => T): Promise<T> => {
    const component = await loadDiffusersComponent(folder, name);
    try {
      const model = make(component);
      built.push(model);
      return model;
    } catch (e) {
      disposeComponent(component);
      throw e;
    }
  };
  try {
    const textEncoder = await build('text_encoder', buildClipTextModel);
    const unet = await build('unet', (c) => buildUnet(c, opts.unetPlacement ? { placement: opts.unetPlacement } : undefined));
    const vae = await build('vae', buildVae);
    return { tokenizer, textEncoder, unet, vae, scheduler, dispose: () => built.forEach((m) => m.dispose()) };
  } catch (e) {
    built.forEach((m) => m.dispose());
    throw e;
  }
}

/**
 * `n` standard normal float32 draws from the stream of (seed, prompt index). Not PyTorch's generator, so a seed does
 * not reproduce a diffusers image.
 */
export function initialNoise(seed: number, promptIndex: number, n: number): Float32Array {
  return normalArray(streamKey(SAMPLE_NOISE_STREAM, seed, promptIndex), n);
}

function checkOptions(pipeline: SamplingPipeline, opts: SampleOptions): { latentHeight: number; latentWidth: number; guidance: number } {
  const factor = pipeline.vae.downscale;
  for (const [name, size] of [['width', opts.width], ['height', opts.height]] as const) {
    if (!Number.isInteger(size) || size < factor || size % factor !== 0) {
      throw new UserError(`Sample ${name}`, `must be a whole multiple of ${factor} pixels, but it is ${size}.`, `Pick a ${name} such as 512 (SD 1.x's native size).`);
    }
  }
  const guidance = opts.guidanceScale ?? DEFAULT_GUIDANCE_SCALE;
  if (!Number.isFinite(guidance) || guidance < 0) {
    throw new UserError('Guidance scale', `must be a number of at least 0, but it is ${guidance}.`, 'Use 7.5, the usual SD 1.x value.');
  }
  if (!Number.isSafeInteger(opts.seed)) throw new UserError('Sample seed', `must be a whole number, but it is ${opts.seed}.`, 'Pick a whole number such as 42.');
  return { latentHeight: opts.height / factor, latentWidth: opts.width / factor, guidance };
}

/**
 * The denoised latents [1, in_channels, height/f, width/f] (f: the VAE's downscale, 8 for SD) of prompt number `promptIndex` (its starting noise is
 * drawn from (seed, promptIndex)). With guidance above 1 the UNet sees [negative, prompt] as a batch of two and the
 * noise is ε_uncond + scale·(ε_text − ε_uncond); at 1 or below only the prompt's pass runs, as in diffusers. The
 * caller disposes the result.
 */
export async function sampleLatents(pipeline: SamplingPipeline, prompt: string, promptIndex: number, opts: SampleOptions): Promise<tf.Tensor4D> {
  const { latentHeight, latentWidth, guidance } = checkOptions(pipeline, opts);
  const { tokenizer, textEncoder, unet, scheduler } = pipeline;
  const guided = guidance > 1;
  const linear = opts.linear;
  const ids = guided ? [tokenizer.encodeForModel(opts.negativePrompt ?? ''), tokenizer.encodeForModel(prompt)] : [tokenizer.encodeForModel(prompt)];
  const text = textEncoder.forward(ids, { linear });
  text.pooled.dispose();
  const context = text.lastHiddenState;
  const channels = unet.config.inChannels;
  const noise = tf.tensor4d(initialNoise(opts.seed, promptIndex, channels * latentHeight * latentWidth), [1, channels, latentHeight, latentWidth]);
  const denoise = (x: tf.Tensor4D, t: number): tf.Tensor4D =>
    tf.tidy(() => {
      if (!guided) return unet.forward(x, [t], context, { linear });
      const both = unet.forward(tf.concat([x, x]), [t, t], context, { linear });
      const [uncond, cond] = tf.split(both, 2) as [tf.Tensor4D, tf.Tensor4D];
      return tf.add(uncond, tf.mul(tf.sub(cond, uncond), guidance));
    });
  try {
    return await ddimSample(scheduler, opts.steps, noise, denoise, (step, steps) => opts.onStep?.({ prompt: promptIndex, step, steps }));
  } finally {
    tf.dispose([noise, context]);
  }
}

/** vae.decode(latents / scaling_factor), rounded to bytes as diffusers' image processor does. `latents` is left alone. */
export async function decodeLatents(vae: Vae, latents: tf.Tensor4D): Promise<SampleImage> {
  if (latents.shape[0] !== 1) throw new Error(`decodeLatents: a batch of ${latents.shape[0]} latents, expected 1`);
  const bytes = tf.tidy(() => bytesFromPixels(vae.decode(tf.div(latents, vae.config.scalingFactor))));
  const [, height, width] = bytes.shape;
  try {
    return { width, height, rgb: Uint8Array.from(await bytes.data()) };
  } finally {
    bytes.dispose();
  }
}

/** One image per prompt, prompt i from the noise of (seed, i): see sampleLatents and decodeLatents. */
export async function sampleImages(pipeline: SamplingPipeline, prompts: readonly string[], opts: SampleOptions): Promise<SampleImage[]> {
  checkOptions(pipeline, opts);
  const images: SampleImage[] = [];
  for (const [i, prompt] of prompts.entries()) {
    const latents = await sampleLatents(pipeline, prompt, i, opts);
    try {
      images.push(await decodeLatents(pipeline.vae, latents));
    } finally {
      latents.dispose();
    }
  }
  return images;
}

/** The sample as an 8-bit RGB PNG (for the run's files and TensorBoard image summaries). */
export function samplePng(image: SampleImage): Uint8Array {
  return encodePng(image.width, image.height, image.rgb);
}
