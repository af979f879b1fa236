import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The wasm backend (the browser's fallback without WebGPU) runs the UNet's convolutions ~7× faster than cpu.
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { readComponentConfig } from '../../src/core/models/diffusion/component';
import { ddimSample, ddimSteps, ddimTimesteps, parseDdimScheduler, type DdimScheduler, type TimestepSpacing } from '../../src/core/models/diffusion/ddim';
import { decodeLatents, initialNoise, loadSamplingPipeline, sampleImages, sampleLatents, samplePng, type SampleOptions, type SamplingPipeline } from '../../src/core/models/diffusion/sample';
import { applyLoadedLora, readKohyaLora } from '../../src/core/models/diffusion/unet-lora';
import { bytesSource } from '../../src/core/safetensors/index';
import { diffusersFolderFromDisk, SD_FIXTURES } from './support/diffusers-folder';
import { decodePng } from './support/png';

/** SD 1.5's scheduler config as the model ships it (PNDMScheduler; DDIMScheduler.from_config reads the same keys). */
const SD15_SCHEDULER = {
  _class_name: 'PNDMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
  clip_sample: false,
};
const scheduler = (extra: Record<string, unknown> = {}): DdimScheduler => parseDdimScheduler({ ...SD15_SCHEDULER, ...extra });

/**
 * The timesteps diffusers' DDIMScheduler.set_timesteps gives for T = 1000, written out by numpy 2.4 from the
 * definitions (leading: arange(n)·(T//n) reversed + steps_offset; trailing: round(arange(T, 0, −T/n)) − 1;
 * linspace: round(linspace(0, T − 1, n)) reversed, numpy rounding halves to even).
 */
const DIFFUSERS_TIMESTEPS: Record<string, number[]> = {
  'leading 50': [
    981, 961, 941, 921, 901, 881, 861, 841, 821, 801, 781, 761, 741, 721, 701, 681, 661, 641, 621, 601, 581, 561, 541, 521, 501, 481, 461, 441,
    421, 401, 381, 361, 341, 321, 301, 281, 261, 241, 221, 201, 181, 161, 141, 121, 101, 81, 61, 41, 21, 1,
  ],
  'leading 20': [951, 901, 851, 801, 751, 701, 651, 601, 551, 501, 451, 401, 351, 301, 251, 201, 151, 101, 51, 1],
  'trailing 50': [
    999, 979, 959, 939, 919, 899, 879, 859, 839, 819, 799, 779, 759, 739, 719, 699, 679, 659, 639, 619, 599, 579, 559, 539, 519, 499, 479, 459,
    439, 419, 399, 379, 359, 339, 319, 299, 279, 259, 239, 219, 199, 179, 159, 139, 119, 99, 79, 59, 39, 19,
  ],
  'trailing 20': [999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 499, 449, 399, 349, 299, 249, 199, 149, 99, 49],
  'trailing 30': [
    999, 966, 932, 899, 866, 832, 799, 766, 732, 699, 666, 632, 599, 566, 532, 499, 466, 432, 399, 366, 332, 299, 266, 232, 199, 166, 132, 99, 66, 32,
  ],
  'linspace 50': [
    999, 979, 958, 938, 917, 897, 877, 856, 836, 816, 795, 775, 754, 734, 714, 693, 673, 652, 632, 612, 591, 571, 550, 530, 510, 489, 469, 449,
    428, 408, 387, 367, 347, 326, 306, 285, 265, 245, 224, 204, 183, 163, 143, 122, 102, 82, 61, 41, 20, 0,
  ],
  'linspace 20': [999, 946, 894, 841, 789, 736, 684, 631, 578, 526, 473, 421, 368, 315, 263, 210, 158, 105, 53, 0],
  'linspace 3': [999, 500, 0],
};

const SPACINGS: readonly TimestepSpacing[] = ['leading', 'trailing', 'linspace'];

function randomTensor(seed: number, shape: [number, number, number, number]): tf.Tensor4D {
  return tf.randomNormal(shape, 0, 1, 'float32', seed);
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

/**
 * A perfect denoiser for one known clean sample x0: from x_t it returns the ε (or v) that x_t would have been made
 * with, ε = (x_t − √ᾱ·x0)/√(1 − ᾱ), in float64 on the host. DDIM fed with it must land on x0 (or on the final ᾱ's
 * noising of x0): the predicted x0 of every step is x0 itself.
 */
function oracle(s: DdimScheduler, x0: Float64Array, shape: [number, number, number, number]) {
  return (x: tf.Tensor4D, t: number): tf.Tensor4D => {
    const a = s.schedule.alphasCumprod[t]!;
    const xt = x.dataSync();
    const out = new Float32Array(xt.length);
    for (let i = 0; i < xt.length; i++) {
      const eps = (xt[i]! - Math.sqrt(a) * x0[i]!) / Math.sqrt(1 - a);
      out[i] = s.schedule.predictionType === 'epsilon' ? eps : Math.sqrt(a) * eps - Math.sqrt(1 - a) * x0[i]!;
    }
    return tf.tensor4d(out, shape);
  };
}

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
});

describe('DDIM timesteps (diffusers DDIMScheduler.set_timesteps)', () => {
  it.each(Object.entries(DIFFUSERS_TIMESTEPS))("gives diffusers' list for %s steps of SD 1.5's config", (name, want) => {
    const [spacing, steps] = name.split(' ') as [TimestepSpacing, string];
    expect(ddimTimesteps(scheduler({ timestep_spacing: spacing }), Number(steps))).toEqual(want);
  });

  it('steps from t to t − ⌊T/n⌋ whatever the spacing, ending at ᾱ_0 (set_alpha_to_one false) or 1', () => {
    const s = scheduler({ timestep_spacing: 'linspace' });
    const steps = ddimSteps(s, 20);
    // linspace's 946 is followed by 894, but DDIM's update goes to 946 − 50 = 896, as diffusers' step() does.
    expect(steps[1]).toEqual({ timestep: 946, alphaCumprod: s.schedule.alphasCumprod[946], alphaCumprodPrev: s.schedule.alphasCumprod[896] });
    expect(steps.at(-1)!.alphaCumprodPrev).toBe(s.schedule.alphasCumprod[0]);
    expect(ddimSteps(scheduler({ set_alpha_to_one: true }), 20).at(-1)!.alphaCumprodPrev).toBe(1);
  });

  it("reads a DDPM config with DDIMScheduler's defaults: clip_sample and set_alpha_to_one on, leading, no offset", () => {
    const s = parseDdimScheduler({ beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012 });
    expect([s.timestepSpacing, s.stepsOffset, s.finalAlphaCumprod, s.clipSampleRange]).toEqual(['leading', 0, 1, 1]);
    expect(ddimTimesteps(s, 20).slice(0, 2)).toEqual([950, 900]);
  });

  it('refuses what it does not implement or cannot step, with a UserError naming it', () => {
    const error = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(isUserError(e)).toBe(true);
        return (e as Error).message;
      }
      throw new Error('did not throw');
    };
    expect(error(() => scheduler({ timestep_spacing: 'karras' }))).toMatch(/"timestep_spacing" is "karras"/);
    expect(error(() => scheduler({ thresholding: true }))).toMatch(/"thresholding" is true/);
    expect(error(() => ddimTimesteps(scheduler(), 0))).toMatch(/Sampling steps.*from 1 to 1000/);
    // 1000 leading steps with offset 1 would start at t = 1000, past the table (diffusers indexes out of range).
    expect(error(() => ddimTimesteps(scheduler(), 1000))).toMatch(/would start at timestep 1000/);
  });
});

describe('DDIM update with an oracle denoiser', () => {
  const shape: [number, number, number, number] = [1, 4, 8, 8];
  let x0Tensor: tf.Tensor4D;
  let x0: Float64Array;
  let noise: tf.Tensor4D;
  beforeAll(() => {
    x0Tensor = randomTensor(1, shape);
    x0 = Float64Array.from(x0Tensor.dataSync());
    noise = randomTensor(2, shape);
  });
  afterAll(() => tf.dispose([x0Tensor, noise]));

  for (const prediction of ['epsilon', 'v_prediction'] as const) {
    it.each(SPACINGS)(`${prediction}, %s spacing: ends at x0 within 1e-4 when the final ᾱ is 1`, async (spacing) => {
      const s = scheduler({ timestep_spacing: spacing, set_alpha_to_one: true, prediction_type: prediction });
      for (const steps of [20, 50]) {
        const out = await ddimSample(s, steps, noise, oracle(s, x0, shape));
        expect(maxAbsDiff(out, x0Tensor)).toBeLessThan(1e-4);
        out.dispose();
      }
    });
  }

  it.each(['leading', 'trailing'] as const)(
    '%s spacing with SD 1.5’s final ᾱ_0: ends at √ᾱ0·x0 + √(1−ᾱ0)·ε̂, ε̂ the first step’s noise estimate',
    async (spacing) => {
      const s = scheduler({ timestep_spacing: spacing });
      const [first] = ddimTimesteps(s, 20);
      const aT = s.schedule.alphasCumprod[first!]!;
      const a0 = s.schedule.alphasCumprod[0]!;
      // Each step lands exactly where the next one starts, so the noise estimate stays that of the first step.
      const initial = noise.dataSync();
      const want = x0.map((x, i) => Math.sqrt(a0) * x + Math.sqrt(1 - a0) * ((initial[i]! - Math.sqrt(aT) * x) / Math.sqrt(1 - aT)));
      const out = await ddimSample(s, 20, noise, oracle(s, x0, shape));
      const got = out.dataSync();
      expect(Math.max(...want.map((w, i) => Math.abs(w - got[i]!)))).toBeLessThan(1e-4);
      // Not x0 itself: SD 1.5 stops one noise level short of a clean sample.
      expect(maxAbsDiff(out, x0Tensor)).toBeGreaterThan(1e-3);
      out.dispose();
    },
  );

  it('clamps the predicted x0 to ±clip_sample_range when clip_sample is on', async () => {
    const s = scheduler({ clip_sample: true, clip_sample_range: 0.5, set_alpha_to_one: true });
    const out = await ddimSample(s, 20, noise, oracle(s, x0, shape));
    const want = tf.clipByValue(x0Tensor, -0.5, 0.5);
    expect(maxAbsDiff(out, want)).toBeLessThan(1e-4);
    tf.dispose([out, want]);
  });
});

describe('sampling the tiny-sd pipeline', () => {
  let pipeline: SamplingPipeline & { dispose(): void };
  const prompt = 'a small red circle on a blue background';
  const base: SampleOptions = { steps: 20, seed: 7, width: 32, height: 32 };

  beforeAll(async () => {
    pipeline = await loadSamplingPipeline(diffusersFolderFromDisk());
  });
  afterAll(() => pipeline?.dispose());

  it('draws each prompt’s noise from (seed, prompt index) alone: standard normal, same seed same noise', () => {
    const a = initialNoise(7, 0, 20000);
    expect(initialNoise(7, 0, 256)).toEqual(a.subarray(0, 256));
    const mean = a.reduce((s, v) => s + v, 0) / a.length;
    const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
    // 20,000 draws: the standard error of the mean is 0.007, of the variance 0.01.
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.04);
    expect(initialNoise(7, 1, 256)).not.toEqual(a.subarray(0, 256));
    expect(initialNoise(8, 0, 256)).not.toEqual(a.subarray(0, 256));
  });

  it('samples a 32×32 image deterministically: same seed same bytes, another seed other bytes, in any batch', async () => {
    const before = tf.memory().numTensors;
    const [first, second] = await sampleImages(pipeline, [prompt, 'a large green square on a white background'], base);
    const [again] = await sampleImages(pipeline, [prompt], base);
    const [other] = await sampleImages(pipeline, [prompt], { ...base, seed: 8 });
    expect(tf.memory().numTensors).toBe(before);
    expect([first!.width, first!.height, first!.rgb.length]).toEqual([32, 32, 32 * 32 * 3]);
    expect(again!.rgb).toEqual(first!.rgb);
    expect(other!.rgb).not.toEqual(first!.rgb);
    expect(second!.rgb).not.toEqual(first!.rgb);
    // A picture, not a flat or saturated field.
    const distinct = new Set(first!.rgb);
    expect(distinct.size).toBeGreaterThan(20);
    // samplePng's bytes decode (by an independent decoder) to the same pixels.
    const png = decodePng(samplePng(first!));
    expect([png.width, png.height]).toEqual([32, 32]);
    for (const [x, y] of [[0, 0], [31, 0], [5, 17], [31, 31]] as const) {
      expect(png.pixel(x, y)).toEqual([...first!.rgb.subarray((y * 32 + x) * 3, (y * 32 + x) * 3 + 3)]);
    }
  });

  it('ends with finite latents of the UNet’s shape', async () => {
    const latents = await sampleLatents(pipeline, prompt, 0, base);
    // The tiny VAE has three blocks, so it shrinks 32×32 images by 4 per side (SD's has four: 8).
    expect(latents.shape).toEqual([1, 4, 8, 8]);
    const values = latents.dataSync();
    expect(values.every(Number.isFinite)).toBe(true);
    latents.dispose();
  });

  it('at guidance 1 runs only the prompt’s pass: the negative prompt has no effect, and it equals a text-only DDIM loop', async () => {
    const one = { ...base, guidanceScale: 1 };
    const plain = await sampleLatents(pipeline, prompt, 0, one);
    const withNegative = await sampleLatents(pipeline, prompt, 0, { ...one, negativePrompt: 'a large green square' });
    expect(maxAbsDiff(plain, withNegative)).toBe(0);

    // The same loop spelled out here: CLIP states of the prompt alone, the UNet's ε each step, no uncond pass.
    const { lastHiddenState, pooled } = pipeline.textEncoder.forward([pipeline.tokenizer.encodeForModel(prompt)]);
    const initial = tf.tensor4d(initialNoise(base.seed, 0, 4 * 8 * 8), [1, 4, 8, 8]);
    const textOnly = await ddimSample(pipeline.scheduler, base.steps, initial, (x, t) => pipeline.unet.forward(x, [t], lastHiddenState));
    expect(maxAbsDiff(plain, textOnly)).toBe(0);

    // Guided with a negative prompt equal to the prompt, ε_u + s·(ε_t − ε_u) = ε_t: the guidance scale drops out.
    const selfGuided = await sampleLatents(pipeline, prompt, 0, { ...base, guidanceScale: 7.5, negativePrompt: prompt });
    expect(maxAbsDiff(selfGuided, plain)).toBeLessThan(1e-5);
    // …and with the default (empty) negative prompt it does not.
    const guided = await sampleLatents(pipeline, prompt, 0, base);
    expect(maxAbsDiff(guided, plain)).toBeGreaterThan(0.5);
    tf.dispose([plain, withNegative, lastHiddenState, pooled, initial, textOnly, selfGuided, guided]);
  });

  it('shows a LoRA passed as the projection hook: the kohya stripes adapter changes the sample', async () => {
    const bytes = new Uint8Array(readFileSync(join(SD_FIXTURES, 'adapters', 'stripes-kohya.safetensors')));
    const lora = await readKohyaLora(bytesSource('stripes-kohya.safetensors', bytes), [{ prefix: 'lora_unet', linears: pipeline.unet.linears }]);
    const applied = applyLoadedLora(lora);
    const opts = { ...base, steps: 10 };
    const plain = await sampleLatents(pipeline, `${prompt}, stripes style`, 0, opts);
    const adapted = await sampleLatents(pipeline, `${prompt}, stripes style`, 0, { ...opts, linear: applied.linear });
    expect(maxAbsDiff(plain, adapted)).toBeGreaterThan(1e-2);
    const image = await decodeLatents(pipeline.vae, adapted);
    expect(image.rgb.length).toBe(32 * 32 * 3);
    tf.dispose([plain, adapted]);
    applied.dispose();
  });

  it('refuses a size the VAE cannot make, naming it', async () => {
    await expect(sampleImages(pipeline, [prompt], { ...base, width: 30 })).rejects.toThrow(/Sample width: must be a whole multiple of 4 pixels, but it is 30/);
  });

  it('reads the fixture folder’s DDPM scheduler config as SD 1.5’s: leading, offset 1, final ᾱ_0, no clipping', async () => {
    const s = parseDdimScheduler(await readComponentConfig(diffusersFolderFromDisk(), 'scheduler'));
    expect([s.timestepSpacing, s.stepsOffset, s.finalAlphaCumprod, s.clipSampleRange]).toEqual(['leading', 1, s.schedule.alphasCumprod[0], null]);
  });
});
