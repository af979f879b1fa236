import * as tf from '@tensorflow/tfjs';
import type { CachedImage, CachedImageSet, CaptionTexts } from '../../train/image-examples.js';
import type { ClipTextModel } from './clip-text.js';
import type { ClipTokenizer } from './clip-tokenizer.js';
import { pixelsFromBytes, type Vae } from './vae.js';

/** One prepared training image: square RGB bytes (rows top to bottom), its caption, and its mirror image when flip_aug is on. */
export interface PreparedImage {
  readonly size: number;
  readonly rgb: Uint8Array;
  readonly flippedRgb: Uint8Array | null;
  readonly caption: string;
  /** kohya's `n_name` folder count: the image is trained on this many times per epoch. */
  readonly repeats: number;
}

/** Images per VAE pass while caching: enough to keep the device busy, few enough for 512² images on a small GPU. */
const ENCODE_BATCH = 4;

/**
 * The VAE encoder's mean × scaling_factor for each image (no sampling from the latent distribution, as the reference
 * and kohya's cache_latents take it), read back to the host once so training never runs the encoder again.
 */
export async function encodeLatents(vae: Vae, images: readonly Uint8Array[], size: number, onProgress?: (done: number) => void): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (let start = 0; start < images.length; start += ENCODE_BATCH) {
    const chunk = images.slice(start, start + ENCODE_BATCH);
    const bytes = new Uint8Array(chunk.length * size * size * 3);
    chunk.forEach((img, i) => bytes.set(img, i * size * size * 3));
    const scaled = tf.tidy(() => {
      const pixels = pixelsFromBytes(tf.tensor4d(bytes, [chunk.length, size, size, 3], 'int32'));
      const { mean, logvar } = vae.encode(pixels);
      logvar.dispose();
      return tf.mul(mean, vae.config.scalingFactor) as tf.Tensor4D;
    });
    const values = (await scaled.data()) as Float32Array;
    const per = values.length / chunk.length;
    for (let i = 0; i < chunk.length; i++) out.push(values.slice(i * per, (i + 1) * per));
    scaled.dispose();
    onProgress?.(out.length);
  }
  return out;
}

/** Each distinct caption's text-encoder output, computed once: what a frozen text encoder gives the UNet every step. */
export async function captionStates(textEncoder: ClipTextModel, tokenizer: ClipTokenizer, captions: readonly string[]): Promise<CaptionTexts> {
  const states: Float32Array[] = [];
  let tokens = 0;
  let width = 0;
  for (const caption of captions) {
    const { lastHiddenState, pooled } = textEncoder.forward([tokenizer.encodeForModel(caption)]);
    pooled.dispose();
    [, tokens, width] = lastHiddenState.shape;
    states.push(((await lastHiddenState.data()) as Float32Array).slice());
    lastHiddenState.dispose();
  }
  return { kind: 'states', tokens, width, states };
}

/**
 * The cached set the trainer walks: every image encoded once (and its mirror with flip_aug), repeated as its folder
 * says, with its caption as text states (frozen text encoder) or token ids (text-encoder LoRA).
 */
export async function cacheImageSet(
  parts: { readonly vae: Vae; readonly textEncoder: ClipTextModel; readonly tokenizer: ClipTokenizer },
  images: readonly PreparedImage[],
  opts: { readonly trainTextEncoder: boolean; readonly onProgress?: (done: number, total: number) => void },
): Promise<CachedImageSet> {
  if (images.length === 0) return { latentShape: [0, 0, 0], examples: [], captions: { kind: 'ids', ids: [] } };
  const size = images[0]!.size;
  const flips = images.filter((i) => i.flippedRgb !== null).length;
  const total = images.length + flips;
  const latents = await encodeLatents(parts.vae, images.map((i) => i.rgb), size, (done) => opts.onProgress?.(done, total));
  const flipped = flips > 0 ? await encodeLatents(parts.vae, images.filter((i) => i.flippedRgb).map((i) => i.flippedRgb!), size, (done) => opts.onProgress?.(images.length + done, total)) : [];
  const distinct = [...new Set(images.map((i) => i.caption))];
  const captionIndex = new Map(distinct.map((c, i) => [c, i]));
  const captions: CaptionTexts = opts.trainTextEncoder
    ? { kind: 'ids', ids: distinct.map((c) => parts.tokenizer.encodeForModel(c)) }
    : await captionStates(parts.textEncoder, parts.tokenizer, distinct);
  const examples: CachedImage[] = [];
  let flipAt = 0;
  images.forEach((image, i) => {
    const entry: CachedImage = { latents: latents[i]!, flippedLatents: image.flippedRgb ? flipped[flipAt++]! : null, caption: captionIndex.get(image.caption)! };
    for (let r = 0; r < image.repeats; r++) examples.push(entry);
  });
  const factor = parts.vae.downscale;
  return { latentShape: [latents[0]!.length / ((size / factor) * (size / factor)), size / factor, size / factor], examples, captions };
}
