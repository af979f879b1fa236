/**
 * Builds LoRA Lab's built-in image demo in public/demo-image/: a tiny Stable-Diffusion-1.x-shaped pipeline in
 * diffusers layout, pretrained here with this project's own engine on procedural scenes
 * (src/core/demo-images: "a small red circle on a blue background"), and a style set to fine-tune it on (new
 * scenes with stripes, captions ending ", stripes style"), so "Try the image demo" trains an image LoRA with no
 * download.
 *
 *   npm run demo:pretrain-image                       # everything (see public/demo-image/README.md for the time)
 *   npm run demo:pretrain-image -- --vae-steps 20 --unet-steps 20 --out /tmp/demo-image   # a quick try
 *   npm run demo:pretrain-image -- --style-only       # rewrite style/ only (after a generator change)
 *
 * (npm runs it with tsx and scripts/vite-imports.mjs preloaded, for the kernels' `?raw` WGSL imports.)
 *
 * Steps: seeded initialisation of every component (PyTorch's default bounds); the VAE trained as an autoencoder
 * on the base scenes; its latent scale measured and written as scaling_factor (so the UNet sees unit-variance
 * latents); the UNet trained on the denoising loss against a frozen, randomly initialised CLIP text encoder (its
 * states still tell the captions apart), with 10% of captions dropped to the empty prompt so classifier-free
 * guidance has an unconditional branch to steer from; then the folder written with F16 weights.
 * Deterministic on the wasm backend: a rebuild with the same tfjs gives the same files.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { baseSet, captionOf, DEMO_STYLE, demoWords, styleSet, type DemoImage } from '../src/core/demo-images/scenes.js';
import { demoTokenizerFiles, DEMO_TOKENIZER_LENGTH } from '../src/core/demo-images/tokenizer.js';
import { encodePng } from '../src/core/image/png.js';
import { registerWasmPlainMatMul } from '../src/core/kernels/wasm_matmul.js';
import { buildClipTextModel } from '../src/core/models/diffusion/clip-text.js';
import { loadClipTokenizer } from '../src/core/models/diffusion/clip-tokenizer.js';
import type { DiffusersComponent, DiffusersComponentName } from '../src/core/models/diffusion/component.js';
import { denoisingLoss } from '../src/core/models/diffusion/loss.js';
import { parseNoiseSchedule } from '../src/core/models/diffusion/noise.js';
import { buildUnet } from '../src/core/models/diffusion/unet.js';
import { buildVae, pixelsFromBytes } from '../src/core/models/diffusion/vae.js';
import { normalArray, seededRandom, streamKey, uniformArray } from '../src/core/random.js';
import { fromFloat32, safetensorsLayout } from '../src/core/safetensors/index.js';

// ---------------------------------------------------------------------------------------------
// What gets built
// ---------------------------------------------------------------------------------------------

export const MODEL_NAME = 'demo-tiny-sd-shapes';

const tokenizerFiles = demoTokenizerFiles(demoWords());

/** UNet2DConditionModel as the shared tiny-sd fixture sizes it: blocks (32, 64), cross-attention width 32. */
export const UNET_CONFIG = {
  _class_name: 'UNet2DConditionModel',
  _diffusers_version: '0.30.0',
  sample_size: 8,
  in_channels: 4,
  out_channels: 4,
  center_input_sample: false,
  flip_sin_to_cos: true,
  freq_shift: 0,
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  only_cross_attention: false,
  block_out_channels: [32, 64],
  layers_per_block: 2,
  downsample_padding: 1,
  mid_block_scale_factor: 1,
  dropout: 0.0,
  act_fn: 'silu',
  norm_num_groups: 32,
  norm_eps: 1e-5,
  cross_attention_dim: 32,
  transformer_layers_per_block: 1,
  attention_head_dim: 8,
  use_linear_projection: false,
  upcast_attention: false,
  resnet_time_scale_shift: 'default',
  time_embedding_type: 'positional',
  conv_in_kernel: 3,
  conv_out_kernel: 3,
} as const;

/**
 * AutoencoderKL with SD's 4 latent channels, scaled down to 4× (32×32 images → 8×8 latents) and narrow
 * (16, 32, 32) with 8 groups: the VAE runs at full image resolution, where the tiny-sd fixture's (32, 64, 64) would
 * cost most of the pretraining budget on two cores. scaling_factor is measured after training (see main).
 */
const VAE_BASE_CONFIG = {
  _class_name: 'AutoencoderKL',
  _diffusers_version: '0.30.0',
  in_channels: 3,
  out_channels: 3,
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
  block_out_channels: [16, 32, 32],
  layers_per_block: 1,
  act_fn: 'silu',
  latent_channels: 4,
  norm_num_groups: 8,
  sample_size: 32,
  scaling_factor: 0.18215,
  force_upcast: true,
  use_quant_conv: true,
  use_post_quant_conv: true,
  mid_block_add_attention: true,
} as const;

export const TEXT_ENCODER_CONFIG = {
  vocab_size: tokenizerFiles.vocabSize,
  hidden_size: 32,
  intermediate_size: 128,
  projection_dim: 32,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  max_position_embeddings: DEMO_TOKENIZER_LENGTH,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  attention_dropout: 0.0,
  initializer_range: 0.02,
  initializer_factor: 1.0,
  pad_token_id: tokenizerFiles.eosId,
  bos_token_id: tokenizerFiles.bosId,
  eos_token_id: tokenizerFiles.eosId,
  architectures: ['CLIPTextModel'],
  model_type: 'clip_text_model',
  torch_dtype: 'float16',
  dropout: 0.0,
} as const;

export const SCHEDULER_CONFIG = {
  _class_name: 'DDPMScheduler',
  _diffusers_version: '0.30.0',
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  trained_betas: null,
  variance_type: 'fixed_small',
  clip_sample: false,
  prediction_type: 'epsilon',
  timestep_spacing: 'leading',
  steps_offset: 1,
  set_alpha_to_one: false,
} as const;

export const MODEL_INDEX = {
  _class_name: 'StableDiffusionPipeline',
  _diffusers_version: '0.30.0',
  feature_extractor: [null, null],
  image_encoder: [null, null],
  requires_safety_checker: false,
  safety_checker: [null, null],
  scheduler: ['diffusers', 'DDPMScheduler'],
  text_encoder: ['transformers', 'CLIPTextModel'],
  tokenizer: ['transformers', 'CLIPTokenizer'],
  unet: ['diffusers', 'UNet2DConditionModel'],
  vae: ['diffusers', 'AutoencoderKL'],
} as const;

/** How many images each set has. */
export const BASE_SET_SIZE = 512;
export const STYLE_SET_SIZE = 32;
/** Held-out scenes of the style (the generator's style set continued past the shipped ones): the demo's validation images. */
export const STYLE_VAL_SIZE = 16;

/** Prompts the demo suggests for samples: seen colours and shapes, in the style the LoRA learns. */
export const SAMPLE_PROMPTS = [
  `a large red circle on a blue background, ${DEMO_STYLE} style`,
  `a large yellow square on a black background, ${DEMO_STYLE} style`,
  `a large white triangle on a green background, ${DEMO_STYLE} style`,
] as const;

/** The LoRA run the app suggests for the demo (tests/unit/image-demo.test.ts runs 16 steps of it: the held-out loss falls). */
export const SUGGESTED_CONFIG = {
  lora_rank: 4,
  lora_alpha: 4,
  lora_dropout: 0,
  learning_rate: 0.01,
  lr_scheduler: 'constant',
  min_snr_gamma: 5,
  max_steps: 100,
  batch_size: 8,
  resolution: 32,
  flip_aug: true,
  log_steps: 10,
  eval_steps: 25,
  sample_steps: 50,
  sample_prompts: [...SAMPLE_PROMPTS],
} as const;

const PRETRAIN = {
  seed: 13013,
  vaeSteps: 240,
  vaeBatch: 8,
  vaeLearningRate: 3e-3,
  /** Pulls the latents towards 0 a little, so their scale stays put while the decoder learns to read them. */
  vaeLatentPenalty: 1e-4,
  unetSteps: 260,
  unetBatch: 24,
  unetLearningRate: 2e-3,
  warmupSteps: 20,
  /** Share of captions replaced by the empty prompt: classifier-free guidance's unconditional branch. */
  captionDropout: 0.1,
  logSteps: 10,
};

const DEFAULT_OUT = fileURLToPath(new URL('../public/demo-image/', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Tensor names and shapes of each component, as diffusers and transformers name them
// ---------------------------------------------------------------------------------------------

type Shapes = Map<string, number[]>;

function linearShapes(s: Shapes, path: string, inF: number, outF: number, bias = true): void {
  s.set(`${path}.weight`, [outF, inF]);
  if (bias) s.set(`${path}.bias`, [outF]);
}
function convShapes(s: Shapes, path: string, inC: number, outC: number, k: number): void {
  s.set(`${path}.weight`, [outC, inC, k, k]);
  s.set(`${path}.bias`, [outC]);
}
function normShapes(s: Shapes, path: string, c: number): void {
  s.set(`${path}.weight`, [c]);
  s.set(`${path}.bias`, [c]);
}

/** diffusers' UNet2DConditionModel for UNET_CONFIG (the layout unet.ts reads; buildUnet rejects a missing or extra tensor). */
function unetShapes(): Shapes {
  const s: Shapes = new Map();
  const ch = UNET_CONFIG.block_out_channels;
  const temb = ch[0] * 4;
  const ctx = UNET_CONFIG.cross_attention_dim;
  const layers = UNET_CONFIG.layers_per_block;
  const resnet = (p: string, inC: number, outC: number) => {
    normShapes(s, `${p}.norm1`, inC);
    convShapes(s, `${p}.conv1`, inC, outC, 3);
    linearShapes(s, `${p}.time_emb_proj`, temb, outC);
    normShapes(s, `${p}.norm2`, outC);
    convShapes(s, `${p}.conv2`, outC, outC, 3);
    if (inC !== outC) convShapes(s, `${p}.conv_shortcut`, inC, outC, 1);
  };
  const transformer = (p: string, c: number) => {
    normShapes(s, `${p}.norm`, c);
    convShapes(s, `${p}.proj_in`, c, c, 1);
    const b = `${p}.transformer_blocks.0`;
    for (const [attn, kv] of [['attn1', c], ['attn2', ctx]] as const) {
      linearShapes(s, `${b}.${attn}.to_q`, c, c, false);
      linearShapes(s, `${b}.${attn}.to_k`, kv, c, false);
      linearShapes(s, `${b}.${attn}.to_v`, kv, c, false);
      linearShapes(s, `${b}.${attn}.to_out.0`, c, c);
    }
    for (const n of ['norm1', 'norm2', 'norm3']) normShapes(s, `${b}.${n}`, c);
    linearShapes(s, `${b}.ff.net.0.proj`, c, c * 8);
    linearShapes(s, `${b}.ff.net.2`, c * 4, c);
    convShapes(s, `${p}.proj_out`, c, c, 1);
  };
  convShapes(s, 'conv_in', 4, ch[0], 3);
  linearShapes(s, 'time_embedding.linear_1', ch[0], temb);
  linearShapes(s, 'time_embedding.linear_2', temb, temb);
  UNET_CONFIG.down_block_types.forEach((type, i) => {
    const out = ch[i]!;
    for (let j = 0; j < layers; j++) {
      resnet(`down_blocks.${i}.resnets.${j}`, j === 0 ? ch[Math.max(i - 1, 0)]! : out, out);
      if (type === 'CrossAttnDownBlock2D') transformer(`down_blocks.${i}.attentions.${j}`, out);
    }
    if (i < ch.length - 1) convShapes(s, `down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
  });
  const mid = ch[ch.length - 1]!;
  resnet('mid_block.resnets.0', mid, mid);
  transformer('mid_block.attentions.0', mid);
  resnet('mid_block.resnets.1', mid, mid);
  const rev = [...ch].reverse();
  UNET_CONFIG.up_block_types.forEach((type, i) => {
    const prevOut = rev[Math.max(i - 1, 0)]!;
    const out = rev[i]!;
    const input = rev[Math.min(i + 1, ch.length - 1)]!;
    for (let j = 0; j <= layers; j++) {
      const skip = j === layers ? input : out;
      resnet(`up_blocks.${i}.resnets.${j}`, (j === 0 ? prevOut : out) + skip, out);
      if (type === 'CrossAttnUpBlock2D') transformer(`up_blocks.${i}.attentions.${j}`, out);
    }
    if (i < ch.length - 1) convShapes(s, `up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
  });
  normShapes(s, 'conv_norm_out', ch[0]);
  convShapes(s, 'conv_out', ch[0], 4, 3);
  return s;
}

/** diffusers' AutoencoderKL for VAE_BASE_CONFIG. */
function vaeShapes(): Shapes {
  const s: Shapes = new Map();
  const w = VAE_BASE_CONFIG.block_out_channels;
  const last = w[w.length - 1]!;
  const lat = VAE_BASE_CONFIG.latent_channels;
  const resnet = (p: string, inC: number, outC: number) => {
    normShapes(s, `${p}.norm1`, inC);
    convShapes(s, `${p}.conv1`, inC, outC, 3);
    normShapes(s, `${p}.norm2`, outC);
    convShapes(s, `${p}.conv2`, outC, outC, 3);
    if (inC !== outC) convShapes(s, `${p}.conv_shortcut`, inC, outC, 1);
  };
  const midBlock = (p: string) => {
    resnet(`${p}.resnets.0`, last, last);
    normShapes(s, `${p}.attentions.0.group_norm`, last);
    for (const n of ['to_q', 'to_k', 'to_v', 'to_out.0']) linearShapes(s, `${p}.attentions.0.${n}`, last, last);
    resnet(`${p}.resnets.1`, last, last);
  };
  convShapes(s, 'encoder.conv_in', 3, w[0], 3);
  w.forEach((out, i) => {
    const inC = i === 0 ? w[0] : w[i - 1]!;
    for (let j = 0; j < VAE_BASE_CONFIG.layers_per_block; j++) resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? inC : out, out);
    if (i < w.length - 1) convShapes(s, `encoder.down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
  });
  midBlock('encoder.mid_block');
  normShapes(s, 'encoder.conv_norm_out', last);
  convShapes(s, 'encoder.conv_out', last, 2 * lat, 3);
  convShapes(s, 'quant_conv', 2 * lat, 2 * lat, 1);
  convShapes(s, 'post_quant_conv', lat, lat, 1);
  convShapes(s, 'decoder.conv_in', lat, last, 3);
  midBlock('decoder.mid_block');
  const rev = [...w].reverse();
  rev.forEach((out, i) => {
    const inC = i === 0 ? last : rev[i - 1]!;
    for (let j = 0; j <= VAE_BASE_CONFIG.layers_per_block; j++) resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? inC : out, out);
    if (i < rev.length - 1) convShapes(s, `decoder.up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
  });
  normShapes(s, 'decoder.conv_norm_out', w[0]);
  convShapes(s, 'decoder.conv_out', w[0], 3, 3);
  return s;
}

/** transformers' CLIPTextModel for TEXT_ENCODER_CONFIG. */
function clipShapes(): Shapes {
  const s: Shapes = new Map();
  const h = TEXT_ENCODER_CONFIG.hidden_size;
  s.set('text_model.embeddings.token_embedding.weight', [TEXT_ENCODER_CONFIG.vocab_size, h]);
  s.set('text_model.embeddings.position_embedding.weight', [TEXT_ENCODER_CONFIG.max_position_embeddings, h]);
  for (let i = 0; i < TEXT_ENCODER_CONFIG.num_hidden_layers; i++) {
    const p = `text_model.encoder.layers.${i}`;
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) linearShapes(s, `${p}.self_attn.${n}`, h, h);
    normShapes(s, `${p}.layer_norm1`, h);
    linearShapes(s, `${p}.mlp.fc1`, h, TEXT_ENCODER_CONFIG.intermediate_size);
    linearShapes(s, `${p}.mlp.fc2`, TEXT_ENCODER_CONFIG.intermediate_size, h);
    normShapes(s, `${p}.layer_norm2`, h);
  }
  normShapes(s, 'text_model.final_layer_norm', h);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Initialisation
// ---------------------------------------------------------------------------------------------

/**
 * PyTorch's defaults, seeded per tensor name: weights of linears and convs U(±1/√fan_in) (kaiming_uniform with
 * a = √5), biases 0, norms 1 and 0. The UNet's conv_out starts at 0, so the untrained UNet predicts no noise
 * (loss ≈ 1) instead of a random field. CLIP's embeddings are drawn wider than CLIP's own (σ 0.02): the encoder is
 * never trained, and the token embeddings must dominate the position ones for captions to differ.
 */
function initialValues(component: DiffusersComponentName, name: string, shape: readonly number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const key = streamKey(PRETRAIN.seed, ...Array.from(new TextEncoder().encode(`${component}/${name}`)));
  if (name.endsWith('token_embedding.weight')) return normalArray(key, n).map((v) => v * 1.0);
  if (name.endsWith('position_embedding.weight')) return normalArray(key, n).map((v) => v * 0.1);
  if (name.endsWith('.bias')) return new Float32Array(n);
  if (shape.length === 1) return new Float32Array(n).fill(1);
  if (component === 'unet' && name === 'conv_out.weight') return new Float32Array(n);
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  return uniformArray(key, n, 1 / Math.sqrt(fanIn));
}

function initialVariables(component: DiffusersComponentName, shapes: Shapes): Map<string, tf.Variable> {
  const vars = new Map<string, tf.Variable>();
  for (const [name, shape] of shapes) vars.set(name, tf.variable(tf.tensor(initialValues(component, name, shape), shape), true, `${component}/${name}`));
  return vars;
}

/**
 * A component whose tensors are copies of the variables: the builders re-lay out and release what they are given,
 * and under the optimiser's tape the copies carry the gradients back to the variables.
 */
function componentOf(name: DiffusersComponentName, config: Record<string, unknown>, vars: Map<string, tf.Variable>): DiffusersComponent {
  return { name, config, weights: new Map([...vars].map(([k, v]) => [k, tf.clone(v)])) };
}

// ---------------------------------------------------------------------------------------------
// wasm gap: Conv2DBackpropFilter
// ---------------------------------------------------------------------------------------------

/**
 * tfjs-backend-wasm 4.22 has no Conv2DBackpropFilter, which training a conv's kernel needs (LoRA runs never do:
 * they train projections only). For this process the Conv2D gradient computes the kernel's gradient as im2col
 * products instead: for each kernel offset (ky, kx), the input window that offset sees, [b·ho·wo, in], transposed,
 * times dy [b·ho·wo, out]. The input gradient stays tfjs's own (Conv2DBackpropInput, which wasm has).
 */
function patchConvGradient(): void {
  const stock = tf.getGradient('Conv2D');
  if (!stock) throw new Error('tfjs changed: Conv2D gradient not found');
  tf.registerGradient({
    kernelName: 'Conv2D',
    inputsToSave: ['x', 'filter'],
    gradFunc: (dy, saved, attrs) => {
      const [x4, filter] = saved as [tf.Tensor4D, tf.Tensor4D];
      const { strides, pad, dataFormat, dilations } = attrs as unknown as { strides: number | [number, number]; pad: number | 'valid' | 'same'; dataFormat: string; dilations: number | [number, number] };
      const stride = typeof strides === 'number' ? strides : strides[0];
      const dilation = typeof dilations === 'number' ? dilations : dilations[0];
      const p = pad === 'valid' ? 0 : pad;
      if (typeof p !== 'number' || dataFormat !== 'NHWC' || dilation !== 1 || (typeof strides !== 'number' && strides[0] !== strides[1])) {
        throw new Error(`pretrain-image-demo: conv gradient handles NHWC, numeric padding and square strides only`);
      }
      const g = dy as tf.Tensor4D;
      const [kh, kw, inC] = filter.shape;
      const [b, ho, wo] = g.shape;
      return {
        // Stride 1: the input gradient is itself a forward conv (kernel flipped, in and out swapped), which wasm
        // runs several times faster than its Conv2DBackpropInput.
        x: () =>
          stride === 1
            ? tf.conv2d(g, tf.transpose(tf.reverse(filter, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D, 1, kh - 1 - p)
            : tf.conv2dTranspose(g, filter, x4.shape as [number, number, number, number], stride, p),
        // The kernel gradient as a forward conv too: channels as the batch, the batch as channels, dy as the kernel
        // (dilated by the stride), so wasm's fast conv computes Σ_b,y,x x[b, s·y + ky, s·x + kx, i] · dy[b, y, x, o].
        filter: () => {
          const xp = p > 0 ? tf.pad(x4, [[0, 0], [p, p], [p, p], [0, 0]]) : x4;
          const cropped = tf.slice(xp, [0, 0, 0, 0], [b, kh + stride * (ho - 1), kw + stride * (wo - 1), inC]);
          const images = tf.transpose(cropped, [3, 1, 2, 0]) as tf.Tensor4D;
          const kernel = tf.transpose(g, [1, 2, 0, 3]) as tf.Tensor4D;
          const out = tf.conv2d(images, kernel, 1, 'valid', 'NHWC', stride);
          return tf.transpose(out, [1, 2, 0, 3]);
        },
      };
    },
  });
}

/**
 * tfjs's Tile gradient stops at rank 4, and the VAE's nearest-neighbour upsampling tiles a rank-6 view. Tiling
 * repeats the whole axis, so element (rep, i) of an axis of size s tiled r times is at rep·s + i: dy viewed with
 * [r, s] in place of each tiled axis, summed over the r's, is the gradient at any rank.
 */
function patchTileGradient(): void {
  tf.registerGradient({
    kernelName: 'Tile',
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      const [x] = saved as [tf.Tensor];
      const { reps } = attrs as unknown as { reps: number[] };
      return {
        x: () => {
          const view: number[] = [];
          const repAxes: number[] = [];
          x.shape.forEach((s, axis) => {
            if (reps[axis]! > 1) {
              repAxes.push(view.length);
              view.push(reps[axis]!);
            }
            view.push(s);
          });
          return tf.sum((dy as tf.Tensor).reshape(view), repAxes).reshape(x.shape);
        },
      };
    },
  });
}

/** The patch must agree with the cpu backend's own Conv2DBackpropFilter, for both conv kinds the models use. */
async function checkConvGradient(): Promise<void> {
  const cases = [
    { stride: 1, pad: 1 as const, k: 3 },
    { stride: 2, pad: 0 as const, k: 3 },
    { stride: 1, pad: 0 as const, k: 1 },
  ];
  for (const c of cases) {
    const gradsOn = async (backend: string) => {
      await tf.setBackend(backend);
      const x = tf.tensor4d(normalArray(11, 2 * 7 * 7 * 3), [2, 7, 7, 3]);
      const w = tf.tensor4d(normalArray(12, c.k * c.k * 3 * 5), [c.k, c.k, 3, 5]);
      const [gx, gw] = tf.grads((a: tf.Tensor, f: tf.Tensor) => tf.sum(tf.square(tf.conv2d(a as tf.Tensor4D, f as tf.Tensor4D, c.stride, c.pad))))([x, w]);
      const out = [(await gx!.data()) as Float32Array, (await gw!.data()) as Float32Array];
      tf.dispose([x, w, gx!, gw!]);
      return out;
    };
    const want = await gradsOn('cpu');
    const got = await gradsOn('wasm');
    for (let t = 0; t < 2; t++) {
      const worst = want[t]!.reduce((m, v, i) => Math.max(m, Math.abs(v - got[t]![i]!)), 0);
      if (worst > 1e-3) throw new Error(`patched conv gradient differs from the cpu backend's by ${worst} (stride ${c.stride}, pad ${c.pad})`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Training
// ---------------------------------------------------------------------------------------------

function imagesTensor(images: readonly DemoImage[]): tf.Tensor4D {
  const bytes = new Int32Array(images.length * 32 * 32 * 3);
  images.forEach((img, i) => bytes.set(img.rgb, i * 32 * 32 * 3));
  return pixelsFromBytes(tf.tensor4d(bytes, [images.length, 32, 32, 3], 'int32'));
}

/** Learning rate at `step`: linear warm-up, then cosine decay to a tenth. */
function learningRateAt(peak: number, step: number, steps: number): number {
  if (step < PRETRAIN.warmupSteps) return (peak * (step + 1)) / PRETRAIN.warmupSteps;
  const t = (step - PRETRAIN.warmupSteps) / Math.max(1, steps - PRETRAIN.warmupSteps);
  return peak * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * t)));
}

/** tfjs's Adam reads its (protected) learningRate on every update; setting it is how a schedule drives it. */
function setLearningRate(optimizer: tf.AdamOptimizer, rate: number): void {
  (optimizer as unknown as { learningRate: number }).learningRate = rate;
}

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(0)} s`;
}

/** Trains the VAE to reconstruct the base scenes through its 8×8×4 latents (the mean; no sampling). Returns the final reconstruction MSE. */
async function trainVae(vars: Map<string, tf.Variable>, images: readonly DemoImage[], steps: number): Promise<number> {
  const random = seededRandom(streamKey(PRETRAIN.seed, 1));
  const optimizer = tf.train.adam(PRETRAIN.vaeLearningRate);
  const started = performance.now();
  let recent: number[] = [];
  for (let step = 0; step < steps; step++) {
    setLearningRate(optimizer, learningRateAt(PRETRAIN.vaeLearningRate, step, steps));
    const batch = Array.from({ length: PRETRAIN.vaeBatch }, () => images[Math.floor(random() * images.length)]!);
    const x = imagesTensor(batch);
    let recon = 0;
    const cost = optimizer.minimize(() => {
      const vae = buildVae(componentOf('vae', VAE_BASE_CONFIG, vars));
      const { mean, logvar } = vae.encode(x);
      logvar.dispose();
      const mse = tf.mean(tf.squaredDifference(vae.decode(mean), x));
      recon = (mse.dataSync() as Float32Array)[0]!;
      return tf.add(mse, tf.mul(PRETRAIN.vaeLatentPenalty, tf.mean(tf.square(mean)))) as tf.Scalar;
    }, true);
    cost?.dispose();
    x.dispose();
    recent.push(recon);
    if ((step + 1) % PRETRAIN.logSteps === 0 || step === steps - 1) {
      const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
      console.log(`vae step ${step + 1}/${steps}  reconstruction mse ${mean.toFixed(5)}  (${seconds(started)})`);
      if (step === steps - 1) {
        optimizer.dispose();
        return mean;
      }
      recent = [];
    }
  }
  optimizer.dispose();
  return NaN;
}

/** The VAE's latent means of `images`, unscaled, NCHW-flattened per image. */
function latentMeans(vars: Map<string, tf.Variable>, images: readonly DemoImage[]): Float32Array[] {
  const vae = buildVae(componentOf('vae', VAE_BASE_CONFIG, vars));
  const out: Float32Array[] = [];
  for (let i = 0; i < images.length; i += 32) {
    const chunk = images.slice(i, i + 32);
    const values = tf.tidy(() => {
      const { mean } = vae.encode(imagesTensor(chunk));
      return mean.dataSync() as Float32Array;
    });
    const per = values.length / chunk.length;
    for (let j = 0; j < chunk.length; j++) out.push(values.slice(j * per, (j + 1) * per));
  }
  vae.dispose();
  return out;
}

/** Trains the UNet on the denoising loss; returns the mean loss of the last logging window. */
async function trainUnet(vars: Map<string, tf.Variable>, latents: readonly Float32Array[], states: readonly Float32Array[], emptyState: Float32Array, steps: number): Promise<number> {
  const schedule = parseNoiseSchedule(SCHEDULER_CONFIG);
  const random = seededRandom(streamKey(PRETRAIN.seed, 2));
  const optimizer = tf.train.adam(PRETRAIN.unetLearningRate);
  const started = performance.now();
  const per = latents[0]!.length;
  const stateSize = emptyState.length;
  let recent: number[] = [];
  for (let step = 0; step < steps; step++) {
    setLearningRate(optimizer, learningRateAt(PRETRAIN.unetLearningRate, step, steps));
    const n = PRETRAIN.unetBatch;
    const x0 = new Float32Array(n * per);
    const context = new Float32Array(n * stateSize);
    const timesteps: number[] = [];
    for (let i = 0; i < n; i++) {
      const k = Math.floor(random() * latents.length);
      x0.set(latents[k]!, i * per);
      context.set(random() < PRETRAIN.captionDropout ? emptyState : states[k]!, i * stateSize);
      timesteps.push(Math.floor(random() * schedule.numTrainTimesteps));
    }
    const noise = normalArray(streamKey(PRETRAIN.seed, 3, step), n * per);
    const batch = {
      latents: tf.tensor4d(x0, [n, 4, 8, 8]),
      noise: tf.tensor4d(noise, [n, 4, 8, 8]),
      timesteps,
      context: tf.tensor3d(context, [n, DEMO_TOKENIZER_LENGTH, TEXT_ENCODER_CONFIG.hidden_size]),
    };
    const cost = optimizer.minimize(() => denoisingLoss(buildUnet(componentOf('unet', UNET_CONFIG, vars)), schedule, batch), true);
    recent.push((await cost!.data())[0]!);
    tf.dispose([cost!, batch.latents, batch.noise, batch.context]);
    if ((step + 1) % PRETRAIN.logSteps === 0 || step === steps - 1) {
      const mean = recent.reduce((a, b) => a + b, 0) / recent.length;
      console.log(`unet step ${step + 1}/${steps}  denoising loss ${mean.toFixed(4)}  (${seconds(started)}, ${tf.memory().numTensors} tensors)`);
      if (step === steps - 1) {
        optimizer.dispose();
        return mean;
      }
      recent = [];
    }
  }
  optimizer.dispose();
  return NaN;
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

/** safetensors with F16 data (the demo ships small; the engine widens F16 exactly on load). */
async function f16Safetensors(vars: Map<string, tf.Variable>): Promise<Uint8Array> {
  const entries = [...vars].map(([name, v]) => ({ name, dtype: 'F16' as const, shape: v.shape }));
  const layout = safetensorsLayout(entries, { format: 'pt' });
  const out = new Uint8Array(layout.fileBytes);
  out.set(layout.header, 0);
  for (const entry of layout.tensors) {
    out.set(fromFloat32('F16', (await vars.get(entry.name)!.data()) as Float32Array), layout.header.length + entry.begin);
  }
  return out;
}

const json = (v: unknown): string => `${JSON.stringify(v, null, 2)}\n`;

function csvField(text: string): string {
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** The style set as an image folder the app reads: PNGs and metadata.csv (file_name,text). */
function writeStyleSet(dir: string, images: readonly DemoImage[]): string[] {
  mkdirSync(dir, { recursive: true });
  const rows = ['file_name,text'];
  const files: string[] = [];
  images.forEach((img, i) => {
    const file = `img_${String(i).padStart(4, '0')}.png`;
    writeFileSync(join(dir, file), encodePng(32, 32, img.rgb));
    rows.push(`${file},${csvField(img.caption)}`);
    files.push(file);
  });
  writeFileSync(join(dir, 'metadata.csv'), `${rows.join('\n')}\n`);
  return [...files, 'metadata.csv'];
}

/** style/ (what the LoRA trains on) and style-val/ (held-out scenes for its validation loss), as manifest entries. */
function writeStyleSets(out: string): { train: { folder: string; files: string[] }; val: { folder: string; files: string[] } } {
  const scenes = styleSet(STYLE_SET_SIZE + STYLE_VAL_SIZE);
  const entry = (folder: string, images: readonly DemoImage[]) => ({ folder, files: writeStyleSet(join(out, folder), images).map((f) => `${folder}/${f}`) });
  return { train: entry('style', scenes.slice(0, STYLE_SET_SIZE)), val: entry('style-val', scenes.slice(STYLE_SET_SIZE)) };
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

function parseArgs(argv: readonly string[]): { out: string; vaeSteps: number; unetSteps: number; styleOnly: boolean } {
  let out = DEFAULT_OUT;
  let styleOnly = false;
  let vaeSteps = PRETRAIN.vaeSteps;
  let unetSteps = PRETRAIN.unetSteps;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') out = resolve(argv[++i] ?? '');
    else if (a === '--vae-steps') vaeSteps = Number(argv[++i]);
    else if (a === '--unet-steps') unetSteps = Number(argv[++i]);
    else if (a === '--style-only') styleOnly = true;
    else throw new Error(`unknown argument ${a}; use --out DIR, --vae-steps N, --unet-steps N, --style-only`);
  }
  for (const [k, v] of [['--vae-steps', vaeSteps], ['--unet-steps', unetSteps]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${v}`);
  }
  return { out, vaeSteps, unetSteps, styleOnly };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.styleOnly) {
    // The style sets depend on the generator alone: rewrite them (and their manifest entries) without pretraining.
    const path = join(args.out, 'manifest.json');
    const manifest = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    writeFileSync(path, json({ ...manifest, ...writeStyleSets(args.out) }));
    console.log(`wrote ${join(args.out, 'style')} and ${join(args.out, 'style-val')}`);
    return;
  }
  const started = performance.now();
  await tf.setBackend('wasm');
  console.log('patching the wasm backend for pretraining (tfjs warns that BatchMatMul is registered again; that is this)');
  registerWasmPlainMatMul();
  patchConvGradient();
  patchTileGradient();
  await checkConvGradient();
  await tf.setBackend('wasm');

  const base = baseSet(BASE_SET_SIZE);
  const tokenizer = loadClipTokenizer(tokenizerFiles);

  // Frozen random text encoder: its states for every base caption, and for the empty prompt.
  const clipVars = initialVariables('text_encoder', clipShapes());
  const clip = buildClipTextModel(componentOf('text_encoder', TEXT_ENCODER_CONFIG, clipVars));
  const stateOf = (caption: string): Float32Array =>
    tf.tidy(() => {
      const { lastHiddenState, pooled } = clip.forward([tokenizer.encodeForModel(caption)]);
      pooled.dispose();
      return lastHiddenState.dataSync() as Float32Array;
    });
  const stateCache = new Map<string, Float32Array>();
  const states = base.map((img) => {
    if (!stateCache.has(img.caption)) stateCache.set(img.caption, stateOf(img.caption));
    return stateCache.get(img.caption)!;
  });
  const emptyState = stateOf('');
  clip.dispose();
  console.log(`${base.length} base scenes, ${stateCache.size} distinct captions`);

  const vaeVars = initialVariables('vae', vaeShapes());
  const vaeLoss = await trainVae(vaeVars, base, args.vaeSteps);
  const means = latentMeans(vaeVars, base);
  const all = means.flatMap((m) => Array.from(m));
  const avg = all.reduce((a, b) => a + b, 0) / all.length;
  const std = Math.sqrt(all.reduce((a, b) => a + (b - avg) ** 2, 0) / all.length);
  // Rounded so config.json reads cleanly; what matters is that scaled latents have about unit variance.
  const scalingFactor = Number((1 / std).toPrecision(4));
  const vaeConfig = { ...VAE_BASE_CONFIG, scaling_factor: scalingFactor };
  console.log(`latent mean ${avg.toFixed(4)}, std ${std.toFixed(4)} -> scaling_factor ${scalingFactor}  (${seconds(started)})`);

  const unetVars = initialVariables('unet', unetShapes());
  const scaled = means.map((m) => m.map((v) => v * scalingFactor));
  const unetLoss = await trainUnet(unetVars, scaled, states, emptyState, args.unetSteps);

  const modelDir = join(args.out, 'model');
  for (const sub of ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler']) mkdirSync(join(modelDir, sub), { recursive: true });
  writeFileSync(join(modelDir, 'model_index.json'), json(MODEL_INDEX));
  writeFileSync(join(modelDir, 'unet/config.json'), json(UNET_CONFIG));
  writeFileSync(join(modelDir, 'unet/diffusion_pytorch_model.safetensors'), await f16Safetensors(unetVars));
  writeFileSync(join(modelDir, 'vae/config.json'), json(vaeConfig));
  writeFileSync(join(modelDir, 'vae/diffusion_pytorch_model.safetensors'), await f16Safetensors(vaeVars));
  writeFileSync(join(modelDir, 'text_encoder/config.json'), json(TEXT_ENCODER_CONFIG));
  writeFileSync(join(modelDir, 'text_encoder/model.safetensors'), await f16Safetensors(clipVars));
  writeFileSync(join(modelDir, 'tokenizer/vocab.json'), tokenizerFiles.vocabJson);
  writeFileSync(join(modelDir, 'tokenizer/merges.txt'), tokenizerFiles.mergesTxt);
  writeFileSync(join(modelDir, 'tokenizer/tokenizer_config.json'), tokenizerFiles.tokenizerConfigJson);
  writeFileSync(join(modelDir, 'tokenizer/special_tokens_map.json'), tokenizerFiles.specialTokensMapJson);
  writeFileSync(join(modelDir, 'scheduler/scheduler_config.json'), json(SCHEDULER_CONFIG));
  const modelFiles = [
    'model_index.json',
    'unet/config.json',
    'unet/diffusion_pytorch_model.safetensors',
    'vae/config.json',
    'vae/diffusion_pytorch_model.safetensors',
    'text_encoder/config.json',
    'text_encoder/model.safetensors',
    'tokenizer/vocab.json',
    'tokenizer/merges.txt',
    'tokenizer/tokenizer_config.json',
    'tokenizer/special_tokens_map.json',
    'scheduler/scheduler_config.json',
  ];
  const manifest = {
    model: { name: MODEL_NAME, files: modelFiles.map((f) => `model/${f}`) },
    ...writeStyleSets(args.out),
    suggestedConfig: SUGGESTED_CONFIG,
  };
  writeFileSync(join(args.out, 'manifest.json'), json(manifest));
  const total = (performance.now() - started) / 1000;
  const report = {
    seconds: Math.round(total),
    vaeSteps: args.vaeSteps,
    vaeReconstructionMse: vaeLoss,
    scalingFactor,
    unetSteps: args.unetSteps,
    unetDenoisingLoss: unetLoss,
    example: captionOf(base[0]!.scene),
  };
  writeFileSync(join(args.out, 'pretraining.json'), json(report));
  console.log(`wrote ${args.out} in ${total.toFixed(0)} s: ${JSON.stringify(report)}`);
}


const invokedAs = process.argv[1] ? resolve(process.argv[1]) : '';
if (invokedAs === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
