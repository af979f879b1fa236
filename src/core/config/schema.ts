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

/** Image sizes: whole pixels, a multiple of 8 because the VAE works on 8×8 pixel cells (SD 1.x's latents are 1/8 the size). */
export const RESOLUTION_RANGE = { min: 32, max: 2048, multipleOf: 8 } as const;
export const GUIDANCE_RANGE = { min: 1, max: 50 } as const;
export const INFERENCE_STEPS_RANGE = { min: 1, max: 150 } as const;
export const SEED_MAX = 0xffff_ffff;

/** A width and height as kohya writes them: "512,512" (its --resolution), or a two-number YAML list. */
function sizePair(value: unknown): readonly [number, number] | null {
  const parts = typeof value === 'string' ? value.split(',') : Array.isArray(value) ? value : null;
  if (parts === null || parts.length !== 2) return null;
  const numbers = parts.map((part) => coerceNumber(typeof part === 'string' ? part.trim() : part));
  const [w, h] = numbers;
  return typeof w === 'number' && typeof h === 'number' ? [w, h] : null;
}

/**
 * resolution in kohya's forms: one size, "512,512" or [512, 512]. A square pair reads as its side;
 * anything else passes through unchanged so the check reports the original value.
 */
export function coerceResolution(value: unknown): unknown {
  const pair = sizePair(value);
  if (pair !== null) return pair[0] === pair[1] ? pair[0] : value;
  return coerceNumber(value);
}

/** A width and height that differ ("512,768"): training here is square only, so this needs its own message. */
export function nonSquareResolution(value: unknown): readonly [number, number] | null {
  const pair = sizePair(value);
  return pair !== null && pair[0] !== pair[1] ? pair : null;
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

/** A number, or null meaning "use another key's value" (unet_lr: null is learning_rate). */
function numOrNull(min: number, max: number) {
  return v.optional(
    v.pipe(
      v.unknown(),
      v.transform(emptyToNull),
      v.transform(coerceNumber),
      v.nullable(v.pipe(v.number(), v.finite(), v.minValue(min), v.maxValue(max))),
    ),
    null,
  );
}

/** Step counts: whole numbers, 0 meaning "off" or "no limit" depending on the key. */
const steps = (fallback: number) => int(0, Number.MAX_SAFE_INTEGER, fallback);

/** A file name extension with its dot, as kohya writes caption_extension (".txt", ".caption"). */
const FILE_EXTENSION = /^\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

/** Module names as they appear in state-dict keys (`c_attn`, `q_proj`, `mlp.down_proj`). */
const MODULE_NAME = /^[A-Za-z0-9_.]+$/;

export const LR_SCHEDULERS = ['constant', 'linear', 'cosine'] as const;
export const BACKENDS = ['auto', 'webgpu', 'wasm'] as const;

/** The fields alone; parse.ts checks them one at a time so every bad key is reported. */
export const RunConfigFields = v.object({
  base_model: v.optional(v.string(), ''),
  train_data: v.optional(v.string(), ''),
  caption_extension: v.optional(v.pipe(v.string(), v.regex(FILE_EXTENSION)), '.txt'),
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
  train_text_encoder: v.optional(v.boolean(), false),
  learning_rate: num(0, 1, 1e-4),
  unet_lr: numOrNull(0, 1),
  text_encoder_lr: numOrNull(0, 1),
  lr_scheduler: v.optional(v.picklist(LR_SCHEDULERS), 'cosine'),
  warmup_steps: steps(0),
  weight_decay: num(0, 1, 0),
  max_grad_norm: num(0, 1e6, 1),
  epochs: int(0, 100_000, 1),
  max_steps: steps(0),
  batch_size: int(1, 1024, 8),
  grad_accum_steps: int(1, 1024, 1),
  seq_len: int(2, 8192, 128),
  resolution: v.optional(
    v.pipe(
      v.unknown(),
      v.transform(coerceResolution),
      v.number(),
      v.integer(),
      v.minValue(RESOLUTION_RANGE.min),
      v.maxValue(RESOLUTION_RANGE.max),
      v.multipleOf(RESOLUTION_RANGE.multipleOf),
    ),
    512,
  ),
  flip_aug: v.optional(v.boolean(), false),
  noise_offset: num(0, 1, 0),
  min_snr_gamma: num(0, 1000, 0),
  gradient_checkpointing: v.optional(v.boolean(), false),
  base_quantization: v.optional(v.picklist(BASE_QUANTIZATIONS), 'none'),
  log_steps: steps(10),
  eval_steps: steps(0),
  eval_on_start: v.optional(v.boolean(), false),
  save_steps: steps(0),
  sample_steps: steps(0),
  sample_prompts: v.optional(v.pipe(v.array(v.string()), v.readonly()), []),
  sample_guidance_scale: num(GUIDANCE_RANGE.min, GUIDANCE_RANGE.max, 7.5),
  sample_inference_steps: int(INFERENCE_STEPS_RANGE.min, INFERENCE_STEPS_RANGE.max, 20),
  sample_seed: v.optional(
    v.pipe(
      v.unknown(),
      v.transform(emptyToNull),
      v.transform(coerceNumber),
      v.nullable(v.pipe(v.number(), v.integer(), v.minValue(0), v.maxValue(SEED_MAX))),
    ),
    null,
  ),
  early_stopping_patience: steps(0),
  export_merged: v.optional(v.boolean(), false),
  seed: int(0, SEED_MAX, 42),
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
  /**
   * A more specific message than "must be …" for a value that is close to right, e.g. a resolution
   * of "512,768", which is valid kohya but not square. Undefined when the general message fits.
   */
  readonly explain?: (value: unknown) => string | undefined;
}

/**
 * One entry per key, in the canonical order: runConfigToYaml writes keys in this order and configDiff
 * reports them in it. Typed as a Record so adding a schema key without a rule fails to compile.
 */
export const FIELD_RULES: { readonly [K in RunConfigKey]: FieldRule } = {
  base_model: { accepts: 'a model path or stored model name (a string)', comment: 'model folder (runner) or stored model name (app)' },
  train_data: { accepts: 'a file path (a string)', comment: 'training text, or a folder of images with captions' },
  caption_extension: {
    accepts: 'a file extension with its dot, like ".txt" or ".caption"',
    comment: 'images: caption file beside each image (img.png + img.txt)',
  },
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
    comment: 'null = model default (GPT-2: c_attn; Llama: q_proj, v_proj; SD UNet: to_q, to_k, to_v, to_out.0)',
  },
  use_rslora: { accepts: 'true or false', comment: 'rank-stabilized scaling' },
  train_text_encoder: {
    accepts: 'true or false',
    comment: "images: also a LoRA on the text encoder (kohya's network_train_unet_only: false)",
  },
  learning_rate: { accepts: 'a number from 0 to 1', comment: 'peak learning rate' },
  unet_lr: { accepts: 'a number from 0 to 1, or null', comment: "images: the UNet LoRA's rate; null = learning_rate" },
  text_encoder_lr: {
    accepts: 'a number from 0 to 1, or null',
    comment: "images: the text encoder LoRA's rate; null = learning_rate, 0 = not trained",
  },
  lr_scheduler: { accepts: 'one of constant, linear, cosine', comment: 'constant | linear | cosine (after warmup)' },
  warmup_steps: { accepts: 'a whole number of steps (0 or more)', comment: 'linear warmup from 0' },
  weight_decay: { accepts: 'a number from 0 to 1', comment: 'AdamW decoupled weight decay' },
  max_grad_norm: { accepts: 'a number of 0 or more', comment: '0 = no clipping' },
  epochs: { accepts: 'a whole number from 0 to 100000', comment: 'passes over train_data' },
  max_steps: { accepts: 'a whole number of steps (0 or more)', comment: '0 = no limit; when set it wins over epochs' },
  batch_size: { accepts: 'an integer from 1 to 1024', comment: 'sequences (or images) per micro-batch' },
  grad_accum_steps: { accepts: 'an integer from 1 to 1024', comment: 'micro-batches per optimizer step' },
  seq_len: { accepts: 'an integer from 2 to 8192', comment: 'tokens per sequence' },
  resolution: {
    accepts: `a multiple of ${RESOLUTION_RANGE.multipleOf} from ${RESOLUTION_RANGE.min} to ${RESOLUTION_RANGE.max} (pixels), or "W,H" with W = H`,
    comment: 'images: side of the square each image is scaled and center-cropped to',
    explain: (value) => {
      const pair = nonSquareResolution(value);
      if (pair === null) return undefined;
      const [w, h] = pair;
      return (
        `is ${w}×${h}, but only square training is supported: every image is scaled and center-cropped to ` +
        `resolution × resolution. Give one size, e.g. resolution: ${Math.min(w, h)}`
      );
    },
  },
  flip_aug: { accepts: 'true or false', comment: 'images: also train on each image mirrored left to right' },
  noise_offset: { accepts: 'a number from 0 to 1', comment: 'images: extra per-channel noise (0.05-0.1 helps very dark or light images); 0 = off' },
  min_snr_gamma: { accepts: 'a number from 0 to 1000', comment: 'images: Min-SNR loss weighting (5 is usual); 0 = off' },
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
  sample_prompts: {
    accepts: 'a list of strings',
    comment: "prompts for generated samples; image prompts take kohya's --n --w --h --d --l --s",
  },
  sample_guidance_scale: {
    accepts: `a number from ${GUIDANCE_RANGE.min} to ${GUIDANCE_RANGE.max}`,
    comment: 'images: classifier-free guidance scale of samples (--l per prompt); 1 = no guidance',
  },
  sample_inference_steps: {
    accepts: `an integer from ${INFERENCE_STEPS_RANGE.min} to ${INFERENCE_STEPS_RANGE.max}`,
    comment: 'images: denoising steps per sample (--s per prompt)',
  },
  sample_seed: {
    accepts: `an integer from 0 to ${SEED_MAX}, or null`,
    comment: 'images: noise seed of samples (--d per prompt); null = seed',
  },
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
