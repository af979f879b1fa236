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
  LR_SCHEDULERS,
  RunConfigSchema,
  type RunConfig,
  type RunConfigKey,
} from './schema';
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

/** PEFT's default target modules per architecture, used when target_modules is null. */
const DEFAULT_TARGETS: { readonly [A in ModelArch]: readonly string[] } = {
  gpt2: ['c_attn'],
  llama: ['q_proj', 'v_proj'],
};

/**
 * The modules LoRA wraps for this model. 'all-linear' is passed through for the LoRA layer to expand,
 * since which layers are linear (and that the output head is excluded) depends on the loaded model.
 */
export function resolveTargetModules(config: Pick<RunConfig, 'target_modules'>, arch: ModelArch): string[] | 'all-linear' {
  const targets = config.target_modules ?? DEFAULT_TARGETS[arch];
  return targets === 'all-linear' ? targets : [...targets];
}

/** The LoRA layer's settings from a run config, with target_modules resolved for the architecture. */
export function loraSettingsOf(config: RunConfig, arch: ModelArch): LoraSettings {
  return {
    rank: config.lora_rank,
    alpha: config.lora_alpha,
    dropout: config.lora_dropout,
    targetModules: resolveTargetModules(config, arch),
    useRslora: config.use_rslora,
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
