import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Tokenizer } from '@huggingface/tokenizers';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildClipTextModel, eosPositions } from '../../src/core/models/diffusion/clip-text';
import { loadClipTokenizer, loadClipTokenizerFromFolder, type ClipTokenizer } from '../../src/core/models/diffusion/clip-tokenizer';
import { disposeComponent, loadDiffusersComponent } from '../../src/core/models/diffusion/component';
import { buildVae, pixelsFromBytes } from '../../src/core/models/diffusion/vae';
import { isUserError } from '../../src/core/errors';
import { bytesSource } from '../../src/core/safetensors/index';
import { diffusersFolderFromDisk, readSdFixtureJson, SD_FIXTURES, TINY_SD } from './support/diffusers-folder';
import { decodePng } from './support/png';

/** The reference outputs of an independent PyTorch implementation of transformers'/diffusers' semantics. */
interface UnetForwardFixture {
  tolerance: number;
  inputs: { prompts: string[]; input_ids: number[][]; image: number[][][] };
  outputs: {
    text_last_hidden_state: number[][][];
    text_pooled: number[][];
    vae_latent_mean: number[][][][];
    vae_latent_logvar: number[][][][];
    vae_decoder_output: number[][][][];
  };
}

const fixture = readSdFixtureJson<UnetForwardFixture>('expected/unet_forward_seed0.json');
const tokenizerFile = (name: string) => readFileSync(join(TINY_SD, 'tokenizer', name), 'utf8');

function expectClose(actual: tf.Tensor, expected: unknown, tolerance: number): void {
  const want = tf.tensor(expected as number[]);
  expect(actual.shape).toEqual(want.shape);
  const diff = tf.max(tf.abs(tf.sub(actual, want))).dataSync()[0]!;
  want.dispose();
  expect(diff).toBeLessThan(tolerance);
}

describe('CLIP tokenizer (vocab.json + merges.txt)', () => {
  const tokenizer: ClipTokenizer = loadClipTokenizer({
    vocabJson: tokenizerFile('vocab.json'),
    mergesTxt: tokenizerFile('merges.txt'),
    tokenizerConfigJson: tokenizerFile('tokenizer_config.json'),
    specialTokensMapJson: tokenizerFile('special_tokens_map.json'),
  });

  it('gives the reference input ids for both fixture prompts: [bos] + ids + [eos], padded to 77', () => {
    expect(fixture.inputs.prompts.map((p) => tokenizer.encodeForModel(p))).toEqual(fixture.inputs.input_ids);
    expect(tokenizer.length).toBe(77);
    expect(tokenizer.padId).toBe(585);
  });

  it('loads from a diffusers folder the same, and names a missing merges.txt', async () => {
    const folder = new Map(diffusersFolderFromDisk());
    const fromFolder = await loadClipTokenizerFromFolder(folder);
    expect(fixture.inputs.prompts.map((p) => fromFolder.encodeForModel(p))).toEqual(fixture.inputs.input_ids);
    folder.delete('tokenizer/merges.txt');
    await expect(loadClipTokenizerFromFolder(folder)).rejects.toThrow(/tokenizer\/merges\.txt: is missing/);
  });

  it('cleans, lower-cases and truncates like transformers (checked against the library reading tokenizer.json)', () => {
    const library = new Tokenizer(JSON.parse(tokenizerFile('tokenizer.json')), JSON.parse(tokenizerFile('tokenizer_config.json')));
    const texts = [
      'A  Small\tRED circle,  on a BLUE background!!',
      "  it's   a yellow-triangle's 12 shapes  ",
      'stripes style, stripes style.',
      'café ünïcode ñ 漢字 e\u0301',
      "IT'S A Red<|endoftext|>circle x\u00a0y\u3000z",
    ];
    for (const text of texts) {
      const expected = library.encode(text, { add_special_tokens: false }).ids;
      expect(expected.length).toBeGreaterThan(0);
      expect(tokenizer.encode(text)).toEqual(expected);
    }
    const long = Array.from({ length: 100 }, () => 'red').join(' ');
    const ids = tokenizer.encodeForModel(long);
    expect(ids).toHaveLength(77);
    expect(ids[0]).toBe(tokenizer.bosId);
    expect(ids[76]).toBe(tokenizer.eosId);
    expect(ids.slice(1, 76)).toEqual(tokenizer.encode(long).slice(0, 75));
  });
});

describe('SD text encoder and VAE against the PyTorch reference', () => {
  const folder = diffusersFolderFromDisk();
  // The models take over their component's tensors, so each test loads its own.
  const loadVae = async () => buildVae(await loadDiffusersComponent(folder, 'vae'));

  beforeAll(async () => {
    await tf.setBackend('cpu');
  });

  it('pools at the first eos id, or at the highest id for configs with the legacy eos id 2 (SD 1.5 text encoders)', () => {
    expect(eosPositions(fixture.inputs.input_ids, 585)).toEqual([8, 12]);
    // SD 1.5's text_encoder/config.json says eos_token_id 2 while its tokenizer ends with 49407, the highest id.
    expect(eosPositions([[49406, 320, 1125, 49407, 49407], [49406, 49407, 49407, 49407, 49407]], 2)).toEqual([3, 1]);
  });

  it('CLIP last_hidden_state [2,77,32] and pooled output equal the reference within 1e-4', async () => {
    const model = buildClipTextModel(await loadDiffusersComponent(folder, 'text_encoder'));
    const { lastHiddenState, pooled } = model.forward(fixture.inputs.input_ids);
    expectClose(lastHiddenState, fixture.outputs.text_last_hidden_state, fixture.tolerance);
    expectClose(pooled, fixture.outputs.text_pooled, fixture.tolerance);
    tf.dispose([lastHiddenState, pooled]);
    model.dispose();
  });

  it("reads a text encoder file that holds an I64 position_ids buffer (as SD 1.5's does) and gives the same states", async () => {
    // The fixture's text encoder with `text_model.embeddings.position_ids` [1, 77] I64 appended, as older
    // transformers saved it; the header is rewritten by hand (our writer writes float tensors only).
    const original = new Uint8Array(readFileSync(join(TINY_SD, 'text_encoder', 'model.safetensors')));
    const headerLength = Number(new DataView(original.buffer, original.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(original.subarray(8, 8 + headerLength))) as Record<string, { data_offsets?: [number, number] }>;
    const data = original.subarray(8 + headerLength);
    const positions = new BigInt64Array(77).map((_, i) => BigInt(i));
    header['text_model.embeddings.position_ids'] = { dtype: 'I64', shape: [1, 77], data_offsets: [data.length, data.length + positions.byteLength] } as never;
    let json = JSON.stringify(header);
    json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
    const file = new Uint8Array(8 + json.length + data.length + positions.byteLength);
    new DataView(file.buffer).setBigUint64(0, BigInt(json.length), true);
    file.set(new TextEncoder().encode(json), 8);
    file.set(data, 8 + json.length);
    file.set(new Uint8Array(positions.buffer), 8 + json.length + data.length);
    const withPositions = new Map(folder);
    withPositions.set('text_encoder/model.safetensors', bytesSource('text_encoder/model.safetensors', file));
    const model = buildClipTextModel(await loadDiffusersComponent(withPositions, 'text_encoder'));
    const { lastHiddenState, pooled } = model.forward(fixture.inputs.input_ids);
    expectClose(lastHiddenState, fixture.outputs.text_last_hidden_state, fixture.tolerance);
    tf.dispose([lastHiddenState, pooled]);
    model.dispose();
  });

  it('a data-set PNG survives a VAE round trip: the reconstruction is near its image, far from another', async () => {
    const vae = await loadVae();
    const [image, other] = ['img_0004.png', 'img_0010.png'].map((file) => {
      const png = decodePng(new Uint8Array(readFileSync(join(SD_FIXTURES, 'data-base', file))));
      const rgb: number[] = [];
      for (let y = 0; y < png.height; y++) for (let x = 0; x < png.width; x++) rgb.push(...png.pixel(x, y));
      return tf.tidy(() => pixelsFromBytes(tf.tensor4d(rgb, [1, png.height, png.width, 3], 'int32')));
    }) as [tf.Tensor4D, tf.Tensor4D];
    const [toOwn, toOther] = tf.tidy(() => {
      const { mean } = vae.encode(image);
      expect(mean.shape).toEqual([1, 4, 8, 8]);
      const reconstruction = vae.decode(mean);
      return [image, other].map((target) => tf.mean(tf.abs(tf.sub(reconstruction, target))).dataSync()[0]!);
    }) as [number, number];
    // Measured: about 0.08 to its own image, about 0.6 to the other (pixels span [-1, 1]).
    expect(toOwn).toBeLessThan(0.15);
    expect(toOther).toBeGreaterThan(3 * toOwn);
    tf.dispose([image, other]);
    vae.dispose();
  });

  it('a folder missing a component file or tensor is a UserError naming it, and what the build made is released', async () => {
    const withoutConfig = new Map(folder);
    withoutConfig.delete('vae/config.json');
    await expect(loadDiffusersComponent(withoutConfig, 'vae')).rejects.toThrow(/vae\/config\.json: is missing/);
    const component = await loadDiffusersComponent(folder, 'vae');
    const partial = new Map(component.weights);
    partial.delete('decoder.conv_out.weight');
    const before = tf.memory().numTensors;
    let thrown: unknown;
    try {
      buildVae({ ...component, weights: partial });
    } catch (e) {
      thrown = e;
    }
    expect(isUserError(thrown)).toBe(true);
    expect(String(thrown)).toContain('"decoder.conv_out.weight" is missing');
    // The re-laid-out kernels were released, and so were the originals already replaced by them.
    expect(tf.memory().numTensors).toBeLessThan(before);
    expect(tf.memory().numTensors).toBe(before - [...partial.values()].filter((t) => t.isDisposed).length);
    disposeComponent(component);
  });

  it('VAE latent mean and logvar [1,4,8,8] of the fixture image, and decode(mean) [1,3,32,32], equal the reference within 1e-4', async () => {
    // The encoder's attention under the names and 1×1-conv shapes of VAE files saved before diffusers 0.14 (the
    // SD 1.5 release's), the decoder's under today's: both must load to the same model.
    const component = await loadDiffusersComponent(folder, 'vae');
    const weights = new Map(component.weights);
    const legacy = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' };
    for (const [name, old] of Object.entries(legacy)) {
      const prefix = 'encoder.mid_block.attentions.0.';
      const weight = weights.get(`${prefix}${name}.weight`)!;
      weights.set(`${prefix}${old}.weight`, weight.reshape([...weight.shape, 1, 1]));
      weights.set(`${prefix}${old}.bias`, weights.get(`${prefix}${name}.bias`)!);
      weight.dispose();
      weights.delete(`${prefix}${name}.weight`);
      weights.delete(`${prefix}${name}.bias`);
    }
    const vae = buildVae({ ...component, weights });
    expect(vae.downscale).toBe(4);
    expect(vae.config.scalingFactor).toBe(0.18215);
    // The fixture's image is given as bytes [32, 32, 3] (HWC); latents are NCHW like the reference, pixels NHWC.
    const bytes = tf.tensor4d(fixture.inputs.image.flat(2), [1, 32, 32, 3], 'int32');
    const pixels = pixelsFromBytes(bytes);
    const { mean, logvar } = vae.encode(pixels);
    expectClose(mean, fixture.outputs.vae_latent_mean, fixture.tolerance);
    expectClose(logvar, fixture.outputs.vae_latent_logvar, fixture.tolerance);
    const decoded = vae.decode(mean);
    expect(decoded.shape).toEqual([1, 32, 32, 3]);
    expectClose(tf.transpose(decoded, [0, 3, 1, 2]), fixture.outputs.vae_decoder_output, fixture.tolerance);
    tf.dispose([bytes, pixels, mean, logvar, decoded]);
    vae.dispose();
  });
});
