import { defaultTargetModules } from '../src/core/lora/settings';
import { parseModelConfig } from '../src/core/models/config';
import { BASE_QUANTIZATIONS, type BaseQuantization } from '../src/core/weights/hold';
import { SHAPES, type ShapeName, type SyntheticModel } from '../scripts/synthetic-model';

// The command line of `npm run bench -- --shape NAME` and `npm run bench:node`'s real-size cases: which
// real model's widths, how deep, and the run settings, as the app's run config keys.

export interface ShapeCase {
  readonly shape: ShapeName;
  /** Transformer blocks to keep (the published count when undefined). */
  readonly layers?: number;
  readonly quantization: BaseQuantization;
  readonly batch: number;
  readonly seq: number;
  readonly rank: number;
  /** target_modules; null: the model's PEFT defaults (c_attn on GPT-2, q_proj and v_proj on Llama). */
  readonly targets: readonly string[] | null;
  readonly steps: number;
  readonly warmup: number;
}

/** The run config the page parses (YAML, the app's keys): LoRA without dropout, as the other benchmarks. */
export function runConfigYaml(c: ShapeCase): string {
  return [
    `lora_rank: ${c.rank}`,
    `lora_alpha: ${2 * c.rank}`,
    'lora_dropout: 0',
    ...(c.targets ? [`target_modules: [${c.targets.join(', ')}]`] : []),
    `batch_size: ${c.batch}`,
    `seq_len: ${c.seq}`,
    `base_quantization: ${c.quantization}`,
  ].join('\n');
}

export function isShapeName(name: string): name is ShapeName {
  return Object.hasOwn(SHAPES, name);
}

/** `--name value` from argv, or undefined. */
export function option(argv: readonly string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** A positive integer option, or `fallback`; anything else is a usage error (thrown, with the option named). */
export function countOption(argv: readonly string[], name: string, fallback: number): number;
export function countOption(argv: readonly string[], name: string, fallback?: number): number | undefined;
export function countOption(argv: readonly string[], name: string, fallback?: number): number | undefined {
  const raw = option(argv, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} takes a whole number of at least 1, not ${JSON.stringify(raw)}`);
  return n;
}

/** `npm run bench -- --shape NAME [--layers N] [--quantization Q] [--batch B] [--seq S] [--steps N] [--backend webgpu|wasm]`. */
export function shapeCaseFromArgs(argv: readonly string[]): { case: ShapeCase; backends: ('webgpu' | 'wasm')[] } {
  const shape = option(argv, '--shape') ?? '';
  if (!isShapeName(shape)) throw new Error(`--shape takes one of ${Object.keys(SHAPES).join(', ')}, not ${JSON.stringify(shape)}`);
  const quantization = (option(argv, '--quantization') ?? 'none') as BaseQuantization;
  if (!BASE_QUANTIZATIONS.includes(quantization)) throw new Error(`--quantization takes one of ${BASE_QUANTIZATIONS.join(', ')}, not ${JSON.stringify(quantization)}`);
  const backend = option(argv, '--backend');
  if (backend !== undefined && backend !== 'webgpu' && backend !== 'wasm') throw new Error(`--backend takes webgpu or wasm, not ${JSON.stringify(backend)}`);
  return {
    case: {
      shape,
      layers: countOption(argv, '--layers'),
      quantization,
      // What a GPU-less machine can afford at real widths (SwiftShader emulates the GPU on the CPU).
      batch: countOption(argv, '--batch', 1),
      seq: countOption(argv, '--seq', 64),
      rank: 8,
      targets: null,
      steps: countOption(argv, '--steps', 2),
      warmup: 1,
    },
    backends: backend ? [backend] : ['webgpu', 'wasm'],
  };
}

/** Which model, at what depth and size, and the run's settings. */
export function shapeHeading(
  c: ShapeCase,
  config: Record<string, unknown>,
  model: Pick<SyntheticModel, 'parameters' | 'weightBytes'>,
  quantizations: string = c.quantization,
): string[] {
  const cfg = parseModelConfig(config);
  const published = parseModelConfig(SHAPES[c.shape]).numLayers;
  const layers = (n: number) => `${n} layer${n === 1 ? '' : 's'}`;
  const depth = cfg.numLayers === published ? layers(published) : `${cfg.numLayers} of its ${layers(published)}`;
  const dtype = config.torch_dtype === 'float32' ? 'F32' : 'BF16';
  const targets = c.targets ?? defaultTargetModules(cfg.arch);
  return [
    `${c.shape} at its real widths (hidden ${cfg.hiddenSize}, vocabulary ${cfg.vocabSize}), ${depth}: ` +
      `${(model.parameters / 1e6).toFixed(1)}M parameters, random ${dtype} weights, ${(model.weightBytes / 1e6).toFixed(0)} MB stored`,
    `batch ${c.batch} × seq ${c.seq}, LoRA r ${c.rank} on ${targets.join(', ')}, base_quantization ${quantizations}; ` +
      `${c.steps} timed step${c.steps === 1 ? '' : 's'} after ${c.warmup} warm-up; MB = 10⁶ bytes`,
  ];
}
