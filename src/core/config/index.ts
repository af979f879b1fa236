/**
 * The run config: one schema for the app's form, the headless runner's YAML, saved runs and
 * comparison legends. DOM-free.
 */
import type { LoraSettings } from '../lora/settings';
import type { RunEstimateInput } from '../train/estimate';
import type { TrainerOptions } from '../train/trainer';
import type { ModelArch } from '../models/config';
import { CONFIG_KEYS, runNameOf, type RunConfig, type RunConfigKey } from './schema';
import { valuesEqual } from './parse';

export {
  BACKENDS,
  CONFIG_KEYS,
  DEFAULT_CONFIG,
  FIELD_RULES,
  GUIDANCE_RANGE,
  INFERENCE_STEPS_RANGE,
  LR_SCHEDULERS,
  RESOLUTION_RANGE,
  RunConfigSchema,
  type RunConfig,
  type RunConfigKey,
} from './schema';
export {
  parsePromptLine,
  samplePromptsOf,
  type PromptLineResult,
  type ResolvedSamplePrompt,
  type SamplePrompt,
} from './sample-prompts';
export { editDistance, KEY_ALIASES, suggestKey, type AliasSource, type KeyAlias } from './aliases';
export {
  formatIssue,
  parseRunConfig,
  parseRunConfigYaml,
  unwrapRunConfig,
  type AliasUse,
  type ConfigIssue,
  type ConfigParseResult,
  type ParseOptions,
} from './parse';
export { runConfigToYaml } from './yaml';
export { PRESETS, type Preset, type PresetId } from './presets';

/** The run's name: the last component of output_dir (`./output/lr_1e-4` → `lr_1e-4`). */
export function runName(config: Pick<RunConfig, 'output_dir'>): string {
  return runNameOf(config.output_dir) || 'run';
}

export interface ConfigDifference {
  readonly key: RunConfigKey;
  readonly a: unknown;
  readonly b: unknown;
}

/** Keys whose values differ, in canonical order: what sets two runs apart in a comparison legend. */
export function configDiff(a: RunConfig, b: RunConfig): ConfigDifference[] {
  return CONFIG_KEYS.filter((key) => !valuesEqual(a[key], b[key])).map((key) => ({ key, a: a[key], b: b[key] }));
}

/**
 * What a LoRA is put on: a text model's architecture, or one of Stable Diffusion's two trained parts.
 * An image run's target_modules applies to its UNet; its text encoder always takes the default.
 */
export type LoraTargetKind = ModelArch | 'sd-unet' | 'sd-text-encoder';

/**
 * Default target modules per kind, used when target_modules is null. Text models: PEFT's defaults.
 * SD UNet: the attention projections of every transformer block, as diffusers' LoRA training script
 * targets them (kohya also adds the blocks' proj_in/proj_out and feed-forward layers). SD text encoder:
 * kohya's, every linear layer of CLIPAttention and CLIPMLP.
 */
const DEFAULT_TARGETS: { readonly [K in LoraTargetKind]: readonly string[] } = {
  gpt2: ['c_attn'],
  llama: ['q_proj', 'v_proj'],
  'sd-unet': ['to_q', 'to_k', 'to_v', 'to_out.0'],
  'sd-text-encoder': ['q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2'],
};

/**
 * The modules LoRA wraps for this model. 'all-linear' is passed through for the LoRA layer to expand,
 * since which layers are linear (and that the output head is excluded) depends on the loaded model.
 */
export function resolveTargetModules(config: Pick<RunConfig, 'target_modules'>, kind: LoraTargetKind): string[] | 'all-linear' {
  // target_modules names UNet (or text model) modules; CLIP's names differ, so the text encoder keeps kohya's set.
  const targets = kind === 'sd-text-encoder' ? DEFAULT_TARGETS[kind] : (config.target_modules ?? DEFAULT_TARGETS[kind]);
  return targets === 'all-linear' ? targets : [...targets];
}

/** The LoRA layer's settings from a run config, with target_modules resolved for the model kind. */
export function loraSettingsOf(config: RunConfig, kind: LoraTargetKind): LoraSettings {
  return {
    rank: config.lora_rank,
    alpha: config.lora_alpha,
    dropout: config.lora_dropout,
    targetModules: resolveTargetModules(config, kind),
    useRslora: config.use_rslora,
  };
}

/** What an image (Stable Diffusion) run reads from its config beyond the LoRA and the schedule. */
export interface ImageTrainingSettings {
  /** Side of the square every image is scaled and center-cropped to, in pixels. */
  readonly resolution: number;
  readonly flipAug: boolean;
  readonly captionExtension: string;
  readonly noiseOffset: number;
  /** 0 = plain MSE; otherwise the Min-SNR-γ weight min(SNR, γ) / SNR per timestep. */
  readonly minSnrGamma: number;
  readonly unetLearningRate: number;
  /** null: the text encoder gets no LoRA (train_text_encoder false, or a text encoder rate of 0, as kohya skips it). */
  readonly textEncoderLearningRate: number | null;
}

/** The image-run settings from a run config, with unet_lr / text_encoder_lr falling back to learning_rate. */
export function imageTrainingOf(config: RunConfig): ImageTrainingSettings {
  const textEncoderRate = config.text_encoder_lr ?? config.learning_rate;
  return {
    resolution: config.resolution,
    flipAug: config.flip_aug,
    captionExtension: config.caption_extension,
    noiseOffset: config.noise_offset,
    minSnrGamma: config.min_snr_gamma,
    unetLearningRate: config.unet_lr ?? config.learning_rate,
    textEncoderLearningRate: config.train_text_encoder && textEncoderRate > 0 ? textEncoderRate : null,
  };
}

/** The trainer's options from a run config: one mapping for the app, the headless runner and scripts. */
export function trainerOptionsOf(config: RunConfig): TrainerOptions {
  return {
    batchSize: config.batch_size,
    gradAccumSteps: config.grad_accum_steps,
    epochs: config.epochs,
    maxSteps: config.max_steps,
    logSteps: config.log_steps,
    evalSteps: config.eval_steps,
    evalOnStart: config.eval_on_start,
    saveSteps: config.save_steps,
    learningRate: config.learning_rate,
    scheduler: config.lr_scheduler,
    warmupSteps: config.warmup_steps,
    weightDecay: config.weight_decay,
    maxGradNorm: config.max_grad_norm,
    seed: config.seed,
  };
}

/** What the run estimate reads from a run config: one mapping for the Data panel's estimate and the wasm check. */
export function estimateSettingsOf(
  config: RunConfig,
): Pick<RunEstimateInput, 'rank' | 'batchSize' | 'gradAccumSteps' | 'seqLen' | 'epochs' | 'maxSteps' | 'gradientCheckpointing'> {
  return {
    rank: config.lora_rank,
    batchSize: config.batch_size,
    gradAccumSteps: config.grad_accum_steps,
    seqLen: config.seq_len,
    epochs: config.epochs,
    maxSteps: config.max_steps,
    gradientCheckpointing: config.gradient_checkpointing,
  };
}
