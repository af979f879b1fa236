import { UserError } from '../../errors.js';

/**
 * What LoRA Lab reads of a diffusers `unet/config.json` (UNet2DConditionModel), with diffusers' defaults and its
 * per-block expansions already applied, so the model code never re-reads raw JSON. Options that change what the
 * UNet computes and that LoRA Lab does not implement (class or added embeddings, scale-shift time conditioning, …)
 * are refused by name rather than silently ignored.
 */

export type DownBlockType = 'CrossAttnDownBlock2D' | 'DownBlock2D';
export type UpBlockType = 'CrossAttnUpBlock2D' | 'UpBlock2D';

export interface UnetConfig {
  readonly inChannels: number;
  readonly outChannels: number;
  /** Channels of each resolution level, highest resolution first (SD 1.x: 320, 640, 1280, 1280). */
  readonly blockOutChannels: readonly number[];
  /** ResNets per down block (an up block has one more). */
  readonly layersPerBlock: readonly number[];
  readonly downBlockTypes: readonly DownBlockType[];
  readonly upBlockTypes: readonly UpBlockType[];
  /**
   * Attention heads per down block. diffusers' SD 1.x configs call this `attention_head_dim` although it is
   * the number of heads (UNet2DConditionModel: `num_attention_heads = num_attention_heads or attention_head_dim`).
   */
  readonly headsPerBlock: readonly number[];
  /** BasicTransformerBlocks inside each down block's Transformer2DModel. */
  readonly transformerLayersPerBlock: readonly number[];
  /** The same for the up blocks, in up-block order. */
  readonly upTransformerLayers: readonly number[];
  /** Width of the text encoder's hidden states, the cross-attention keys' and values' input. */
  readonly crossAttentionDim: number;
  readonly normGroups: number;
  /** GroupNorm eps of the ResNets and the output norm (Transformer2DModel's own norm always uses 1e-6). */
  readonly normEps: number;
  readonly flipSinToCos: boolean;
  readonly freqShift: number;
  /** Width of the sinusoidal timestep features: block_out_channels[0]. */
  readonly timeProjDim: number;
  /** Width of the time embedding every ResNet receives: 4 · block_out_channels[0] unless set. */
  readonly timeEmbedDim: number;
  /** proj_in/proj_out of Transformer2DModel are nn.Linear (SD 2.x) instead of 1×1 convolutions (SD 1.x). */
  readonly useLinearProjection: boolean;
  readonly downsamplePadding: number;
  readonly midBlockScaleFactor: number;
  readonly resnetOutScaleFactor: number;
  readonly convInKernel: number;
  readonly convOutKernel: number;
  readonly centerInputSample: boolean;
}

const FILE = 'unet/config.json';
type Json = Readonly<Record<string, unknown>>;

function fail(problem: string, fix = 'Use the unet/config.json that came with the model.'): never {
  throw new UserError(FILE, problem, fix);
}

function positiveInt(json: Json, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) fail(`"${key}" must be a whole number of at least 1, but it is ${JSON.stringify(json[key])}.`);
  return v;
}

function finiteNumber(json: Json, key: string, fallback: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(`"${key}" must be a number, but it is ${JSON.stringify(json[key])}.`);
  return v;
}

function bool(json: Json, key: string, fallback: boolean): boolean {
  const v = json[key] ?? fallback;
  if (typeof v !== 'boolean') fail(`"${key}" must be true or false, but it is ${JSON.stringify(json[key])}.`);
  return v;
}

/** diffusers accepts a number (the same for every block) or one number per down block. */
function perBlock(json: Json, key: string, blocks: number, fallback?: number): number[] {
  const v = json[key] ?? fallback;
  const list = typeof v === 'number' ? new Array<number>(blocks).fill(v) : v;
  if (!Array.isArray(list) || list.length !== blocks || list.some((x) => typeof x !== 'number' || !Number.isInteger(x) || x < 1)) {
    fail(`"${key}" must be a whole number or a list of ${blocks} whole numbers (one per down block), but it is ${JSON.stringify(v)}.`);
  }
  return list as number[];
}

function blockTypes<T extends string>(json: Json, key: string, allowed: readonly T[]): T[] {
  const v = json[key];
  if (!Array.isArray(v) || v.length === 0) fail(`"${key}" must be a non-empty list of block types, but it is ${JSON.stringify(v)}.`);
  for (const t of v) {
    if (!allowed.includes(t as T)) {
      fail(`"${key}" names the block type ${JSON.stringify(t)}, which LoRA Lab does not implement; it reads ${allowed.join(' and ')}.`, 'Use a Stable Diffusion 1.x or 2.x UNet.');
    }
  }
  return v as T[];
}

/** Settings whose non-default value would change the computation in ways the UNet here does not implement. */
const MUST_BE_DEFAULT: readonly (readonly [key: string, defaultValue: unknown, what: string])[] = [
  ['class_embed_type', null, 'class embeddings'],
  ['num_class_embeds', null, 'class embeddings'],
  ['addition_embed_type', null, 'added conditioning embeddings (SDXL-style)'],
  ['encoder_hid_dim', null, 'a projection of the text states'],
  ['encoder_hid_dim_type', null, 'a projection of the text states'],
  ['time_cond_proj_dim', null, 'timestep conditioning projections'],
  ['time_embedding_type', 'positional', 'a non-sinusoidal time embedding'],
  ['time_embedding_act_fn', null, 'an activation on the time embedding'],
  ['timestep_post_act', null, 'an activation after the time embedding'],
  ['resnet_time_scale_shift', 'default', 'scale-shift time conditioning'],
  ['resnet_skip_time_act', false, 'ResNets without the time activation'],
  ['act_fn', 'silu', 'an activation other than SiLU'],
  ['only_cross_attention', false, 'cross-attention-only blocks'],
  ['mid_block_only_cross_attention', null, 'a cross-attention-only middle block'],
  ['dual_cross_attention', false, 'dual cross-attention'],
  ['attention_type', 'default', 'gated attention'],
  ['cross_attention_norm', null, 'a norm on the cross-attention states'],
  ['reverse_transformer_layers_per_block', null, 'separate transformer depths for the up blocks'],
  ['class_embeddings_concat', false, 'class embeddings'],
  ['mid_block_type', 'UNetMidBlock2DCrossAttn', 'a middle block other than UNetMidBlock2DCrossAttn'],
];

/** Parses and checks a UNet2DConditionModel config.json (already JSON-parsed). */
export function parseUnetConfig(json: Json): UnetConfig {
  for (const [key, def, what] of MUST_BE_DEFAULT) {
    const v = json[key];
    if (v !== undefined && v !== def) {
      fail(`"${key}" is ${JSON.stringify(v)}: this UNet uses ${what}, which LoRA Lab does not implement.`, 'Use a Stable Diffusion 1.x or 2.x UNet.');
    }
  }
  const blockOutChannels = json['block_out_channels'];
  if (!Array.isArray(blockOutChannels) || blockOutChannels.length === 0 || blockOutChannels.some((c) => typeof c !== 'number' || !Number.isInteger(c) || c < 1)) {
    fail(`"block_out_channels" must be a non-empty list of whole numbers, but it is ${JSON.stringify(blockOutChannels)}.`);
  }
  const channels = blockOutChannels as number[];
  const blocks = channels.length;
  const downBlockTypes = blockTypes<DownBlockType>(json, 'down_block_types', ['CrossAttnDownBlock2D', 'DownBlock2D']);
  const upBlockTypes = blockTypes<UpBlockType>(json, 'up_block_types', ['CrossAttnUpBlock2D', 'UpBlock2D']);
  if (downBlockTypes.length !== blocks || upBlockTypes.length !== blocks) {
    fail(`"down_block_types" and "up_block_types" must each name ${blocks} blocks, one per entry of "block_out_channels", but they name ${downBlockTypes.length} and ${upBlockTypes.length}.`);
  }
  const normGroups = positiveInt(json, 'norm_num_groups', 32);
  for (const c of channels) {
    if (c % normGroups !== 0) fail(`"block_out_channels" entry ${c} is not divisible by "norm_num_groups" ${normGroups}.`);
  }
  // diffusers: num_attention_heads = num_attention_heads or attention_head_dim (the SD 1.x naming quirk).
  const headsKey = json['num_attention_heads'] !== undefined && json['num_attention_heads'] !== null ? 'num_attention_heads' : 'attention_head_dim';
  const headsPerBlock = perBlock(json, headsKey, blocks, 8);
  channels.forEach((c, i) => {
    if (c % headsPerBlock[i]! !== 0) fail(`"${headsKey}" gives block ${i} ${headsPerBlock[i]} heads, which do not divide its ${c} channels.`);
  });
  const transformerLayersPerBlock = perBlock(json, 'transformer_layers_per_block', blocks, 1);
  const flip = bool(json, 'flip_sin_to_cos', true);
  const timeProjDim = channels[0]!;
  const timeEmbedDim = json['time_embedding_dim'] === undefined || json['time_embedding_dim'] === null ? timeProjDim * 4 : positiveInt(json, 'time_embedding_dim');
  const kernel = (key: string): number => {
    const k = positiveInt(json, key, 3);
    if (k % 2 !== 1) fail(`"${key}" must be odd, but it is ${k}.`);
    return k;
  };
  const downsamplePadding = finiteNumber(json, 'downsample_padding', 1);
  if (downsamplePadding !== 0 && downsamplePadding !== 1) fail(`"downsample_padding" must be 0 or 1, but it is ${downsamplePadding}.`);
  return {
    inChannels: positiveInt(json, 'in_channels', 4),
    outChannels: positiveInt(json, 'out_channels', 4),
    blockOutChannels: channels,
    layersPerBlock: perBlock(json, 'layers_per_block', blocks, 2),
    downBlockTypes,
    upBlockTypes,
    headsPerBlock,
    transformerLayersPerBlock,
    upTransformerLayers: [...transformerLayersPerBlock].reverse(),
    crossAttentionDim: positiveInt(json, 'cross_attention_dim', 1280),
    normGroups,
    normEps: finiteNumber(json, 'norm_eps', 1e-5),
    flipSinToCos: flip,
    freqShift: finiteNumber(json, 'freq_shift', 0),
    timeProjDim,
    timeEmbedDim,
    useLinearProjection: bool(json, 'use_linear_projection', false),
    downsamplePadding,
    midBlockScaleFactor: finiteNumber(json, 'mid_block_scale_factor', 1),
    resnetOutScaleFactor: finiteNumber(json, 'resnet_out_scale_factor', 1),
    convInKernel: kernel('conv_in_kernel'),
    convOutKernel: kernel('conv_out_kernel'),
    centerInputSample: bool(json, 'center_input_sample', false),
  };
}
