/**
 * kohya sd-scripts (and lora-scripts) settings that have no key of their own here. Each is read for
 * what it asks and then dropped: a note when LoRA Lab does that anyway or it changes nothing here
 * (optimizer_type: AdamW8bit, cache_latents), an issue when following the config would need something
 * LoRA Lab does not do (clip_skip: 2, another optimizer, sampling per epoch). Keys that are simply
 * other names for ours live in aliases.ts; kohya keys in neither place are unknown keys.
 */

/** What one setting comes to; null when it asks for exactly what happens here and needs no word. */
export type KohyaReading = { readonly kind: 'note' | 'issue'; readonly message: string } | null;

/** A note or issue about one setting, keyed by its name as written. */
export interface KohyaFinding {
  readonly key: string;
  readonly kind: 'note' | 'issue';
  readonly message: string;
}

const note = (message: string): KohyaReading => ({ kind: 'note', message });
const issue = (message: string): KohyaReading => ({ kind: 'issue', message });

/** Values as written, strings quoted, for messages. */
const shown = (value: unknown): string => (typeof value === 'string' ? JSON.stringify(value) : String(value));

/** kohya's choices are case-insensitive (`adamw8bit` is AdamW8bit). */
function oneOf(value: unknown, choices: readonly string[]): string | null {
  if (typeof value !== 'string') return null;
  return choices.find((c) => c.toLowerCase() === value.trim().toLowerCase()) ?? null;
}

function optimizer(value: unknown): KohyaReading {
  const name = oneOf(value, ['AdamW', 'AdamW8bit']);
  if (name === 'AdamW') return note('AdamW is the optimizer LoRA Lab trains with');
  if (name === 'AdamW8bit') {
    return note('AdamW8bit runs as AdamW with 32-bit optimizer state: the same update without 8-bit rounding, using more memory');
  }
  return issue(
    `${shown(value)} is not available: LoRA Lab trains with AdamW (weight_decay is its decoupled decay). ` +
      'Write optimizer_type: AdamW, or remove the key.',
  );
}

function mixedPrecision(value: unknown): KohyaReading {
  if (oneOf(value, ['no', 'fp16', 'bf16']) === null) return issue(`must be one of no, fp16, bf16, got ${shown(value)}`);
  if (oneOf(value, ['no']) !== null) return null;
  return note(`${shown(value)} is ignored: the LoRA weights, their gradients and the optimizer state are float32 here`);
}

function savePrecision(value: unknown): KohyaReading {
  if (value !== null && oneOf(value, ['float', 'fp16', 'bf16']) === null) {
    return issue(`must be one of float, fp16, bf16, got ${shown(value)}`);
  }
  return note('is ignored: adapters are saved as float32');
}

function clipSkip(value: unknown): KohyaReading {
  if (value === null || value === 1 || value === '1') return null;
  return issue(
    `${shown(value)} is not supported: SD 1.x runs here condition the UNet on the text encoder's last layer, as SD 1.x ` +
      'was trained (clip_skip 1). Remove the key or set it to 1.',
  );
}

function cacheLatents(value: unknown): KohyaReading {
  if (typeof value !== 'boolean') return issue(`must be true or false, got ${shown(value)}`);
  const why = 'each image goes through the VAE once and its latent is kept for the run';
  return note(value ? `always on here: ${why}` : `false is ignored: latents are always cached (${why})`);
}

function enableBucket(value: unknown): KohyaReading {
  if (typeof value !== 'boolean') return issue(`must be true or false, got ${shown(value)}`);
  return value ? note('buckets are off here: every image is scaled and center-cropped to a square of resolution') : null;
}

const bucketSetting = (): KohyaReading => note('is ignored: buckets are off here (every image is cropped to a square of resolution)');

/** Per-epoch cadences: steps per epoch are only known once the images are counted, so they are not converted. */
function perEpoch(stepsKey: 'sample_steps' | 'save_steps', what: string) {
  return (value: unknown): KohyaReading => {
    if (value === null || value === 0) return null;
    return issue(
      `LoRA Lab ${what} every ${stepsKey} optimizer steps, not per epoch. Set ${stepsKey} to this many epochs × ` +
        `steps per epoch (images per epoch ÷ batch_size ÷ grad_accum_steps), or remove the key to ${what === 'samples' ? 'sample' : 'save'} only at the end.`,
    );
  };
}

function restartCycles(value: unknown): KohyaReading {
  if (value === null || value === 1 || value === '1') return null;
  return issue(`${shown(value)} cycles are not supported: cosine runs one cycle (cosine_with_restarts with 1 cycle). Remove the key or set it to 1.`);
}

function networkModule(value: unknown): KohyaReading {
  if (value === 'networks.lora') return null;
  return issue(`${shown(value)} is not available: LoRA Lab trains plain LoRA (networks.lora), not LyCORIS, LoHa or DyLoRA. Remove the key.`);
}

function saveModelAs(value: unknown): KohyaReading {
  if (oneOf(value, ['safetensors']) !== null) return null;
  return issue(`${shown(value)} is not available: adapters are saved as .safetensors. Remove the key or write safetensors.`);
}

const READERS: ReadonlyMap<string, (value: unknown) => KohyaReading> = new Map([
  ['optimizer_type', optimizer],
  ['mixed_precision', mixedPrecision],
  ['save_precision', savePrecision],
  ['clip_skip', clipSkip],
  ['cache_latents', cacheLatents],
  ['cache_latents_to_disk', cacheLatents],
  ['enable_bucket', enableBucket],
  ['min_bucket_reso', bucketSetting],
  ['max_bucket_reso', bucketSetting],
  ['bucket_reso_steps', bucketSetting],
  ['bucket_no_upscale', bucketSetting],
  ['sample_every_n_epochs', perEpoch('sample_steps', 'samples')],
  ['save_every_n_epochs', perEpoch('save_steps', 'saves')],
  ['lr_scheduler_num_cycles', restartCycles],
  // lora-scripts' name for lr_scheduler_num_cycles.
  ['lr_restart_cycles', restartCycles],
  ['network_module', networkModule],
  ['save_model_as', saveModelAs],
]);

const OUTPUT_NAME = 'output_name';

/** Every setting name read here, so a typo of one is suggested like a typo of a key. */
export const KOHYA_SETTING_NAMES: readonly string[] = [...READERS.keys(), OUTPUT_NAME];

/** Where a config with output_dir but no output_name puts its run: our default output_dir's parent. */
const DEFAULT_OUTPUT_PARENT = './output';

/**
 * kohya's output_name names the LoRA file inside output_dir; here the run (and its folder) is named
 * after output_dir's last component, so output_name becomes that component:
 * `output_dir: ./output` + `output_name: aki` is `output_dir: ./output/aki`.
 */
function readOutputName(input: Readonly<Record<string, unknown>>): { outputDir: string | null; finding: KohyaFinding } {
  const name = input[OUTPUT_NAME];
  if (typeof name !== 'string' || name.trim() === '' || /[\\/]/.test(name) || name.trim() === '.' || name.trim() === '..') {
    return {
      outputDir: null,
      finding: { key: OUTPUT_NAME, kind: 'issue', message: `must be a file name without folders, got ${shown(name)}` },
    };
  }
  const parent = input['output_dir'];
  // A bad output_dir is reported by its own check; output_name is then left out of it.
  if (parent !== undefined && typeof parent !== 'string') {
    return { outputDir: null, finding: { key: OUTPUT_NAME, kind: 'note', message: 'not applied, because output_dir is not a path' } };
  }
  const base = (parent ?? DEFAULT_OUTPUT_PARENT).replace(/[\\/]+$/, '');
  const outputDir = `${base === '' ? '.' : base}/${name.trim()}`;
  return {
    outputDir,
    finding: { key: OUTPUT_NAME, kind: 'note', message: `the run is written to ${outputDir} and named ${name.trim()} (a run is named after output_dir's last folder)` },
  };
}

/**
 * Reads the kohya settings out of a config as written: `rest` is the config without them (key order
 * kept, output_name folded into output_dir, which takes output_name's place when it was not written),
 * `findings` the notes and issues, in the order the settings were written.
 */
export function readKohyaSettings(input: Readonly<Record<string, unknown>>): {
  rest: Record<string, unknown>;
  findings: KohyaFinding[];
} {
  const findings: KohyaFinding[] = [];
  const output = OUTPUT_NAME in input ? readOutputName(input) : null;
  // No prototype, so a written `__proto__` stays a key (and is reported as unknown) instead of vanishing.
  const rest = Object.create(null) as Record<string, unknown>;
  for (const [key, value] of Object.entries(input)) {
    if (key === OUTPUT_NAME && output) {
      findings.push(output.finding);
      if (output.outputDir !== null && !('output_dir' in input)) rest['output_dir'] = output.outputDir;
      continue;
    }
    if (key === 'output_dir' && output?.outputDir) {
      rest[key] = output.outputDir;
      continue;
    }
    const read = READERS.get(key);
    if (!read) {
      rest[key] = value;
      continue;
    }
    const reading = read(value);
    if (reading) findings.push({ key, ...reading });
  }
  return { rest, findings };
}
