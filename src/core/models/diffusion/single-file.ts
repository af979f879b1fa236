import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors.js';
import { readHeader, readTensorBytes, toFloat32, type ByteSource, type SafetensorsHeader, type TensorEntry } from '../../safetensors/index.js';
import type { DiffusersComponent, DiffusersComponentName } from './component.js';
import { parseUnetConfig, type UnetConfig } from './unet-config.js';

/**
 * Stable Diffusion 1.x single-file checkpoints, as image UIs (AUTOMATIC1111, ComfyUI) and kohya's sd-scripts keep
 * them: one .safetensors with the original CompVis/LDM names, `model.diffusion_model.*` (UNet),
 * `first_stage_model.*` (VAE) and `cond_stage_model.transformer.*` (CLIP text encoder). Each component's tensors are
 * renamed to the diffusers/transformers names the builders read (buildUnet, buildVae, buildClipTextModel), so a
 * single file loads into the same models as a diffusers folder. The UNet's LDM names are numbered by position
 * (`input_blocks.{n}`, `output_blocks.{n}`), so its table is generated from the UNet config; the VAE's and the text
 * encoder's follow fixed rules.
 */

/** The LDM prefix of each component's tensors. */
export const LDM_PREFIXES: Readonly<Record<DiffusersComponentName, string>> = {
  unet: 'model.diffusion_model.',
  vae: 'first_stage_model.',
  text_encoder: 'cond_stage_model.transformer.',
};

/** What the mapping needs of a file's header: its name (for messages) and its tensors' names and shapes. */
export interface SingleFileTensors {
  readonly file: string;
  readonly tensors: readonly { readonly name: string; readonly shape: readonly number[] }[];
}

export interface ComponentNameMap {
  /** File (LDM) tensor name → the diffusers/transformers name the component's builder reads, in file order. */
  readonly names: ReadonlyMap<string, string>;
  /** Diffusers name → the shape its tensor takes, where LDM stores it differently (the VAE attention's 1×1 convs). */
  readonly reshapes: ReadonlyMap<string, readonly number[]>;
}

export interface SingleFileMapping {
  readonly components: Readonly<Record<DiffusersComponentName, ComponentNameMap>>;
  /**
   * File tensors deliberately not loaded: the EMA copy (`model_ema.*`), the noise-schedule buffers LatentDiffusion
   * saves (`betas`, `alphas_cumprod`, …: the scheduler config defines the schedule), and the text encoder's
   * derivable `position_ids`.
   */
  readonly ignored: readonly string[];
}

// ---------------------------------------------------------------------------------------------------------------
// UNet: the table of every tensor name the UNet of a config has, LDM → diffusers.

/**
 * LDM → diffusers tensor names of a UNet (both without their model prefix), and the ones a file may lack: a ResNet's
 * `skip_connection` exists only where its input and output widths differ, which the UNet builder checks.
 */
export interface LdmNameTable {
  readonly required: ReadonlyMap<string, string>;
  readonly optional: ReadonlyMap<string, string>;
}

/** Every tensor name of the UNet `cfg` describes, LDM → diffusers, in module order. */
export function ldmUnetNames(cfg: UnetConfig): LdmNameTable {
  const required = new Map<string, string>();
  const optional = new Map<string, string>();
  const weight = (ldm: string, diffusers: string) => required.set(`${ldm}.weight`, `${diffusers}.weight`);
  const weightAndBias = (ldm: string, diffusers: string, table = required) => {
    table.set(`${ldm}.weight`, `${diffusers}.weight`);
    table.set(`${ldm}.bias`, `${diffusers}.bias`);
  };
  // LDM's ResBlock: in_layers = (GroupNorm, SiLU, conv), emb_layers = (SiLU, Linear), out_layers = (GroupNorm, SiLU, Dropout, conv).
  const resnet = (ldm: string, diffusers: string) => {
    weightAndBias(`${ldm}.in_layers.0`, `${diffusers}.norm1`);
    weightAndBias(`${ldm}.in_layers.2`, `${diffusers}.conv1`);
    weightAndBias(`${ldm}.emb_layers.1`, `${diffusers}.time_emb_proj`);
    weightAndBias(`${ldm}.out_layers.0`, `${diffusers}.norm2`);
    weightAndBias(`${ldm}.out_layers.3`, `${diffusers}.conv2`);
    weightAndBias(`${ldm}.skip_connection`, `${diffusers}.conv_shortcut`, optional);
  };
  // LDM's SpatialTransformer has diffusers' Transformer2DModel names inside.
  const transformer = (ldm: string, diffusers: string, layers: number) => {
    for (const part of ['norm', 'proj_in', 'proj_out']) weightAndBias(`${ldm}.${part}`, `${diffusers}.${part}`);
    for (let t = 0; t < layers; t++) {
      const block = `transformer_blocks.${t}`;
      const same = (name: string) => [`${ldm}.${block}.${name}`, `${diffusers}.${block}.${name}`] as const;
      for (const norm of ['norm1', 'norm2', 'norm3']) weightAndBias(...same(norm));
      for (const attn of ['attn1', 'attn2']) {
        for (const proj of ['to_q', 'to_k', 'to_v']) weight(...same(`${attn}.${proj}`));
        weightAndBias(...same(`${attn}.to_out.0`));
      }
      weightAndBias(...same('ff.net.0.proj'));
      weightAndBias(...same('ff.net.2'));
    }
  };

  weightAndBias('time_embed.0', 'time_embedding.linear_1');
  weightAndBias('time_embed.2', 'time_embedding.linear_2');
  weightAndBias('input_blocks.0.0', 'conv_in');
  const last = cfg.blockOutChannels.length - 1;
  // input_blocks: after conv_in, each level's ResNets (with their transformer as `.1`), then its downsampler (`.0.op`).
  let n = 1;
  cfg.downBlockTypes.forEach((type, i) => {
    for (let j = 0; j < cfg.layersPerBlock[i]!; j++, n++) {
      resnet(`input_blocks.${n}.0`, `down_blocks.${i}.resnets.${j}`);
      if (type === 'CrossAttnDownBlock2D') transformer(`input_blocks.${n}.1`, `down_blocks.${i}.attentions.${j}`, cfg.transformerLayersPerBlock[i]!);
    }
    if (i < last) weightAndBias(`input_blocks.${n++}.0.op`, `down_blocks.${i}.downsamplers.0.conv`);
  });
  resnet('middle_block.0', 'mid_block.resnets.0');
  transformer('middle_block.1', 'mid_block.attentions.0', cfg.transformerLayersPerBlock[last]!);
  resnet('middle_block.2', 'mid_block.resnets.1');
  // output_blocks: each up level's ResNets (+ transformer `.1`); its last one also holds the upsampler, after them.
  const reversedLayers = [...cfg.layersPerBlock].reverse();
  let k = 0;
  cfg.upBlockTypes.forEach((type, i) => {
    const cross = type === 'CrossAttnUpBlock2D';
    const count = reversedLayers[i]! + 1;
    for (let j = 0; j < count; j++, k++) {
      resnet(`output_blocks.${k}.0`, `up_blocks.${i}.resnets.${j}`);
      if (cross) transformer(`output_blocks.${k}.1`, `up_blocks.${i}.attentions.${j}`, cfg.upTransformerLayers[i]!);
      if (j === count - 1 && i < last) weightAndBias(`output_blocks.${k}.${cross ? 2 : 1}.conv`, `up_blocks.${i}.upsamplers.0.conv`);
    }
  });
  weightAndBias('out.0', 'conv_norm_out');
  weightAndBias('out.2', 'conv_out');
  return { required, optional };
}

// ---------------------------------------------------------------------------------------------------------------
// VAE and text encoder: renaming rules.

const VAE_RESNET_PARTS: Readonly<Record<string, string>> = { norm1: 'norm1', conv1: 'conv1', norm2: 'norm2', conv2: 'conv2', nin_shortcut: 'conv_shortcut' };
const VAE_ATTENTION_PARTS: Readonly<Record<string, string>> = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };
const VAE_DIRECT: Readonly<Record<string, string>> = {
  'encoder.conv_in': 'encoder.conv_in',
  'encoder.conv_out': 'encoder.conv_out',
  'encoder.norm_out': 'encoder.conv_norm_out',
  'decoder.conv_in': 'decoder.conv_in',
  'decoder.conv_out': 'decoder.conv_out',
  'decoder.norm_out': 'decoder.conv_norm_out',
  quant_conv: 'quant_conv',
  post_quant_conv: 'post_quant_conv',
};

/**
 * An LDM VAE tensor name (without `first_stage_model.`) → diffusers', or null if it is not one. `upLevels` is the
 * number of decoder levels: LDM numbers them from the lowest resolution's end (`decoder.up.{n-1}` runs first),
 * diffusers in the order they run.
 */
function vaeName(name: string, upLevels: number): string | null {
  const param = /^(.*)\.(weight|bias)$/.exec(name);
  if (!param) return null;
  const [, module, p] = param as unknown as [string, string, string];
  const direct = VAE_DIRECT[module];
  if (direct) return `${direct}.${p}`;
  let m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(\w+)$/.exec(module);
  if (m && VAE_RESNET_PARTS[m[3]!]) return `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${VAE_RESNET_PARTS[m[3]!]}.${p}`;
  m = /^encoder\.down\.(\d+)\.downsample\.conv$/.exec(module);
  if (m) return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${p}`;
  m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)$/.exec(module);
  if (m && VAE_RESNET_PARTS[m[3]!] && Number(m[1]) < upLevels) {
    return `decoder.up_blocks.${upLevels - 1 - Number(m[1])}.resnets.${m[2]}.${VAE_RESNET_PARTS[m[3]!]}.${p}`;
  }
  m = /^decoder\.up\.(\d+)\.upsample\.conv$/.exec(module);
  if (m && Number(m[1]) < upLevels) return `decoder.up_blocks.${upLevels - 1 - Number(m[1])}.upsamplers.0.conv.${p}`;
  m = /^(encoder|decoder)\.mid\.block_([12])\.(\w+)$/.exec(module);
  if (m && VAE_RESNET_PARTS[m[3]!]) return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${VAE_RESNET_PARTS[m[3]!]}.${p}`;
  m = /^(encoder|decoder)\.mid\.attn_1\.(\w+)$/.exec(module);
  if (m && VAE_ATTENTION_PARTS[m[2]!]) return `${m[1]}.mid_block.attentions.0.${VAE_ATTENTION_PARTS[m[2]!]}.${p}`;
  return null;
}

const CLIP_TENSOR = new RegExp(
  '^(embeddings\\.(token_embedding|position_embedding)\\.weight' +
    '|encoder\\.layers\\.\\d+\\.(self_attn\\.(q|k|v|out)_proj|layer_norm[12]|mlp\\.fc[12])\\.(weight|bias)' +
    '|final_layer_norm\\.(weight|bias))$',
);

/** An LDM text-encoder name (after `cond_stage_model.transformer.`, with or without `text_model.`) → transformers', or null. */
function clipName(name: string): string | null {
  const inner = name.startsWith('text_model.') ? name.slice('text_model.'.length) : name;
  return CLIP_TENSOR.test(inner) ? `text_model.${inner}` : null;
}

/** The buffers LatentDiffusion registers for its DDPM schedule: the schedule comes from the scheduler config instead. */
const SCHEDULE_BUFFERS = new Set([
  'betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod', 'sqrt_one_minus_alphas_cumprod',
  'log_one_minus_alphas_cumprod', 'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
  'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2', 'logvar', 'lvlb_weights',
]);

/** Prefixes of other model families, named so the message says what the file is rather than "unknown tensor". */
const OTHER_FAMILIES: readonly (readonly [prefix: string, what: string])[] = [
  ['conditioner.embedders.', 'an SDXL checkpoint'],
  ['cond_stage_model.model.', 'an SD 2.x checkpoint (its text encoder is OpenCLIP)'],
];

const FIX_SD1 = 'Use a Stable Diffusion 1.x checkpoint (.safetensors), or the model in diffusers folder layout.';

/**
 * The per-component renaming of a single-file checkpoint's tensors, for the UNet that `unet` describes. A
 * `model.diffusion_model.*` tensor that UNet does not have, or one of its tensors missing from the file, is a
 * UserError naming the LDM tensor; so is a VAE or text-encoder tensor that follows no LDM naming, and any other
 * tensor outside the ignored buffers.
 */
export function singleFileToDiffusers(header: SingleFileTensors, unet: UnetConfig): SingleFileMapping {
  const file = header.file;
  const table = ldmUnetNames(unet);
  const names: Record<DiffusersComponentName, Map<string, string>> = { unet: new Map(), vae: new Map(), text_encoder: new Map() };
  const reshapes: Record<DiffusersComponentName, Map<string, readonly number[]>> = { unet: new Map(), vae: new Map(), text_encoder: new Map() };
  const ignored: string[] = [];
  const vaePrefix = LDM_PREFIXES.vae;
  const upLevels = 1 + Math.max(-1, ...header.tensors.map((t) => /^first_stage_model\.decoder\.up\.(\d+)\./.exec(t.name)?.[1]).filter((d) => d !== undefined).map(Number));

  for (const { name, shape } of header.tensors) {
    if (name.startsWith(LDM_PREFIXES.unet)) {
      const ldm = name.slice(LDM_PREFIXES.unet.length);
      const diffusers = table.required.get(ldm) ?? table.optional.get(ldm);
      if (diffusers === undefined) {
        throw new UserError(file, `tensor "${name}" is not part of the Stable Diffusion UNet its configuration describes.`, FIX_SD1);
      }
      names.unet.set(name, diffusers);
    } else if (name.startsWith(vaePrefix)) {
      const ldm = name.slice(vaePrefix.length);
      if (ldm.startsWith('loss.')) {
        ignored.push(name); // the training-only discriminator and its log-variance
        continue;
      }
      const diffusers = vaeName(ldm, upLevels);
      if (diffusers === null) throw new UserError(file, `tensor "${name}" is not part of an SD 1.x VAE (AutoencoderKL).`, FIX_SD1);
      names.vae.set(name, diffusers);
      // LDM's mid-block attention projections are 1×1 convolutions; diffusers' are Linear [c, c].
      if (/\.mid_block\.attentions\.0\.to_/.test(diffusers) && shape.length === 4 && shape[2] === 1 && shape[3] === 1) {
        reshapes.vae.set(diffusers, [shape[0]!, shape[1]!]);
      }
    } else if (name.startsWith(LDM_PREFIXES.text_encoder)) {
      const ldm = name.slice(LDM_PREFIXES.text_encoder.length);
      if (ldm === 'text_model.embeddings.position_ids' || ldm === 'embeddings.position_ids') {
        ignored.push(name);
        continue;
      }
      const transformers = clipName(ldm);
      if (transformers === null) throw new UserError(file, `tensor "${name}" is not part of an SD 1.x text encoder (CLIPTextModel).`, FIX_SD1);
      names.text_encoder.set(name, transformers);
    } else if (name.startsWith('model_ema.') || SCHEDULE_BUFFERS.has(name)) {
      ignored.push(name);
    } else {
      const family = OTHER_FAMILIES.find(([prefix]) => name.startsWith(prefix));
      throw new UserError(
        file,
        family ? `holds tensor "${name}": this is ${family[1]}, and LoRA Lab reads SD 1.x single files.` : `holds tensor "${name}", which is not part of a Stable Diffusion 1.x checkpoint.`,
        FIX_SD1,
      );
    }
  }
  for (const [ldm] of table.required) {
    if (!names.unet.has(`${LDM_PREFIXES.unet}${ldm}`)) {
      throw new UserError(file, `tensor "${LDM_PREFIXES.unet}${ldm}" is missing; the UNet its configuration describes needs it.`, FIX_SD1);
    }
  }
  for (const component of ['vae', 'text_encoder'] as const) {
    if (names[component].size === 0) {
      throw new UserError(file, `holds no ${component === 'vae' ? 'VAE' : 'text encoder'} tensors (${LDM_PREFIXES[component]}*).`, 'Use a complete checkpoint (UNet, VAE and text encoder in one file).');
    }
  }
  const pack = (c: DiffusersComponentName): ComponentNameMap => ({ names: names[c], reshapes: reshapes[c] });
  return { components: { unet: pack('unet'), vae: pack('vae'), text_encoder: pack('text_encoder') }, ignored };
}

// ---------------------------------------------------------------------------------------------------------------
// The default SD 1.5 configs (runwayml/stable-diffusion-v1-5's config files), for a single file without them.

export const SD15_UNET_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 768,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
});

export const SD15_VAE_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  _class_name: 'AutoencoderKL',
  act_fn: 'silu',
  block_out_channels: [128, 256, 512, 512],
  down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D', 'DownEncoderBlock2D'],
  in_channels: 3,
  latent_channels: 4,
  layers_per_block: 2,
  norm_num_groups: 32,
  out_channels: 3,
  sample_size: 512,
  scaling_factor: 0.18215,
  up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D', 'UpDecoderBlock2D'],
});

/** openai/clip-vit-large-patch14's text model, as SD 1.5's text_encoder/config.json (the legacy eos id 2 included). */
export const SD15_TEXT_ENCODER_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  architectures: ['CLIPTextModel'],
  attention_dropout: 0,
  bos_token_id: 0,
  dropout: 0,
  eos_token_id: 2,
  hidden_act: 'quick_gelu',
  hidden_size: 768,
  initializer_factor: 1,
  initializer_range: 0.02,
  intermediate_size: 3072,
  layer_norm_eps: 1e-5,
  max_position_embeddings: 77,
  model_type: 'clip_text_model',
  num_attention_heads: 12,
  num_hidden_layers: 12,
  pad_token_id: 1,
  projection_dim: 768,
  vocab_size: 49408,
});

/** SD 1.5's training noise schedule (the release ships a PNDMScheduler config; the betas are what training uses). */
export const SD15_SCHEDULER_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  _class_name: 'PNDMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  prediction_type: 'epsilon',
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
});

export interface SingleFileConfigs {
  readonly unet: Readonly<Record<string, unknown>>;
  readonly vae: Readonly<Record<string, unknown>>;
  readonly text_encoder: Readonly<Record<string, unknown>>;
  readonly scheduler: Readonly<Record<string, unknown>>;
}

export const SD15_CONFIGS: SingleFileConfigs = Object.freeze({
  unet: SD15_UNET_CONFIG,
  vae: SD15_VAE_CONFIG,
  text_encoder: SD15_TEXT_ENCODER_CONFIG,
  scheduler: SD15_SCHEDULER_CONFIG,
});

// ---------------------------------------------------------------------------------------------------------------
// Loading.

/** A single-file checkpoint whose header is read and mapped; components are loaded one at a time (each is large). */
export interface SingleFileCheckpoint {
  readonly source: ByteSource;
  readonly header: SafetensorsHeader;
  readonly mapping: SingleFileMapping;
  readonly configs: SingleFileConfigs;
}

/**
 * Reads a single file's header (integer buffers such as an I64 `position_ids` are passed over, and listed as
 * ignored) and maps its names
 * for the configs given (SD 1.5's by default). Nothing is loaded yet.
 */
export async function openSingleFile(source: ByteSource, configs: SingleFileConfigs = SD15_CONFIGS): Promise<SingleFileCheckpoint> {
  const header = await readHeader(source, { skipIntegerTensors: true });
  const mapped = singleFileToDiffusers(header, parseUnetConfig(configs.unet));
  const mapping = { ...mapped, ignored: [...mapped.ignored, ...header.skipped.map((t) => t.name)] };
  return { source, header, mapping, configs };
}

/**
 * One component's tensors under diffusers/transformers names with its config: what loadDiffusersComponent gives for
 * a folder, ready for buildUnet, buildVae or buildClipTextModel. On an error the tensors made so far are released.
 */
export async function loadSingleFileComponent(checkpoint: SingleFileCheckpoint, name: DiffusersComponentName): Promise<DiffusersComponent> {
  const { names, reshapes } = checkpoint.mapping.components[name];
  const entries = new Map<string, TensorEntry>(checkpoint.header.tensors.map((t) => [t.name, t]));
  const weights = new Map<string, tf.Tensor>();
  try {
    for (const [ldm, diffusers] of names) {
      const entry = entries.get(ldm)!;
      const values = toFloat32(entry.dtype, await readTensorBytes(checkpoint.source, entry));
      weights.set(diffusers, tf.tensor(values, [...(reshapes.get(diffusers) ?? entry.shape)], 'float32'));
    }
  } catch (e) {
    tf.dispose([...weights.values()]);
    throw e;
  }
  return { name, config: checkpoint.configs[name], weights };
}
