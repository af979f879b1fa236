import { Zip, ZipDeflate, ZipPassThrough } from 'fflate';
import type { RunConfig } from '../config/schema';
import type { Finding } from '../diagnose/types';
import { UserError } from '../errors';
import { lossCurvesOf, lossPlotPng } from './loss-plot-png';
import { modelCard, type RunDataSummary } from './model-card';
import { metricsCsv, type MetricsCsvRow } from './run-files';

/**
 * A run's output folder, the same files whether the app zips it for download or the headless runner writes it
 * into output_dir: the stored artifacts (adapter, config.yaml, diagnosis.json, run_summary.json, checkpoint-N/,
 * merged/), the TensorBoard log under logs/, and what is made from the stored run at export: metrics.csv, the
 * model card README.md with its loss plot, and llamafactory/ (llamafactory.ts).
 */

export interface BundleFile {
  /** Path inside the run's folder, `/`-separated. */
  readonly path: string;
  readonly bytes: Uint8Array;
}

/**
 * A file of the run's folder as stored: its bytes, or, for a file too large to hold in memory (a merged model's
 * shard, see runs.ts putArtifact), a Blob the browser keeps on disk, which the zip reads one slice at a time.
 */
export interface OutputFile {
  readonly path: string;
  readonly bytes: Uint8Array | Blob;
}

/** The loss plot's path in the folder, as README.md links it. */
export const LOSS_PLOT_PATH = 'loss_curves.png';

/** What the folder is made from; `F` is the stored files' type (OutputFile where big ones are Blobs). */
export interface RunBundleInput<F extends OutputFile = BundleFile> {
  readonly runName: string;
  readonly baseModel: string;
  readonly config: RunConfig;
  readonly targets: readonly string[] | 'all-linear';
  readonly status: string;
  readonly steps: number;
  readonly data: RunDataSummary | null;
  readonly metrics: readonly MetricsCsvRow[];
  readonly findings: readonly Finding[];
  /** The run's stored files, as stored. */
  readonly artifacts: readonly F[];
  /** The TensorBoard event file, already under logs/; null when the run logged none. */
  readonly log: BundleFile | null;
  /** llamafactory/'s files (llamaFactoryFiles), or none when the run's data is gone. */
  readonly llamaFactory: readonly BundleFile[];
}

export function runBundleFiles<F extends OutputFile = BundleFile>(input: RunBundleInput<F>): (F | BundleFile)[] {
  const text = new TextEncoder();
  const curves = lossCurvesOf(input.metrics);
  const origin = adapterOrigin(input.artifacts.find((f) => f.path === 'run_summary.json'));
  const card = modelCard({
    runName: input.runName,
    baseModel: input.baseModel,
    config: input.config,
    targets: input.targets,
    status: input.status,
    steps: input.steps,
    data: input.data,
    curves,
    findings: input.findings,
    bestEval: origin.bestEval,
    adapterFromStep: origin.adapterFromStep,
    plotPath: LOSS_PLOT_PATH,
    hasMerged: input.artifacts.some((f) => f.path.startsWith('merged/')),
    hasLlamaFactory: input.llamaFactory.length > 0,
  });
  // Made here, so a stored file of the same name (there is none today) would not be written twice.
  const made = new Set(['metrics.csv', 'README.md', LOSS_PLOT_PATH]);
  return [
    ...input.artifacts.filter((f) => !made.has(f.path)),
    ...(input.log ? [input.log] : []),
    { path: 'metrics.csv', bytes: text.encode(metricsCsv(input.metrics)) },
    { path: 'README.md', bytes: text.encode(card) },
    { path: LOSS_PLOT_PATH, bytes: lossPlotPng(curves) },
    ...input.llamaFactory,
  ];
}

/** best_eval and adapter_from_step of run_summary.json, when the run wrote them. */
function adapterOrigin(file: OutputFile | undefined): { bestEval: { step: number; eval_loss: number } | null; adapterFromStep: number | null } {
  const none = { bestEval: null, adapterFromStep: null };
  // run_summary.json is stored as bytes (putArtifact); only merged/ files are Blobs.
  if (!file || file.bytes instanceof Blob) return none;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(file.bytes));
  } catch {
    return none;
  }
  if (typeof json !== 'object' || json === null) return none;
  const { best_eval: best, adapter_from_step: from } = json as Record<string, unknown>;
  const bestEval =
    typeof best === 'object' && best !== null && typeof (best as Record<string, unknown>).step === 'number' && typeof (best as Record<string, unknown>).eval_loss === 'number'
      ? { step: (best as { step: number }).step, eval_loss: (best as { eval_loss: number }).eval_loss }
      : null;
  return { bestEval, adapterFromStep: typeof from === 'number' ? from : null };
}

// ─── The zip ───────────────────────────────────────────────────────────────────────────────────────

/** The largest zip without ZIP64 records (offsets and sizes are 32-bit). */
const ZIP32_LIMIT_BYTES = 0xffff_ffff;

/** Slices pushed into the zip at a time, so the compressed output comes out in pieces of bounded size. */
const SLICE_BYTES = 4 * 1024 * 1024;

/** Already compressed or incompressible (float weights): stored as they are, which is much faster than deflating. */
const STORED = /\.(safetensors|png|bin)$/i;

/**
 * Zips `files` under the folder `root`, streaming: each file is consumed in slices (a Blob read one slice at a
 * time) and the zip's bytes are handed to `onChunk` as they are made, so the archive never exists as one buffer
 * next to its inputs. A caller that drops its own references as the iterator moves on holds each input only while
 * it is being zipped.
 */
export function zipRunBundle(files: Iterable<OutputFile>, root: string, onChunk: (chunk: Uint8Array) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    let written = 0;
    const fail = (e: Error): void => {
      if (failed) return;
      failed = true;
      reject(e);
    };
    const zip = new Zip((err, chunk, final) => {
      if (failed) return;
      written += chunk?.length ?? 0;
      // fflate writes no ZIP64 records, so offsets past 4 GiB would make a zip that no tool opens.
      const problem = err ?? (written > ZIP32_LIMIT_BYTES ? new UserError(root, 'is over the 4 GB a zip can hold.', "Use the headless runner's output_dir for a run this large.") : null);
      if (problem) {
        fail(problem);
        return;
      }
      onChunk(chunk);
      if (final) resolve();
    });
    // Async: a Blob's slices are read one at a time as they are zipped.
    const feed = async (): Promise<void> => {
      for (const file of files) {
        if (failed) return;
        const name = `${root}/${file.path}`;
        const entry = STORED.test(file.path) ? new ZipPassThrough(name) : new ZipDeflate(name, { level: 6 });
        zip.add(entry);
        const size = file.bytes instanceof Blob ? file.bytes.size : file.bytes.length;
        if (size === 0) entry.push(new Uint8Array(0), true);
        for (let at = 0; at < size && !failed; at += SLICE_BYTES) {
          entry.push(await sliceOf(file.bytes, at, Math.min(size, at + SLICE_BYTES)), at + SLICE_BYTES >= size);
        }
      }
      if (!failed) zip.end();
    };
    feed().catch((e: unknown) => fail(e as Error));
  });
}

/** Bytes [begin, end) of a file, read from disk when it is a Blob. */
async function sliceOf(bytes: Uint8Array | Blob, begin: number, end: number): Promise<Uint8Array> {
  return bytes instanceof Blob ? new Uint8Array(await bytes.slice(begin, end).arrayBuffer()) : bytes.subarray(begin, end);
}

/** Yields the items of `items` while removing them from it, so each can be freed once the consumer is done with it. */
export function* drain<T>(items: T[]): Generator<T> {
  while (items.length > 0) yield items.shift()!;
}
