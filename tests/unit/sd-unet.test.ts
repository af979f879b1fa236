import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The wasm backend (the browser's fallback without WebGPU) runs these convolutions ~7× faster than cpu.
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { buildClipTextModel } from '../../src/core/models/diffusion/clip-text';
import { disposeComponent, loadDiffusersComponent, readComponentConfig } from '../../src/core/models/diffusion/component';
import { denoisingLoss } from '../../src/core/models/diffusion/loss';
import { addNoise, denoisingTarget, parseNoiseSchedule, type NoiseSchedule } from '../../src/core/models/diffusion/noise';
import { buildUnet, type Unet } from '../../src/core/models/diffusion/unet';
import { parseUnetConfig } from '../../src/core/models/diffusion/unet-config';
import { applyLinear, type LinearApply } from '../../src/core/models/linear';
import { loraLinear } from '../../src/core/kernels/lora_linear';
import { readKohyaLora, readPeftLora } from '../../src/core/models/diffusion/unet-lora';
import { kohyaModuleName } from '../../src/core/models/diffusion/unet-lora-names';
import { bytesSource, writeSafetensors } from '../../src/core/safetensors/index';
import { diffusersFolderFromDisk, readSdFixtureJson, SD_FIXTURES } from './support/diffusers-folder';
import { expectFixtureLoss, perDrawLoss, type LossFixture } from './support/fixture-loss';

/** The reference outputs of an independent PyTorch implementation of diffusers' semantics. */
interface UnetForwardFixture {
  tolerance: number;
  inputs: { latents: number[][][][]; timesteps: number[] };
  outputs: { text_last_hidden_state: number[][][]; unet_time_proj: number[][]; unet_sample: number[][][][] };
}

const folder = diffusersFolderFromDisk();
const forwardFixture = readSdFixtureJson<UnetForwardFixture>('expected/unet_forward_seed0.json');
const adapterFile = (rel: string) => {
  const bytes = new Uint8Array(readFileSync(join(SD_FIXTURES, 'adapters', rel)));
  return { text: () => new TextDecoder().decode(bytes), source: bytesSource(rel, bytes) };
};

/** The largest absolute difference, after checking the shapes agree. */
function maxDiff(actual: tf.Tensor, expected: unknown): number {
  const want = tf.tensor(expected as number[]);
  expect(actual.shape).toEqual(want.shape);
  const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(actual, want))).dataSync()[0]!);
  want.dispose();
  return diff;
}

let unet: Unet;

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
  unet = buildUnet(await loadDiffusersComponent(folder, 'unet'));
});

afterAll(() => unet?.dispose());

describe('UNet2DConditionModel (tiny-sd/unet)', () => {
  it('computes the sinusoidal time_proj of the reference for timesteps 10 and 500', () => {
    const proj = unet.timeProjection(forwardFixture.inputs.timesteps);
    expect(maxDiff(proj, forwardFixture.outputs.unet_time_proj)).toBeLessThan(forwardFixture.tolerance);
    proj.dispose();
  });

  it("predicts the reference noise [2, 4, 8, 8] from the fixture's latents, timesteps and CLIP hidden states", () => {
    const before = tf.memory().numTensors;
    const latents = tf.tensor4d(forwardFixture.inputs.latents);
    const context = tf.tensor3d(forwardFixture.outputs.text_last_hidden_state);
    const out = unet.forward(latents, forwardFixture.inputs.timesteps, context);
    expect(maxDiff(out, forwardFixture.outputs.unet_sample)).toBeLessThan(forwardFixture.tolerance);
    tf.dispose([latents, context, out]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('refuses config options it does not implement, naming the key, instead of computing something else', async () => {
    const config = await readComponentConfig(folder, 'unet');
    expect(() => parseUnetConfig({ ...config, addition_embed_type: 'text_time' })).toThrow(
      /unet\/config\.json: "addition_embed_type" is "text_time": this UNet uses added conditioning embeddings/,
    );
    expect(() => parseUnetConfig({ ...config, attention_head_dim: 5 })).toThrow(/"attention_head_dim" gives block 0 5 heads, which do not divide its 32 channels/);
    // SD 2.x style: heads per block and linear projections are read, not refused.
    const sd2 = parseUnetConfig({ ...config, attention_head_dim: [4, 8], use_linear_projection: true });
    expect([sd2.headsPerBlock, sd2.useLinearProjection]).toEqual([[4, 8], true]);
  });

  it('reads its shape from config.json and targets the attention projections by diffusers module path', async () => {
    const config = await readComponentConfig(folder, 'unet');
    expect(unet.config.headsPerBlock).toEqual([8, 8]);
    expect(unet.config.blockOutChannels).toEqual(config['block_out_channels']);
    const attention = unet.linears.filter((l) => /\.attn[12]\.to_(q|k|v|out\.0)$/.test(l.path));
    // 2 down + 1 mid + 3 up Transformer2D blocks, 2 attentions each, 4 projections each.
    expect(attention).toHaveLength(48);
    const crossKey = unet.linears.find((l) => l.path === 'mid_block.attentions.0.transformer_blocks.0.attn2.to_k')!;
    expect([crossKey.inFeatures, crossKey.outFeatures]).toEqual([32, 64]);
  });
});

describe('DDPM noise schedule (tiny-sd/scheduler)', () => {
  it('is scaled_linear: ᾱ_t = ∏(1 − β) with β = linspace(√0.00085, √0.012, 1000)²', async () => {
    const schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
    expect(schedule.predictionType).toBe('epsilon');
    expect(schedule.alphasCumprod).toHaveLength(1000);
    // An independent float64 evaluation of the same formula.
    let product = 1;
    const reference = Array.from({ length: 1000 }, (_, t) => {
      const sqrtBeta = Math.sqrt(0.00085) + ((Math.sqrt(0.012) - Math.sqrt(0.00085)) * t) / 999;
      product *= 1 - sqrtBeta * sqrtBeta;
      return product;
    });
    for (const t of [0, 1, 10, 500, 999]) expect(schedule.alphasCumprod[t]).toBeCloseTo(reference[t]!, 6);
  });

  it('noises as √ᾱ·x0 + √(1−ᾱ)·ε, and its v target is √ᾱ·ε − √(1−ᾱ)·x0', () => {
    const schedule = parseNoiseSchedule({ beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02, num_train_timesteps: 1000, prediction_type: 'v_prediction' });
    const a = schedule.alphasCumprod[400]!;
    const x0 = tf.tensor4d([1, -2], [2, 1, 1, 1]);
    const eps = tf.tensor4d([0.5, 3], [2, 1, 1, 1]);
    const noisy = addNoise(schedule, x0, eps, [400, 0]).dataSync();
    expect(noisy[0]).toBeCloseTo(Math.sqrt(a) * 1 + Math.sqrt(1 - a) * 0.5, 6);
    const a0 = 1 - 0.0001;
    // float32 as PyTorch: 1 − ᾱ loses digits when ᾱ is near 1.
    expect(noisy[1]).toBeCloseTo(Math.sqrt(a0) * -2 + Math.sqrt(1 - a0) * 3, 5);
    const v = denoisingTarget(schedule, x0, eps, [400, 0]).dataSync();
    expect(v[0]).toBeCloseTo(Math.sqrt(a) * 0.5 - Math.sqrt(1 - a) * 1, 6);
    tf.dispose([x0, eps]);
  });

  it('refuses a prediction type it does not train, naming the file and key', () => {
    try {
      parseNoiseSchedule({ prediction_type: 'sample' });
      expect.unreachable();
    } catch (e) {
      expect(isUserError(e) && e.message).toMatch(/scheduler_config\.json: "prediction_type" is "sample"/);
    }
  });
});

describe('denoising loss of tiny-sd on data-stripes (160 fixed draws)', () => {
  const base = readSdFixtureJson<LossFixture>('expected/loss_stripes_seed0.json');
  const withKohya = readSdFixtureJson<LossFixture>('expected/loss_stripes_seed0_with_kohya_adapter.json');
  let schedule: NoiseSchedule;
  /** CLIP last hidden states of each image's caption [40, 77, 32], from our text encoder. */
  let captionStates: tf.Tensor3D;

  beforeAll(async () => {
    schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
    const text = await loadDiffusersComponent(folder, 'text_encoder');
    const out = buildClipTextModel(text).forward(base.input_ids);
    captionStates = out.lastHiddenState;
    out.pooled.dispose();
    disposeComponent(text);
  });

  afterAll(() => captionStates?.dispose());

  it('is 0.300301 without an adapter, draw by draw', async () => {
    expect(base.loss).toBeCloseTo(0.300301, 6);
    expectFixtureLoss(await perDrawLoss(unet, schedule, captionStates, base), base);
  });

  it('is 0.132888 with the kohya adapter (48 attention projections, alpha 4, r 4)', async () => {
    const lora = await readKohyaLora(adapterFile('stripes-kohya.safetensors').source, [{ prefix: 'lora_unet', linears: unet.linears }]);
    expect(lora.modules.size).toBe(48);
    expect(lora.skippedModules).toEqual([]);
    expect(lora.metadata['ss_network_dim']).toBe('4');
    expect(withKohya.loss).toBeCloseTo(0.132888, 6);
    expectFixtureLoss(await perDrawLoss(unet, schedule, captionStates, withKohya, lora), withKohya);
  });

  it('gives LoRA matrices trained through the projection hook the gradient finite differences measure', async () => {
    const lora = await readKohyaLora(adapterFile('stripes-kohya.safetensors').source, [{ prefix: 'lora_unet', linears: unet.linears }]);
    const vars = new Map(
      [...lora.modules.values()].map((m) => [
        m.path,
        { A: tf.variable(tf.tensor2d(m.A, [m.rank, m.A.length / m.rank])), B: tf.variable(tf.tensor2d(m.B, [m.B.length / m.rank, m.rank])), scaling: m.scaling },
      ]),
    );
    const trainable: LinearApply = (linear, x) => {
      const v = vars.get(linear.path);
      // The UNet's weights are plain tensors (never split into row blocks), which is what the LoRA kernel takes.
      return v
        ? loraLinear({ x, weight: linear.weight as tf.Tensor2D, layout: linear.layout, bias: linear.bias, loraA: v.A, loraB: v.B, scaling: v.scaling, dropoutMask: null })
        : applyLinear(linear, x);
    };
    const draws = [0, 1, 2, 3];
    const batch = tf.tidy(() => {
      const images = tf.tensor1d(draws.map((d) => withKohya.draw_image[d]!), 'int32');
      return {
        latents: tf.gather(tf.tensor4d(withKohya.latents), images) as tf.Tensor4D,
        noise: tf.tensor4d(draws.map((d) => withKohya.noise[d]!)),
        context: tf.gather(captionStates, images) as tf.Tensor3D,
        timesteps: draws.map((d) => withKohya.timesteps[d]!),
      };
    });
    const lossValue = () => tf.tidy(() => denoisingLoss(unet, schedule, batch, { linear: trainable }).dataSync()[0]!);
    // The gradient of the loss by the B of one cross-attention value projection, along a fixed direction.
    const target = vars.get('up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v')!;
    const { grads } = tf.variableGrads(() => denoisingLoss(unet, schedule, batch, { linear: trainable }), [target.B]);
    const gradient = grads[target.B.name]!;
    const direction = tf.sign(gradient);
    const slope = tf.sum(tf.mul(gradient, direction)).dataSync()[0]!;
    const h = 1e-2;
    const original = target.B.clone();
    target.B.assign(tf.add(original, tf.mul(direction, h)));
    const up = lossValue();
    target.B.assign(tf.sub(original, tf.mul(direction, h)));
    const down = lossValue();
    const measured = (up - down) / (2 * h);
    expect(slope).toBeGreaterThan(0);
    // They agree to about 1e-4 relative; a wrong backward (or a LoRA path that skips the hook) is far off.
    expect(Math.abs(measured - slope) / slope).toBeLessThan(5e-3);
    tf.dispose([gradient, direction, original, batch.latents, batch.noise, batch.context, ...[...vars.values()].flatMap((v) => [v.A, v.B])]);
  });

  it('is 0.132888 with the PEFT adapter folder', async () => {
    const lora = await readPeftLora(adapterFile('stripes-peft/adapter_config.json').text(), adapterFile('stripes-peft/adapter_model.safetensors').source, unet.linears);
    expect([...lora.modules.keys()].every((p) => /\.to_(q|k|v|out\.0)$/.test(p))).toBe(true);
    expectFixtureLoss(await perDrawLoss(unet, schedule, captionStates, withKohya, lora), withKohya);
  });
});

describe('kohya LoRA names', () => {
  /** A kohya file with one module, given its name and tensors. */
  async function kohyaFile(tensors: { name: string; shape: number[]; values?: number[] }[]) {
    const bytes = writeSafetensors(
      tensors.map((t) => ({ name: t.name, shape: t.shape, data: new Float32Array(t.values ?? new Array(t.shape.reduce((a, b) => a * b, 1)).fill(0.5)) })),
    );
    return readKohyaLora(bytesSource('my-lora.safetensors', bytes), [{ prefix: 'lora_unet', linears: unet.linears }]);
  }

  it('maps underscored names back to dotted module paths by matching, including 1×1-conv proj_in and a missing alpha (= r)', async () => {
    const projIn = 'down_blocks.0.attentions.1.proj_in';
    const out0 = 'up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0';
    const lora = await kohyaFile([
      { name: `${kohyaModuleName('lora_unet', projIn)}.lora_down.weight`, shape: [2, 32, 1, 1] },
      { name: `${kohyaModuleName('lora_unet', projIn)}.lora_up.weight`, shape: [32, 2, 1, 1] },
      { name: `${kohyaModuleName('lora_unet', out0)}.lora_down.weight`, shape: [4, 32] },
      { name: `${kohyaModuleName('lora_unet', out0)}.lora_up.weight`, shape: [32, 4] },
      { name: `${kohyaModuleName('lora_unet', out0)}.alpha`, shape: [], values: [1] },
      { name: 'lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', shape: [4, 32] },
    ]);
    expect([...lora.modules.keys()]).toEqual([projIn, out0]);
    expect(lora.modules.get(projIn)!.scaling).toBe(1);
    expect(lora.modules.get(out0)!.scaling).toBe(0.25);
    expect(lora.skippedModules).toEqual(['lora_te_text_model_encoder_layers_0_self_attn_q_proj']);
  });

  it('refuses a module this UNet does not have, and a shape that does not fit, naming the tensor', async () => {
    await expect(kohyaFile([{ name: 'lora_unet_down_blocks_3_attentions_0_proj_in.lora_down.weight', shape: [4, 32] }])).rejects.toThrow(
      /my-lora\.safetensors: tensor "lora_unet_down_blocks_3_attentions_0_proj_in\.lora_down\.weight" adapts module lora_unet_down_blocks_3_attentions_0_proj_in, which this model does not have/,
    );
    const q = kohyaModuleName('lora_unet', 'mid_block.attentions.0.transformer_blocks.0.attn2.to_k');
    await expect(
      kohyaFile([
        { name: `${q}.lora_down.weight`, shape: [4, 64] },
        { name: `${q}.lora_up.weight`, shape: [64, 4] },
      ]),
    ).rejects.toThrow(/has shape \[4, 64\], but module mid_block\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k \(32 → 64\) needs \[r, 32\]/);
  });
});
