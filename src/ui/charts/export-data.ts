/**
 * What the comparison chart plots, as data: the curves of the ticked runs, aligned onto one step axis for
 * uPlot, and written out as CSV or JSON so that "download what I see" gives exactly the numbers drawn.
 * Pure functions (no DOM, no clock) so the exports can be checked in unit tests.
 */

import type { MetricRow } from '../../storage/db';

/** One scalar curve of one run, as plotted. */
export interface PlottedCurve {
  /** The run's display name (unique among the plotted runs). */
  readonly run: string;
  /** The run's legend label, e.g. `lr_2e-4 (learning_rate 2e-4)`. */
  readonly label: string;
  /** The scalar's TensorBoard tag, e.g. `train/loss` or `eval/loss`. */
  readonly tag: string;
  /** Ascending, unique steps. */
  readonly steps: ArrayLike<number>;
  readonly values: ArrayLike<number>;
  /** The EMA-smoothed values as drawn; null when the curve is drawn raw (eval points). */
  readonly smoothed: ArrayLike<number> | null;
}

export interface ExportMeta {
  /** The smoothing weight of the chart's slider (TensorBoard EMA). */
  readonly smoothing: number;
  readonly logScale: boolean;
  /** The run the config differences are measured against, if any. */
  readonly reference: string | null;
}

const CSV_COLUMNS = ['run', 'label', 'tag', 'step', 'value', 'smoothed'] as const;

/**
 * Long ("tidy") CSV: one row per point, so runs logged at different steps need no padding and
 * `pandas.read_csv(...).pivot(...)` gets any wide shape back. Numbers are written with every digit JS
 * has (they round-trip exactly); non-finite values as NaN / Infinity / -Infinity, which pandas reads.
 */
export function curvesToCsv(curves: readonly PlottedCurve[]): string {
  const lines: string[] = [CSV_COLUMNS.join(',')];
  for (const c of curves) {
    const prefix = `${csvField(c.run)},${csvField(c.label)},${csvField(c.tag)},`;
    for (let i = 0; i < c.steps.length; i++) {
      const smoothed = c.smoothed ? csvNumber(c.smoothed[i]!) : '';
      lines.push(`${prefix}${csvNumber(c.steps[i]!)},${csvNumber(c.values[i]!)},${smoothed}`);
    }
  }
  return lines.join('\n') + '\n';
}

/**
 * JSON grouped by run, then by tag, with the chart settings so the picture can be redrawn elsewhere.
 * JSON has no NaN or Infinity: those points are written as null (a gap, as the chart shows them).
 */
export function curvesToJson(curves: readonly PlottedCurve[], meta: ExportMeta): string {
  const runs: { run: string; label: string; curves: { tag: string; steps: number[]; values: (number | null)[]; smoothed: (number | null)[] | null }[] }[] = [];
  const byRun = new Map<string, (typeof runs)[number]>();
  for (const c of curves) {
    let entry = byRun.get(c.run);
    if (!entry) {
      entry = { run: c.run, label: c.label, curves: [] };
      byRun.set(c.run, entry);
      runs.push(entry);
    }
    entry.curves.push({
      tag: c.tag,
      steps: Array.from(c.steps),
      values: Array.from(c.values, jsonNumber),
      smoothed: c.smoothed ? Array.from(c.smoothed, jsonNumber) : null,
    });
  }
  return JSON.stringify({ smoothing: meta.smoothing, logScale: meta.logScale, reference: meta.reference, runs }, null, 1) + '\n';
}

function csvNumber(v: number): string {
  // String(v) already gives NaN / Infinity / -Infinity; -0 would print as 0, which is fine for a loss.
  return String(v);
}

function jsonNumber(v: number): number | null {
  return Number.isFinite(v) ? v : null;
}

/** RFC 4180: quote a field holding a comma, quote or line break, doubling inner quotes. */
export function csvField(text: string): string {
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/**
 * The sorted union of several ascending step lists: uPlot draws every series against one x array.
 * The common case (runs logged at the same steps) returns the first list's values without sorting.
 */
export function unionSteps(lists: readonly ArrayLike<number>[]): Float64Array {
  if (lists.length === 0) return new Float64Array(0);
  const first = lists[0]!;
  if (lists.every((l) => sameSteps(l, first))) return Float64Array.from(first);
  let total = 0;
  for (const l of lists) total += l.length;
  const all = new Float64Array(total);
  let n = 0;
  for (const l of lists) for (let i = 0; i < l.length; i++) all[n++] = l[i]!;
  all.sort();
  let unique = 0;
  for (let i = 0; i < all.length; i++) if (i === 0 || all[i] !== all[unique - 1]) all[unique++] = all[i]!;
  return all.slice(0, unique);
}

function sameSteps(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * A curve's values placed on the shared x: null where it has no point (uPlot draws a gap, or spans it),
 * and, on a log axis, where the value is not positive (log of it does not exist).
 * When the curve already covers every x and needs no nulls, its values are returned as they are, so a
 * 100k-point Float64Array reaches the canvas without a copy.
 */
export function alignToSteps(
  x: ArrayLike<number>,
  steps: ArrayLike<number>,
  values: ArrayLike<number>,
  logScale: boolean,
): ArrayLike<number> | (number | null)[] {
  const drawable = (v: number) => Number.isFinite(v) && (!logScale || v > 0);
  if (sameSteps(steps, x)) {
    let clean = true;
    for (let i = 0; i < values.length && clean; i++) clean = drawable(values[i]!);
    if (clean) return values;
  }
  const out = new Array<number | null>(x.length).fill(null);
  // Both are ascending: walk them together.
  let j = 0;
  for (let i = 0; i < steps.length; i++) {
    const s = steps[i]!;
    while (j < x.length && x[j]! < s) j++;
    if (j === x.length) break;
    if (x[j] === s) {
      const v = values[i]!;
      out[j] = drawable(v) ? v : null;
    }
  }
  return out;
}

/** A config value as a person writes it in YAML: small and huge numbers in e-notation (`1e-4`, not 0.0001). */
export function formatConfigValue(value: unknown): string {
  if (typeof value === 'number') {
    if (value !== 0 && Number.isFinite(value) && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return value.toExponential().replace('e+', 'e');
    return String(value);
  }
  if (Array.isArray(value)) return `[${value.map(formatConfigValue).join(', ')}]`;
  if (value === null || value === undefined) return 'null';
  return String(value);
}

/** `learning_rate 1e-4 → 2e-4, lora_rank 8 → 16`: how a run's config differs from the reference's. */
export function describeDiff(diff: readonly { key: string; a: unknown; b: unknown }[]): string {
  return diff.map((d) => `${d.key} ${formatConfigValue(d.a)} → ${formatConfigValue(d.b)}`).join(', ');
}

/**
 * The legend label of a run: its name and its own values of the keys that set the compared runs apart,
 * e.g. `lr_2e-4 (learning_rate 2e-4)`, so each line says what was changed without looking it up.
 */
export function legendLabel(name: string, config: Readonly<Record<string, unknown>> | null, keys: readonly string[]): string {
  if (!config || keys.length === 0) return name;
  return `${name} (${keys.map((k) => `${k} ${formatConfigValue(config[k])}`).join(', ')})`;
}

/** A stored curve row, without its run id (a type only: this module stays free of IndexedDB code). */
export type CurveRow = Omit<MetricRow, 'runId'>;

/**
 * A run's curve rows as scalars under the tags its TensorBoard file uses, so stored and imported runs share
 * a tag picker. train/loss here is every step's loss (the rows hold one per step), where the event file
 * holds its mean over each log_steps window: the same curve when log_steps is 1, a finer one otherwise.
 */
export function scalarsOfRows(rows: readonly CurveRow[]): Record<string, { steps: Float64Array; values: Float64Array }> {
  const columns = new Map<string, { steps: number[]; values: number[] }>();
  const add = (tag: string, step: number, value: number | null | undefined) => {
    if (value === null || value === undefined) return;
    let c = columns.get(tag);
    if (!c) columns.set(tag, (c = { steps: [], values: [] }));
    c.steps.push(step);
    c.values.push(value);
  };
  // Rows come ordered by step (the store's key), so every column is ascending too.
  for (const r of rows) {
    add('train/loss', r.step, r.loss);
    add('eval/loss', r.step, r.evalLoss);
    add('train/learning_rate', r.step, r.learningRate);
    add('train/grad_norm', r.step, r.gradNorm);
    add('train/epoch', r.step, r.epoch);
    add('train/tokens_per_second', r.step, r.tokensPerSecond);
    for (const [name, value] of Object.entries(r.custom)) add(name, r.step, value);
  }
  const out: Record<string, { steps: Float64Array; values: Float64Array }> = {};
  for (const [tag, c] of columns) out[tag] = { steps: Float64Array.from(c.steps), values: Float64Array.from(c.values) };
  return out;
}

/** Names made unique for the legend and the export: a repeated name gets ` #2`, ` #3`, … in the given order. */
export function uniqueNames(names: readonly string[]): string[] {
  const used = new Set<string>();
  return names.map((name) => {
    let candidate = name;
    for (let n = 2; used.has(candidate); n++) candidate = `${name} #${n}`;
    used.add(candidate);
    return candidate;
  });
}
