import { describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import {
  CONFIG_KEYS,
  configDiff,
  DEFAULT_CONFIG,
  editDistance,
  formatIssue,
  KEY_ALIASES,
  parseRunConfig,
  parseRunConfigYaml,
  PRESETS,
  resolveTargetModules,
  runConfigToYaml,
  runName,
  unwrapRunConfig,
  type ConfigIssue,
  type ConfigParseResult,
  type RunConfig,
} from '../../src/core/config';
import { failed, ok, thrown } from './support/config-results';

/** The documented example, verbatim (comments included). */
const EXAMPLE_YAML = `base_model: ./models/tiny-gpt2      # path (runner) or a stored model id/name (app)
train_data: ./data/train.txt        # string
val_data: ./data/val.txt            # optional string
val_split: 0                        # fraction held out when no val_data
output_dir: ./output/lr_1e-4        # run name = last path component
lora_rank: 8
lora_alpha: 16
lora_dropout: 0.05
target_modules: [c_attn]
use_rslora: false
learning_rate: 1e-4
lr_scheduler: cosine                # constant | linear | cosine
warmup_steps: 0
weight_decay: 0
max_grad_norm: 1.0                  # 0 = no clipping
epochs: 1
max_steps: 0                        # 0 = no limit
batch_size: 8
grad_accum_steps: 1
seq_len: 128
gradient_checkpointing: false
base_quantization: none
log_steps: 10
eval_steps: 0
save_steps: 0
sample_steps: 0
sample_prompts: []
early_stopping_patience: 0
seed: 42
backend: auto                       # auto | webgpu | wasm
`;

const EXAMPLE_CONFIG: RunConfig = {
  base_model: './models/tiny-gpt2',
  train_data: './data/train.txt',
  caption_extension: '.txt',
  val_data: './data/val.txt',
  val_split: 0,
  output_dir: './output/lr_1e-4',
  init_adapter: null,
  lora_rank: 8,
  lora_alpha: 16,
  lora_dropout: 0.05,
  target_modules: ['c_attn'],
  use_rslora: false,
  train_text_encoder: false,
  learning_rate: 0.0001,
  unet_lr: null,
  text_encoder_lr: null,
  lr_scheduler: 'cosine',
  warmup_steps: 0,
  weight_decay: 0,
  max_grad_norm: 1,
  epochs: 1,
  max_steps: 0,
  batch_size: 8,
  grad_accum_steps: 1,
  seq_len: 128,
  resolution: 512,
  flip_aug: false,
  noise_offset: 0,
  min_snr_gamma: 0,
  gradient_checkpointing: false,
  base_quantization: 'none',
  log_steps: 10,
  eval_steps: 0,
  eval_on_start: false,
  save_steps: 0,
  sample_steps: 0,
  sample_prompts: [],
  sample_guidance_scale: 7.5,
  sample_inference_steps: 20,
  sample_seed: null,
  early_stopping_patience: 0,
  export_merged: false,
  seed: 42,
  backend: 'auto',
};

function warningKeys(result: ConfigParseResult): string[] {
  return ok(result).warnings.map((w) => w.key);
}

describe('defaults', () => {
  it('has every key, in the documented order, with the documented defaults', () => {
    expect(DEFAULT_CONFIG).toEqual({
      ...EXAMPLE_CONFIG,
      base_model: '',
      train_data: '',
      val_data: null,
      output_dir: './output/run',
      target_modules: null,
    });
    expect(Object.keys(DEFAULT_CONFIG)).toEqual([...CONFIG_KEYS]);
    expect(CONFIG_KEYS).toEqual(Object.keys(EXAMPLE_CONFIG));
  });

  it('is what an empty config parses to, with no aliases or warnings', () => {
    const result = ok(parseRunConfig({}));
    expect(result.config).toEqual(DEFAULT_CONFIG);
    expect(result.aliases).toEqual([]);
    expect(result.warnings).toEqual([]);
    expect(ok(parseRunConfigYaml('')).config).toEqual(DEFAULT_CONFIG);
    expect(ok(parseRunConfigYaml('# only a comment\n')).config).toEqual(DEFAULT_CONFIG);
  });

  it('is frozen, arrays included', () => {
    expect(Object.isFrozen(DEFAULT_CONFIG)).toBe(true);
    expect(Object.isFrozen(DEFAULT_CONFIG.sample_prompts)).toBe(true);
  });

  it('a complete config passes through unchanged (the app form round trip)', () => {
    expect(ok(parseRunConfig({ ...EXAMPLE_CONFIG })).config).toEqual(EXAMPLE_CONFIG);
  });
});

describe('the documented example', () => {
  it('parses to exactly those values, with nothing to warn about', () => {
    const result = ok(parseRunConfigYaml(EXAMPLE_YAML, 'lr_1e-4.yaml'));
    expect(result.config).toEqual(EXAMPLE_CONFIG);
    expect(result.aliases).toEqual([]);
    expect(result.warnings).toEqual([]);
  });
});

describe('aliases', () => {
  // [alias, value written, canonical key, value expected]
  const cases: [string, unknown, keyof RunConfig, unknown][] = [
    // LLaMA-Factory
    ['num_train_epochs', 3, 'epochs', 3],
    ['per_device_train_batch_size', 4, 'batch_size', 4],
    ['gradient_accumulation_steps', 8, 'grad_accum_steps', 8],
    ['logging_steps', 5, 'log_steps', 5],
    ['lora_target', 'q_proj,v_proj', 'target_modules', ['q_proj', 'v_proj']],
    ['cutoff_len', 512, 'seq_len', 512],
    ['val_size', 0.1, 'val_split', 0.1],
    ['lr_scheduler_type', 'linear', 'lr_scheduler', 'linear'],
    ['model_name_or_path', 'HuggingFaceTB/SmolLM-135M', 'base_model', 'HuggingFaceTB/SmolLM-135M'],
    // kohya
    ['network_dim', 32, 'lora_rank', 32],
    ['network_alpha', 64, 'lora_alpha', 64],
    ['network_dropout', 0.1, 'lora_dropout', 0.1],
    ['max_train_epochs', 2, 'epochs', 2],
    ['train_batch_size', 2, 'batch_size', 2],
    ['lr_warmup_steps', 7, 'warmup_steps', 7],
    ['max_train_steps', 100, 'max_steps', 100],
    ['save_every_n_steps', 50, 'save_steps', 50],
    ['sample_every_n_steps', 25, 'sample_steps', 25],
    ['pretrained_model_name_or_path', './models/gpt2', 'base_model', './models/gpt2'],
    ['train_data_dir', './train/aki', 'train_data', './train/aki'],
    ['caption_extention', '.caption', 'caption_extension', '.caption'],
    // The one alias that means the opposite of its key.
    ['network_train_unet_only', true, 'train_text_encoder', false],
  ];

  it.each(cases)('%s maps to its key and is reported', (alias, value, key, expected) => {
    const result = ok(parseRunConfig({ [alias]: value }));
    expect(result.config[key]).toEqual(expected);
    expect(result.aliases).toEqual([{ from: alias, to: key }]);
  });

  it('the table holds exactly the aliases tested above', () => {
    expect([...KEY_ALIASES.keys()].sort()).toEqual(cases.map(([alias]) => alias).sort());
  });

  it('names shared with LLaMA-Factory and kohya are canonical, not aliases', () => {
    const shared = {
      learning_rate: 2e-4,
      lora_rank: 16,
      lora_alpha: 32,
      lora_dropout: 0.1,
      warmup_steps: 10,
      max_grad_norm: 0.5,
      weight_decay: 0.01,
      seed: 7,
      output_dir: 'saves/x',
      lr_scheduler: 'linear',
      max_steps: 10,
      use_rslora: true,
    };
    const result = ok(parseRunConfig(shared));
    expect(result.aliases).toEqual([]);
    expect(result.config).toMatchObject(shared);
  });

  it('reads a LLaMA-Factory style YAML file and reports each alias in file order', () => {
    const yaml = [
      'model_name_or_path: ./models/smollm',
      'lora_target: all',
      'per_device_train_batch_size: 2',
      'gradient_accumulation_steps: 8',
      'learning_rate: 1.0e-4',
      'num_train_epochs: 3.0',
      'lr_scheduler_type: cosine',
      'cutoff_len: 1024',
      'logging_steps: 10',
      'val_size: 0.1',
      'output_dir: saves/smollm/lora/sft',
    ].join('\n');
    const result = ok(parseRunConfigYaml(yaml));
    expect(result.config).toMatchObject({
      base_model: './models/smollm',
      target_modules: 'all-linear',
      batch_size: 2,
      grad_accum_steps: 8,
      learning_rate: 1e-4,
      epochs: 3,
      lr_scheduler: 'cosine',
      seq_len: 1024,
      log_steps: 10,
      val_split: 0.1,
    });
    expect(runName(result.config)).toBe('sft');
    expect(result.aliases.map((a) => `${a.from} → ${a.to}`)).toEqual([
      'model_name_or_path → base_model',
      'lora_target → target_modules',
      'per_device_train_batch_size → batch_size',
      'gradient_accumulation_steps → grad_accum_steps',
      'num_train_epochs → epochs',
      'lr_scheduler_type → lr_scheduler',
      'cutoff_len → seq_len',
      'logging_steps → log_steps',
      'val_size → val_split',
    ]);
  });

  it("reads constant_with_warmup as constant, with a warning", () => {
    const result = ok(parseRunConfig({ lr_scheduler_type: 'constant_with_warmup', warmup_steps: 10 }));
    expect(result.config.lr_scheduler).toBe('constant');
    expect(result.warnings.map((w) => w.key)).toEqual(['lr_scheduler']);
  });
});

describe('target_modules forms', () => {
  it.each([
    ['q_proj,v_proj', ['q_proj', 'v_proj']],
    [' q_proj , v_proj ,', ['q_proj', 'v_proj']],
    ['c_attn', ['c_attn']],
    ['all', 'all-linear'],
    ['all-linear', 'all-linear'],
    [['q_proj', 'k_proj', 'v_proj', 'o_proj'], ['q_proj', 'k_proj', 'v_proj', 'o_proj']],
    [['mlp.down_proj'], ['mlp.down_proj']],
  ])('lora_target %j → %j', (written, expected) => {
    expect(ok(parseRunConfig({ lora_target: written })).config.target_modules).toEqual(expected);
    expect(ok(parseRunConfig({ target_modules: written })).config.target_modules).toEqual(expected);
  });

  it('null means "the model\'s default", resolved per architecture', () => {
    expect(ok(parseRunConfig({ target_modules: null })).config.target_modules).toBeNull();
    expect(resolveTargetModules(DEFAULT_CONFIG, 'gpt2')).toEqual(['c_attn']);
    expect(resolveTargetModules(DEFAULT_CONFIG, 'llama')).toEqual(['q_proj', 'v_proj']);
  });

  it('an explicit choice wins over the default, and comes back as a fresh array', () => {
    const config = ok(parseRunConfig({ target_modules: ['q_proj', 'k_proj'] })).config;
    const resolved = resolveTargetModules(config, 'llama');
    expect(resolved).toEqual(['q_proj', 'k_proj']);
    (resolved as string[]).push('v_proj');
    expect(config.target_modules).toEqual(['q_proj', 'k_proj']);
    expect(resolveTargetModules({ target_modules: 'all-linear' }, 'gpt2')).toBe('all-linear');
  });

  it.each([[''], [[]], [['q proj']], [[3]], ['q_proj;v_proj']])('refuses %j', (written) => {
    const issues = failed(parseRunConfig({ lora_target: written })).issues;
    expect(issues).toHaveLength(1);
    expect(issues[0]?.key).toBe('target_modules');
    expect(issues[0]?.message).toContain('(written as lora_target)');
  });
});

describe('the same key written twice', () => {
  it('is an error naming both names and both values when they disagree', () => {
    const issues = failed(parseRunConfig({ epochs: 3, num_train_epochs: 5 })).issues;
    expect(issues).toEqual([{ key: 'epochs', message: expect.stringContaining('epochs: 3') }]);
    expect(issues[0]?.message).toContain('num_train_epochs: 5');
  });

  it('also between two aliases of different tools', () => {
    const issues = failed(parseRunConfig({ num_train_epochs: 2, max_train_epochs: 4 })).issues;
    expect(issues.map((i) => i.key)).toEqual(['epochs']);
    expect(issues[0]?.message).toMatch(/num_train_epochs: 2.*max_train_epochs: 4/);
  });

  it('is fine when they agree once coerced, and the alias is still reported', () => {
    const result = ok(parseRunConfig({ lora_alpha: 16, network_alpha: '16', target_modules: ['q_proj', 'v_proj'], lora_target: 'q_proj,v_proj' }));
    expect(result.config.lora_alpha).toBe(16);
    expect(result.config.target_modules).toEqual(['q_proj', 'v_proj']);
    expect(result.aliases).toEqual([
      { from: 'network_alpha', to: 'lora_alpha' },
      { from: 'lora_target', to: 'target_modules' },
    ]);
  });

  it('YAML duplicate keys are refused by the YAML parser, with the line', () => {
    const issues = failed(parseRunConfigYaml('lora_rank: 8\nseed: 1\nlora_rank: 16\n')).issues;
    expect(issues[0]).toMatchObject({ key: '', line: 3 });
  });
});

describe('unknown keys', () => {
  it.each([
    ['lora_rnak', 'lora_rank'],
    ['learning_rat', 'learning_rate'],
    ['Learning_Rate', 'learning_rate'],
    ['batchsize', 'batch_size'],
    ['warmup_step', 'warmup_steps'],
    ['lr_sheduler', 'lr_scheduler'],
  ])('%s suggests %s', (typo, known) => {
    const issues = failed(parseRunConfig({ [typo]: 1 })).issues;
    expect(issues).toEqual([{ key: typo, message: `unknown key — did you mean ${known}?` }]);
    expect(formatIssue(issues[0]!)).toBe(`${typo}: unknown key — did you mean ${known}?`);
  });

  it('a near-miss of an alias suggests the alias and says what it stands for', () => {
    const issues = failed(parseRunConfig({ num_train_epoch: 3 })).issues;
    expect(issues[0]?.message).toBe("unknown key — did you mean num_train_epochs (LLaMA-Factory's name for epochs)?");
  });

  it('suggests nothing when no key is close', () => {
    const issues = failed(parseRunConfig({ finetuning_type: 'lora', bf16: true })).issues;
    expect(issues).toEqual([
      { key: 'finetuning_type', message: 'unknown key' },
      { key: 'bf16', message: 'unknown key' },
    ]);
  });

  it('does not mistake Object.prototype names for keys', () => {
    const issues = failed(parseRunConfig(JSON.parse('{"constructor": 1, "toString": 2, "__proto__": 3}'))).issues;
    expect(issues.map((i) => i.key).sort()).toEqual(['__proto__', 'constructor', 'toString']);
  });

  it('edit distance counts a swap of neighbours as one edit', () => {
    expect(editDistance('lora_rnak', 'lora_rank')).toBe(1);
    expect(editDistance('seed', 'seed')).toBe(0);
    expect(editDistance('', 'abc')).toBe(3);
    expect(editDistance('kitten', 'sitting')).toBe(3);
  });
});

describe('bad values', () => {
  // [key, bad value, how the value is shown, part of the allowed range]
  const cases: [keyof RunConfig, unknown, string, string][] = [
    ['lora_rank', 0, '0', 'from 1 to 256'],
    ['lora_rank', 300, '300', 'from 1 to 256'],
    ['lora_rank', 8.5, '8.5', 'integer'],
    ['lora_rank', 'eight', '"eight"', 'integer'],
    ['lora_alpha', 0, '0', 'above 0'],
    ['lora_alpha', -16, '-16', 'above 0'],
    ['lora_dropout', 0.95, '0.95', 'from 0 to 0.9'],
    ['val_split', 0.6, '0.6', 'from 0 to 0.5'],
    ['learning_rate', -1e-4, '-0.0001', 'from 0 to 1'],
    ['learning_rate', 2, '2', 'from 0 to 1'],
    ['learning_rate', '1e-4x', '"1e-4x"', 'from 0 to 1'],
    ['learning_rate', Number.POSITIVE_INFINITY, 'Infinity', 'from 0 to 1'],
    ['lr_scheduler', 'polynomial', '"polynomial"', 'constant, linear, cosine'],
    ['backend', 'cuda', '"cuda"', 'auto, webgpu, wasm'],
    ['use_rslora', 'yes', '"yes"', 'true or false'],
    ['gradient_checkpointing', 1, '1', 'true or false'],
    ['epochs', 1.5, '1.5', 'whole number'],
    ['epochs', -1, '-1', 'whole number'],
    ['epochs', '-2', '"-2"', 'whole number'],
    ['max_steps', -5, '-5', 'whole number'],
    ['warmup_steps', 2.5, '2.5', 'whole number'],
    ['batch_size', 0, '0', 'from 1 to 1024'],
    ['grad_accum_steps', 0, '0', 'from 1 to 1024'],
    ['seq_len', 1, '1', 'from 2 to 8192'],
    ['seq_len', 100_000, '100000', 'from 2 to 8192'],
    ['max_grad_norm', -1, '-1', '0 or more'],
    ['weight_decay', 1.5, '1.5', 'from 0 to 1'],
    ['seed', -1, '-1', 'from 0 to 4294967295'],
    ['log_steps', 2.5, '2.5', 'whole number'],
    ['eval_steps', -1, '-1', 'whole number'],
    ['early_stopping_patience', 'three', '"three"', 'whole number'],
    ['sample_prompts', 'Once upon a time', '"Once upon a time"', 'list of strings'],
    ['sample_prompts', [1, 2], '[1,2]', 'list of strings'],
    ['target_modules', [], '[]', 'non-empty list'],
    ['output_dir', '', '""', 'last component'],
    ['output_dir', './', '"./"', 'last component'],
    ['base_model', 5, '5', 'a string'],
    ['val_data', 3, '3', 'a string'],
  ];

  it.each(cases)('%s = %j names the key, the value and what is allowed', (key, value, shown, allowed) => {
    const issues = failed(parseRunConfig({ [key]: value })).issues;
    expect(issues).toHaveLength(1);
    expect(issues[0]?.key).toBe(key);
    expect(issues[0]?.message).toContain(`got ${shown}`);
    expect(issues[0]?.message).toContain(allowed);
    const error = thrown(() => unwrapRunConfig(parseRunConfig({ [key]: value })));
    expect(error.subject).toBe(key);
    expect(error.message.startsWith(`${key}: must be `)).toBe(true);
  });

  it('an empty YAML value says how to get the default', () => {
    const issues = failed(parseRunConfigYaml('lora_rank:\n')).issues;
    expect(issues[0]?.key).toBe('lora_rank');
    expect(issues[0]?.message).toContain('got null');
    expect(issues[0]?.message).toContain('the default (8)');
  });

  it('a bad value written under an alias says so', () => {
    const issues = failed(parseRunConfig({ network_dim: 1000 })).issues;
    expect(issues).toEqual([{ key: 'lora_rank', message: 'must be an integer from 1 to 256, got 1000 (written as network_dim)' }]);
  });

  it('learning_rate 0 is allowed (to diagnose "not learning") but warned about', () => {
    const result = ok(parseRunConfig({ learning_rate: 0 }));
    expect(result.config.learning_rate).toBe(0);
    expect(result.warnings.map((w) => w.key)).toEqual(['learning_rate']);
  });
});

describe('numeric strings', () => {
  it.each([
    ['1e-4', 1e-4],
    ['2E-4', 2e-4],
    [' 5e-5 ', 5e-5],
    ['0.0003', 3e-4],
    ['.001', 1e-3],
    ['1.0e-4', 1e-4],
  ])('learning_rate %j reads as %d', (written, expected) => {
    expect(ok(parseRunConfig({ learning_rate: written })).config.learning_rate).toBe(expected);
  });

  it('quoted values in YAML read as numbers for every numeric key', () => {
    const yaml = [
      'learning_rate: "2e-4"',
      "lora_rank: '16'",
      'lora_alpha: "32"',
      'network_dropout: "0.1"',
      'epochs: "3"',
      'seed: "1234"',
      'val_split: "0.1"',
    ].join('\n');
    const config = ok(parseRunConfigYaml(yaml)).config;
    expect(config).toMatchObject({ learning_rate: 2e-4, lora_rank: 16, lora_alpha: 32, lora_dropout: 0.1, epochs: 3, seed: 1234, val_split: 0.1 });
  });

  it('unquoted YAML 1.2 exponents are numbers already', () => {
    expect(ok(parseRunConfigYaml('learning_rate: 1e-4\n')).config.learning_rate).toBe(1e-4);
    expect(ok(parseRunConfigYaml('learning_rate: 2.5e-5\n')).config.learning_rate).toBe(2.5e-5);
  });

  it('a quoted non-integer is still refused for an integer key', () => {
    const issues = failed(parseRunConfig({ lora_rank: '8.5' })).issues;
    expect(issues[0]).toEqual({ key: 'lora_rank', message: 'must be an integer from 1 to 256, got "8.5"' });
  });

  it('a leading sign is part of the number', () => {
    expect(ok(parseRunConfig({ lora_rank: '+8' })).config.lora_rank).toBe(8);
  });

  it('strings are not coerced for string keys', () => {
    expect(ok(parseRunConfig({ base_model: '42' })).config.base_model).toBe('42');
  });
});

describe('every problem is reported', () => {
  it('collects unknown keys, bad values and conflicts together, in order', () => {
    const input = { lora_rnak: 8, lora_rank: 0, learning_rate: 'fast', epochs: 2, num_train_epochs: 3, backend: 'cuda' };
    const issues = failed(parseRunConfig(input)).issues;
    expect(issues.map((i) => i.key)).toEqual(['lora_rnak', 'lora_rank', 'learning_rate', 'epochs', 'backend']);
  });

  it('throws one UserError that lists them all', () => {
    const result = parseRunConfigYaml('lora_rnak: 8\nlora_rank: 0\nbackend: cuda\n', 'run.yaml');
    const error = thrown(() => unwrapRunConfig(result));
    expect(error.subject).toBe('run.yaml');
    expect(error.problem).toBe(
      [
        '3 problems:',
        '- line 1: lora_rnak: unknown key — did you mean lora_rank?',
        '- line 2: lora_rank: must be an integer from 1 to 256, got 0',
        '- line 3: backend: must be one of auto, webgpu, wasm, got "cuda"',
      ].join('\n'),
    );
  });

  it('a single YAML issue names the key and the file line', () => {
    const error = thrown(() => unwrapRunConfig(parseRunConfigYaml('seed: 1\nlora_rank: 0\n', 'run.yaml')));
    expect(error.subject).toBe('lora_rank');
    expect(error.problem).toBe('must be an integer from 1 to 256, got 0 (run.yaml line 2)');
  });

  it('returns the config, aliases and warnings when there is nothing wrong', () => {
    const { config, aliases, warnings } = unwrapRunConfig(parseRunConfig({ network_dim: 4 }));
    expect(config.lora_rank).toBe(4);
    expect(aliases).toEqual([{ from: 'network_dim', to: 'lora_rank' }]);
    expect(warnings).toEqual([]);
  });
});

describe('cross-field rules', () => {
  it('epochs 0 needs max_steps', () => {
    expect(failed(parseRunConfig({ epochs: 0 })).issues.map((i) => i.key)).toEqual(['epochs']);
    expect(ok(parseRunConfig({ epochs: 0, max_steps: 100 })).config.max_steps).toBe(100);
  });

  it('warmup_steps may not exceed max_steps', () => {
    const issues = failed(parseRunConfig({ max_steps: 50, warmup_steps: 60 })).issues;
    expect(issues).toHaveLength(1);
    expect(issues[0]?.key).toBe('warmup_steps');
    expect(issues[0]?.message).toContain('60');
    expect(issues[0]?.message).toContain('50');
    expect(ok(parseRunConfig({ max_steps: 50, warmup_steps: 50 })).config.warmup_steps).toBe(50);
    // Without max_steps the number of steps is only known once the data is tokenized.
    expect(ok(parseRunConfig({ warmup_steps: 1000 })).config.warmup_steps).toBe(1000);
  });

  it('are not checked against a value that is itself bad or conflicting', () => {
    expect(failed(parseRunConfig({ epochs: 0, max_steps: 5, max_train_steps: 6 })).issues.map((i) => i.key)).toEqual(['max_steps']);
    expect(failed(parseRunConfig({ warmup_steps: 10, max_steps: -1 })).issues.map((i) => i.key)).toEqual(['max_steps']);
  });

  it('are reported alongside per-key problems', () => {
    const issues = failed(parseRunConfig({ epochs: 0, max_steps: 0, lora_rank: -1 })).issues;
    expect(issues.map((i) => i.key)).toEqual(['lora_rank', 'epochs']);
  });

  it('require makes the runner\'s paths mandatory', () => {
    const issues = failed(parseRunConfig({}, { require: ['base_model', 'train_data'] })).issues;
    expect(issues.map((i) => i.key)).toEqual(['base_model', 'train_data']);
    expect(ok(parseRunConfig({ base_model: 'm', train_data: 't' }, { require: ['base_model', 'train_data'] })).config.base_model).toBe('m');
  });
});

describe('warnings', () => {
  it.each<[Record<string, unknown>, string[]]>([
    [{ learning_rate: 0.05 }, ['learning_rate']],
    [{ lora_rank: 8, lora_alpha: 64 }, ['lora_alpha']],
    [{ lora_rank: 64, lora_alpha: 8 }, ['lora_alpha']],
    [{ lora_rank: 64, lora_alpha: 16 }, []],
    [{ max_steps: 100, epochs: 3 }, ['epochs']],
    [{ max_steps: 100 }, []],
    [{ eval_steps: 50 }, ['eval_steps']],
    [{ eval_steps: 50, val_split: 0.1 }, []],
    [{ early_stopping_patience: 2 }, ['early_stopping_patience']],
    [{ early_stopping_patience: 2, val_data: 'val.txt' }, []],
    [{ val_data: 'val.txt', val_split: 0.2 }, ['val_split']],
    [{ sample_steps: 10 }, ['sample_steps']],
    [{ sample_steps: 10, sample_prompts: ['Hello'] }, []],
    [{ log_steps: 0 }, ['log_steps']],
  ])('%j warns about %j', (input, keys) => {
    expect(warningKeys(parseRunConfig(input))).toEqual(keys);
  });

  it('carry the line of the key in YAML', () => {
    const warnings: readonly ConfigIssue[] = ok(parseRunConfigYaml('seed: 1\nlearning_rate: 0.5\n')).warnings;
    expect(warnings).toEqual([{ key: 'learning_rate', message: expect.stringContaining('0.5'), line: 2, col: 1 }]);
  });

  it('an empty val_data reads as none', () => {
    expect(ok(parseRunConfig({ val_data: '' })).config.val_data).toBeNull();
  });
});

describe('YAML text', () => {
  it('a syntax error is one whole-file issue with its line and column', () => {
    const text = 'lora_rank: 8\nseed: 1\ntarget_modules: [c_attn\nepochs: 2\n';
    const issues = failed(parseRunConfigYaml(text, 'broken.yaml')).issues;
    expect(issues.length).toBeGreaterThan(0);
    expect(issues[0]?.key).toBe('');
    expect(issues[0]?.line).toBeGreaterThanOrEqual(3);
    expect(issues[0]?.message).toMatch(/^not valid YAML at line \d+, column \d+: /);
    expect(issues[0]?.message).toContain(`line ${issues[0]?.line}`);
    const error = thrown(() => unwrapRunConfig(parseRunConfigYaml(text, 'broken.yaml')));
    expect(error.subject).toBe('broken.yaml');
  });

  it('a missing colon points at its line', () => {
    const issues = failed(parseRunConfigYaml('seed: 1\nlora_rank: 8\nlora_alpha 16\nepochs: 1\n')).issues;
    expect(issues[0]).toMatchObject({ key: '', line: 3, col: 1 });
  });

  it('a document that is not a mapping is refused', () => {
    expect(failed(parseRunConfigYaml('- lora_rank\n- 8\n')).issues).toEqual([
      { key: '', message: 'the config must be a mapping of key: value pairs, got a list' },
    ]);
    expect(failed(parseRunConfigYaml('just text\n')).issues[0]?.message).toContain('got a string');
    expect(failed(parseRunConfig(null as unknown as Record<string, unknown>)).issues[0]?.key).toBe('');
  });

  it('issues carry the line and column of the key', () => {
    const issues = failed(parseRunConfigYaml('seed: 1\n\n# comment\n  \nlora_rnak: 8\nbatch_size: 0\n')).issues;
    expect(issues).toMatchObject([
      { key: 'lora_rnak', line: 5, col: 1 },
      { key: 'batch_size', line: 6, col: 1 },
    ]);
  });
});

describe('runConfigToYaml', () => {
  it('round trips YAML → config → YAML → config', () => {
    const config = ok(parseRunConfigYaml(EXAMPLE_YAML)).config;
    const yaml = runConfigToYaml(config);
    const again = ok(parseRunConfigYaml(yaml));
    expect(again.config).toEqual(config);
    expect(again.warnings).toEqual([]);
    expect(runConfigToYaml(again.config)).toBe(yaml);
  });

  it('writes canonical keys in the documented order, each with a comment', () => {
    const yaml = runConfigToYaml(EXAMPLE_CONFIG);
    const doc = parseDocument(yaml).toJS() as Record<string, unknown>;
    expect(Object.keys(doc)).toEqual([...CONFIG_KEYS]);
    const keyLines = yaml.split('\n').filter((line) => /^[a-z_]+:/.test(line));
    expect(keyLines).toHaveLength(CONFIG_KEYS.length);
    for (const line of keyLines) expect(line).toMatch(/ {2,}# \S/);
    expect(yaml).toContain('learning_rate: 1e-4 ');
    expect(yaml).toContain('target_modules: [c_attn] ');
    expect(yaml).toContain('output_dir: ./output/lr_1e-4 ');
  });

  it('round trips awkward values exactly', () => {
    const config: RunConfig = {
      ...DEFAULT_CONFIG,
      base_model: 'null',
      train_data: '',
      val_data: 'C:\\data\\val #1.txt',
      output_dir: './out/lr: 2e-4',
      target_modules: ['q_proj', 'v_proj', 'mlp.down_proj'],
      learning_rate: 2.5e-5,
      lora_alpha: 0.1 + 0.2,
      lora_dropout: 0,
      sample_prompts: ['Once upon a time', 'Q: what is 2+2?\nA:', '"quoted" and \'single\'', 'true', '8', '', '  padded  ', 'café — ☃'],
      lr_scheduler: 'linear',
      backend: 'wasm',
      use_rslora: true,
      gradient_checkpointing: true,
      seed: 4294967295,
    };
    expect(ok(parseRunConfigYaml(runConfigToYaml(config))).config).toEqual(config);
    const allLinear = { ...DEFAULT_CONFIG, target_modules: 'all-linear' as const };
    expect(ok(parseRunConfigYaml(runConfigToYaml(allLinear))).config).toEqual(allLinear);
    expect(ok(parseRunConfigYaml(runConfigToYaml(DEFAULT_CONFIG))).config).toEqual(DEFAULT_CONFIG);
  });
});

describe('configDiff', () => {
  it('lists the keys that differ, in canonical order', () => {
    const a = ok(parseRunConfig({ output_dir: './output/lr_1e-4', learning_rate: 1e-4 })).config;
    const b = ok(parseRunConfig({ output_dir: './output/lr_2e-4', learning_rate: '2e-4' })).config;
    expect(configDiff(a, b)).toEqual([
      { key: 'output_dir', a: './output/lr_1e-4', b: './output/lr_2e-4' },
      { key: 'learning_rate', a: 1e-4, b: 2e-4 },
    ]);
  });

  it('compares lists by value and finds nothing between equal configs', () => {
    const a = ok(parseRunConfig({ target_modules: ['q_proj', 'v_proj'], sample_prompts: ['x'] })).config;
    const b = ok(parseRunConfig({ lora_target: 'q_proj,v_proj', sample_prompts: ['x'] })).config;
    expect(configDiff(a, b)).toEqual([]);
    expect(configDiff(DEFAULT_CONFIG, { ...DEFAULT_CONFIG })).toEqual([]);
    const c = { ...a, target_modules: ['q_proj'] };
    expect(configDiff(a, c)).toEqual([{ key: 'target_modules', a: ['q_proj', 'v_proj'], b: ['q_proj'] }]);
  });
});

describe('runName', () => {
  it.each([
    ['./output/lr_1e-4', 'lr_1e-4'],
    ['./output/lr_2e-4/', 'lr_2e-4'],
    ['runs\\style\\r16', 'r16'],
    ['my-run', 'my-run'],
    ['/abs/path/x/.', 'x'],
  ])('%s → %s', (outputDir, name) => {
    expect(runName({ output_dir: outputDir })).toBe(name);
  });

  it('the default config has a name', () => {
    expect(runName(DEFAULT_CONFIG)).toBe('run');
  });
});

describe('presets', () => {
  it('are the three documented ones', () => {
    expect(PRESETS.map((p) => p.id)).toEqual(['quick-try', 'style', 'instruction-tune']);
    for (const preset of PRESETS) {
      expect(preset.label.length).toBeGreaterThan(0);
      expect(preset.description.length).toBeGreaterThan(0);
    }
  });

  it.each(PRESETS.map((p) => [p.id, p] as const))('%s is valid under the schema, without warnings', (_id, preset) => {
    for (const key of Object.keys(preset.values)) expect(CONFIG_KEYS).toContain(key);
    const result = ok(parseRunConfig({ ...DEFAULT_CONFIG, ...preset.values }));
    expect(result.warnings).toEqual([]);
    expect(result.config).toMatchObject(preset.values);
    // None of them touches the chosen model, data or run name.
    expect(preset.values).not.toHaveProperty('base_model');
    expect(preset.values).not.toHaveProperty('train_data');
    expect(preset.values).not.toHaveProperty('output_dir');
  });
});
