// Gives Node the IndexedDB globals (indexedDB, IDBKeyRange) the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The wasm backend runs the tiny UNet several times faster than cpu (as the other SD tests use it).
import '@tensorflow/tfjs-backend-wasm';
import { deleteDB } from 'idb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, type RunConfig } from '../../src/core/config/index';
import { decodeImageEntry, prepareImage, readImageFolder } from '../../src/core/data/images/index';
import { isUserError } from '../../src/core/errors';
import type { MetricsCsvRow } from '../../src/core/export/run-files';
import { imageConfigWithInitAdapter, trainImageLora } from '../../src/core/image-run/run';
import type { ProjectionShape } from '../../src/core/lora/settings';
import { readComponentConfig } from '../../src/core/models/diffusion/component';
import { cacheImageSet, type PreparedImage } from '../../src/core/models/diffusion/latent-cache';
import { parseNoiseSchedule, type NoiseSchedule } from '../../src/core/models/diffusion/noise';
import { diffusionProjectionShapes } from '../../src/core/models/diffusion/projection-shapes';
import { loadSamplingPipeline, type SamplingPipeline } from '../../src/core/models/diffusion/sample';
import { applyLoadedLora, readKohyaLora, type LoadedLora } from '../../src/core/models/diffusion/unet-lora';
import { bytesSource, writeSafetensors } from '../../src/core/safetensors/index';
import { evaluate } from '../../src/core/train/evaluate';
import { validationImages } from '../../src/core/train/image-examples';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb } from '../../src/storage/db';
import { deleteDiffusionModel, importDiffusionModel, storedDiffusersFolder, type StoredDiffusionModel } from '../../src/storage/diffusion-models';
import { listImageAdapters } from '../../src/storage/image-adapters';
import { localLocks } from '../../src/storage/locks';
import { storageUsage } from '../../src/storage/usage';
import { imageInitAdapterOf, importImageAdapter, listStoredImageAdapters, readStoredImageAdapter } from '../../src/worker/image-adapters';
import { diffusersFolderFromDisk, SD_FIXTURES, TINY_SD } from './support/diffusers-folder';
import { decodePngRgba } from './support/png';
import { filesOnDisk } from './support/disk-files';

const KOHYA = join(SD_FIXTURES, 'adapters/stripes-kohya.safetensors');
const PEFT = join(SD_FIXTURES, 'adapters/stripes-peft');
const ctx = { signal: new AbortController().signal, progress: () => undefined };

let pipeline: SamplingPipeline & { dispose(): void };
let schedule: NoiseSchedule;
let db: LoraLabDb;
let model: StoredDiffusionModel;

const fileOf = (path: string, name: string): File => new File([readFileSync(path)], name);
const kohyaFile = (): File => fileOf(KOHYA, 'stripes-kohya.safetensors');
const peftFiles = (): File[] => ['adapter_config.json', 'adapter_model.safetensors'].map((f) => fileOf(join(PEFT, f), `stripes-peft/${f}`));
const shapesOf = (linears: readonly ProjectionShape[]) =>
  linears.map(({ path, inFeatures, outFeatures }) => ({ path, inFeatures, outFeatures })).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));

async function caught(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a rejection');
}

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
  const folder = diffusersFolderFromDisk();
  pipeline = await loadSamplingPipeline(folder);
  schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
});

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
  model = await importDiffusionModel(db, filesOnDisk(TINY_SD), { name: 'tiny-sd', chunkBytes: 65536, locks: localLocks() });
});

afterAll(async () => {
  pipeline?.dispose();
  await closeDatabase();
});

describe('projection shapes from headers and configs alone', () => {
  it("equal the built UNet's and text encoder's projections, proj_in/proj_out 1×1 convs and time embedding included", async () => {
    for (const folder of [diffusersFolderFromDisk(), await storedDiffusersFolder(db, model)]) {
      const shapes = await diffusionProjectionShapes(folder);
      expect(shapesOf(shapes.unet)).toEqual(shapesOf(pipeline.unet.linears));
      expect(shapesOf(shapes.textEncoder)).toEqual(shapesOf(pipeline.textEncoder.linears));
      const paths = shapes.unet.map((l) => l.path);
      expect(paths).toContain('time_embedding.linear_1');
      expect(paths).toContain('mid_block.attentions.0.proj_in');
      expect(paths).toContain('down_blocks.0.resnets.0.time_emb_proj');
    }
  });
});

describe('importing image LoRAs onto a stored model', () => {
  it('stores the kohya file and the PEFT folder; read back, both equal the fixture files as readKohyaLora reads them on the built UNet', async () => {
    const kohya = await importImageAdapter(db, { modelId: model.id, name: 'stripes', files: [kohyaFile()] }, ctx);
    expect(kohya).toMatchObject({ name: 'stripes', format: 'kohya', rank: 4, alpha: 4, useRslora: false, unetModules: 48, textEncoderModules: 0 });
    const peft = await importImageAdapter(db, { modelId: model.id, name: 'stripes-peft', files: [...peftFiles(), new File(['# card'], 'stripes-peft/README.md')] }, ctx);
    expect(peft).toMatchObject({ format: 'peft', rank: 4, alpha: 4, unetModules: 48, textEncoderModules: 0 });
    expect((await listStoredImageAdapters(db, model.id)).map((a) => [a.name, a.format]).sort()).toEqual([
      ['stripes', 'kohya'],
      ['stripes-peft', 'peft'],
    ]);
    // The Storage panel counts them with their model: the files' sizes on disk.
    const onDisk = statSync(join(SD_FIXTURES, 'adapters', 'stripes-kohya.safetensors')).size + statSync(join(SD_FIXTURES, 'adapters', 'stripes-peft', 'adapter_model.safetensors')).size;
    expect((await storageUsage(db)).diffusionModels.find((m) => m.id === model.id)?.adapterBytes).toBe(onDisk);

    // The reference: the fixture's files read against the UNet as built from its weights.
    const reference = await readKohyaLora(bytesSource('stripes-kohya.safetensors', new Uint8Array(readFileSync(KOHYA))), [{ prefix: 'lora_unet', linears: pipeline.unet.linears }]);
    const folder = await storedDiffusersFolder(db, model);
    for (const name of ['stripes', 'stripes-peft']) {
      const back = await readStoredImageAdapter(db, model.id, folder, name);
      expect([back.rank, back.alpha, back.useRslora, back.textEncoder]).toEqual([4, 4, false, null]);
      expect([...back.unet.keys()].sort()).toEqual([...reference.modules.keys()].sort());
      for (const [path, m] of reference.modules) {
        const t = back.unet.get(path)!;
        // The PEFT folder holds the same float32 values as the kohya file (the fixture's README).
        expect(Buffer.from(t.A.buffer, t.A.byteOffset, t.A.byteLength).equals(Buffer.from(m.A.buffer, m.A.byteOffset, m.A.byteLength))).toBe(true);
        expect(Buffer.from(t.B.buffer, t.B.byteOffset, t.B.byteLength).equals(Buffer.from(m.B.buffer, m.B.byteOffset, m.B.byteLength))).toBe(true);
      }
    }

    // A second adapter of the same name is refused; deleting the model deletes its adapters.
    const again = await caught(importImageAdapter(db, { modelId: model.id, name: 'stripes', files: [kohyaFile()] }, ctx));
    expect(isUserError(again) && again.message).toContain('already stored');
    await deleteDiffusionModel(db, model.id);
    expect(await listImageAdapters(db, model.id)).toEqual([]);
  });

  it('refuses a LoRA of another model (A/B ranks that differ, a module the UNet lacks) naming the file, and stores nothing', async () => {
    const toQ = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q';
    const bad = (name: string, tensors: Parameters<typeof writeSafetensors>[0]) => new File([writeSafetensors(tensors)], name);
    const rankMismatch = bad('rank-mismatch.safetensors', [
      { name: `${toQ}.lora_down.weight`, shape: [4, 32], data: new Float32Array(4 * 32) },
      { name: `${toQ}.lora_up.weight`, shape: [32, 3], data: new Float32Array(32 * 3) },
    ]);
    const foreign = 'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q';
    const missingModule = bad('other-unet.safetensors', [
      { name: `${foreign}.lora_down.weight`, shape: [4, 32], data: new Float32Array(4 * 32) },
      { name: `${foreign}.lora_up.weight`, shape: [32, 4], data: new Float32Array(32 * 4) },
    ]);
    // An SD 2.x-sized projection: the shapes of the real fixture file do not fit a 1024-wide UNet, nor this one.
    const wide = bad('sd2.safetensors', [
      { name: `${toQ}.lora_down.weight`, shape: [4, 320], data: new Float32Array(4 * 320) },
      { name: `${toQ}.lora_up.weight`, shape: [320, 4], data: new Float32Array(320 * 4) },
    ]);
    for (const [file, says] of [
      [rankMismatch, 'needs [32, 4]'],
      [missingModule, 'which this model does not have'],
      [wide, 'needs [r, 32]'],
    ] as const) {
      const e = await caught(importImageAdapter(db, { modelId: model.id, name: file.name, files: [file] }, ctx));
      expect(isUserError(e)).toBe(true);
      expect(e.message).toContain(file.name);
      expect(e.message).toContain(says);
    }
    // A PEFT config whose r disagrees with its weights.
    const config = JSON.parse(readFileSync(join(PEFT, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const peft = [new File([JSON.stringify({ ...config, r: 8 })], 'p/adapter_config.json'), fileOf(join(PEFT, 'adapter_model.safetensors'), 'p/adapter_model.safetensors')];
    const e = await caught(importImageAdapter(db, { modelId: model.id, name: 'p', files: peft }, ctx));
    expect(isUserError(e) && e.message).toContain('adapter_model.safetensors');
    expect(await listImageAdapters(db, model.id)).toEqual([]);
  });
});

describe('init_adapter for an image run', () => {
  it("starts the UNet LoRA from the stored kohya adapter: the step-0 eval loss is the file's fixed-draw loss", async () => {
    await importImageAdapter(db, { modelId: model.id, name: 'stripes', files: [kohyaFile()] }, ctx);
    const folder = await storedDiffusersFolder(db, model);
    const init = (await imageInitAdapterOf(db, 'stripes', { folder, modelId: model.id, name: model.name }))!;
    const base: RunConfig = {
      ...DEFAULT_CONFIG,
      output_dir: './output/from-stripes',
      init_adapter: 'stripes',
      lora_dropout: 0,
      learning_rate: 1e-3,
      batch_size: 8,
      max_steps: 1,
      eval_steps: 1,
      eval_on_start: true,
      log_steps: 0,
      resolution: 32,
      seed: 3,
    };
    // A config that writes another rank was written for another adapter.
    const refused = await caught(Promise.resolve().then(() => imageConfigWithInitAdapter({ ...base, lora_rank: 8 }, new Set(['lora_rank']), init, pipeline.unet)));
    expect(isUserError(refused) && refused.message).toContain('lora_rank is 8');
    const config = imageConfigWithInitAdapter(base, new Set(), init, pipeline.unet);
    expect([config.lora_rank, config.lora_alpha, (config.target_modules as string[]).length]).toEqual([4, 4, 48]);
    // A folder picked for the run has no stored adapters.
    const picked = await caught(imageInitAdapterOf(db, 'stripes', { folder, modelId: null, name: 'tiny-sd' }));
    expect(isUserError(picked) && picked.message).toContain('init_adapter');

    const stripes = await cacheImageSet(pipeline, await preparedImages('data-stripes'), { trainTextEncoder: false });
    const rows: MetricsCsvRow[] = [];
    const result = await trainImageLora(
      {
        config,
        pipeline,
        schedule,
        train: stripes,
        val: stripes,
        baseModelName: 'tiny-sd',
        dataset: { dirs: [{ name: 'data-stripes', repeats: 1, imageCount: 40 }], tagFrequency: new Map() },
        initAdapter: init,
      },
      { metric: (r) => void rows.push(r), log: () => undefined, file: () => undefined },
    );
    expect(result.reason).toBe('completed');
    const start = rows.find((r) => r.evalLoss !== null && r.step === 0)!.evalLoss!;
    const file = await readKohyaLora(bytesSource('stripes-kohya.safetensors', new Uint8Array(readFileSync(KOHYA))), [{ prefix: 'lora_unet', linears: pipeline.unet.linears }]);
    const examples = validationImages(stripes, config.seed, schedule.numTrainTimesteps);
    const [withFile, without] = [await lossWith(examples, file), await lossWith(examples, null)];
    console.info(`init_adapter: step-0 eval ${start.toFixed(5)}, the file's ${withFile.toFixed(5)}, the base model's ${without.toFixed(5)}`);
    expect(Math.abs(start - withFile)).toBeLessThan(1e-4);
    // The adapter matters on these draws, so the equality above is not the base model's loss twice.
    expect(without - withFile).toBeGreaterThan(0.01);
  }, 300_000);
});

async function preparedImages(name: string): Promise<PreparedImage[]> {
  const dir = join(SD_FIXTURES, name);
  const files = readdirSync(dir).map((file) => ({ path: file, source: bytesSource(file, new Uint8Array(readFileSync(join(dir, file)))) }));
  const read = await readImageFolder(files, { folderName: name });
  const out: PreparedImage[] = [];
  for (const entry of read.entries) {
    const decoded = await decodeImageEntry(entry, async (bytes) => decodePngRgba(bytes));
    out.push({ size: 32, rgb: prepareImage(decoded, { resolution: 32, flip: false }), flippedRgb: null, caption: entry.caption, repeats: entry.repeats });
  }
  return out;
}

/** The mean fixed-draw loss with a LoRA read from a file (null: the base model), through the UNet written out here. */
async function lossWith(examples: ReturnType<typeof validationImages>, lora: LoadedLora | null): Promise<number> {
  const applied = lora ? applyLoadedLora(lora) : null;
  try {
    const result = await evaluate(
      examples,
      (batch) =>
        tf.tidy(() => {
          if (!batch.fixed || batch.text.kind !== 'states') throw new Error('validation batches carry fixed draws and text states');
          const a = batch.fixed.timesteps.map((t) => schedule.alphasCumprod[t]!);
          const noisy = tf.add(tf.mul(tf.tensor4d(a.map(Math.sqrt), [a.length, 1, 1, 1]), batch.latents), tf.mul(tf.tensor4d(a.map((x) => Math.sqrt(1 - x)), [a.length, 1, 1, 1]), batch.fixed.noise)) as tf.Tensor4D;
          const prediction = pipeline.unet.forward(noisy, batch.fixed.timesteps, batch.text.context, applied ? { linear: applied.linear } : undefined);
          return tf.mean(tf.squaredDifference(prediction, batch.fixed.noise));
        }),
      10,
    );
    return result.loss;
  } finally {
    applied?.dispose();
  }
}
