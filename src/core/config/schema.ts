import * as v from 'valibot';
import { BASE_QUANTIZATIONS } from '../weights/hold.js';

/**
 * The run config: every knob of one LoRA training run, shared by the app's form, the headless runner's
 * YAML file, saved runs and the comparison legends. Keys are snake_case like the Python tools
 * (lora-scripts, LLaMA-Factory, kohya) so a config can travel between them with few edits.
 *
 * Value checks live here; which keys exist, aliases and cross-field rules live in parse.ts.
 */

/**
 * Accepts numeric strings ("1e-4", " 2e-4 ") as numbers. kohya and some PyYAML-era configs quote
 * learning rates, because YAML 1.1 readers turn a dot-less `1e-4` into a string.
 * Anything else passes through unchanged so the number check reports the original value.
 */
export function coerceNumber(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const s = value.trim();
  return /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/.test(s) ? Number(s) : value;
}

/**
 * target_modules in every form people write it: a YAML list, PEFT's 'all-linear', LLaMA-Factory's
 * `all`, or LLaMA-Factory's comma-separated string ("q_proj,v_proj"). Unlike PEFT, a plain string is
 * never treated as a regular expression: module names are matched exactly.
 */
export function coerceTargetModules(value: unknown): unknown {
  if (typeof value !== 'string') return value;
  const s = value.trim();
  if (s === 'all' || s === 'all-linear') return 'all-linear';
  return s
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== '');
}

/** An empty path means "none" for optional paths, so a blank form field and a missing key agree. */
function emptyToNull(value: unknown): unknown {
  return value === '' ? null : value;
}

// Every field runs its own small pipe; the messages are not used (parse.ts words one message per key
// from FIELD_RULES), so the schemas stay plain.
function int(min: number, max: number, fallback: number) {
  return v.optional(
    v.pipe(v.unknown(), v.transform(coerceNumber), v.number(), v.integer(), v.minValue(min), v.maxValue(max)),
    fallback,
  );
}

function num(min: number, max: number, fallback: number, exclusiveMin = false) {
  return v.optional(
    v.pipe(
      v.unknown(),
      v.transform(coerceNumber),
      v.number(),
      v.finite(),
      v.check((x) => (exclusiveMin ? x > min : x >= min)),
      v.maxValue(max),
    ),
    fallback,
  );
}

/** Step counts: whole numbers, 0 meaning "off" or "no limit" depending on the key. */
const steps = (fallback: number) => int(0, Number.MAX_SAFE_INTEGER, fallback);

/** Module names as they appear in state-dict keys (`c_attn`, `q_proj`, `mlp.down_proj`). */
const MODULE_NAME = /^[A-Za-z0-9_.]+$/;

export const LR_SCHEDULERS = ['constant', 'linear', 'cosine'] as const;
export const BACKENDS = ['auto', 'webgpu', 'wasm'] as const;

/** The fields alone; parse.ts checks them one at a time so every bad key is reported. */
export const RunConfigFields = v.object({
  base_model: v.optional(v.string(), ''),
  train_data: v.optional(v.string(), ''),
  val_data: v.optional(v.pipe(v.unknown(), v.transform(emptyToNull), v.nullable(v.string())), null),
  val_split: num(0, 0.5, 0),
  output_dir: v.optional(v.pipe(v.string(), v.check((s) => runNameOf(s) !== '')), './output/run'),
  init_adapter: v.optional(v.pipe(v.unknown(), v.transform(emptyToNull), v.nullable(v.string())), null),
  lora_rank: int(1, 256, 8),
  lora_alpha: num(0, 4096, 16, true),
  lora_dropout: num(0, 0.9, 0.05),
  target_modules: v.optional(
    v.pipe(
      v.unknown(),
      v.transform(coerceTargetModules),
      v.union([
        v.null(),
        v.literal('all-linear'),
        v.pipe(v.array(v.pipe(v.string(), v.regex(MODULE_NAME))), v.minLength(1), v.readonly()),
      ]),
    ),
    null,
  ),
  use_rslora: v.optional(v.boolean(), false),
  learning_rate: num(0, 1, 1e-4),
  lr_scheduler: v.optional(v.picklist(LR_SCHEDULERS), 'cosine'),
  warmup_steps: steps(0),
  weight_decay: num(0, 1, 0),
  max_grad_norm: num(0, 1e6, 1),
  epochs: int(0, 100_000, 1),
  max_steps: steps(0),
  batch_size: int(1, 1024, 8),
  grad_accum_steps: int(1, 1024, 1),
  seq_len: int(2, 8192, 128),
  gradient_checkpointing: v.optional(v.boolean(), false),
  base_quantization: v.optional(v.picklist(BASE_QUANTIZATIONS), 'none'),
  log_steps: steps(10),
  eval_steps: steps(0),
  eval_on_start: v.optional(v.boolean(), false),
  save_steps: steps(0),
  sample_steps: steps(0),
  sample_prompts: v.optional(v.pipe(v.array(v.string()), v.readonly()), []),
  early_stopping_patience: steps(0),
  export_merged: v.optional(v.boolean(), false),
  seed: int(0, 0xffff_ffff, 42),
  backend: v.optional(v.picklist(BACKENDS), 'auto'),
});

export const RunConfigSchema = v.pipe(RunConfigFields, v.readonly());

export type RunConfig = v.InferOutput<typeof RunConfigSchema>;
export type RunConfigKey = keyof RunConfig;

/**
 * Last path component of output_dir, which names the run in lists and chart legends.
 * Both separators count because configs written on Windows use backslashes.
 */
export function runNameOf(outputDir: string): string {
  const parts = outputDir.split(/[\\/]+/).filter((p) => p !== '' && p !== '.');
  return parts.at(-1) ?? '';
}

interface FieldRule {
  /** What the key accepts, completing "must be …"; shown with the offending value. */
  readonly accepts: string;
  /** The short comment runConfigToYaml writes after the value. */
  readonly comment: string;
}

/**
 * One entry per key, in the canonical order: runConfigToYaml writes keys in this order and configDiff
 * reports them in it. Typed as a Record so adding a schema key without a rule fails to compile.
 */
export const FIELD_RULES: { readonly [K in RunConfigKey]: FieldRule } = {
  base_model: { accepts: 'a model path or stored model name (a string)', comment: 'model folder (runner) or stored model name (app)' },
  train_data: { accepts: 'a file path (a string)', comment: 'training text' },
  val_data: { accepts: 'a file path (a string) or null', comment: 'optional validation text' },
  val_split: { accepts: 'a fraction from 0 to 0.5', comment: 'fraction of train held out when no val_data (0 = none)' },
  output_dir: { accepts: 'a directory path whose last component names the run', comment: 'run name = last path component' },
  init_adapter: {
    accepts: 'a PEFT adapter folder path or stored adapter name (a string), or null',
    comment: 'start from this adapter (its r, alpha and targets); null = fresh LoRA',
  },
  lora_rank: { accepts: 'an integer from 1 to 256', comment: 'rank r of the A·B update' },
  lora_alpha: { accepts: 'a number above 0 (at most 4096)', comment: 'update scale = alpha / rank (alpha / sqrt(rank) with rsLoRA)' },
  lora_dropout: { accepts: 'a number from 0 to 0.9', comment: 'dropout on the LoRA input' },
  target_modules: {
    accepts: "a non-empty list of module names, a comma-separated string of them, 'all-linear', or null",
    comment: 'null = model default (GPT-2: c_attn; Llama: q_proj, v_proj)',
  },
  use_rslora: { accepts: 'true or false', comment: 'rank-stabilized scaling' },
  learning_rate: { accepts: 'a number from 0 to 1', comment: 'peak learning rate' },
  lr_scheduler: { accepts: 'one of constant, linear, cosine', comment: 'constant | linear | cosine (after warmup)' },
  warmup_steps: { accepts: 'a whole number of steps (0 or more)', comment: 'linear warmup from 0' },
  weight_decay: { accepts: 'a number from 0 to 1', comment: 'AdamW decoupled weight decay' },
  max_grad_norm: { accepts: 'a number of 0 or more', comment: '0 = no clipping' },
  epochs: { accepts: 'a whole number from 0 to 100000', comment: 'passes over train_data' },
  max_steps: { accepts: 'a whole number of steps (0 or more)', comment: '0 = no limit; when set it wins over epochs' },
  batch_size: { accepts: 'an integer from 1 to 1024', comment: 'sequences per micro-batch' },
  grad_accum_steps: { accepts: 'an integer from 1 to 1024', comment: 'micro-batches per optimizer step' },
  seq_len: { accepts: 'an integer from 2 to 8192', comment: 'tokens per sequence' },
  gradient_checkpointing: {
    accepts: 'true or false',
    comment: 'recompute each block in the backward pass: less memory, ~1/3 more compute',
  },
  base_quantization: {
    accepts: 'one of none, int8, nf4',
    comment: 'none | int8 | nf4: frozen block weights held quantized on the GPU (QLoRA), LoRA stays float32',
  },
  log_steps: { accepts: 'a whole number of steps (0 or more)', comment: '0 = no logging and no event file' },
  eval_steps: { accepts: 'a whole number of steps (0 or more)', comment: '0 = evaluate at the end of each epoch only' },
  eval_on_start: { accepts: 'true or false', comment: 'evaluate once before step 1 (logged at step 0)' },
  save_steps: { accepts: 'a whole number of steps (0 or more)', comment: '0 = save only at the end' },
  sample_steps: { accepts: 'a whole number of steps (0 or more)', comment: '0 = sample only at the end' },
  sample_prompts: { accepts: 'a list of strings', comment: 'prompts for generated samples' },
  early_stopping_patience: {
    accepts: 'a whole number of evaluations (0 or more)',
    comment: '0 = off; evaluations without improvement before stopping',
  },
  export_merged: {
    accepts: 'true or false',
    comment: 'also write merged/: the base model with the adapter folded in',
  },
  seed: { accepts: 'an integer from 0 to 4294967295', comment: 'data order, init and dropout' },
  backend: { accepts: 'one of auto, webgpu, wasm', comment: 'auto | webgpu | wasm' },
};

export const CONFIG_KEYS = Object.keys(FIELD_RULES) as readonly RunConfigKey[];

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

/** Every default, derived from the schema so the two can never disagree. Frozen: copy before editing. */
export const DEFAULT_CONFIG: RunConfig = deepFreeze(v.parse(RunConfigSchema, {}));
