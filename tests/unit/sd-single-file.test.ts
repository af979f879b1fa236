import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The wasm backend runs the UNet's convolutions ~7× faster than cpu (as in sd-unet.test.ts).
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { buildClipTextModel, clipTextConfig } from '../../src/core/models/diffusion/clip-text';
import { readComponentConfig } from '../../src/core/models/diffusion/component';
import { parseNoiseSchedule } from '../../src/core/models/diffusion/noise';
import {
  ldmUnetNames,
  loadSingleFileComponent,
  openSingleFile,
  SD15_CONFIGS,
  singleFileToDiffusers,
  type SingleFileConfigs,
} from '../../src/core/models/diffusion/single-file';
import { buildUnet } from '../../src/core/models/diffusion/unet';
import { parseUnetConfig } from '../../src/core/models/diffusion/unet-config';
import { buildVae, pixelsFromBytes, vaeConfig } from '../../src/core/models/diffusion/vae';
import { bytesSource, readHeader } from '../../src/core/safetensors/index';
import { diffusersFolderFromDisk, readSdFixtureJson, TINY_SD } from './support/diffusers-folder';
import { ldmSingleFile, readRawSafetensors, unetLdm, vaeLdm } from './support/ldm-single-file';

/**
 * A single-file (CompVis/LDM-named) checkpoint written here from the fixture's diffusers weights, with a name table
 * written out below from diffusers' conversion rules for this tiny model (independent of single-file.ts), loads
 * through single-file.ts into the same models and gives the reference outputs.
 */

interface UnetForwardFixture {
  tolerance: number;
  inputs: { latents: number[][][][]; timesteps: number[]; input_ids: number[][]; image: number[][][] };
  outputs: { text_last_hidden_state: number[][][]; text_pooled: number[][]; unet_sample: number[][][][]; vae_latent_mean: number[][][][] };
}
const fixture = readSdFixtureJson<UnetForwardFixture>('expected/unet_forward_seed0.json');
const folder = diffusersFolderFromDisk();

/** A few dozen pairs as diffusers' conversion documents them, to check the rules above (and, later, the code). */
const DOCUMENTED_PAIRS: [diffusers: string, ldm: string][] = [
  ['time_embedding.linear_1.weight', 'model.diffusion_model.time_embed.0.weight'],
  ['time_embedding.linear_2.bias', 'model.diffusion_model.time_embed.2.bias'],
  ['conv_in.weight', 'model.diffusion_model.input_blocks.0.0.weight'],
  ['down_blocks.0.resnets.0.norm1.weight', 'model.diffusion_model.input_blocks.1.0.in_layers.0.weight'],
  ['down_blocks.0.resnets.1.conv1.bias', 'model.diffusion_model.input_blocks.2.0.in_layers.2.bias'],
  ['down_blocks.0.resnets.0.time_emb_proj.weight', 'model.diffusion_model.input_blocks.1.0.emb_layers.1.weight'],
  ['down_blocks.0.resnets.1.norm2.bias', 'model.diffusion_model.input_blocks.2.0.out_layers.0.bias'],
  ['down_blocks.0.resnets.0.conv2.weight', 'model.diffusion_model.input_blocks.1.0.out_layers.3.weight'],
  ['down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight', 'model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight'],
  ['down_blocks.0.attentions.0.proj_in.weight', 'model.diffusion_model.input_blocks.1.1.proj_in.weight'],
  ['down_blocks.0.downsamplers.0.conv.bias', 'model.diffusion_model.input_blocks.3.0.op.bias'],
  ['down_blocks.1.resnets.0.conv_shortcut.weight', 'model.diffusion_model.input_blocks.4.0.skip_connection.weight'],
  ['down_blocks.1.resnets.1.conv2.bias', 'model.diffusion_model.input_blocks.5.0.out_layers.3.bias'],
  ['mid_block.resnets.0.norm1.bias', 'model.diffusion_model.middle_block.0.in_layers.0.bias'],
  ['mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight', 'model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight'],
  ['mid_block.resnets.1.time_emb_proj.weight', 'model.diffusion_model.middle_block.2.emb_layers.1.weight'],
  ['up_blocks.0.resnets.0.conv_shortcut.bias', 'model.diffusion_model.output_blocks.0.0.skip_connection.bias'],
  ['up_blocks.0.resnets.2.conv1.weight', 'model.diffusion_model.output_blocks.2.0.in_layers.2.weight'],
  ['up_blocks.0.upsamplers.0.conv.weight', 'model.diffusion_model.output_blocks.2.1.conv.weight'],
  ['up_blocks.1.resnets.0.norm1.weight', 'model.diffusion_model.output_blocks.3.0.in_layers.0.weight'],
  ['up_blocks.1.attentions.0.norm.bias', 'model.diffusion_model.output_blocks.3.1.norm.bias'],
  ['up_blocks.1.attentions.2.proj_out.weight', 'model.diffusion_model.output_blocks.5.1.proj_out.weight'],
  ['up_blocks.1.attentions.1.transformer_blocks.0.attn1.to_out.0.bias', 'model.diffusion_model.output_blocks.4.1.transformer_blocks.0.attn1.to_out.0.bias'],
  ['conv_norm_out.weight', 'model.diffusion_model.out.0.weight'],
  ['conv_out.bias', 'model.diffusion_model.out.2.bias'],
];
const DOCUMENTED_VAE_PAIRS: [diffusers: string, ldm: string][] = [
  ['encoder.conv_in.weight', 'first_stage_model.encoder.conv_in.weight'],
  ['encoder.down_blocks.0.resnets.0.norm1.weight', 'first_stage_model.encoder.down.0.block.0.norm1.weight'],
  ['encoder.down_blocks.1.resnets.0.conv_shortcut.weight', 'first_stage_model.encoder.down.1.block.0.nin_shortcut.weight'],
  ['encoder.down_blocks.1.downsamplers.0.conv.bias', 'first_stage_model.encoder.down.1.downsample.conv.bias'],
  ['encoder.mid_block.resnets.1.conv2.weight', 'first_stage_model.encoder.mid.block_2.conv2.weight'],
  ['encoder.mid_block.attentions.0.group_norm.weight', 'first_stage_model.encoder.mid.attn_1.norm.weight'],
  ['encoder.mid_block.attentions.0.to_out.0.weight', 'first_stage_model.encoder.mid.attn_1.proj_out.weight'],
  ['encoder.conv_norm_out.bias', 'first_stage_model.encoder.norm_out.bias'],
  ['quant_conv.weight', 'first_stage_model.quant_conv.weight'],
  ['post_quant_conv.bias', 'first_stage_model.post_quant_conv.bias'],
  ['decoder.mid_block.attentions.0.to_q.bias', 'first_stage_model.decoder.mid.attn_1.q.bias'],
  ['decoder.up_blocks.0.resnets.0.conv1.weight', 'first_stage_model.decoder.up.2.block.0.conv1.weight'],
  ['decoder.up_blocks.0.upsamplers.0.conv.weight', 'first_stage_model.decoder.up.2.upsample.conv.weight'],
  ['decoder.up_blocks.2.resnets.0.conv_shortcut.bias', 'first_stage_model.decoder.up.0.block.0.nin_shortcut.bias'],
  ['decoder.up_blocks.1.upsamplers.0.conv.bias', 'first_stage_model.decoder.up.1.upsample.conv.bias'],
  ['decoder.conv_norm_out.weight', 'first_stage_model.decoder.norm_out.weight'],
];

async function tinyConfigs(): Promise<SingleFileConfigs> {
  return {
    unet: await readComponentConfig(folder, 'unet'),
    vae: await readComponentConfig(folder, 'vae'),
    text_encoder: await readComponentConfig(folder, 'text_encoder'),
    scheduler: await readComponentConfig(folder, 'scheduler'),
  };
}

function maxDiff(actual: tf.Tensor, expected: unknown): number {
  const want = tf.tensor(expected as number[]);
  expect(actual.shape).toEqual(want.shape);
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(actual, want))).dataSync()[0]!);
  want.dispose();
  return diff;
}

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
});

describe('single-file (LDM) checkpoint names', () => {
  const unetConfig = () => readComponentConfig(folder, 'unet').then(parseUnetConfig);

  it("the test's table reproduces diffusers' documented pairs", () => {
    for (const [diffusers, ldm] of DOCUMENTED_PAIRS) expect(unetLdm(diffusers)).toBe(ldm);
    for (const [diffusers, ldm] of DOCUMENTED_VAE_PAIRS) expect(vaeLdm(diffusers)).toBe(ldm);
  });

  it('maps every LDM tensor of the written file back to its diffusers name, reshaping the VAE attention 1×1 convs', async () => {
    const header = await readHeader(bytesSource('tiny.safetensors', ldmSingleFile()), { skipIntegerTensors: true });
    const mapping = singleFileToDiffusers(header, await unetConfig());
    const inverse = (dir: string, toLdm: (n: string) => string) =>
      new Map(readRawSafetensors(join(TINY_SD, dir)).map((t) => [toLdm(t.name), t.name] as const));
    const sorted = (m: ReadonlyMap<string, string>) => [...m].sort((a, b) => (a[0] < b[0] ? -1 : 1));
    expect(sorted(mapping.components.unet.names)).toEqual(sorted(inverse('unet/diffusion_pytorch_model.safetensors', unetLdm)));
    expect(sorted(mapping.components.vae.names)).toEqual(sorted(inverse('vae/diffusion_pytorch_model.safetensors', vaeLdm)));
    expect(sorted(mapping.components.text_encoder.names)).toEqual(
      sorted(inverse('text_encoder/model.safetensors', (n) => `cond_stage_model.transformer.${n}`)),
    );
    for (const [diffusers, ldm] of [...DOCUMENTED_PAIRS, ...DOCUMENTED_VAE_PAIRS]) {
      expect(mapping.components.unet.names.get(ldm) ?? mapping.components.vae.names.get(ldm)).toBe(diffusers);
    }
    expect(mapping.components.unet.names.size).toBe(304);
    expect([...mapping.components.vae.reshapes].sort()).toEqual(
      ['decoder', 'encoder'].flatMap((c) => ['to_k', 'to_out.0', 'to_q', 'to_v'].map((p) => [`${c}.mid_block.attentions.0.${p}.weight`, [64, 64]])),
    );
    expect(mapping.components.unet.reshapes.size + mapping.components.text_encoder.reshapes.size).toBe(0);
    // The I64 buffer was passed over by the header reader; the float extras are ignored by name.
    expect(header.skipped.map((t) => [t.name, t.dtype])).toEqual([['cond_stage_model.transformer.text_model.embeddings.position_ids', 'I64']]);
    expect([...mapping.ignored].sort()).toEqual(['alphas_cumprod', 'model_ema.decay']);
  });

  it('reads text-encoder names with or without "text_model." the same', async () => {
    const config = await unetConfig();
    const withPrefix = singleFileToDiffusers(await readHeader(bytesSource('a', ldmSingleFile(true)), { skipIntegerTensors: true }), config);
    const without = singleFileToDiffusers(await readHeader(bytesSource('b', ldmSingleFile(false)), { skipIntegerTensors: true }), config);
    expect([...without.components.text_encoder.names.values()].sort()).toEqual([...withPrefix.components.text_encoder.names.values()].sort());
    expect(without.components.text_encoder.names.get('cond_stage_model.transformer.encoder.layers.1.mlp.fc2.weight')).toBe('text_model.encoder.layers.1.mlp.fc2.weight');
  });

  it('an unknown or a missing model.diffusion_model tensor, or another model family, is a UserError naming the tensor', async () => {
    const config = await unetConfig();
    const header = await readHeader(bytesSource('tiny.safetensors', ldmSingleFile()), { skipIntegerTensors: true });
    const extra = { file: 'tiny.safetensors', tensors: [...header.tensors, { name: 'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.bias', shape: [32] }] };
    let e = thrown(() => singleFileToDiffusers(extra, config));
    expect(isUserError(e)).toBe(true);
    expect(String(e)).toContain('tiny.safetensors: tensor "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.bias" is not part of');
    const missing = { file: 'tiny.safetensors', tensors: header.tensors.filter((t) => t.name !== 'model.diffusion_model.output_blocks.2.1.conv.weight') };
    e = thrown(() => singleFileToDiffusers(missing, config));
    expect(isUserError(e)).toBe(true);
    expect(String(e)).toContain('tensor "model.diffusion_model.output_blocks.2.1.conv.weight" is missing');
    const sdxl = { file: 'xl.safetensors', tensors: [...header.tensors, { name: 'conditioner.embedders.0.transformer.text_model.final_layer_norm.bias', shape: [768] }] };
    e = thrown(() => singleFileToDiffusers(sdxl, config));
    expect(isUserError(e)).toBe(true);
    expect(String(e)).toContain('SDXL');
    // Without skipIntegerTensors the header reader still refuses the I64 buffer, naming it.
    await expect(readHeader(bytesSource('tiny.safetensors', ldmSingleFile()))).rejects.toThrow(/position_ids" has dtype I64/);
  });

  it("SD 1.5's default configs parse, and the SD 1.5 UNet table holds its well-known LDM names", () => {
    const cfg = parseUnetConfig(SD15_CONFIGS.unet);
    expect([cfg.crossAttentionDim, cfg.timeEmbedDim, cfg.headsPerBlock]).toEqual([768, 1280, [8, 8, 8, 8]]);
    const component = (name: 'vae' | 'text_encoder') => ({ name, config: SD15_CONFIGS[name], weights: new Map() });
    expect(vaeConfig(component('vae'))).toMatchObject({ blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2, scalingFactor: 0.18215 });
    expect(clipTextConfig(component('text_encoder'))).toMatchObject({ hiddenSize: 768, layers: 12, heads: 12, vocabSize: 49408, eosTokenId: 2 });
    expect(parseNoiseSchedule(SD15_CONFIGS.scheduler).numTrainTimesteps).toBe(1000);
    const { required, optional } = ldmUnetNames(cfg);
    // diffusers' SD 1.5 UNet has 686 tensors; 14 of them are ResNet shortcuts (every up ResNet, 2 down ResNets).
    expect(required.size).toBe(686 - 28);
    for (const [ldm, diffusers] of [
      ['input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight', 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight'],
      ['input_blocks.9.0.op.weight', 'down_blocks.2.downsamplers.0.conv.weight'],
      ['input_blocks.11.0.out_layers.3.weight', 'down_blocks.3.resnets.1.conv2.weight'],
      ['middle_block.1.transformer_blocks.0.ff.net.2.weight', 'mid_block.attentions.0.transformer_blocks.0.ff.net.2.weight'],
      ['output_blocks.2.1.conv.weight', 'up_blocks.0.upsamplers.0.conv.weight'],
      ['output_blocks.5.2.conv.bias', 'up_blocks.1.upsamplers.0.conv.bias'],
      ['output_blocks.8.2.conv.weight', 'up_blocks.2.upsamplers.0.conv.weight'],
      ['output_blocks.11.1.proj_out.weight', 'up_blocks.3.attentions.2.proj_out.weight'],
    ]) {
      expect(required.get(ldm!)).toBe(diffusers);
    }
    expect(optional.get('input_blocks.4.0.skip_connection.weight')).toBe('down_blocks.1.resnets.0.conv_shortcut.weight');
    expect([...required.keys()].some((k) => k.startsWith('output_blocks.12.') || k.startsWith('input_blocks.12.'))).toBe(false);
  });
});

describe('a single-file checkpoint loads into the models and matches the PyTorch reference', () => {
  it('UNet noise prediction, VAE latent mean and CLIP hidden states equal the reference within 1e-4', async () => {
    const checkpoint = await openSingleFile(bytesSource('tiny.safetensors', ldmSingleFile()), await tinyConfigs());
    expect([...checkpoint.mapping.ignored].sort()).toEqual(['alphas_cumprod', 'cond_stage_model.transformer.text_model.embeddings.position_ids', 'model_ema.decay']);

    const clip = buildClipTextModel(await loadSingleFileComponent(checkpoint, 'text_encoder'));
    const text = clip.forward(fixture.inputs.input_ids);
    expect(maxDiff(text.lastHiddenState, fixture.outputs.text_last_hidden_state)).toBeLessThan(fixture.tolerance);
    expect(maxDiff(text.pooled, fixture.outputs.text_pooled)).toBeLessThan(fixture.tolerance);
    tf.dispose([text.lastHiddenState, text.pooled]);
    clip.dispose();

    const vae = buildVae(await loadSingleFileComponent(checkpoint, 'vae'));
    const bytes = tf.tensor4d(fixture.inputs.image.flat(2), [1, 32, 32, 3], 'int32');
    const pixels = pixelsFromBytes(bytes);
    const { mean, logvar } = vae.encode(pixels);
    expect(maxDiff(mean, fixture.outputs.vae_latent_mean)).toBeLessThan(fixture.tolerance);
    tf.dispose([bytes, pixels, mean, logvar]);
    vae.dispose();

    const unet = buildUnet(await loadSingleFileComponent(checkpoint, 'unet'));
    const latents = tf.tensor4d(fixture.inputs.latents);
    const context = tf.tensor3d(fixture.outputs.text_last_hidden_state);
    const out = unet.forward(latents, fixture.inputs.timesteps, context);
    expect(maxDiff(out, fixture.outputs.unet_sample)).toBeLessThan(fixture.tolerance);
    tf.dispose([latents, context, out]);
    unet.dispose();
  });
});
