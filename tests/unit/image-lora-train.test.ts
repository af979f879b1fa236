import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImageEntry, prepareImage, readImageFolder, type ImageFile } from '../../src/core/data/images/index';
import { DEFAULT_CONFIG, type RunConfig } from '../../src/core/config/index';
import type { MetricsCsvRow } from '../../src/core/export/run-files';
import { trainImageLora } from '../../src/core/image-run/run';
import { readEventFile, scalarSeries } from '../../src/core/logging/reader';
import { readComponentConfig } from '../../src/core/models/diffusion/component';
import { cacheImageSet, type PreparedImage } from '../../src/core/models/diffusion/latent-cache';
import { parseNoiseSchedule, type NoiseSchedule } from '../../src/core/models/diffusion/noise';
import { loadSamplingPipeline, type SamplingPipeline } from '../../src/core/models/diffusion/sample';
import { applyLoadedLora, readKohyaLora, readPeftLora, type LoadedLora } from '../../src/core/models/diffusion/unet-lora';
import { bytesSource } from '../../src/core/safetensors/index';
import { evaluate } from '../../src/core/train/evaluate';
import { validationImages, type CachedImageSet } from '../../src/core/train/image-examples';
import { minSnrWeights } from '../../src/core/train/image-loss-fns';
import { diffusersFolderFromDisk, readSdFixtureJson, SD_FIXTURES } from './support/diffusers-folder';
import { decodePng, decodePngRgba } from './support/png';
import { filesOnDisk } from './support/disk-files';

/** The fixture's reference latents of data-stripes, from an independent PyTorch VAE: [40][4][8][8]. */
interface LossFixture {
  files: string[];
  captions: string[];
  latents: number[][][][];
}

const folder = diffusersFolderFromDisk();
let pipeline: SamplingPipeline & { dispose(): void };
let schedule: NoiseSchedule;

function imageFiles(name: string): ImageFile[] {
  return filesOnDisk(join(SD_FIXTURES, name));
}

async function preparedImages(name: string, flip: boolean): Promise<PreparedImage[]> {
  const read = await readImageFolder(imageFiles(name), { folderName: name });
  const out: PreparedImage[] = [];
  for (const entry of read.entries) {
    const decoded = await decodeImageEntry(entry, async (bytes) => decodePngRgba(bytes));
    out.push({
      size: 32,
      rgb: prepareImage(decoded, { resolution: 32, flip: false }),
      flippedRgb: flip ? prepareImage(decoded, { resolution: 32, flip: true }) : null,
      caption: entry.caption,
      repeats: entry.repeats,
    });
  }
  return out;
}

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
  pipeline = await loadSamplingPipeline(folder);
  schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
});

afterAll(() => pipeline?.dispose());

describe('image set cache', () => {
  it("encodes data-stripes to the reference implementation's latents (mean × 0.18215) and caches each caption once", async () => {
    const fixture = readSdFixtureJson<LossFixture>('expected/loss_stripes_seed0.json');
    const set = await cacheImageSet(pipeline, await preparedImages('data-stripes', false), { trainTextEncoder: false });
    expect(set.latentShape).toEqual([4, 8, 8]);
    expect(set.examples).toHaveLength(40);
    let worst = 0;
    fixture.files.forEach((file, i) => {
      const ours = set.examples[i]!.latents;
      const want = fixture.latents[i]!.flat(2);
      for (let k = 0; k < want.length; k++) worst = Math.max(worst, Math.abs(ours[k]! - want[k]!));
      expect(file).toBe(`img_${String(i).padStart(4, '0')}.png`);
    });
    expect(worst).toBeLessThan(1e-4);
    if (set.captions.kind !== 'states') throw new Error('a frozen text encoder caches text states');
    expect(set.captions.states).toHaveLength(new Set(fixture.captions).size);
    expect(set.captions.tokens).toBe(77);
  });
});

describe('min-SNR-γ weights', () => {
  it('are min(SNR, γ)/SNR from the scheduler ᾱ: 1 where SNR ≤ γ, γ/SNR above', () => {
    // ᾱ_0 is close to 1 (SNR in the thousands), ᾱ_999 close to 0 (SNR far below 5).
    const [early, late] = minSnrWeights(schedule, [0, 999], 5);
    const a0 = schedule.alphasCumprod[0]!;
    expect(early).toBeCloseTo(5 / (a0 / (1 - a0)), 6);
    expect(late).toBe(1);
  });
});

describe('a short image LoRA run on the fixture (trainImageLora)', () => {
  let train: CachedImageSet;
  let val: CachedImageSet;

  beforeAll(async () => {
    train = await cacheImageSet(pipeline, await preparedImages('data-stripes', true), { trainTextEncoder: false });
    val = await cacheImageSet(pipeline, await preparedImages('data-stripes-heldout', false), { trainTextEncoder: false });
  });

  it('lowers the fixed-noise validation loss; its kohya and PEFT files give the loss it reported; samples reach the folder and TensorBoard', async () => {
    const config: RunConfig = {
      ...DEFAULT_CONFIG,
      output_dir: './output/stripes',
      lora_rank: 4,
      lora_alpha: 4,
      lora_dropout: 0,
      learning_rate: 3e-3,
      lr_scheduler: 'constant',
      batch_size: 8,
      max_steps: 24,
      eval_steps: 12,
      eval_on_start: true,
      log_steps: 6,
      min_snr_gamma: 5,
      resolution: 32,
      flip_aug: true,
      sample_steps: 12,
      sample_prompts: ['a small red circle on a blue background, stripes style --s 8 --l 4'],
      seed: 7,
    };
    const files = new Map<string, Uint8Array | string>();
    const rows: MetricsCsvRow[] = [];
    const log: Uint8Array[] = [];
    const result = await trainImageLora(
      {
        config,
        pipeline,
        schedule,
        train,
        val,
        baseModelName: 'tiny-sd',
        dataset: { dirs: [{ name: 'data-stripes', repeats: 1, imageCount: 40 }], tagFrequency: new Map() },
      },
      { metric: (r) => void rows.push(r), log: (b) => void log.push(b), file: (path, bytes) => void files.set(path, bytes) },
    );
    expect(result).toMatchObject({ reason: 'completed', steps: 24 });
    const evals = rows.filter((r) => r.evalLoss !== null).map((r) => [r.step, r.evalLoss!] as const);
    expect(evals.map(([step]) => step)).toEqual([0, 12, 24]);
    const [start, end] = [evals[0]![1], evals[2]![1]];
    console.info(`image LoRA: fixed-noise eval loss ${start.toFixed(4)} → ${end.toFixed(4)}`);
    expect(end).toBeLessThan(start * 0.97);

    // metrics.csv holds the same evaluations.
    const csv = (files.get('metrics.csv') as string).trim().split('\n');
    const column = csv[0]!.split(',').indexOf('eval_loss');
    expect(csv.slice(1).map((l) => l.split(',')[column]).filter((v) => v !== '').map(Number)).toEqual(evals.map(([, loss]) => loss));

    // The kohya file and the PEFT folder, read by the readers the fixture's own adapters are checked with, give
    // the loss the run reported on the same fixed draws.
    const valExamples = validationImages(val, config.seed, schedule.numTrainTimesteps);
    const kohya = files.get('stripes.safetensors') as Uint8Array;
    expect(kohya).toBeInstanceOf(Uint8Array);
    const fromKohya = await readKohyaLora(bytesSource('stripes.safetensors', kohya), [{ prefix: 'lora_unet', linears: pipeline.unet.linears }]);
    expect(fromKohya.modules.size).toBe(48); // to_q, to_k, to_v, to_out.0 of attn1 and attn2 in 6 transformer blocks
    expect(fromKohya.metadata['ss_network_dim']).toBe('4');
    expect(Math.abs((await lossWith(valExamples, fromKohya)) - end)).toBeLessThan(1e-4);
    const fromPeft = await readPeftLora(files.get('adapter_config.json') as string, bytesSource('adapter_model.safetensors', files.get('adapter_model.safetensors') as Uint8Array), pipeline.unet.linears);
    expect(Math.abs((await lossWith(valExamples, fromPeft)) - end)).toBeLessThan(1e-4);

    // Samples at steps 12 and 24: PNG files, and image summaries TensorBoard shows under samples/0.
    for (const step of [12, 24]) {
      const png = files.get(`samples/${step}_0.png`) as Uint8Array;
      const decoded = decodePng(png);
      expect([decoded.width, decoded.height]).toEqual([32, 32]);
    }
    const events = readEventFile('events', concat(log));
    const images = events.flatMap((e) => (e.kind === 'summary' ? e.values.filter((v) => v.kind === 'image').map((v) => ({ step: e.step, v })) : []));
    expect(images.map((i) => [i.step, i.v.tag])).toEqual([
      [12, 'samples/0'],
      [24, 'samples/0'],
    ]);
    const first = images[0]!.v;
    if (first.kind !== 'image') throw new Error('an image summary');
    expect(Buffer.from(first.image.encoded).equals(Buffer.from(files.get('samples/12_0.png') as Uint8Array))).toBe(true);
    expect(scalarSeries(events).get('eval/loss')?.map((p) => p.step)).toEqual([0, 12, 24]);
    expect(JSON.parse(files.get('diagnosis.json') as string)).toBeInstanceOf(Array);
  }, 300_000);
});

/** The mean fixed-draw validation loss with a LoRA read from a file, through the UNet written out here. */
async function lossWith(examples: ReturnType<typeof validationImages>, lora: LoadedLora): Promise<number> {
  const applied = applyLoadedLora(lora);
  try {
    const result = await evaluate(
      examples,
      (batch) =>
        tf.tidy(() => {
          if (!batch.fixed || batch.text.kind !== 'states') throw new Error('validation batches carry fixed draws and text states');
          const draws = { latents: batch.latents, noise: batch.fixed.noise, timesteps: batch.fixed.timesteps };
          const prediction = pipeline.unet.forward(addNoiseOf(draws), draws.timesteps, batch.text.context, { linear: applied.linear });
          return tf.mean(tf.squaredDifference(prediction, draws.noise));
        }),
      10,
    );
    return result.loss;
  } finally {
    applied.dispose();
  }
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** x_t = √ᾱ·x0 + √(1−ᾱ)·ε written out here, apart from the code under test. */
function addNoiseOf(b: { latents: tf.Tensor4D; noise: tf.Tensor4D; timesteps: readonly number[] }): tf.Tensor4D {
  const a = b.timesteps.map((t) => schedule.alphasCumprod[t]!);
  const signal = tf.tensor4d(a.map(Math.sqrt), [a.length, 1, 1, 1]);
  const noise = tf.tensor4d(a.map((x) => Math.sqrt(1 - x)), [a.length, 1, 1, 1]);
  return tf.add(tf.mul(signal, b.latents), tf.mul(noise, b.noise));
}
