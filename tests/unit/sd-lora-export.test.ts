import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The wasm backend runs the UNet's convolutions several times faster than cpu (see sd-unet.test.ts).
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { diffusersPeftFiles } from '../../src/core/export/diffusers-peft';
import { kohyaLoraFile, kohyaMetadata, type ExportLoraModule, type KohyaTrainingNotes } from '../../src/core/export/kohya-lora';
import { buildClipTextModel } from '../../src/core/models/diffusion/clip-text';
import { disposeComponent, loadDiffusersComponent, readComponentConfig } from '../../src/core/models/diffusion/component';
import { parseNoiseSchedule } from '../../src/core/models/diffusion/noise';
import { buildUnet, type Unet } from '../../src/core/models/diffusion/unet';
import { readKohyaLora, readPeftLora, type LoadedLora } from '../../src/core/models/diffusion/unet-lora';
import { bytesSource, readHeader, readTensorBytes, toFloat32, writeSafetensors, type SafetensorsHeader } from '../../src/core/safetensors/index';
import { diffusersFolderFromDisk, readSdFixtureJson, SD_FIXTURES } from './support/diffusers-folder';
import { expectFixtureLoss, perDrawLoss, type LossFixture } from './support/fixture-loss';

const fixtureBytes = (rel: string) => new Uint8Array(readFileSync(join(SD_FIXTURES, 'adapters', rel)));
const KOHYA_FIXTURE = fixtureBytes('stripes-kohya.safetensors');
const PEFT_WEIGHTS = fixtureBytes('stripes-peft/adapter_model.safetensors');
const PEFT_CONFIG = new TextDecoder().decode(fixtureBytes('stripes-peft/adapter_config.json'));
const SD1 = { unetUseLinearProjection: false } as const;

const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex');
const header = (name: string, bytes: Uint8Array) => readHeader(bytesSource(name, bytes));

/** What a reader gives back, in the exporter's terms (kohya and PEFT scale by alpha / r). */
function exportModules(lora: LoadedLora): ExportLoraModule[] {
  return [...lora.modules.values()].map((m) => ({ network: 'unet', path: m.path, rank: m.rank, A: m.A, B: m.B, alpha: m.scaling * m.rank }));
}

/** Names, dtypes and shapes of a file's tensors, in file order. */
const tensorList = (h: SafetensorsHeader) => h.tensors.map((t) => [t.name, t.dtype, t.shape]);

let unet: Unet;
/** The fixture kohya adapter as readKohyaLora reads it (checked against the reference loss in sd-unet.test.ts). */
let reference: LoadedLora;
let modules: ExportLoraModule[];

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
  unet = buildUnet(await loadDiffusersComponent(diffusersFolderFromDisk(), 'unet'));
  reference = await readKohyaLora(bytesSource('stripes-kohya.safetensors', KOHYA_FIXTURE), [{ prefix: 'lora_unet', linears: unet.linears }]);
  modules = exportModules(reference);
});

afterAll(() => unet?.dispose());

describe('kohyaLoraFile: the fixture adapter written again', () => {
  let ours: Uint8Array;
  beforeAll(async () => {
    ours = await kohyaLoraFile(modules, null, SD1);
  });

  it("has the fixture file's tensors: names, F32 dtypes, shapes ([] for alpha) and data bytes", async () => {
    expect(modules).toHaveLength(48);
    const [mine, theirs] = [await header('ours', ours), await header('fixture', KOHYA_FIXTURE)];
    expect(tensorList(mine)).toEqual(tensorList(theirs));
    expect(tensorList(mine)).toContainEqual(['lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_out_0.alpha', 'F32', []]);
    // Same tensors in the same order: the whole data section is byte for byte the independent writer's.
    expect(ours.subarray(mine.dataStart)).toEqual(KOHYA_FIXTURE.subarray(theirs.dataStart));
  });

  it('reads back as the same modules: paths in model order, rank, scaling and exact A and B', async () => {
    const back = await readKohyaLora(bytesSource('ours.safetensors', ours), [{ prefix: 'lora_unet', linears: unet.linears }]);
    expect([...back.modules.keys()]).toEqual([...reference.modules.keys()]);
    for (const [path, m] of reference.modules) {
      const b = back.modules.get(path)!;
      expect([b.rank, b.scaling]).toEqual([m.rank, m.scaling]);
      expect(b.A).toEqual(m.A);
      expect(b.B).toEqual(m.B);
    }
  });

  it('gives the denoising loss 0.132888 of the fixture with the kohya adapter, draw by draw (160 draws)', async () => {
    const fixture = readSdFixtureJson<LossFixture>('expected/loss_stripes_seed0_with_kohya_adapter.json');
    expect(fixture.loss).toBeCloseTo(0.132888, 6);
    const back = await readKohyaLora(bytesSource('ours.safetensors', ours), [{ prefix: 'lora_unet', linears: unet.linears }]);
    const folder = diffusersFolderFromDisk();
    const schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
    const text = await loadDiffusersComponent(folder, 'text_encoder');
    const encoded = buildClipTextModel(text).forward(fixture.input_ids);
    encoded.pooled.dispose();
    disposeComponent(text);
    const captions = encoded.lastHiddenState;
    expectFixtureLoss(await perDrawLoss(unet, schedule, captions, fixture, back), fixture);
    captions.dispose();
  });

  it('stores sd-scripts’ hashes: sshs_model_hash = SHA-256 of the data section, sshs_legacy_hash of nothing below 1 MiB', async () => {
    const h = await header('ours', ours);
    expect(h.metadata['sshs_model_hash']).toBe(sha256(ours.subarray(h.dataStart)));
    // The legacy hash reads 64 KiB at 1 MiB into the file; this 77 KB file has nothing there: SHA-256 of no bytes.
    expect(h.metadata['sshs_legacy_hash']).toBe('e3b0c442');
  });
});

describe('kohyaLoraFile options and names', () => {
  const projIn = 'down_blocks.0.attentions.1.proj_in';
  const filled = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
  const projModule: ExportLoraModule = { network: 'unet', path: projIn, rank: 2, A: filled(64, (i) => i / 64), B: filled(64, (i) => -i / 128), alpha: 1 };
  const teModule: ExportLoraModule = {
    network: 'text_encoder',
    path: 'text_model.encoder.layers.0.self_attn.q_proj',
    rank: 2,
    A: filled(64, (i) => Math.sin(i)),
    B: filled(64, (i) => Math.cos(i)),
    alpha: 2,
  };

  it('stores SD 1.x proj_in (a 1×1 Conv2d) as [r, in, 1, 1] / [out, r, 1, 1], as a Linear when the UNet uses linear projections, and the text encoder under lora_te_', async () => {
    const conv = await header('conv', await kohyaLoraFile([projModule, teModule], null, SD1));
    expect(tensorList(conv)).toEqual([
      ['lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha', 'F32', []],
      ['lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', 'F32', [2, 32]],
      ['lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', 'F32', [32, 2]],
      ['lora_unet_down_blocks_0_attentions_1_proj_in.alpha', 'F32', []],
      ['lora_unet_down_blocks_0_attentions_1_proj_in.lora_down.weight', 'F32', [2, 32, 1, 1]],
      ['lora_unet_down_blocks_0_attentions_1_proj_in.lora_up.weight', 'F32', [32, 2, 1, 1]],
    ]);
    const linear = await header('linear', await kohyaLoraFile([projModule], null, { unetUseLinearProjection: true }));
    expect(tensorList(linear).map((t) => t[2])).toEqual([[], [2, 32], [32, 2]]);
  });

  it('reads the 1×1-conv factors back onto the UNet projection, with the text-encoder module named as skipped', async () => {
    const bytes = await kohyaLoraFile([projModule, teModule], null, SD1);
    const back = await readKohyaLora(bytesSource('conv.safetensors', bytes), [{ prefix: 'lora_unet', linears: unet.linears }]);
    expect(back.modules.get(projIn)!.A).toEqual(projModule.A);
    expect(back.modules.get(projIn)!.scaling).toBe(0.5);
    expect(back.skippedModules).toEqual(['lora_te_text_model_encoder_layers_0_self_attn_q_proj']);
  });

  it('saves every tensor, alpha included, as F16 with save precision fp16, each value the nearest half', async () => {
    const bytes = await kohyaLoraFile(modules, null, { ...SD1, savePrecision: 'fp16' });
    const h = await header('fp16', bytes);
    expect(new Set(h.tensors.map((t) => t.dtype))).toEqual(new Set(['F16']));
    expect(bytes.length - h.dataStart).toBe((KOHYA_FIXTURE.length - (await header('f', KOHYA_FIXTURE)).dataStart) / 2);
    const source = bytesSource('fp16', bytes);
    const alpha = h.tensors.find((t) => t.name.endsWith('.alpha'))!;
    expect(toFloat32('F16', await readTensorBytes(source, alpha))[0]).toBe(4);
    // Half precision keeps 11 significant bits: each value within half an ulp, 2^-11 relative (normal range).
    const down = h.tensors.find((t) => t.name === 'lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight')!;
    const want = reference.modules.get('mid_block.attentions.0.transformer_blocks.0.attn2.to_k')!.A;
    const got = toFloat32('F16', await readTensorBytes(source, down));
    want.forEach((w, i) => expect(Math.abs(got[i]! - w)).toBeLessThanOrEqual(Math.max(Math.abs(w) * 2 ** -11, 2 ** -25)));
  });

  it('hashes a file over 1 MiB as sd-scripts: legacy = SHA-256 of bytes [1 MiB, 1 MiB + 64 KiB) of the file with only ss_* notes', async () => {
    // Rank 96 on the 48 attention projections: about 1.4 MB of F32.
    let seed = 1;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5;
    const big: ExportLoraModule[] = unet.linears
      .filter((l) => /\.to_(q|k|v|out\.0)$/.test(l.path))
      .map((l) => ({ network: 'unet', path: l.path, rank: 96, A: filled(96 * l.inFeatures, random), B: filled(l.outFeatures * 96, random), alpha: 32 }));
    const notes = { ss_network_dim: '96', ss_network_alpha: '32.0', ss_output_name: 'big' };
    const bytes = await kohyaLoraFile(big, { ...notes, 'modelspec.title': 'not hashed' }, SD1);
    expect(bytes.length).toBeGreaterThan(0x110000);
    const h = await header('big', bytes);
    expect(h.metadata['modelspec.title']).toBe('not hashed');
    expect(h.metadata['sshs_model_hash']).toBe(sha256(bytes.subarray(h.dataStart)));
    // The same tensors written by the safetensors writer with the ss_* notes alone: the file sd-scripts hashes.
    const source = bytesSource('big', bytes);
    const hashed = writeSafetensors(
      await Promise.all(h.tensors.map(async (t) => ({ name: t.name, shape: t.shape, data: new Float32Array(toFloat32('F32', await readTensorBytes(source, t))) }))),
      notes,
    );
    expect(h.metadata['sshs_legacy_hash']).toBe(sha256(hashed.subarray(0x100000, 0x110000)).slice(0, 8));
    expect(h.metadata['sshs_legacy_hash']).not.toBe('e3b0c442');
  });
});

describe('kohyaMetadata', () => {
  const notes: KohyaTrainingNotes = {
    networkDim: 4,
    networkAlpha: 4,
    resolution: { width: 512, height: 512 },
    datasetDirs: [
      { name: '10_stripes', repeats: 10, imageCount: 40 },
      { name: '10_stripes', repeats: 2, imageCount: 5 },
    ],
    tagFrequency: new Map([['10_stripes', new Map([['stripes style', 40], ['red circle', 7], ['café', 1]])]]),
    learningRate: 1e-4,
    unetLr: null,
    textEncoderLr: 5e-5,
    maxTrainSteps: 1600,
    steps: 400,
    epoch: 1,
    numEpochs: 4,
    seed: 42,
    outputName: 'stripes',
    trainingStartedAtMs: 1764790000250,
    trainingFinishedAtMs: 1764793600000,
    sdModelName: 'runwayml/stable-diffusion-v1-5',
    clipSkip: null,
    noiseOffset: 0.05,
    minSnrGamma: 5,
  };

  it('writes every field sd-scripts writes for these notes, as Python prints the values', () => {
    const m = kohyaMetadata(notes);
    expect(m).toEqual({
      ss_network_module: 'networks.lora',
      ss_network_dim: '4',
      ss_network_alpha: '4.0',
      ss_base_model_version: 'sd_v1',
      ss_v2: 'False',
      ss_resolution: '(512, 512)',
      ss_num_train_images: '410',
      ss_num_reg_images: '0',
      ss_num_epochs: '4',
      ss_tag_frequency: '{"10_stripes": {"stripes style": 40, "red circle": 7, "caf\\u00e9": 1}}',
      ss_dataset_dirs: '{"10_stripes": {"n_repeats": 10, "img_count": 40}, "10_stripes (2)": {"n_repeats": 2, "img_count": 5}}',
      ss_reg_dataset_dirs: '{}',
      ss_learning_rate: '0.0001',
      ss_unet_lr: 'None',
      ss_text_encoder_lr: '5e-05',
      ss_max_train_steps: '1600',
      ss_steps: '400',
      ss_epoch: '1',
      ss_seed: '42',
      ss_output_name: 'stripes',
      ss_training_started_at: '1764790000.25',
      ss_training_finished_at: '1764793600.0',
      ss_sd_model_name: 'runwayml/stable-diffusion-v1-5',
      ss_clip_skip: 'None',
      ss_noise_offset: '0.05',
      ss_min_snr_gamma: '5.0',
      ss_training_comment: 'None',
    });
    expect(JSON.parse(m['ss_tag_frequency']!)).toEqual({ '10_stripes': { 'stripes style': 40, 'red circle': 7, café: 1 } });
    expect(JSON.parse(m['ss_dataset_dirs']!)['10_stripes (2)']).toEqual({ n_repeats: 2, img_count: 5 });
  });

  it('prints floats as Python does at the edges of its fixed notation, and refuses a fractional int', () => {
    const m = kohyaMetadata({ ...notes, learningRate: 1e-5, unetLr: 0.1 + 0.2, textEncoderLr: 1.5e16, noiseOffset: 1e15, clipSkip: 2 });
    expect([m['ss_learning_rate'], m['ss_unet_lr'], m['ss_text_encoder_lr'], m['ss_noise_offset'], m['ss_clip_skip']]).toEqual([
      '1e-05',
      '0.30000000000000004',
      '1.5e+16',
      '1000000000000000.0',
      '2',
    ]);
    expect(() => kohyaMetadata({ ...notes, networkDim: 4.5 })).toThrow(/networkDim must be a whole number/);
  });

  it('goes into the file with the sshs hashes added, and reads back unchanged', async () => {
    const bytes = await kohyaLoraFile(modules, kohyaMetadata(notes), SD1);
    const h = await header('with-notes', bytes);
    const { sshs_model_hash, sshs_legacy_hash, ...rest } = h.metadata;
    expect(rest).toEqual(kohyaMetadata(notes));
    expect(sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(sshs_legacy_hash).toBe('e3b0c442');
  });
});

describe('diffusersPeftFiles: the fixture adapter as a PEFT folder', () => {
  const options = { network: 'unet' as const, rank: 4, alpha: 4, targetModules: ['to_q', 'to_k', 'to_v', 'to_out.0'], baseModelName: 'tiny-sd', ...SD1 };

  it("writes adapter_model.safetensors byte for byte as the fixture's (PEFT's names, F32, format pt)", () => {
    const files = diffusersPeftFiles(modules, options);
    expect(files['adapter_model.safetensors']).toEqual(PEFT_WEIGHTS);
  });

  it("writes an adapter_config.json whose loading fields equal the fixture's, and both files load as the same modules", async () => {
    const files = diffusersPeftFiles(modules, options);
    const mine = JSON.parse(files['adapter_config.json']) as Record<string, unknown>;
    const theirs = JSON.parse(PEFT_CONFIG) as Record<string, unknown>;
    for (const key of ['peft_type', 'task_type', 'base_model_name_or_path', 'r', 'lora_alpha', 'target_modules', 'lora_dropout', 'bias', 'use_rslora', 'use_dora', 'fan_in_fan_out', 'modules_to_save', 'rank_pattern', 'alpha_pattern']) {
      expect([key, mine[key]]).toEqual([key, theirs[key]]);
    }
    expect(Object.keys(mine)).toEqual(Object.keys(mine).sort());
    const back = await readPeftLora(files['adapter_config.json'], bytesSource('adapter_model.safetensors', files['adapter_model.safetensors']), unet.linears);
    expect([...back.modules.keys()]).toEqual([...reference.modules.keys()]);
    for (const [path, m] of reference.modules) {
      const b = back.modules.get(path)!;
      expect([b.rank, b.scaling]).toEqual([m.rank, m.scaling]);
      expect(b.A).toEqual(m.A);
      expect(b.B).toEqual(m.B);
    }
  });

  it('stores a 1×1-conv proj_in as [r, in, 1, 1] / [out, r, 1, 1], and refuses modules PEFT could not load from it', async () => {
    const proj: ExportLoraModule = { network: 'unet', path: 'mid_block.attentions.0.proj_out', rank: 4, A: new Float32Array(256).fill(0.25), B: new Float32Array(256).fill(-1), alpha: 4 };
    const files = diffusersPeftFiles([proj], { ...options, targetModules: ['proj_out'] });
    const h = await header('proj', files['adapter_model.safetensors']);
    expect(tensorList(h)).toEqual([
      ['base_model.model.mid_block.attentions.0.proj_out.lora_A.weight', 'F32', [4, 64, 1, 1]],
      ['base_model.model.mid_block.attentions.0.proj_out.lora_B.weight', 'F32', [64, 4, 1, 1]],
    ]);
    expect(() => diffusersPeftFiles([proj], options)).toThrow(/not selected by target_modules/);
    expect(() => diffusersPeftFiles([{ ...proj, alpha: 8 }], { ...options, targetModules: ['proj_out'] })).toThrow(/rank 4 and alpha 8, not the config's 4 and 4/);
    expect(() => diffusersPeftFiles([{ ...proj, network: 'text_encoder' }], { ...options, targetModules: ['proj_out'] })).toThrow(/holds the unet's adapter/);
  });
});
