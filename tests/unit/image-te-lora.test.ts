import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, loraSettingsOf, type RunConfig } from '../../src/core/config/index';
import { decodeImageEntry, prepareImage, readImageFolder, type ImageFile } from '../../src/core/data/images/index';
import type { MetricsCsvRow } from '../../src/core/export/run-files';
import { TEXT_ENCODER_PEFT_DIR } from '../../src/core/image-run/adapter-files';
import { trainImageLora, type ImageRunInput } from '../../src/core/image-run/run';
import { sampler } from '../../src/core/image-run/samples';
import { LoraAdapter } from '../../src/core/lora/adapter';
import { readComponentConfig } from '../../src/core/models/diffusion/component';
import { cacheImageSet, type PreparedImage } from '../../src/core/models/diffusion/latent-cache';
import { loraTargetsOf } from '../../src/core/models/diffusion/lora-targets';
import { parseNoiseSchedule, type NoiseSchedule } from '../../src/core/models/diffusion/noise';
import { loadSamplingPipeline, type SamplingPipeline } from '../../src/core/models/diffusion/sample';
import { applyLoadedLora, readKohyaLora, readPeftLora, type LoadedLora } from '../../src/core/models/diffusion/unet-lora';
import type { LinearApply } from '../../src/core/models/linear';
import { bytesSource, readHeader } from '../../src/core/safetensors/index';
import { AdamW } from '../../src/core/train/adamw';
import { evaluate } from '../../src/core/train/evaluate';
import { trainingImages, validationImages, type CachedImageSet } from '../../src/core/train/image-examples';
import { imageLoraLossFn, type ImageLoraParts } from '../../src/core/train/image-loss-fns';
import { Trainer } from '../../src/core/train/trainer';
import { diffusersFolderFromDisk, SD_FIXTURES } from './support/diffusers-folder';
import { decodePng, decodePngRgba } from './support/png';
import { filesOnDisk } from './support/disk-files';

const folder = diffusersFolderFromDisk();
let pipeline: SamplingPipeline & { dispose(): void };
let schedule: NoiseSchedule;
/** data-stripes and its held-out set with captions as token ids, as a text-encoder LoRA run reads them. */
let train: CachedImageSet;
let val: CachedImageSet;

function imageFiles(name: string): ImageFile[] {
  return filesOnDisk(join(SD_FIXTURES, name));
}

async function preparedImages(name: string): Promise<PreparedImage[]> {
  const read = await readImageFolder(imageFiles(name), { folderName: name });
  const out: PreparedImage[] = [];
  for (const entry of read.entries) {
    const decoded = await decodeImageEntry(entry, async (bytes) => decodePngRgba(bytes));
    out.push({ size: 32, rgb: prepareImage(decoded, { resolution: 32, flip: false }), flippedRgb: null, caption: entry.caption, repeats: entry.repeats });
  }
  return out;
}

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
  pipeline = await loadSamplingPipeline(folder);
  schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
  train = await cacheImageSet(pipeline, await preparedImages('data-stripes'), { trainTextEncoder: true });
  val = await cacheImageSet(pipeline, await preparedImages('data-stripes-heldout'), { trainTextEncoder: true });
}, 120_000);

afterAll(() => pipeline?.dispose());

const BASE_CONFIG: RunConfig = {
  ...DEFAULT_CONFIG,
  output_dir: './output/stripes-te',
  lora_rank: 4,
  lora_alpha: 4,
  lora_dropout: 0,
  lr_scheduler: 'constant',
  batch_size: 8,
  resolution: 32,
  flip_aug: false,
  seed: 3,
};

function runInput(config: RunConfig, sets: { train: CachedImageSet; val: CachedImageSet | null }): ImageRunInput {
  return { config, pipeline, schedule, ...sets, baseModelName: 'tiny-sd', dataset: { dirs: [{ name: 'data-stripes', repeats: 1, imageCount: 40 }], tagFrequency: new Map() } };
}

describe('AdamW per-variable learning-rate scales', () => {
  it("give each variable its own rate in the step and the decay: p(1 − lr·s·wd) − lr·s·g/(|g| + ε) on the first step", () => {
    const p = tf.variable(tf.tensor1d([1, -2]));
    const q = tf.variable(tf.tensor1d([3, 0.5]));
    const r = tf.variable(tf.tensor1d([4]));
    const opt = new AdamW([p, q, r], { weightDecay: 0.5, epsilon: 1e-8, learningRateScales: [1, 0.25, 0] });
    const g = [tf.tensor1d([0.5, -0.25]), tf.tensor1d([-2, 1e-3]), tf.tensor1d([7])];
    const lr = 0.1;
    opt.step(g, lr);
    // First step: m̂ = g, √v̂ = |g|, so the Adam step is rate·g/(|g| + ε).
    const want = (x: number, grad: number, s: number) => x * (1 - lr * s * 0.5) - (lr * s * grad) / (Math.abs(grad) + 1e-8);
    const got = [...p.dataSync(), ...q.dataSync()];
    const expected = [want(1, 0.5, 1), want(-2, -0.25, 1), want(3, -2, 0.25), want(0.5, 1e-3, 0.25)];
    got.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 6));
    expect(r.dataSync()[0]).toBe(4); // scale 0: untouched, decay included
    expect(() => new AdamW([p, q], { learningRateScales: [1] })).toThrow(/1 learning-rate scales for 2 variables/);
    expect(() => new AdamW([p], { learningRateScales: [Number.NaN] })).toThrow(/finite and ≥ 0/);
    opt.dispose();
    tf.dispose([p, q, r, ...g]);
  });
});

/** A UNet LoRA and a text-encoder LoRA (kohya's CLIP targets) on the fixture, as a run builds them. */
function adapters(config: RunConfig): { unet: LoraAdapter; text: LoraAdapter; parts: ImageLoraParts } {
  const unet = LoraAdapter.create(loraTargetsOf(pipeline.unet, 'sd-unet'), loraSettingsOf(config, 'sd-unet'), config.seed);
  const text = LoraAdapter.create(loraTargetsOf(pipeline.textEncoder, 'sd-text-encoder'), loraSettingsOf(config, 'sd-text-encoder'), config.seed + 1);
  return { unet, text, parts: { unet: pipeline.unet, schedule, unetAdapter: unet, textEncoder: { model: pipeline.textEncoder, adapter: text } } };
}

describe('text-encoder LoRA gradients', () => {
  it("equal central finite differences of the training loss on one fixed batch (A and B of several CLIP projections)", async () => {
    const { unet, text, parts } = adapters(BASE_CONFIG);
    const examples = trainingImages(train);
    const batch = examples.upload([5, 33]);
    try {
      expect(batch.text.kind).toBe('ids');
      // B starts at 0, where the gradient of every A is 0: give B values so both factors have a gradient to check.
      text.modules.forEach((m, i) => m.B.assign(tf.mul(tf.randomNormal(m.B.shape, 0, 1, 'float32', 100 + i), 0.3)));
      // The UNet's LoRA too, so the text path is checked under a LoRA'd cross-attention.
      unet.modules.forEach((m, i) => m.B.assign(tf.mul(tf.randomNormal(m.B.shape, 0, 1, 'float32', 200 + i), 0.05)));
      // dropout 0 and a fixed pass: the loss is a deterministic function of the variables.
      const lossFn = imageLoraLossFn(parts, { seed: 3, noiseOffset: 0.05, minSnrGamma: 5 });
      const ctx = { step: 0, microBatch: 0, pass: 4 };
      const lossNow = () => tf.tidy(() => lossFn(batch, ctx).dataSync()[0]!);
      const variables = text.variables();
      const { value, grads } = tf.variableGrads(() => lossFn(batch, ctx), variables);
      value.dispose();
      // A few modules (q_proj of layer 0, fc2 of layer 1, out_proj of layer 1), each factor's largest gradient entry.
      const picks = [0, text.modules.length - 1, text.modules.length - 3].map((i) => text.modules[i]!);
      const compared: string[] = [];
      for (const module of picks) {
        for (const factor of [module.A, module.B]) {
          const g = (await grads[factor.name]!.data()) as Float32Array;
          let at = 0;
          g.forEach((x, i) => (Math.abs(x) > Math.abs(g[at]!) ? (at = i) : 0));
          // Large enough that float32 rounding of the loss (≈1e-8 of it) stays well under the differences, small enough
          // that the curvature's h² term does too.
          const h = 3e-2;
          const original = (await factor.data()) as Float32Array;
          const shifted = (delta: number) => {
            const values = original.slice();
            values[at] = values[at]! + delta;
            tf.tidy(() => factor.assign(tf.tensor(values, factor.shape)));
            return lossNow();
          };
          const finite = (shifted(h) - shifted(-h)) / (2 * h);
          tf.tidy(() => factor.assign(tf.tensor(original, factor.shape)));
          compared.push(`${module.path} ${factor === module.A ? 'A' : 'B'}[${at}]: ${g[at]!.toExponential(4)} vs ${finite.toExponential(4)}`);
          expect(Math.abs(g[at]!)).toBeGreaterThan(1e-4); // a real gradient, not two zeros agreeing
          expect(Math.abs(finite - g[at]!)).toBeLessThan(0.02 * Math.abs(g[at]!) + 2e-6);
        }
      }
      console.info(`text-encoder LoRA gradients (autodiff vs finite differences):\n  ${compared.join('\n  ')}`);
      tf.dispose(Object.values(grads));
    } finally {
      examples.release(batch);
      unet.dispose();
      text.dispose();
    }
  }, 60_000);
});

describe('learning-rate scales in the Trainer', () => {
  it('a text-encoder scale of 0 leaves its B at 0 after a step, while the UNet B moves by lr (first Adam step: lr·g/|g|); 0.5 moves it by lr/2', async () => {
    const lr = 1e-3;
    const maxAbs = async (vars: readonly tf.Variable[]) => Math.max(...(await Promise.all(vars.map(async (v) => Math.max(...Array.from((await v.data()) as Float32Array, Math.abs))))));
    for (const textScale of [0, 0.5]) {
      const { unet, text, parts } = adapters(BASE_CONFIG);
      try {
        const unetVars = unet.variables();
        const textVars = text.variables();
        const trainer = new Trainer({
          variables: [...unetVars, ...textVars],
          learningRateScales: [...unetVars.map(() => 1), ...textVars.map(() => textScale)],
          lossFn: imageLoraLossFn(parts, { seed: 3, noiseOffset: 0, minSnrGamma: 0 }),
          train: trainingImages(train),
          options: { batchSize: 4, maxSteps: 1, learningRate: lr, scheduler: 'constant', maxGradNorm: 0, seed: 3 },
        });
        expect(await trainer.run()).toMatchObject({ reason: 'completed', step: 1 });
        const unetB = unet.modules.map((m) => m.B);
        const textB = text.modules.map((m) => m.B);
        // |g|/(|g| + ε) rounds a little below 1 in float32.
        expect(Math.abs((await maxAbs(unetB)) / lr - 1)).toBeLessThan(1e-4);
        if (textScale === 0) expect(await maxAbs(textB)).toBe(0);
        else expect(Math.abs((await maxAbs(textB)) / (lr * textScale) - 1)).toBeLessThan(1e-4);
      } finally {
        unet.dispose();
        text.dispose();
      }
    }
  }, 60_000);
});

describe('an image LoRA run that trains the text encoder (train_text_encoder)', () => {
  it("trains both LoRAs at their own rates; the kohya file (lora_unet_ + lora_te_) and both PEFT folders give the eval loss it reported; samples go through both", async () => {
    const config: RunConfig = {
      ...BASE_CONFIG,
      learning_rate: 1e-4,
      unet_lr: 2e-3,
      text_encoder_lr: 5e-3,
      train_text_encoder: true,
      max_steps: 6,
      eval_steps: 6,
      eval_on_start: true,
      log_steps: 0,
      sample_steps: 0,
      sample_prompts: ['a small red circle on a blue background, stripes style --s 2 --l 4'],
    };
    const files = new Map<string, Uint8Array | string>();
    const rows: MetricsCsvRow[] = [];
    let trainable = 0;
    const result = await trainImageLora(
      { ...runInput(config, { train, val }), onTrainer: (r) => void (trainable = r.trainableParameters) },
      { metric: (r) => void rows.push(r), log: () => undefined, file: (path, bytes) => void files.set(path, bytes) },
    );
    expect(result).toMatchObject({ reason: 'completed', steps: 6 });
    // UNet: 48 attention projections; CLIP: q/k/v/out_proj, fc1, fc2 in 2 layers of width 32 (fc: 32 → 128 → 32).
    const unetParams = pipeline.unet.linears.filter((l) => /\.(to_q|to_k|to_v|to_out\.0)$/.test(l.path)).reduce((n, l) => n + 4 * (l.inFeatures + l.outFeatures), 0);
    expect(trainable).toBe(unetParams + 2 * 4 * (4 * (32 + 32) + (32 + 128) + (128 + 32)));
    expect(result.trainableParameters).toBe(trainable);
    // The schedule's rate is the UNet's; the text encoder's is that times 5e-3 / 2e-3.
    expect(rows.filter((r) => r.learningRate !== null).map((r) => r.learningRate)).toEqual(new Array(6).fill(2e-3));
    const evals = rows.filter((r) => r.evalLoss !== null).map((r) => [r.step, r.evalLoss!] as const);
    expect(evals.map(([step]) => step)).toEqual([0, 6]);
    const reported = evals[1]![1];
    console.info(`text-encoder + UNet LoRA: fixed-noise eval loss ${evals[0]![1].toFixed(4)} → ${reported.toFixed(4)}`);

    const kohya = files.get('stripes-te.safetensors') as Uint8Array;
    const networks = [
      { prefix: 'lora_unet' as const, linears: pipeline.unet.linears },
      { prefix: 'lora_te' as const, linears: pipeline.textEncoder.linears },
    ];
    const both = await readKohyaLora(bytesSource('stripes-te.safetensors', kohya), networks);
    const textPaths = pipeline.textEncoder.linears.map((l) => l.path);
    const textModules = [...both.modules.values()].filter((m) => textPaths.includes(m.path));
    expect(both.modules.size).toBe(48 + 12);
    expect(textModules.map((m) => m.path.slice(m.path.lastIndexOf('.') + 1)).sort()).toEqual(['fc1', 'fc1', 'fc2', 'fc2', 'k_proj', 'k_proj', 'out_proj', 'out_proj', 'q_proj', 'q_proj', 'v_proj', 'v_proj']);
    // The text encoder's B moved from its zero start.
    expect(Math.max(...textModules.flatMap((m) => Array.from(m.B, Math.abs)))).toBeGreaterThan(1e-3);
    expect(both.metadata['ss_text_encoder_lr']).toBe('0.005');
    expect(both.metadata['ss_unet_lr']).toBe('0.002');
    const kohyaNames = (await readHeader(bytesSource('k', kohya))).tensors.map((t) => t.name);
    expect(kohyaNames).toHaveLength(3 * 60); // lora_down, lora_up, alpha per module
    expect(kohyaNames).toContain('lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight');

    const valExamples = validationImages(val, config.seed, schedule.numTrainTimesteps);
    expect(Math.abs((await lossWith(valExamples, [both])) - reported)).toBeLessThan(1e-4);

    // PEFT: the UNet's folder at the top, the text encoder's in text_encoder/, each a whole adapter of its own.
    const unetPeft = await readPeftLora(files.get('adapter_config.json') as string, bytesSource('adapter_model.safetensors', files.get('adapter_model.safetensors') as Uint8Array), pipeline.unet.linears);
    const textConfig = files.get(`${TEXT_ENCODER_PEFT_DIR}/adapter_config.json`) as string;
    expect(JSON.parse(textConfig).target_modules).toEqual(['fc1', 'fc2', 'k_proj', 'out_proj', 'q_proj', 'v_proj']);
    const textWeights = files.get(`${TEXT_ENCODER_PEFT_DIR}/adapter_model.safetensors`) as Uint8Array;
    expect((await readHeader(bytesSource('t', textWeights))).tensors.map((t) => t.name)).toContain('base_model.model.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight');
    const textPeft = await readPeftLora(textConfig, bytesSource('adapter_model.safetensors', textWeights), pipeline.textEncoder.linears);
    expect(unetPeft.modules.size).toBe(48);
    expect(textPeft.modules.size).toBe(12);
    expect(Math.abs((await lossWith(valExamples, [unetPeft, textPeft])) - reported)).toBeLessThan(1e-4);

    // The run's sample is the one both networks' LoRAs make; the UNet's alone makes another.
    const runSample = pixelsOf(files.get('samples/6_0.png') as Uint8Array);
    const sampleWith = async (loras: readonly LoadedLora[]) => {
      const applied = loras.map((l) => applyLoadedLora(l));
      try {
        const [s] = await sampler(pipeline, config).sample(6, dispatch(applied.map((a, i) => ({ lora: loras[i]!, linear: a.linear }))));
        return pixelsOf(s!.png);
      } finally {
        applied.forEach((a) => a.dispose());
      }
    };
    const fromFile = await sampleWith([both]);
    expect(fromFile).toEqual(runSample);
    const unetOnly = await readKohyaLora(bytesSource('stripes-te.safetensors', kohya), [networks[0]!]);
    expect(unetOnly.skippedModules).toHaveLength(12);
    const withoutText = await sampleWith([unetOnly]);
    expect(withoutText).not.toEqual(runSample);
  }, 120_000);

  it('with text_encoder_lr 0 trains the UNet only (kohya: the text encoder is not trained), from captions cached as text states', async () => {
    const config: RunConfig = { ...BASE_CONFIG, learning_rate: 1e-3, train_text_encoder: true, text_encoder_lr: 0, max_steps: 1 };
    const one = { ...train, examples: train.examples.slice(0, 4) };
    // With ids cached, a run whose text encoder stays frozen refuses them before training.
    await expect(trainImageLora(runInput(config, { train: one, val: null }), { metric: () => undefined, log: () => undefined, file: () => undefined })).rejects.toThrow(/cached as ids/);
    const states = await cacheImageSet(pipeline, (await preparedImages('data-stripes')).slice(0, 4), { trainTextEncoder: false });
    const files = new Map<string, Uint8Array | string>();
    const result = await trainImageLora(runInput(config, { train: states, val: null }), { metric: () => undefined, log: () => undefined, file: (p, b) => void files.set(p, b) });
    expect(result.steps).toBe(1);
    const kohya = files.get('stripes-te.safetensors') as Uint8Array;
    const names = (await readHeader(bytesSource('k', kohya))).tensors.map((t) => t.name);
    expect(names.filter((n) => n.startsWith('lora_te_'))).toEqual([]);
    expect(names.filter((n) => n.startsWith('lora_unet_'))).toHaveLength(3 * 48);
    expect([...files.keys()].filter((p) => p.startsWith(`${TEXT_ENCODER_PEFT_DIR}/`))).toEqual([]);
    const lora = await readKohyaLora(bytesSource('k', kohya), [{ prefix: 'lora_unet', linears: pipeline.unet.linears }]);
    expect(lora.metadata['ss_text_encoder_lr']).toBe('None');
  }, 60_000);
});

/** Every pixel's [r, g, b] of a PNG, through the independent decoder. */
function pixelsOf(png: Uint8Array): number[] {
  const decoded = decodePng(png);
  const out: number[] = [];
  for (let y = 0; y < decoded.height; y++) for (let x = 0; x < decoded.width; x++) out.push(...decoded.pixel(x, y));
  return out;
}

/** A projection hook dispatching each module path to the loaded LoRA that holds it (the plain projection otherwise). */
function dispatch(loras: readonly { lora: LoadedLora; linear: LinearApply }[]): LinearApply {
  return (linear, x) => (loras.find((l) => l.lora.modules.has(linear.path)) ?? loras[0]!).linear(linear, x);
}

/**
 * The mean fixed-draw validation loss with LoRAs read from files, written out here: the captions' ids through the
 * text encoder and x_t = √ᾱ·x0 + √(1−ᾱ)·ε through the UNet, both under the files' LoRAs, against ε.
 */
async function lossWith(examples: ReturnType<typeof validationImages>, loras: readonly LoadedLora[]): Promise<number> {
  const applied = loras.map((l) => applyLoadedLora(l));
  const linear = dispatch(applied.map((a, i) => ({ lora: loras[i]!, linear: a.linear })));
  try {
    const result = await evaluate(
      examples,
      (batch) =>
        tf.tidy(() => {
          if (!batch.fixed || batch.text.kind !== 'ids') throw new Error('validation batches carry fixed draws and caption ids');
          const { lastHiddenState } = pipeline.textEncoder.forward(batch.text.ids, { linear });
          const a = batch.fixed.timesteps.map((t) => schedule.alphasCumprod[t]!);
          const signal = tf.tensor4d(a.map(Math.sqrt), [a.length, 1, 1, 1]);
          const noiseScale = tf.tensor4d(a.map((x) => Math.sqrt(1 - x)), [a.length, 1, 1, 1]);
          const noisy = tf.add(tf.mul(signal, batch.latents), tf.mul(noiseScale, batch.fixed.noise)) as tf.Tensor4D;
          const prediction = pipeline.unet.forward(noisy, batch.fixed.timesteps, lastHiddenState, { linear });
          return tf.mean(tf.squaredDifference(prediction, batch.fixed.noise));
        }),
      10,
    );
    return result.loss;
  } finally {
    applied.forEach((a) => a.dispose());
  }
}
