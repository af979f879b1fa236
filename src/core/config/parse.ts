import * as v from 'valibot';
import { isMap, isScalar, LineCounter, parseDocument } from 'yaml';
import { UserError } from '../errors';
import { isConfigKey, KEY_ALIASES, suggestKey } from './aliases';
import { readKohyaSettings } from './kohya-settings';
import {
  CONFIG_KEYS,
  DEFAULT_CONFIG,
  FIELD_RULES,
  RunConfigFields,
  RunConfigSchema,
  type RunConfig,
  type RunConfigKey,
} from './schema';

export interface ConfigIssue {
  /** The canonical config key at fault, an unknown key as written, or '' for whole-file problems. */
  readonly key: string;
  /** What is wrong, naming the value and what is allowed. Whole-file YAML problems also say where. */
  readonly message: string;
  /** 1-based position of the key (or syntax error) in the YAML text, when parsed from YAML. */
  readonly line?: number;
  readonly col?: number;
}

/** A key written under another tool's name, e.g. `{ from: 'num_train_epochs', to: 'epochs' }`. */
export interface AliasUse {
  readonly from: string;
  readonly to: RunConfigKey;
}

export type ConfigParseResult =
  | { readonly ok: true; readonly config: RunConfig; readonly aliases: readonly AliasUse[]; readonly warnings: readonly ConfigIssue[] }
  | {
      readonly ok: false;
      readonly issues: readonly ConfigIssue[];
      /** The file the issues are about, when parsed from a file; unwrapRunConfig names it. */
      readonly fileName?: string;
    };

export interface ParseOptions {
  /**
   * Paths that must be non-empty. The app picks the model and data outside the config, so they may
   * be blank there; the headless runner has nothing else to go on and requires both.
   */
  readonly require?: readonly ('base_model' | 'train_data')[];
}

/** The top-level key that makes a config a sweep (sweep.ts); parsing a run's config skips it. */
export const SWEEP_KEY = 'sweep';

type Position = { line: number; col: number };
type Locate = (writtenKey: string) => Position | undefined;

/** One value for a canonical key and the name it was written under. */
interface Given {
  readonly from: string;
  /** The value in our terms (an inverting alias's value already turned round). */
  readonly value: unknown;
  /** The value as written, for messages that quote the file. */
  readonly written: unknown;
}

/**
 * Other tools' schedule names that are one of ours here, with why. LLaMA-Factory and kohya spell
 * "constant with warmup" as its own schedule, but warmup_steps applies to every schedule here; kohya's
 * cosine_with_restarts with its default single cycle is exactly cosine (more cycles are refused in
 * kohya-settings.ts).
 */
const SCHEDULE_SYNONYMS: ReadonlyMap<string, { to: RunConfig['lr_scheduler']; why: string }> = new Map([
  ['constant_with_warmup', { to: 'constant', why: 'warmup_steps applies to every schedule' }],
  ['cosine_with_restarts', { to: 'cosine', why: 'one cycle, as kohya runs it by default, is plain cosine' }],
]);

/** Values as short, unambiguous text: strings quoted so `"8"` and `8` read differently. */
function show(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'bigint') return String(value);
  if (value === undefined) return 'nothing';
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** How default values read in messages ("remove the key to use the default 8"). */
function showDefault(key: RunConfigKey): string {
  const value = DEFAULT_CONFIG[key];
  return typeof value === 'string' ? (value === '' ? 'empty' : value) : show(value);
}

const fieldSchema = (key: RunConfigKey) => RunConfigFields.entries[key] as v.GenericSchema<unknown, unknown>;

function checkField(key: RunConfigKey, value: unknown): { ok: true; value: unknown } | { ok: false } {
  const result = v.safeParse(fieldSchema(key), value);
  return result.success ? { ok: true, value: result.output } : { ok: false };
}

/** Same setting? Compared after coercion, so `"1e-4"` equals `0.0001` and "q_proj,v_proj" its list. */
function sameSetting(key: RunConfigKey, a: unknown, b: unknown): boolean {
  const ca = checkField(key, a);
  const cb = checkField(key, b);
  return valuesEqual(ca.ok ? ca.value : a, cb.ok ? cb.value : b);
}

export function valuesEqual(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => valuesEqual(x, b[i]));
  return Object.is(a, b) || (a === 0 && b === 0);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function describeType(value: unknown): string {
  if (value === null) return 'an empty document value (null)';
  if (Array.isArray(value)) return 'a list';
  return `a ${typeof value} (${show(value)})`;
}

function parseWithPositions(input: unknown, options: ParseOptions, locate: Locate): ConfigParseResult {
  if (!isRecord(input)) {
    return {
      ok: false,
      issues: [{ key: '', message: `the config must be a mapping of key: value pairs, got ${describeType(input)}` }],
    };
  }

  const warnings: ConfigIssue[] = [];
  const aliases: AliasUse[] = [];
  const at = (writtenKey: string): Partial<Position> => locate(writtenKey) ?? {};
  // kohya settings without a key here (optimizer_type, clip_skip, output_name, …) are read first.
  const kohya = readKohyaSettings(input);

  // Issues are listed in the order their keys were written, so a list of them reads down the file;
  // rules across keys come last.
  const written = Object.keys(input);
  const ranked: { rank: number; issue: ConfigIssue }[] = [];
  const report = (issue: ConfigIssue, from?: string): void => {
    const rank = from === undefined ? written.length : written.indexOf(from);
    ranked.push({ rank, issue: from === undefined ? issue : { ...issue, ...at(from) } });
  };
  for (const finding of kohya.findings) {
    const issue = { key: finding.key, message: finding.message };
    if (finding.kind === 'issue') report(issue, finding.key);
    else warnings.push({ ...issue, ...at(finding.key) });
  }

  // 1. Map every written key to its canonical key; unknown keys are reported with the nearest name.
  const given = new Map<RunConfigKey, Given[]>();
  for (const [from, value] of Object.entries(kohya.rest)) {
    // `sweep:` is not a run key: it lists values to try, and sweep.ts checks and expands it.
    if (from === SWEEP_KEY) continue;
    const alias = KEY_ALIASES.get(from);
    const key = isConfigKey(from) ? from : alias?.to;
    if (key === undefined) {
      const near = suggestKey(from);
      const nearAlias = near === null ? undefined : KEY_ALIASES.get(near);
      const hint =
        near === null ? '' : nearAlias ? ` — did you mean ${near} (${nearAlias.tool}'s name for ${nearAlias.to})?` : ` — did you mean ${near}?`;
      report({ key: from, message: `unknown key${hint}` }, from);
      continue;
    }
    if (alias) aliases.push({ from, to: key });
    const ours = alias?.read && from !== key ? alias.read(value) : value;
    given.set(key, [...(given.get(key) ?? []), { from, value: ours, written: value }]);
  }

  // 2. One value per key. The same setting under two names is fine if they agree.
  const raw: Partial<Record<RunConfigKey, Given>> = {};
  for (const key of CONFIG_KEYS) {
    const sources = given.get(key);
    const first = sources?.[0];
    if (!sources || !first) continue;
    if (sources.some((s) => !sameSetting(key, s.value, first.value))) {
      const both = sources.map((s) => `${s.from}: ${show(s.written)}`).join(' and ');
      report({ key, message: `given twice with different values (${both}); keep one` }, first.from);
      continue;
    }
    raw[key] = first;
  }

  const scheduler = raw.lr_scheduler;
  const synonym = typeof scheduler?.value === 'string' ? SCHEDULE_SYNONYMS.get(scheduler.value) : undefined;
  if (scheduler && synonym) {
    raw.lr_scheduler = { ...scheduler, value: synonym.to };
    warnings.push({ key: 'lr_scheduler', message: `${String(scheduler.value)} read as ${synonym.to} (${synonym.why})`, ...at(scheduler.from) });
  }

  // 3. Check each key on its own so every bad value is reported, not just the first.
  const valid: Partial<Record<RunConfigKey, unknown>> = {};
  for (const key of CONFIG_KEYS) {
    const entry = raw[key];
    if (!entry) continue;
    const checked = checkField(key, entry.value);
    if (checked.ok) {
      valid[key] = checked.value;
      continue;
    }
    const alias = entry.from === key ? '' : ` (written as ${entry.from})`;
    const remedy = entry.value === null ? `; remove the key to use the default (${showDefault(key)})` : '';
    const specific = FIELD_RULES[key].explain?.(entry.written);
    const message = specific === undefined ? `must be ${FIELD_RULES[key].accepts}, got ${show(entry.written)}${alias}${remedy}` : `${specific}${alias}`;
    report({ key, message }, entry.from);
  }

  // 4. Rules across keys, checked only where the keys involved are valid (or defaulted): a bad or
  // conflicting value is already reported and would only add noise here.
  const value = <K extends RunConfigKey>(key: K): RunConfig[K] | undefined =>
    key in valid ? (valid[key] as RunConfig[K]) : given.has(key) ? undefined : DEFAULT_CONFIG[key];
  const where = (key: RunConfigKey): Partial<Position> => {
    const from = raw[key]?.from;
    return from === undefined ? {} : at(from);
  };
  const reportAcross = (key: RunConfigKey, message: string): void => report({ key, message, ...where(key) });

  const epochs = value('epochs');
  const maxSteps = value('max_steps');
  const warmup = value('warmup_steps');
  if (epochs === 0 && maxSteps === 0) {
    reportAcross('epochs', 'epochs and max_steps are both 0, so nothing would train; set epochs to 1 or more, or max_steps');
  }
  if (warmup !== undefined && maxSteps !== undefined && maxSteps > 0 && warmup > maxSteps) {
    reportAcross(
      'warmup_steps',
      `${warmup} warmup steps is more than max_steps (${maxSteps}); the learning rate would never reach its peak`,
    );
  }
  for (const key of options.require ?? []) {
    if (value(key) === '') reportAcross(key, 'required: give a path');
  }

  if (ranked.length > 0) {
    // Array.prototype.sort is stable, so issues from one key keep their order.
    return { ok: false, issues: ranked.sort((a, b) => a.rank - b.rank).map((r) => r.issue) };
  }

  const config = v.parse(RunConfigSchema, valid);
  warnings.push(...collectWarnings(config).map((w) => ({ ...w, ...where(w.key) })));
  if (SWEEP_KEY in input) {
    // Read where one run is wanted (the form's YAML view, a plain train request): say the grid is not run here.
    warnings.push({ key: SWEEP_KEY, message: "lists runs to try, which this config alone does not run: use the queue's \"Add a grid\" or the headless runner", ...at(SWEEP_KEY) });
  }
  return { ok: true, config, aliases, warnings };
}

/** Legal but probably not what was meant. */
function collectWarnings(c: RunConfig): { key: RunConfigKey; message: string }[] {
  const out: { key: RunConfigKey; message: string }[] = [];
  if (c.learning_rate === 0) {
    out.push({ key: 'learning_rate', message: '0 means the weights never change; useful only to test the pipeline' });
  } else if (c.learning_rate > 1e-2) {
    out.push({
      key: 'learning_rate',
      message: `${c.learning_rate} is high for LoRA (usual: 1e-5 to 5e-4); the loss may diverge`,
    });
  }
  // The update is scaled by alpha/rank; common practice is alpha = rank to 2·rank, and QLoRA's
  // r=64, alpha=16 marks the low end people use on purpose.
  const ratio = c.lora_alpha / c.lora_rank;
  if (ratio < 0.25 || ratio > 4) {
    out.push({
      key: 'lora_alpha',
      message: `lora_alpha ${c.lora_alpha} with lora_rank ${c.lora_rank} scales the update by ${+ratio.toPrecision(3)}${
        c.use_rslora ? ' (before rsLoRA\'s sqrt)' : ''
      }; alpha is usually 1 to 2 times the rank`,
    });
  }
  if (c.max_steps > 0 && c.epochs > 1) {
    out.push({
      key: 'epochs',
      message: `epochs (${c.epochs}) is ignored because max_steps (${c.max_steps}) is set; training stops after max_steps`,
    });
  }
  const hasValidation = c.val_data !== null || c.val_split > 0;
  if (!hasValidation && c.eval_steps > 0) {
    out.push({ key: 'eval_steps', message: 'set, but there is no validation data (val_data or val_split), so nothing is evaluated' });
  }
  if (!hasValidation && c.eval_on_start) {
    out.push({ key: 'eval_on_start', message: 'set, but there is no validation data (val_data or val_split), so nothing is evaluated before step 1' });
  }
  if (!hasValidation && c.early_stopping_patience > 0) {
    out.push({
      key: 'early_stopping_patience',
      message: 'set, but there is no validation data (val_data or val_split), so training never stops early',
    });
  }
  if (c.val_data !== null && c.val_split > 0) {
    out.push({ key: 'val_split', message: 'ignored because val_data is given' });
  }
  if (c.sample_steps > 0 && c.sample_prompts.length === 0) {
    out.push({ key: 'sample_steps', message: 'set, but sample_prompts is empty, so nothing is sampled' });
  }
  if (c.log_steps === 0) {
    out.push({ key: 'log_steps', message: '0 turns logging off: no loss curve and no event file' });
  }
  // Image runs. kohya trains the text encoder unless told not to; here it is off unless asked for, so
  // a kohya config that sets only text_encoder_lr would silently lose it.
  if (!c.train_text_encoder && c.text_encoder_lr !== null && c.text_encoder_lr > 0) {
    out.push({
      key: 'text_encoder_lr',
      message: 'set, but train_text_encoder is false, so the text encoder is not trained; set train_text_encoder: true (or network_train_unet_only: false) to train it',
    });
  }
  if (c.train_text_encoder && c.text_encoder_lr === 0) {
    out.push({ key: 'text_encoder_lr', message: '0 leaves the text encoder untrained (as in kohya), although train_text_encoder is true' });
  }
  if (c.unet_lr === 0) {
    out.push({ key: 'unet_lr', message: '0 means the UNet LoRA never changes; only the text encoder can learn' });
  }
  return out;
}

/**
 * Checks a config given as plain data (from a form, JSON, or parsed YAML): canonical keys and the
 * other tools' aliases, numeric strings accepted. Reports every problem, not just the first.
 */
export function parseRunConfig(input: Record<string, unknown>, options: ParseOptions = {}): ConfigParseResult {
  return parseWithPositions(input, options, () => undefined);
}

/**
 * Parses YAML text (YAML 1.2, so `1e-4` is a number) and checks it like parseRunConfig, adding the
 * line and column of each key at fault. An empty file is an empty config: every default.
 */
export function parseRunConfigYaml(text: string, fileName = 'config.yaml', options: ParseOptions = {}): ConfigParseResult {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      fileName,
      issues: doc.errors.map((e) => {
        const { line, col } = lines.linePos(e.pos[0]);
        return { key: '', message: `not valid YAML at line ${line}, column ${col}: ${e.message}`, line, col };
      }),
    };
  }

  let data: unknown;
  try {
    data = doc.toJS();
  } catch (e) {
    // toJS refuses documents that expand aliases without bound (a "billion laughs" file).
    const why = e instanceof Error ? e.message : String(e);
    return { ok: false, fileName, issues: [{ key: '', message: `could not be read: ${why}` }] };
  }

  const keyPositions = new Map<string, Position>();
  if (isMap(doc.contents)) {
    for (const pair of doc.contents.items) {
      if (isScalar(pair.key) && pair.key.range) keyPositions.set(String(pair.key.value), lines.linePos(pair.key.range[0]));
    }
  }
  const result = parseWithPositions(data ?? {}, options, (key) => keyPositions.get(key));
  return result.ok ? result : { ...result, fileName };
}

/** One issue as a line of text: "line 4: lora_rnak: unknown key — did you mean lora_rank?". */
export function formatIssue(issue: ConfigIssue): string {
  // Whole-file issues already say where they are.
  const where = issue.key !== '' && issue.line !== undefined ? `line ${issue.line}: ` : '';
  return `${where}${issue.key === '' ? '' : `${issue.key}: `}${issue.message}`;
}

/**
 * The config from a parse result, or one UserError listing every issue. Its subject is the key when
 * there is exactly one keyed issue, otherwise the file name (or "run config").
 */
export function unwrapRunConfig(
  result: ConfigParseResult,
  fileName?: string,
): { config: RunConfig; aliases: readonly AliasUse[]; warnings: readonly ConfigIssue[] } {
  if (result.ok) return { config: result.config, aliases: result.aliases, warnings: result.warnings };
  const subject = fileName ?? result.fileName ?? 'run config';
  const [only] = result.issues;
  if (result.issues.length === 1 && only) {
    const where = only.line !== undefined && only.key !== '' ? ` (${subject} line ${only.line})` : '';
    return throwIssue(only.key === '' ? subject : only.key, `${only.message}${where}`);
  }
  const list = result.issues.map((issue) => `\n- ${formatIssue(issue)}`).join('');
  return throwIssue(subject, `${result.issues.length} problems:${list}`);
}

function throwIssue(subject: string, problem: string): never {
  throw new UserError(subject, problem);
}
