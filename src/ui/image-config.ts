import { DEFAULT_CONFIG, parseRunConfig, runConfigToYaml, type RunConfig } from '../core/config';

/** What an image run starts from: kohya-like settings for SD 1.x at 512 px (the panel's YAML, edited in place). */
export const IMAGE_DEFAULTS: RunConfig = {
  ...DEFAULT_CONFIG,
  output_dir: './output/image-lora',
  lora_rank: 8,
  lora_alpha: 8,
  lora_dropout: 0,
  learning_rate: 1e-4,
  lr_scheduler: 'constant',
  batch_size: 1,
  epochs: 10,
  eval_steps: 50,
  eval_on_start: true,
  log_steps: 10,
  resolution: 512,
  min_snr_gamma: 5,
  sample_steps: 100,
};

/**
 * Keys a language-model run uses and an image run does not: left out of the image run's YAML. init_adapter is left
 * out only while it is null (a fresh LoRA): "Start from" in the image library writes it.
 */
const TEXT_ONLY = /^(seq_len|base_quantization|val_split|export_merged|early_stopping_patience):.*\n|^init_adapter: null\b.*\n/gm;

/** An image run's config as the panel's YAML: the image keys, without the text-only ones. */
export function imageConfigYaml(config: RunConfig): string {
  return runConfigToYaml(config).replace(TEXT_ONLY, '');
}

/** What an image LoRA of the library brings to a run that starts from it: its name and LoRA shape. */
export interface InitImageAdapter {
  readonly name: string;
  readonly rank: number;
  readonly alpha: number;
  readonly useRslora: boolean;
}

/**
 * The config to start from `adapter` (init_adapter), with the adapter's rank, alpha and rsLoRA written so that the
 * worker does not refuse the YAML for disagreeing with it, and target_modules back to the default (the run takes
 * the modules the adapter adapts). Null clears init_adapter (a fresh LoRA) and leaves the rest as it is.
 */
export function imageConfigStartingFrom(config: RunConfig, adapter: InitImageAdapter | null): RunConfig {
  if (adapter === null) return { ...config, init_adapter: null };
  return { ...config, init_adapter: adapter.name, lora_rank: adapter.rank, lora_alpha: adapter.alpha, use_rslora: adapter.useRslora, target_modules: null };
}

/** IMAGE_DEFAULTS with `changes` applied and checked (a bad change is a bug in the caller: the demo's manifest). */
export function imageConfigWith(changes: Partial<RunConfig>): RunConfig {
  const result = parseRunConfig({ ...IMAGE_DEFAULTS, ...changes });
  if (!result.ok) throw new Error(`image config: ${result.issues.map((i) => `${i.key}: ${i.message}`).join('; ')}`);
  return result.config;
}
