import { resolveTargetModules } from '../core/config';
import { chatSettingsFromConfig, metaName, type TokenizedDataset } from '../core/data/dataset';
import { loadTokenizer, type TextTokenizer } from '../core/data/tokenizer';
import { UserError } from '../core/errors';
import { llamaFactoryData, llamaFactoryFiles, type HandoffDataset } from '../core/export/llamafactory';
import type { DataFileSummary, RunDataSummary } from '../core/export/model-card';
import { runBundleFiles, type BundleFile, type OutputFile } from '../core/export/run-bundle';
import { blobSource, type ByteSource } from '../core/safetensors/source';
import type { LoraLabDb, StoredDataRef, StoredModel, StoredRun } from '../storage/db';
import { isKeptAdapterPath } from '../storage/best-adapter';
import { getDataset, storedDatasetSource } from '../storage/datasets';
import { getModel } from '../storage/models';
import { getRun, readArtifacts, readLog, readMetrics } from '../storage/runs';
import type { ExportedFile } from './protocol';

/**
 * Every file of a run's output folder, as the headless runner writes it into output_dir and the UI zips it: the
 * stored artifacts and log, and what core/export/run-bundle.ts makes from the stored run (metrics.csv, README.md,
 * the loss plot, llamafactory/). Files stored as Blobs (a merged model's, see runs.ts putArtifact) stay Blobs,
 * on disk: the zip and the headless runner read them a slice at a time, so a shard is never one buffer.
 */
export async function runOutputFiles(db: LoraLabDb, runId: string): Promise<OutputFile[]> {
  const run = await getRun(db, runId);
  if (!run) throw new UserError('run', 'is not stored any more.');
  // Adapters kept during the run for best-eval selection are not part of the output (best-adapter.ts).
  const artifacts: OutputFile[] = (await readArtifacts(db, runId))
    .filter((a) => !isKeptAdapterPath(a.path))
    .map((a) => ({ path: a.path, bytes: a.bytes instanceof Blob ? a.bytes : new Uint8Array(a.bytes) }));
  const metrics = await readMetrics(db, runId);
  const log = run.logFile ? { path: `logs/${run.logFile}`, bytes: await readLog(db, runId) } : null;
  const stored = await getModel(db, run.modelId);
  const arch = stored?.arch === 'gpt2' || stored?.arch === 'llama' ? stored.arch : null;
  const targets = arch ? resolveTargetModules(run.config, arch) : (run.config.target_modules ?? []);
  return runBundleFiles({
    runName: run.name,
    baseModel: run.modelName,
    config: run.config,
    targets,
    status: run.status,
    steps: run.step,
    data: await dataSummaryOf(db, run),
    metrics,
    findings: run.findings,
    artifacts,
    log,
    llamaFactory: await llamaFactoryFolder(db, run, stored, targets),
  });
}

/**
 * runOutputFiles with every file read into memory: for callers that want the bytes of a run small enough to hold
 * (Node tests, and tools comparing outputs). The app's zip and the headless runner use runOutputFiles.
 */
export async function exportRunFiles(db: LoraLabDb, runId: string): Promise<ExportedFile[]> {
  const files = await runOutputFiles(db, runId);
  return Promise.all(files.map(async (f) => ({ path: f.path, bytes: f.bytes instanceof Blob ? new Uint8Array(await f.bytes.arrayBuffer()) : f.bytes })));
}

/** What a run trained on, as the model card says it: kept by the run, or, for older runs, the stored dataset's. */
async function dataSummaryOf(db: LoraLabDb, run: StoredRun): Promise<RunDataSummary | null> {
  if (run.data?.summary) return run.data.summary;
  const ref = run.data?.train;
  if (!ref || !('datasetId' in ref)) return null;
  const dataset = await getDataset(db, ref.datasetId);
  if (!dataset?.summary) return null;
  const { kind, records, tokens } = dataset.summary;
  return { train: { file: dataset.name, format: dataset.format, kind, records, tokens }, val: null };
}

/** The summary of one file as the run read it. */
export function dataFileSummaryOf(ds: TokenizedDataset): DataFileSummary {
  return { file: ds.file, format: ds.format, kind: ds.kind, records: ds.records, tokens: ds.tokens };
}

/**
 * llamafactory/: the run's data read again from where it is stored, as LLaMA-Factory's JSONL. Empty when the data
 * is gone (its dataset deleted), or when a .bin's ids cannot be turned back into text (its model deleted).
 */
async function llamaFactoryFolder(db: LoraLabDb, run: StoredRun, stored: StoredModel | undefined, targets: readonly string[] | 'all-linear'): Promise<BundleFile[]> {
  if (!run.data) return [];
  let tokenizer: TextTokenizer | null = null;
  const tokenizerOf = () => (stored ? (tokenizer ??= loadTokenizer(stored.files.tokenizer, stored.files.tokenizerConfig)) : null);
  const settings = chatSettingsFromConfig(stored?.files.tokenizerConfig ?? null);
  const read = async (ref: StoredDataRef): Promise<HandoffDataset | null> => {
    const file = await sourceOf(db, ref);
    if (!file) return null;
    const format = /\.bin$/i.test(file.source.name) ? 'bin' : 'other';
    const tok = format === 'bin' || /\.(txt|text|md|markdown)$/i.test(file.source.name) ? tokenizerOf() : null;
    if (format === 'bin' && !tok) return null;
    // The same end-of-text markers the run's read split plain text at (readDataset).
    const eos = settings.eosToken ?? (tok && tok.eosId !== null ? tok.tokenText(tok.eosId) : null);
    const data = await llamaFactoryData(file.source, { markers: ['<|endoftext|>', ...(eos ? [eos] : [])], tokenizer: tok ?? undefined, meta: file.meta });
    return { sourceName: file.source.name, data };
  };
  const train = await read(run.data.train);
  if (!train) return [];
  const val = run.data.val ? await read(run.data.val) : null;
  return llamaFactoryFiles({
    config: run.config,
    targets,
    modelPath: run.config.base_model || run.modelName,
    modelName: run.modelName,
    chatTemplate: settings.chatTemplate,
    train,
    val,
  });
}

async function sourceOf(db: LoraLabDb, ref: StoredDataRef): Promise<{ source: ByteSource; meta: ByteSource | undefined } | null> {
  if (!('datasetId' in ref)) return { source: blobSource(ref.blob, ref.fileName), meta: undefined };
  const dataset = await getDataset(db, ref.datasetId);
  if (!dataset) return null;
  const meta = dataset.metaJson === null ? undefined : blobSource(new Blob([dataset.metaJson]), metaName(dataset.name));
  return { source: storedDatasetSource(db, dataset), meta };
}
