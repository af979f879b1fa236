import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  CONFIG_KEYS,
  DEFAULT_CONFIG,
  imageTrainingOf,
  parsePromptLine,
  parseRunConfig,
  parseRunConfigYaml,
  resolveTargetModules,
  runConfigToYaml,
  runName,
  samplePromptsOf,
  unwrapRunConfig,
  type RunConfig,
} from '../../src/core/config';
import { parseSweepYaml } from '../../src/core/config/sweep';
import { failed, ok, thrown } from './support/config-results';

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), '../../../shared/fixtures/sd');

/** A safetensors file's header: tensor name → shape (the format's 8-byte length, then JSON). */
function tensorShapes(path: string): Map<string, number[]> {
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString('utf8')) as Record<string, { shape?: number[] }>;
  return new Map(Object.entries(header).flatMap(([name, t]) => (t.shape ? [[name, t.shape] as [string, number[]]] : [])));
}

describe('image-run keys: defaults', () => {
  it('are what an empty config parses to', () => {
    expect(DEFAULT_CONFIG).toMatchObject({
      resolution: 512,
      flip_aug: false,
      caption_extension: '.txt',
      noise_offset: 0,
      min_snr_gamma: 0,
      unet_lr: null,
      text_encoder_lr: null,
      train_text_encoder: false,
      sample_guidance_scale: 7.5,
      sample_inference_steps: 20,
      sample_seed: null,
    });
    expect(ok(parseRunConfig({})).warnings).toEqual([]);
  });
});

describe('image-run keys: values', () => {
  // [key, written, read as]
  const accepted: [keyof RunConfig, unknown, unknown][] = [
    ['resolution', 512, 512],
    ['resolution', '768', 768],
    ['resolution', '512,512', 512],
    ['resolution', ' 640 , 640 ', 640],
    ['resolution', [1024, 1024], 1024],
    ['resolution', 32, 32],
    ['resolution', 2048, 2048],
    ['flip_aug', true, true],
    ['caption_extension', '.caption', '.caption'],
    ['caption_extension', '.wd14.txt', '.wd14.txt'],
    ['noise_offset', 0.1, 0.1],
    ['noise_offset', '0.05', 0.05],
    ['noise_offset', 1, 1],
    ['min_snr_gamma', 5, 5],
    ['min_snr_gamma', 0, 0],
    ['unet_lr', 1e-4, 1e-4],
    ['unet_lr', '1e-4', 1e-4],
    ['unet_lr', null, null],
    ['unet_lr', '', null],
    ['text_encoder_lr', 5e-5, 5e-5],
    ['text_encoder_lr', 0, 0],
    ['train_text_encoder', true, true],
    ['sample_guidance_scale', 1, 1],
    ['sample_guidance_scale', '7', 7],
    ['sample_guidance_scale', 50, 50],
    ['sample_inference_steps', 1, 1],
    ['sample_inference_steps', 150, 150],
    ['sample_seed', 0, 0],
    ['sample_seed', 4294967295, 4294967295],
    ['sample_seed', null, null],
  ];

  it.each(accepted)('%s: %j reads as %j', (key, written, expected) => {
    const result = ok(parseRunConfig({ [key]: written }));
    expect(result.config[key]).toEqual(expected);
    expect(result.aliases).toEqual([]);
  });

  // [key, bad value, part of the message that says what is allowed]
  const refused: [keyof RunConfig, unknown, string][] = [
    ['resolution', 16, 'a multiple of 8 from 32 to 2048'],
    ['resolution', 2056, 'a multiple of 8 from 32 to 2048'],
    ['resolution', 500, 'a multiple of 8'],
    ['resolution', 512.5, 'a multiple of 8'],
    ['resolution', 'big', '"W,H" with W = H'],
    ['resolution', '512,512,512', '"W,H" with W = H'],
    ['flip_aug', 'yes', 'true or false'],
    ['caption_extension', 'txt', 'with its dot'],
    ['caption_extension', '', 'with its dot'],
    ['caption_extension', '../x.txt', 'with its dot'],
    ['noise_offset', -0.1, 'from 0 to 1'],
    ['noise_offset', 1.5, 'from 0 to 1'],
    ['min_snr_gamma', -1, 'from 0 to 1000'],
    ['unet_lr', 2, 'from 0 to 1, or null'],
    ['unet_lr', 'fast', 'from 0 to 1, or null'],
    ['text_encoder_lr', -1e-5, 'from 0 to 1, or null'],
    ['train_text_encoder', 1, 'true or false'],
    ['sample_guidance_scale', 0.5, 'from 1 to 50'],
    ['sample_guidance_scale', 51, 'from 1 to 50'],
    ['sample_inference_steps', 0, 'from 1 to 150'],
    ['sample_inference_steps', 151, 'from 1 to 150'],
    ['sample_inference_steps', 20.5, 'integer'],
    ['sample_seed', -1, 'from 0 to 4294967295, or null'],
    ['sample_seed', 1.5, 'from 0 to 4294967295, or null'],
  ];

  it.each(refused)('%s: %j is refused, naming the key and what is allowed', (key, value, allowed) => {
    const issues = failed(parseRunConfig({ [key]: value })).issues;
    expect(issues).toHaveLength(1);
    expect(issues[0]?.key).toBe(key);
    expect(issues[0]?.message).toContain(`got ${JSON.stringify(value)}`);
    expect(issues[0]?.message).toContain(allowed);
  });

  it('a non-square "W,H" resolution says that only square training is supported, and what to write', () => {
    const result = parseRunConfigYaml('seed: 1\nresolution: "512,768"\n', 'kohya.yaml');
    expect(failed(result).issues).toEqual([
      {
        key: 'resolution',
        message:
          'is 512×768, but only square training is supported: every image is scaled and center-cropped to resolution × resolution. Give one size, e.g. resolution: 512',
        line: 2,
        col: 1,
      },
    ]);
    const error = thrown(() => unwrapRunConfig(result));
    expect(error.subject).toBe('resolution');
    expect(error.problem).toContain('(kohya.yaml line 2)');
    expect(failed(parseRunConfig({ resolution: [768, 512] })).issues[0]?.message).toMatch(/^is 768×512, but only square training/);
  });
});

describe('network_train_unet_only: kohya\'s inverse of train_text_encoder', () => {
  it.each([
    [true, false],
    [false, true],
  ])('network_train_unet_only: %s is train_text_encoder: %s', (written, expected) => {
    const result = ok(parseRunConfig({ network_train_unet_only: written }));
    expect(result.config.train_text_encoder).toBe(expected);
    expect(result.aliases).toEqual([{ from: 'network_train_unet_only', to: 'train_text_encoder' }]);
  });

  it('agrees with train_text_encoder when they mean the same, and conflicts (quoting the file) when not', () => {
    expect(ok(parseRunConfig({ train_text_encoder: true, network_train_unet_only: false })).config.train_text_encoder).toBe(true);
    const issues = failed(parseRunConfig({ train_text_encoder: true, network_train_unet_only: true })).issues;
    expect(issues).toEqual([
      {
        key: 'train_text_encoder',
        message: 'given twice with different values (train_text_encoder: true and network_train_unet_only: true); keep one',
      },
    ]);
  });

  it('a non-boolean is reported as written', () => {
    expect(failed(parseRunConfig({ network_train_unet_only: 'yes' })).issues).toEqual([
      { key: 'train_text_encoder', message: 'must be true or false, got "yes" (written as network_train_unet_only)' },
    ]);
  });

  it('a sweep over it is turned round too', () => {
    const yaml = ['base_model: ./sd', 'train_data: ./imgs', 'output_dir: ./output/te', 'sweep: {network_train_unet_only: [true, false]}'].join('\n');
    const result = parseSweepYaml(yaml, 'run.yaml');
    if (!result.ok || !result.sweep) throw new Error('expected a sweep');
    expect(result.sweep.runs.map((r) => r.config.train_text_encoder)).toEqual([false, true]);
  });
});

describe('kohya settings without a key of their own', () => {
  // [setting, value, note or issue, part of the message]
  const cases: [string, unknown, 'note' | 'issue', string][] = [
    ['optimizer_type', 'AdamW', 'note', 'AdamW is the optimizer'],
    ['optimizer_type', 'AdamW8bit', 'note', 'runs as AdamW with 32-bit optimizer state'],
    ['optimizer_type', 'adamw8bit', 'note', 'runs as AdamW'],
    ['optimizer_type', 'Lion', 'issue', '"Lion" is not available: LoRA Lab trains with AdamW'],
    ['optimizer_type', 'Prodigy', 'issue', 'Write optimizer_type: AdamW'],
    ['mixed_precision', 'fp16', 'note', 'is ignored: the LoRA weights'],
    ['mixed_precision', 'bf16', 'note', 'float32'],
    ['mixed_precision', 'fp64', 'issue', 'must be one of no, fp16, bf16'],
    ['save_precision', 'fp16', 'note', 'saved as float32'],
    ['save_precision', 'int4', 'issue', 'must be one of float, fp16, bf16'],
    ['clip_skip', 2, 'issue', "2 is not supported: SD 1.x runs here condition the UNet on the text encoder's last layer"],
    ['cache_latents', true, 'note', 'always on here'],
    ['cache_latents', false, 'note', 'false is ignored: latents are always cached'],
    ['cache_latents_to_disk', true, 'note', 'always on here'],
    ['enable_bucket', true, 'note', 'center-cropped to a square of resolution'],
    ['min_bucket_reso', 256, 'note', 'buckets are off'],
    ['max_bucket_reso', 1024, 'note', 'buckets are off'],
    ['bucket_reso_steps', 64, 'note', 'buckets are off'],
    ['sample_every_n_epochs', 2, 'issue', 'every sample_steps optimizer steps, not per epoch'],
    ['save_every_n_epochs', 1, 'issue', 'Set save_steps to this many epochs'],
    ['lr_scheduler_num_cycles', 3, 'issue', '3 cycles are not supported'],
    ['lr_restart_cycles', 2, 'issue', '2 cycles are not supported'],
    ['network_module', 'lycoris.kohya', 'issue', 'trains plain LoRA (networks.lora)'],
    ['save_model_as', 'ckpt', 'issue', 'saved as .safetensors'],
  ];

  it.each(cases)('%s: %j is a %s', (key, value, kind, text) => {
    const result = parseRunConfig({ [key]: value });
    const found = kind === 'note' ? ok(result).warnings : failed(result).issues;
    expect(found).toHaveLength(1);
    expect(found[0]?.key).toBe(key);
    expect(found[0]?.message).toContain(text);
  });

  it.each<[string, unknown]>([
    ['clip_skip', 1],
    ['clip_skip', null],
    ['enable_bucket', false],
    ['lr_scheduler_num_cycles', 1],
    ['network_module', 'networks.lora'],
    ['save_model_as', 'safetensors'],
    ['sample_every_n_epochs', 0],
    ['mixed_precision', 'no'],
  ])('%s: %j is what happens here anyway: no note, nothing in the config', (key, value) => {
    const result = ok(parseRunConfig({ [key]: value }));
    expect(result.warnings).toEqual([]);
    expect(result.config).toEqual(DEFAULT_CONFIG);
  });

  it('their notes carry the line of the setting in YAML', () => {
    const result = ok(parseRunConfigYaml('seed: 1\noptimizer_type: AdamW8bit\n'));
    expect(result.warnings).toEqual([{ key: 'optimizer_type', message: expect.stringContaining('AdamW8bit runs as AdamW'), line: 2, col: 1 }]);
  });

  it('other kohya keys still go through the unknown-key path, a typo of a setting suggesting it', () => {
    const issues = failed(parseRunConfig({ xformers: true, optimiser_type: 'AdamW' })).issues;
    expect(issues).toEqual([
      { key: 'xformers', message: 'unknown key' },
      { key: 'optimiser_type', message: 'unknown key — did you mean optimizer_type?' },
    ]);
  });
});

describe('output_name: kohya\'s file name becomes the run\'s folder', () => {
  it.each([
    [{ output_dir: './output', output_name: 'aki' }, './output/aki'],
    [{ output_dir: './output/', output_name: 'aki' }, './output/aki'],
    [{ output_name: 'aki' }, './output/aki'],
    [{ output_name: 'aki', output_dir: 'runs' }, 'runs/aki'],
  ])('%j → output_dir %s', (input, outputDir) => {
    const result = ok(parseRunConfig(input));
    expect(result.config.output_dir).toBe(outputDir);
    expect(runName(result.config)).toBe('aki');
    expect(result.warnings).toEqual([
      { key: 'output_name', message: `the run is written to ${outputDir} and named aki (a run is named after output_dir's last folder)` },
    ]);
  });

  it.each([['a/b'], [''], ['..'], [3]])('refuses %j', (name) => {
    const issues = failed(parseRunConfig({ output_name: name })).issues;
    expect(issues).toEqual([{ key: 'output_name', message: `must be a file name without folders, got ${typeof name === 'string' ? JSON.stringify(name) : name}` }]);
  });
});

describe('schedules and rates', () => {
  it('cosine_with_restarts (one cycle) is cosine, with a warning', () => {
    const result = ok(parseRunConfigYaml('lr_scheduler: cosine_with_restarts\nlr_scheduler_num_cycles: 1\n'));
    expect(result.config.lr_scheduler).toBe('cosine');
    expect(result.warnings).toEqual([
      { key: 'lr_scheduler', message: 'cosine_with_restarts read as cosine (one cycle, as kohya runs it by default, is plain cosine)', line: 1, col: 1 },
    ]);
  });

  it.each<[Record<string, unknown>, string[]]>([
    [{ text_encoder_lr: 1e-5 }, ['text_encoder_lr']],
    [{ text_encoder_lr: 1e-5, train_text_encoder: true }, []],
    [{ text_encoder_lr: 1e-5, network_train_unet_only: false }, []],
    [{ text_encoder_lr: 0 }, []],
    [{ text_encoder_lr: 0, train_text_encoder: true }, ['text_encoder_lr']],
    [{ unet_lr: 0, train_text_encoder: true }, ['unet_lr']],
    [{ unet_lr: 2e-4, text_encoder_lr: null, train_text_encoder: true }, []],
  ])('%j warns about %j', (input, keys) => {
    expect(ok(parseRunConfig(input)).warnings.map((w) => w.key)).toEqual(keys);
  });

  it('imageTrainingOf: unet_lr and text_encoder_lr fall back to learning_rate; the text encoder trains only when asked and its rate is above 0', () => {
    const of = (input: Record<string, unknown>) => imageTrainingOf(ok(parseRunConfig(input)).config);
    expect(of({ learning_rate: 2e-4 })).toEqual({
      resolution: 512,
      flipAug: false,
      captionExtension: '.txt',
      noiseOffset: 0,
      minSnrGamma: 0,
      unetLearningRate: 2e-4,
      textEncoderLearningRate: null,
    });
    expect(of({ learning_rate: 2e-4, train_text_encoder: true })).toMatchObject({ unetLearningRate: 2e-4, textEncoderLearningRate: 2e-4 });
    expect(of({ learning_rate: 2e-4, unet_lr: 1e-4, text_encoder_lr: 5e-5, train_text_encoder: true })).toMatchObject({
      unetLearningRate: 1e-4,
      textEncoderLearningRate: 5e-5,
    });
    expect(of({ train_text_encoder: true, text_encoder_lr: 0 }).textEncoderLearningRate).toBeNull();
    expect(of({ text_encoder_lr: 5e-5 }).textEncoderLearningRate).toBeNull();
    expect(of({ resolution: '768,768', flip_aug: true, noise_offset: 0.1, min_snr_gamma: 5, caption_extension: '.caption' })).toMatchObject({
      resolution: 768,
      flipAug: true,
      noiseOffset: 0.1,
      minSnrGamma: 5,
      captionExtension: '.caption',
    });
  });
});

describe('default target modules for Stable Diffusion', () => {
  it("the UNet's are the PEFT fixture adapter's targets, and name every module that adapter trains", () => {
    const config = JSON.parse(readFileSync(join(FIXTURE, 'adapters/stripes-peft/adapter_config.json'), 'utf8')) as { target_modules: string[] };
    const defaults = resolveTargetModules(DEFAULT_CONFIG, 'sd-unet');
    expect(Array.isArray(defaults) ? [...defaults].sort() : defaults).toEqual([...config.target_modules].sort());
    const modules = [...tensorShapes(join(FIXTURE, 'adapters/stripes-peft/adapter_model.safetensors')).keys()].map((name) =>
      name.replace(/^base_model\.model\./, '').replace(/\.lora_[AB]\.weight$/, ''),
    );
    expect(new Set(modules).size).toBe(48);
    for (const module of modules) expect((defaults as string[]).some((t) => module.endsWith(`.${t}`))).toBe(true);
  });

  it("the text encoder's are kohya's: every linear layer of CLIP's attention and MLP, read from the fixture's weights", () => {
    const shapes = tensorShapes(join(FIXTURE, 'tiny-sd/text_encoder/model.safetensors'));
    // Linear layers are the 2-D weights; kohya wraps those inside CLIPAttention (self_attn) and CLIPMLP (mlp).
    const linear = new Set(
      [...shapes]
        .filter(([name, shape]) => shape.length === 2 && /\.(self_attn|mlp)\.[^.]+\.weight$/.test(name))
        .map(([name]) => name.split('.').at(-2)),
    );
    expect(linear.size).toBe(6);
    expect([...(resolveTargetModules(DEFAULT_CONFIG, 'sd-text-encoder') as string[])].sort()).toEqual([...linear].sort());
  });

  it('target_modules chooses the UNet modules; the text encoder always takes its own set (CLIP names its layers differently)', () => {
    const config = ok(parseRunConfig({ target_modules: ['to_q', 'to_v', 'proj_in'] })).config;
    expect(resolveTargetModules(config, 'sd-unet')).toEqual(['to_q', 'to_v', 'proj_in']);
    expect(resolveTargetModules(config, 'sd-text-encoder')).toEqual(['q_proj', 'k_proj', 'v_proj', 'out_proj', 'fc1', 'fc2']);
    expect(resolveTargetModules(config, 'llama')).toEqual(['to_q', 'to_v', 'proj_in']);
  });
});

describe('kohya sample prompt lines', () => {
  it('reads every option sd-scripts knows', () => {
    expect(parsePromptLine('a cat on a sofa --n blurry, lowres --w 512 --h 768 --d 1 --l 7.5 --s 28')).toEqual({
      ok: true,
      value: { prompt: 'a cat on a sofa', negativePrompt: 'blurry, lowres', width: 512, height: 768, seed: 1, guidanceScale: 7.5, steps: 28 },
    });
  });

  it('a plain prompt has no options; single dashes and inner double dashes without a space before stay text', () => {
    expect(parsePromptLine('  a well-lit room - wide angle  ')).toEqual({ ok: true, value: { prompt: 'a well-lit room - wide angle' } });
    expect(parsePromptLine('x--y')).toEqual({ ok: true, value: { prompt: 'x--y' } });
  });

  it('options are case-insensitive and in any order; as in sd-scripts only a space before -- starts one', () => {
    expect(parsePromptLine('a\t--dog --S 10 --D 4294967295 --N  dark ')).toEqual({
      ok: true,
      value: { prompt: 'a\t--dog', steps: 10, seed: 4294967295, negativePrompt: 'dark' },
    });
  });

  it('a line that starts with an option has an empty prompt', () => {
    expect(parsePromptLine('--n blurry --s 5')).toEqual({ ok: true, value: { prompt: '', negativePrompt: 'blurry', steps: 5 } });
  });

  it('unknown options are one problem naming them all, with the list of options', () => {
    const result = parsePromptLine('a cat --ss euler_a --w 512 --x 1 --ss k');
    expect(result).toEqual({
      ok: false,
      problems: [
        'unknown options --ss, --x; the options are --n (negative prompt), --w (width), --h (height), --d (seed), --l (guidance scale), --s (steps).',
      ],
    });
    expect(parsePromptLine('a cat --w512')).toEqual({ ok: false, problems: [expect.stringMatching(/^unknown option --w512; /)] });
  });

  it.each([
    ['a --w 500', '--w (width) must be a multiple of 8 from 32 to 2048, got "500".'],
    ['a --h 4096', '--h (height) must be a multiple of 8 from 32 to 2048, got "4096".'],
    ['a --d -1', '--d (seed) must be a whole number from 0 to 4294967295, got "-1".'],
    ['a --d', '--d (seed) must be a whole number from 0 to 4294967295, got nothing.'],
    ['a --l 0.5', '--l (guidance scale) must be a number from 1 to 50, got "0.5".'],
    ['a --s 2.5', '--s (steps) must be a whole number from 1 to 150, got "2.5".'],
    ['a --s 10 --s 20', '--s is given twice; keep one.'],
  ])('%j: %s', (line, problem) => {
    expect(parsePromptLine(line)).toEqual({ ok: false, problems: [problem] });
  });

  it('samplePromptsOf fills what a line leaves out from the config: resolution, sample_seed else seed, guidance, steps', () => {
    const config = ok(
      parseRunConfig({
        resolution: 256,
        seed: 9,
        sample_guidance_scale: 5,
        sample_inference_steps: 12,
        sample_prompts: ['a cat', 'a dog --n blurry --w 320 --d 3 --l 8 --s 30'],
      }),
    ).config;
    expect(samplePromptsOf(config)).toEqual([
      { prompt: 'a cat', negativePrompt: '', width: 256, height: 256, seed: 9, guidanceScale: 5, steps: 12 },
      { prompt: 'a dog', negativePrompt: 'blurry', width: 320, height: 256, seed: 3, guidanceScale: 8, steps: 30 },
    ]);
    expect(samplePromptsOf({ ...config, sample_seed: 77 })[0]?.seed).toBe(77);
  });

  it('samplePromptsOf throws one UserError on sample_prompts listing every bad line', () => {
    const error = thrown(() => samplePromptsOf({ ...DEFAULT_CONFIG, sample_prompts: ['fine', 'a --q 1', 'b --s 0'] }));
    expect(error.subject).toBe('sample_prompts');
    expect(error.problem).toBe(
      [
        '2 prompts have problems:',
        '- prompt 2 ("a --q 1"): unknown option --q; the options are --n (negative prompt), --w (width), --h (height), --d (seed), --l (guidance scale), --s (steps).',
        '- prompt 3 ("b --s 0"): --s (steps) must be a whole number from 1 to 150, got "0".',
      ].join('\n'),
    );
    expect(error.fix).toBeDefined();
  });
});

/** A lora-scripts / sd-scripts SD 1.5 LoRA config, flattened to YAML as kohya's --config_file keys are. */
const KOHYA_YAML = `# sd-scripts train_network.py settings
pretrained_model_name_or_path: ./sd-models/v1-5-pruned
train_data_dir: ./train/aki
resolution: "512,512"
enable_bucket: true
min_bucket_reso: 256
max_bucket_reso: 1024
caption_extension: .txt
output_dir: ./output
output_name: aki
save_model_as: safetensors
save_precision: fp16
max_train_epochs: 10
train_batch_size: 1
network_module: networks.lora
network_dim: 32
network_alpha: 16
network_train_unet_only: false
unet_lr: 1e-4
text_encoder_lr: 1e-5
optimizer_type: AdamW8bit
lr_scheduler: cosine_with_restarts
lr_warmup_steps: 0
lr_scheduler_num_cycles: 1
noise_offset: 0.1
min_snr_gamma: 5
mixed_precision: fp16
cache_latents: true
seed: 1337
sample_prompts:
  - "aki, 1girl, smile --n lowres, bad anatomy --w 512 --h 768 --s 28 --d 1"
  - aki standing in a field --n blurry --s 20 --d 2 --l 6
`;

describe('a kohya / lora-scripts YAML config', () => {
  it('parses into the canonical config, each kohya name reported, each setting noted', () => {
    const result = ok(parseRunConfigYaml(KOHYA_YAML, 'aki.yaml'));
    expect(result.config).toEqual({
      ...DEFAULT_CONFIG,
      base_model: './sd-models/v1-5-pruned',
      train_data: './train/aki',
      caption_extension: '.txt',
      output_dir: './output/aki',
      lora_rank: 32,
      lora_alpha: 16,
      train_text_encoder: true,
      unet_lr: 1e-4,
      text_encoder_lr: 1e-5,
      lr_scheduler: 'cosine',
      warmup_steps: 0,
      epochs: 10,
      batch_size: 1,
      resolution: 512,
      noise_offset: 0.1,
      min_snr_gamma: 5,
      sample_prompts: [
        'aki, 1girl, smile --n lowres, bad anatomy --w 512 --h 768 --s 28 --d 1',
        'aki standing in a field --n blurry --s 20 --d 2 --l 6',
      ],
      seed: 1337,
    });
    expect(runName(result.config)).toBe('aki');
    expect(result.aliases.map((a) => `${a.from} → ${a.to}`)).toEqual([
      'pretrained_model_name_or_path → base_model',
      'train_data_dir → train_data',
      'max_train_epochs → epochs',
      'train_batch_size → batch_size',
      'network_dim → lora_rank',
      'network_alpha → lora_alpha',
      'network_train_unet_only → train_text_encoder',
      'lr_warmup_steps → warmup_steps',
    ]);
    expect(result.warnings.map((w) => `${w.line} ${w.key}`)).toEqual([
      '5 enable_bucket',
      '6 min_bucket_reso',
      '7 max_bucket_reso',
      '10 output_name',
      '12 save_precision',
      '21 optimizer_type',
      '27 mixed_precision',
      '28 cache_latents',
      '22 lr_scheduler',
    ]);
    expect(imageTrainingOf(result.config)).toEqual({
      resolution: 512,
      flipAug: false,
      captionExtension: '.txt',
      noiseOffset: 0.1,
      minSnrGamma: 5,
      unetLearningRate: 1e-4,
      textEncoderLearningRate: 1e-5,
    });
    expect(samplePromptsOf(result.config)).toEqual([
      { prompt: 'aki, 1girl, smile', negativePrompt: 'lowres, bad anatomy', width: 512, height: 768, seed: 1, guidanceScale: 7.5, steps: 28 },
      { prompt: 'aki standing in a field', negativePrompt: 'blurry', width: 512, height: 512, seed: 2, guidanceScale: 6, steps: 20 },
    ]);
  });

  it('what this app cannot do is refused, every problem at once, in file order', () => {
    const yaml = KOHYA_YAML.replace('optimizer_type: AdamW8bit', 'optimizer_type: Lion')
      .replace('resolution: "512,512"', 'resolution: "512,768"')
      .replace('seed: 1337', 'seed: 1337\nclip_skip: 2\nxformers: true\nsample_every_n_epochs: 1');
    const issues = failed(parseRunConfigYaml(yaml, 'aki.yaml')).issues;
    expect(issues.map((i) => `${i.line} ${i.key}`)).toEqual([
      '4 resolution',
      '21 optimizer_type',
      '30 clip_skip',
      '31 xformers',
      '32 sample_every_n_epochs',
    ]);
    expect(issues[0]?.message).toContain('only square training is supported');
    expect(issues[3]?.message).toBe('unknown key');
  });

  it('written back as YAML it keeps every key, image keys included, and reads back equal without notes', () => {
    const config = ok(parseRunConfigYaml(KOHYA_YAML)).config;
    const yaml = runConfigToYaml(config);
    for (const key of CONFIG_KEYS) expect(yaml).toMatch(new RegExp(`^${key}:`, 'm'));
    const again = ok(parseRunConfigYaml(yaml));
    expect(again.config).toEqual(config);
    expect(again.warnings).toEqual([]);
    expect(again.aliases).toEqual([]);
  });

  it('every image key round trips at non-default values', () => {
    const config: RunConfig = {
      ...DEFAULT_CONFIG,
      caption_extension: '.caption',
      train_text_encoder: true,
      unet_lr: 2.5e-5,
      text_encoder_lr: 0,
      resolution: 768,
      flip_aug: true,
      noise_offset: 0.0357,
      min_snr_gamma: 5,
      sample_prompts: ['a "quoted" cat --n dog: no --d 3', '--s 5'],
      sample_guidance_scale: 12.5,
      sample_inference_steps: 150,
      sample_seed: 4294967295,
    };
    expect(ok(parseRunConfigYaml(runConfigToYaml(config))).config).toEqual(config);
  });
});
