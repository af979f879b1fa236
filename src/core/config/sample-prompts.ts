/**
 * kohya's sample prompt lines for image runs: a prompt followed by options, as sd-scripts reads its
 * prompt files — "a cat --n blurry, lowres --w 512 --h 512 --d 1 --l 7.5 --s 28". Every option starts
 * at a space followed by `--`; the letter after it names the option, the rest up to the next option
 * is its value. Text runs use sample_prompts as plain text and never call this.
 */
import { UserError } from '../errors';
import { coerceNumber, GUIDANCE_RANGE, INFERENCE_STEPS_RANGE, RESOLUTION_RANGE, SEED_MAX, type RunConfig } from './schema';

/** One line's settings; an option not written is absent and falls back to the run config. */
export interface SamplePrompt {
  readonly prompt: string;
  readonly negativePrompt?: string;
  readonly width?: number;
  readonly height?: number;
  readonly seed?: number;
  readonly guidanceScale?: number;
  readonly steps?: number;
}

export type PromptLineResult =
  | { readonly ok: true; readonly value: SamplePrompt }
  /** Each problem is a sentence naming the option at fault. */
  | { readonly ok: false; readonly problems: readonly string[] };

/** A sample with every setting decided: the line's options over the run config's sample_* keys. */
export interface ResolvedSamplePrompt {
  readonly prompt: string;
  /** '' when the line has no --n: plain classifier-free guidance against the empty prompt. */
  readonly negativePrompt: string;
  readonly width: number;
  readonly height: number;
  readonly seed: number;
  readonly guidanceScale: number;
  readonly steps: number;
}

type Field = Exclude<keyof SamplePrompt, 'prompt'>;

interface OptionRule {
  readonly field: Field;
  /** What the value is, for the list of options and for messages. */
  readonly what: string;
  /** The value as our setting, or a sentence fragment saying what is allowed. */
  readonly read: (text: string) => { value: string | number } | { allowed: string };
}

/** A whole number in [min, max] (and a multiple of `step`), from the option's text. */
function wholeNumber(min: number, max: number, step = 1) {
  const allowed = step === 1 ? `a whole number from ${min} to ${max}` : `a multiple of ${step} from ${min} to ${max}`;
  return (text: string): { value: number } | { allowed: string } => {
    const n = /^[+-]?\d+$/.test(text) ? Number(text) : NaN;
    return Number.isInteger(n) && n >= min && n <= max && n % step === 0 ? { value: n } : { allowed };
  };
}

function decimal(min: number, max: number) {
  return (text: string): { value: number } | { allowed: string } => {
    const n = coerceNumber(text);
    return typeof n === 'number' && Number.isFinite(n) && n >= min && n <= max ? { value: n } : { allowed: `a number from ${min} to ${max}` };
  };
}

const size = wholeNumber(RESOLUTION_RANGE.min, RESOLUTION_RANGE.max, RESOLUTION_RANGE.multipleOf);

/** sd-scripts' options, by letter (it reads them case-insensitively). */
const OPTIONS: ReadonlyMap<string, OptionRule> = new Map<string, OptionRule>([
  ['n', { field: 'negativePrompt', what: 'negative prompt', read: (text) => ({ value: text }) }],
  ['w', { field: 'width', what: 'width', read: size }],
  ['h', { field: 'height', what: 'height', read: size }],
  ['d', { field: 'seed', what: 'seed', read: wholeNumber(0, SEED_MAX) }],
  ['l', { field: 'guidanceScale', what: 'guidance scale', read: decimal(GUIDANCE_RANGE.min, GUIDANCE_RANGE.max) }],
  ['s', { field: 'steps', what: 'steps', read: wholeNumber(INFERENCE_STEPS_RANGE.min, INFERENCE_STEPS_RANGE.max) }],
]);

const OPTION_LIST = [...OPTIONS].map(([letter, rule]) => `--${letter} (${rule.what})`).join(', ');

/** Reads one sample_prompts entry. Unknown options are one problem naming them all; nothing is guessed. */
export function parsePromptLine(line: string): PromptLineResult {
  // The same split as sd-scripts (line_to_prompt_dict): an option starts wherever a space is followed by "--".
  const [head = '', ...pieces] = line.split(' --');
  // A line that starts with an option has an empty prompt (sd-scripts would read "--n …" as the prompt).
  const startsWithOption = /^--/.test(head.trimStart());
  if (startsWithOption) pieces.unshift(head.trimStart().slice(2));
  const out: { -readonly [F in Field]?: SamplePrompt[F] } = {};
  const problems: string[] = [];
  const unknown: string[] = [];
  const seen = new Set<string>();
  for (const piece of pieces) {
    const match = /^([A-Za-z]+)(?:\s+([\s\S]*))?$/.exec(piece);
    const letter = match?.[1]?.toLowerCase();
    const rule = letter === undefined ? undefined : OPTIONS.get(letter);
    if (!match || letter === undefined || !rule) {
      unknown.push(`--${piece.split(/\s/)[0] ?? ''}`);
      continue;
    }
    if (seen.has(letter)) {
      problems.push(`--${letter} is given twice; keep one.`);
      continue;
    }
    seen.add(letter);
    const text = (match[2] ?? '').trim();
    const read = rule.read(text);
    if ('allowed' in read) {
      problems.push(`--${letter} (${rule.what}) must be ${read.allowed}, got ${text === '' ? 'nothing' : JSON.stringify(text)}.`);
      continue;
    }
    Object.assign(out, { [rule.field]: read.value });
  }
  if (unknown.length > 0) {
    const names = [...new Set(unknown)].join(', ');
    problems.unshift(`${unknown.length === 1 ? 'unknown option' : 'unknown options'} ${names}; the options are ${OPTION_LIST}.`);
  }
  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, value: { prompt: startsWithOption ? '' : head.trim(), ...out } };
}

type SampleSettings = Pick<
  RunConfig,
  'sample_prompts' | 'resolution' | 'seed' | 'sample_seed' | 'sample_guidance_scale' | 'sample_inference_steps'
>;

/**
 * Every sample of an image run with its settings decided: the line's options, else the run config's
 * (size = resolution, seed = sample_seed, else seed). Throws one UserError listing every bad line.
 */
export function samplePromptsOf(config: SampleSettings): ResolvedSamplePrompt[] {
  const resolved: ResolvedSamplePrompt[] = [];
  const problems: string[] = [];
  config.sample_prompts.forEach((line, i) => {
    const parsed = parsePromptLine(line);
    if (!parsed.ok) {
      const shown = line.length > 40 ? `${line.slice(0, 37)}...` : line;
      problems.push(`prompt ${i + 1} (${JSON.stringify(shown)}): ${parsed.problems.join(' ')}`);
      return;
    }
    const p = parsed.value;
    resolved.push({
      prompt: p.prompt,
      negativePrompt: p.negativePrompt ?? '',
      width: p.width ?? config.resolution,
      height: p.height ?? config.resolution,
      seed: p.seed ?? config.sample_seed ?? config.seed,
      guidanceScale: p.guidanceScale ?? config.sample_guidance_scale,
      steps: p.steps ?? config.sample_inference_steps,
    });
  });
  if (problems.length > 0) {
    throw new UserError(
      'sample_prompts',
      problems.length === 1 ? `${problems[0]}` : `${problems.length} prompts have problems:\n- ${problems.join('\n- ')}`,
      'Fix the options after each prompt, or remove them to use the sample_* settings.',
    );
  }
  return resolved;
}
