import * as v from 'valibot';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node } from 'yaml';
import { isConfigKey, KEY_ALIASES, suggestKey } from './aliases';
import { parseRunConfig, parseRunConfigYaml, SWEEP_KEY, valuesEqual, type ConfigIssue, type ParseOptions } from './parse';
import { FIELD_RULES, RunConfigFields, type RunConfig, type RunConfigKey } from './schema';

/**
 * Sweeps: a `sweep:` map in the run config, config key → list of values, is the grid of runs to try
 * (`sweep: {learning_rate: [1e-4, 2e-4], lora_rank: [8, 16]}` = four runs). Each run is the config
 * with one value per swept key, checked like a plain config, and trains into its own folder under
 * output_dir named from the values that set it apart (`lr_2e-4_r_16`, the seed's style).
 */

/** More runs than this is almost surely a typo in a list, and would take hours. */
export const MAX_SWEEP_RUNS = 64;

/** Short names for the keys people sweep most; any other key is named by itself. */
const SHORT_NAMES: Partial<Record<RunConfigKey, string>> = {
  learning_rate: 'lr',
  lora_rank: 'r',
  lora_alpha: 'alpha',
  lora_dropout: 'dropout',
  batch_size: 'bs',
  epochs: 'ep',
};

/** Keys a sweep cannot vary, and why. */
const NOT_SWEPT: Partial<Record<RunConfigKey, string>> = {
  output_dir: "cannot be swept: each run's folder is named from the swept values under output_dir",
  base_model: 'cannot be swept: a sweep trains one model; write one config per model',
  train_data: 'cannot be swept: a sweep trains on one dataset; write one config per dataset',
  val_data: 'cannot be swept: a sweep evaluates on one dataset; write one config per dataset',
};

/** One swept key's value in one run, after the key's own check (so `"1e-4"` is the number 0.0001). */
export interface SweptValue {
  readonly key: RunConfigKey;
  readonly value: unknown;
}

export interface SweepRun {
  /** The run's folder under output_dir, e.g. `lr_2e-4_r_16`. */
  readonly name: string;
  /** One value per swept key, in the order the sweep lists the keys. */
  readonly values: readonly SweptValue[];
  /** The full run config; its output_dir is the sweep's output_dir joined with `name`. */
  readonly config: RunConfig;
}

export interface Sweep {
  /** The swept keys in written order; each run has one value for each. */
  readonly keys: readonly RunConfigKey[];
  /** Every combination, the first key varying slowest (the order the lists read in). */
  readonly runs: readonly SweepRun[];
}

export type SweepParseResult =
  | {
      readonly ok: true;
      /** The config without its sweep; null sweep = a plain config of one run. */
      readonly config: RunConfig;
      readonly sweep: Sweep | null;
      readonly warnings: readonly ConfigIssue[];
    }
  | { readonly ok: false; readonly issues: readonly ConfigIssue[]; readonly fileName?: string };

type Position = { line: number; col: number };

/** Where the sweep's parts were written: each key, and each value of its list. */
export interface SweepPositions {
  key(key: string): Position | undefined;
  item(key: string, index: number): Position | undefined;
  /** The `sweep:` key itself. */
  readonly self?: Position;
}

const NO_POSITIONS: SweepPositions = { key: () => undefined, item: () => undefined };

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function show(value: unknown): string {
  if (typeof value === 'number') return String(value);
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/**
 * A value as it reads in a folder name: small rates in exponent form as people write them (`1e-4`,
 * `2.5e-5`), other numbers plain (`16`, `0.1`); text kept to characters safe in any file system.
 */
export function sweepValueName(value: unknown): string {
  if (typeof value === 'number') {
    if (Number.isInteger(value)) return String(value);
    const plain = String(value);
    const exp = value.toExponential().replace('e+', 'e');
    return exp.length < plain.length || (exp.length === plain.length && Math.abs(value) < 0.1) ? exp : plain;
  }
  if (Array.isArray(value)) return value.map(sweepValueName).join('+');
  const text = String(value).replace(/[^A-Za-z0-9._+-]+/g, '-').replace(/^[-.]+|-+$/g, '');
  return text === '' ? 'empty' : text;
}

/** The folder name of one run from the values that set it apart: `lr_2e-4_r_16`. */
export function sweepRunName(values: readonly SweptValue[]): string {
  return values.map(({ key, value }) => `${SHORT_NAMES[key] ?? key}_${sweepValueName(value)}`).join('_');
}

/** output_dir joined with a run's folder, in the separator the config already uses. */
function joinDir(dir: string, name: string): string {
  const trimmed = dir.replace(/[\\/]+$/, '');
  const sep = trimmed.includes('\\') && !trimmed.includes('/') ? '\\' : '/';
  return `${trimmed}${sep}${name}`;
}

/** Every combination of the lists, the first list varying slowest. */
function grid<T>(lists: readonly (readonly T[])[]): T[][] {
  return lists.reduce<T[][]>((rows, list) => rows.flatMap((row) => list.map((item) => [...row, item])), [[]]);
}

/**
 * Checks a `sweep:` map against the config it belongs to (`input`, the config's keys as written,
 * `sweep` left out or not) and expands it. Every problem is reported, each with the swept key (as
 * `sweep.<key>`) and, when positions are given, its line.
 */
export function expandSweep(
  input: Record<string, unknown>,
  sweepValue: unknown,
  options: ParseOptions = {},
  positions: SweepPositions = NO_POSITIONS,
): { ok: true; sweep: Sweep; warnings: ConfigIssue[] } | { ok: false; issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = [];
  const at = (p: Position | undefined): Partial<Position> => p ?? {};
  if (!isRecord(sweepValue)) {
    const example = 'e.g. sweep: {learning_rate: [1e-4, 2e-4]}';
    return { ok: false, issues: [{ key: SWEEP_KEY, message: `must be a map of config keys to lists of values (${example})`, ...at(positions.self) }] };
  }
  if (Object.keys(sweepValue).length === 0) {
    return { ok: false, issues: [{ key: SWEEP_KEY, message: 'lists no keys; give a list of values for a key, or remove sweep', ...at(positions.self) }] };
  }

  const keys: RunConfigKey[] = [];
  const lists: SweptValue[][] = [];
  for (const [written, list] of Object.entries(sweepValue)) {
    const where = at(positions.key(written));
    const key = isConfigKey(written) ? written : KEY_ALIASES.get(written)?.to;
    const name = `${SWEEP_KEY}.${written}`;
    if (key === undefined) {
      const near = suggestKey(written);
      issues.push({ key: name, message: `unknown key${near === null ? '' : ` — did you mean ${near}?`}`, ...where });
      continue;
    }
    const refused = NOT_SWEPT[key];
    if (refused) {
      issues.push({ key: name, message: refused, ...where });
      continue;
    }
    if (keys.includes(key)) {
      issues.push({ key: name, message: `${key} is swept twice; keep one list`, ...where });
      continue;
    }
    if (!Array.isArray(list)) {
      issues.push({ key: name, message: `must be a list of values to try, e.g. [${show(list)}, …], got ${show(list)}`, ...where });
      continue;
    }
    if (list.length === 0) {
      issues.push({ key: name, message: 'the list is empty; give at least one value, or remove the key', ...where });
      continue;
    }
    const checked: SweptValue[] = [];
    list.forEach((item, i) => {
      const itemAt = at(positions.item(written, i) ?? positions.key(written));
      // An inverting alias (network_train_unet_only) lists its own values; turn them round like parse.ts.
      const read = isConfigKey(written) ? undefined : KEY_ALIASES.get(written)?.read;
      const result = v.safeParse(RunConfigFields.entries[key] as v.GenericSchema<unknown, unknown>, read ? read(item) : item);
      if (!result.success || item === null || item === undefined) {
        issues.push({ key: name, message: `must be ${FIELD_RULES[key].accepts}, got ${show(item)}`, ...itemAt });
      } else if (checked.some((c) => valuesEqual(c.value, result.output))) {
        issues.push({ key: name, message: `lists ${show(item)} twice; each value runs once`, ...itemAt });
      } else {
        checked.push({ key, value: result.output });
      }
    });
    keys.push(key);
    lists.push(checked);
  }
  if (issues.length > 0) return { ok: false, issues };

  const count = lists.reduce((n, l) => n * l.length, 1);
  if (count > MAX_SWEEP_RUNS) {
    const sizes = lists.map((l) => l.length).join(' × ');
    return {
      ok: false,
      issues: [{ key: SWEEP_KEY, message: `${sizes} = ${count} runs, more than the ${MAX_SWEEP_RUNS} a sweep may hold; shorten the lists`, ...at(positions.self) }],
    };
  }

  // The name holds the keys whose value changes from run to run; a one-value list sets a key for
  // every run alike. When nothing varies (a single run) every key names it.
  const varying = keys.filter((_, i) => (lists[i]?.length ?? 0) > 1);
  const named = varying.length > 0 ? varying : keys;

  // Top-level keys that are swept (under any of their names) give way to the sweep's values.
  const warnings: ConfigIssue[] = [];
  const base: Record<string, unknown> = {};
  for (const [written, value] of Object.entries(input)) {
    if (written === SWEEP_KEY) continue;
    const key = isConfigKey(written) ? written : KEY_ALIASES.get(written)?.to;
    if (key !== undefined && keys.includes(key)) {
      warnings.push({ key, message: `${show(value)} is replaced by the sweep's values` });
      continue;
    }
    base[written] = value;
  }

  const runs: SweepRun[] = [];
  const seenNames = new Map<string, string>();
  const seenIssues = new Set<string>();
  const seenWarnings = new Set<string>();
  for (const values of grid(lists)) {
    const name = sweepRunName(values.filter((sv) => named.includes(sv.key)));
    const parsed = parseRunConfig({ ...base, ...Object.fromEntries(values.map((sv) => [sv.key, sv.value])) }, options);
    if (!parsed.ok) {
      for (const issue of parsed.issues) {
        const text = `${issue.key}: ${issue.message}`;
        if (seenIssues.has(text)) continue;
        seenIssues.add(text);
        issues.push({ ...issue, message: `${issue.message} (in run ${name})` });
      }
      continue;
    }
    const twin = seenNames.get(name);
    if (twin !== undefined) {
      issues.push({ key: SWEEP_KEY, message: `two runs would share the folder ${name} (${twin} and ${show(values.map((sv) => sv.value))}); make the values differ`, ...at(positions.self) });
      continue;
    }
    seenNames.set(name, show(values.map((sv) => sv.value)));
    for (const w of parsed.warnings) {
      const text = `${w.key}: ${w.message}`;
      if (seenWarnings.has(text)) continue;
      seenWarnings.add(text);
      warnings.push({ ...w, message: `${w.message} (in run ${name})` });
    }
    runs.push({ name, values, config: { ...parsed.config, output_dir: joinDir(parsed.config.output_dir, name) } });
  }
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, sweep: { keys, runs }, warnings };
}

/** Where a sweep map's keys and list items sit in the YAML text: under `sweep:`, or the whole document. */
function sweepPositions(text: string, at: 'sweep-key' | 'root'): SweepPositions {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const pos = (node: unknown): Position | undefined => {
    const range = (node as Node | null | undefined)?.range;
    return range ? lines.linePos(range[0]) : undefined;
  };
  const keys = new Map<string, Position | undefined>();
  const items = new Map<string, (Position | undefined)[]>();
  let self: Position | undefined;
  let map: unknown = doc.contents;
  if (at === 'sweep-key') {
    const pair = isMap(doc.contents) ? doc.contents.items.find((p) => isScalar(p.key) && p.key.value === SWEEP_KEY) : undefined;
    self = pos(pair?.key);
    map = pair?.value;
  } else {
    self = pos(doc.contents);
  }
  if (isMap(map)) {
    for (const inner of map.items) {
      if (!isScalar(inner.key)) continue;
      const name = String(inner.key.value);
      keys.set(name, pos(inner.key));
      if (isSeq(inner.value)) items.set(name, inner.value.items.map((item) => pos(item)));
    }
  }
  return { key: (k) => keys.get(k), item: (k, i) => items.get(k)?.[i], ...(self ? { self } : {}) };
}

/**
 * A grid written on its own (the app's queue: `learning_rate: [1e-4, 2e-4]` on each line, no `sweep:`
 * around it) expanded against a config that is already checked. Issues carry the grid's own lines.
 */
export function parseSweepGrid(config: RunConfig, text: string): { ok: true; sweep: Sweep; warnings: ConfigIssue[] } | { ok: false; issues: ConfigIssue[] } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  if (doc.errors.length > 0) {
    return {
      ok: false,
      issues: doc.errors.map((e) => {
        const { line, col } = lines.linePos(e.pos[0]);
        return { key: '', message: `not valid YAML at line ${line}, column ${col}: ${e.message}`, line, col };
      }),
    };
  }
  let grid: unknown;
  try {
    grid = doc.toJS();
  } catch (e) {
    return { ok: false, issues: [{ key: '', message: `could not be read: ${e instanceof Error ? e.message : String(e)}` }] };
  }
  return expandSweep({ ...config }, grid ?? {}, {}, sweepPositions(text, 'root'));
}

/**
 * Parses a run config's YAML that may hold a `sweep:` map: the config is checked as parseRunConfigYaml
 * checks it, the sweep as expandSweep does, and their issues are reported together.
 */
export function parseSweepYaml(text: string, fileName = 'config.yaml', options: ParseOptions = {}): SweepParseResult {
  const plain = parseRunConfigYaml(text, fileName, options);
  // A YAML that cannot be read has nothing more to check.
  if (!plain.ok && plain.issues.some((i) => i.key === '')) return plain;
  const data: unknown = parseDocument(text).toJS();
  const input = isRecord(data) ? data : {};
  if (!(SWEEP_KEY in input)) return plain.ok ? { ok: true, config: plain.config, sweep: null, warnings: plain.warnings } : plain;

  const expanded = expandSweep(input, input[SWEEP_KEY], options, sweepPositions(text, 'sweep-key'));
  // Where the plain config is already at fault, every run repeats its issues: keep the sweep's own.
  const sweepIssues = expanded.ok ? [] : plain.ok ? expanded.issues : expanded.issues.filter((i) => i.key.startsWith(SWEEP_KEY));
  const issues = [...(plain.ok ? [] : plain.issues), ...sweepIssues];
  if (!plain.ok || !expanded.ok) {
    // Read down the file: issues with a line in line order, whole-config ones last.
    const line = (i: ConfigIssue) => i.line ?? Number.MAX_SAFE_INTEGER;
    return { ok: false, fileName, issues: issues.sort((a, b) => line(a) - line(b)) };
  }
  // The plain parse's note that a sweep is not run there does not apply here, where it is.
  const own = plain.warnings.filter((w) => w.key !== SWEEP_KEY);
  return { ok: true, config: plain.config, sweep: expanded.sweep, warnings: [...own, ...expanded.warnings] };
}
