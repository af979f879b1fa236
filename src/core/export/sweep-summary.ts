import { sweepValueName, type SweptValue } from '../config/sweep';
import type { RunConfigKey } from '../config/schema';

/**
 * sweep_summary.csv: one row per run of a sweep, best first, built from the files each run exported
 * (metrics.csv, diagnosis.json, run_summary.json), so the summary says exactly what the runs' own
 * folders say.
 */

/** What one finished run of a sweep came to. */
export interface SweepRunResult {
  /** The run's folder under output_dir. */
  readonly folder: string;
  readonly values: readonly SweptValue[];
  /** The loss of the last training step that has one; null when no step logged a loss. */
  readonly finalTrainLoss: number | null;
  /** The lowest eval loss and the step it was measured at (the first, on a tie); null without evaluation. */
  readonly bestEval: { readonly loss: number; readonly step: number } | null;
  /** The diagnosis's most severe finding (diagnosis.json lists them most severe first). */
  readonly diagnosis: string;
  /** The run's median training speed (run_summary.json). */
  readonly tokensPerSecond: number | null;
}

/** The exported files of one run, as text. */
export interface RunFilesText {
  readonly metricsCsv: string;
  readonly diagnosisJson: string;
  readonly runSummaryJson: string;
}

/** A metrics.csv cell: empty is "not measured"; NaN and ±Infinity are kept (a diverged run writes them). */
function cell(text: string | undefined): number | null {
  if (text === undefined || text.trim() === '') return null;
  return Number(text);
}

/** Reads the numbers a summary needs from one run's exported files. */
export function sweepRunResult(folder: string, values: readonly SweptValue[], files: RunFilesText): SweepRunResult {
  const [header = '', ...rows] = files.metricsCsv.trim().split(/\r?\n/);
  const columns = header.split(',');
  const column = (name: string): number => {
    const i = columns.indexOf(name);
    if (i < 0) throw new Error(`${folder}/metrics.csv: no ${name} column`);
    return i;
  };
  const [stepAt, lossAt, evalAt] = [column('step'), column('loss'), column('eval_loss')];

  let finalTrainLoss: number | null = null;
  let bestEval: { loss: number; step: number } | null = null;
  for (const row of rows) {
    const cells = row.split(',');
    const step = cell(cells[stepAt]);
    const loss = cell(cells[lossAt]);
    const evalLoss = cell(cells[evalAt]);
    if (loss !== null) finalTrainLoss = loss;
    // A NaN eval is never the best; an unbeaten first value keeps its step.
    if (step !== null && evalLoss !== null && !Number.isNaN(evalLoss) && (bestEval === null || evalLoss < bestEval.loss)) {
      bestEval = { loss: evalLoss, step };
    }
  }

  const findings = JSON.parse(files.diagnosisJson) as { code?: unknown }[];
  const diagnosis = typeof findings[0]?.code === 'string' ? findings[0].code : 'none';
  const summary = JSON.parse(files.runSummaryJson) as { tokens_per_second?: unknown };
  const tokensPerSecond = typeof summary.tokens_per_second === 'number' ? summary.tokens_per_second : null;
  return { folder, values, finalTrainLoss, bestEval, diagnosis, tokensPerSecond };
}

/** Lower is better; a missing or non-finite number ranks after every real one. */
function byLoss(a: number | null | undefined, b: number | null | undefined): number {
  const ok = (x: number | null | undefined): x is number => x !== null && x !== undefined && Number.isFinite(x);
  if (ok(a) && ok(b)) return a - b;
  return ok(a) ? -1 : ok(b) ? 1 : 0;
}

/**
 * Best first: by best eval loss when any run evaluated (final train loss breaks ties and orders runs
 * without an eval), otherwise by final train loss. The sort is stable, so equal runs keep the sweep's order.
 */
export function rankSweepRuns(results: readonly SweepRunResult[]): SweepRunResult[] {
  const anyEval = results.some((r) => r.bestEval !== null);
  return [...results].sort(
    (a, b) => (anyEval ? byLoss(a.bestEval?.loss, b.bestEval?.loss) : 0) || byLoss(a.finalTrainLoss, b.finalTrainLoss),
  );
}

function csvField(text: string): string {
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function number(x: number | null): string {
  return x === null ? '' : String(x);
}

/** A swept value in its cell: numbers exactly, lists joined with `+` as in the folder names. */
function valueCell(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (Array.isArray(value)) return value.map((v) => sweepValueName(v)).join('+');
  return String(value);
}

/**
 * The CSV: rank, folder, one column per swept key (in the sweep's order), then final_train_loss,
 * best_eval_loss, best_eval_step, diagnosis and tokens_per_second; empty where not measured.
 */
export function sweepSummaryCsv(keys: readonly RunConfigKey[], results: readonly SweepRunResult[]): string {
  const header = ['rank', 'folder', ...keys, 'final_train_loss', 'best_eval_loss', 'best_eval_step', 'diagnosis', 'tokens_per_second'];
  const lines = [header.join(',')];
  rankSweepRuns(results).forEach((r, i) => {
    const swept = keys.map((key) => {
      const found = r.values.find((sv) => sv.key === key);
      return found === undefined ? '' : valueCell(found.value);
    });
    const cells = [String(i + 1), r.folder, ...swept, number(r.finalTrainLoss), number(r.bestEval?.loss ?? null), number(r.bestEval?.step ?? null), r.diagnosis, number(r.tokensPerSecond)];
    lines.push(cells.map(csvField).join(','));
  });
  return `${lines.join('\n')}\n`;
}
