import type { RunConfigKey } from '../core/config/schema';
import { drain, zipRunBundle, type OutputFile } from '../core/export/run-bundle';
import { rankSweepRuns, sweepRunResult, sweepSummaryCsv, type SweepRunResult } from '../core/export/sweep-summary';
import type { QueuedRun, QueuedStatus } from './run-queue-storage';

/**
 * "Download sweep": the runs queued from one grid as one zip laid out as the headless runner lays out
 * output_dir: each run's folder under its sweep name (`lr_1e-4/`, with its own logs/), and
 * sweep_summary.csv beside them, made by the same core function from the same exported files. So
 * `tensorboard --logdir` on the unzipped folder shows every run of the sweep, as with the runner.
 */

/** Queue statuses whose stored run has its output written (so far, for a stopped or interrupted one). */
const HAS_OUTPUT = new Set<QueuedStatus>(['completed', 'stopped', 'diverged', 'interrupted']);

type FinishedRun = QueuedRun & { readonly runId: string };

/** One grid's runs as the queue holds them. */
export interface QueuedSweep {
  readonly id: string;
  /** The last folder of the sweep's output_dir (`output` for `./output/lr_1e-4`): the zip's name and top folder. */
  readonly folder: string;
  /** The swept keys in the sweep's order: the summary's columns. */
  readonly keys: readonly RunConfigKey[];
  /** Runs queued from the grid (still in the queue). */
  readonly total: number;
  /** Those whose output is written, in queue order: what the zip holds. */
  readonly finished: readonly FinishedRun[];
}

/** The sweep's output_dir's last folder: the run's output_dir is it joined with the run's name (config/sweep.ts). */
function sweepFolder(run: QueuedRun): string {
  const parts = run.config.output_dir.split(/[\\/]+/).filter((p) => p !== '' && p !== '.' && p !== '..');
  if (parts.at(-1) === run.name) parts.pop();
  return parts.at(-1) ?? 'sweep';
}

/** The sweeps in the queue, in the order their first run is listed. */
export function queuedSweeps(items: readonly QueuedRun[]): QueuedSweep[] {
  const byId = new Map<string, QueuedRun[]>();
  for (const q of items) {
    if (q.sweepId === null) continue;
    const runs = byId.get(q.sweepId);
    if (runs) runs.push(q);
    else byId.set(q.sweepId, [q]);
  }
  return [...byId].map(([id, runs]) => ({
    id,
    folder: sweepFolder(runs[0]!),
    keys: runs[0]!.values.map((v) => v.key),
    total: runs.length,
    finished: runs.filter((q): q is FinishedRun => q.runId !== null && HAS_OUTPUT.has(q.status)),
  }));
}

/** A run's output folder, as the worker's `exportRun` gives it. */
export type ExportRun = (runId: string) => Promise<readonly OutputFile[]>;

export interface SweepZip {
  readonly zip: Blob;
  /** The best run's folder (the summary's first row). */
  readonly best: string | null;
}

/** A small file's text; a stored file may come as a Blob (run-bundle.ts). */
async function textOf(files: readonly OutputFile[], path: string): Promise<string | null> {
  const file = files.find((f) => f.path === path);
  if (!file) return null;
  return file.bytes instanceof Blob ? file.bytes.text() : new TextDecoder().decode(file.bytes);
}

/**
 * Exports each finished run of the sweep (one at a time, telling `progress`), reads its result from its own
 * exported files as the headless runner does, and zips it all under `sweep.folder`, streamed: each file
 * leaves the list as it is zipped. Throws an Error naming the run that could not be read.
 */
export async function zipSweep(sweep: QueuedSweep, exportRun: ExportRun, progress: (line: string) => void): Promise<SweepZip> {
  const files: OutputFile[] = [];
  const results: SweepRunResult[] = [];
  for (const [i, q] of sweep.finished.entries()) {
    progress(`Reading ${q.name} (${i + 1} of ${sweep.finished.length})…`);
    let runFiles: readonly OutputFile[];
    try {
      runFiles = await exportRun(q.runId);
    } catch (e) {
      throw new Error(`${q.name}: ${(e as Error).message}`);
    }
    // The same stand-ins as the headless runner (scripts/headless-sweep.mjs) for a file a run did not write.
    results.push(
      sweepRunResult(q.name, q.values, {
        metricsCsv: (await textOf(runFiles, 'metrics.csv')) ?? 'step,loss,eval_loss\n',
        diagnosisJson: (await textOf(runFiles, 'diagnosis.json')) ?? '[]',
        runSummaryJson: (await textOf(runFiles, 'run_summary.json')) ?? '{}',
      }),
    );
    for (const f of runFiles) files.push({ path: `${q.name}/${f.path}`, bytes: f.bytes });
  }
  files.unshift({ path: 'sweep_summary.csv', bytes: new TextEncoder().encode(sweepSummaryCsv(sweep.keys, results)) });

  progress(`Zipping ${sweep.finished.length} run${sweep.finished.length === 1 ? '' : 's'}…`);
  const parts: BlobPart[] = [];
  // Each piece becomes a Blob at once, which the browser may keep on disk: merged models' zips are not held in memory.
  await zipRunBundle(drain(files), sweep.folder, (chunk) => parts.push(new Blob([chunk as Uint8Array<ArrayBuffer>])));
  return { zip: new Blob(parts, { type: 'application/zip' }), best: rankSweepRuns(results)[0]?.folder ?? null };
}
