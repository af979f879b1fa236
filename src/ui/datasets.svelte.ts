import { metaName } from '../core/data/formats/bin';
import { isUserError } from '../core/errors';
import { checkDatasetSize, deleteDataset, listDatasets, type StoredDataset } from '../storage/datasets';
import { openDatabase } from '../storage/db';
import { listRuns, readMetrics } from '../storage/runs';
import { WorkerError } from '../worker/client';
import type { ErrorDetail, Progress } from '../worker/protocol';
import { runConfig } from './config-store.svelte';
import { engine } from './engine.svelte';

const TRAIN_KEY = 'lora-lab.train-dataset';
const VAL_KEY = 'lora-lab.val-dataset';

/** File types the picker offers (the formats readDataset reads, and a .bin's .meta.json). */
export const DATASET_ACCEPT = '.txt,.md,.markdown,.text,.jsonl,.ndjson,.json,.csv,.tsv,.bin';

/**
 * The stored datasets and which one trains and which validates. The list is read straight from IndexedDB; checking
 * and storing a file goes through the worker, which needs the selected model's tokenizer, so importing waits for a
 * model to be chosen. The choice survives reloads (localStorage), like the chosen model.
 */
class DatasetStore {
  items = $state<StoredDataset[]>([]);
  trainId = $state<string | null>(localStorage.getItem(TRAIN_KEY));
  valId = $state<string | null>(localStorage.getItem(VAL_KEY));
  progress = $state<Progress | null>(null);
  progressStartedAt = $state(0);
  /** The last import's problem, shown next to the picker until the next import or a dismissal. */
  importError = $state<ErrorDetail | null>(null);
  private controller: AbortController | null = null;
  private loaded = false;

  readonly train = $derived(this.items.find((d) => d.id === this.trainId) ?? null);
  readonly validation = $derived(this.items.find((d) => d.id === this.valId) ?? null);

  /** Reads the list once, the first time a panel asks. */
  ensureLoaded(): void {
    if (this.loaded) return;
    this.loaded = true;
    void this.refresh();
  }

  async refresh(): Promise<void> {
    this.items = await listDatasets(await openDatabase());
    if (this.trainId !== null && !this.items.some((d) => d.id === this.trainId)) this.selectTrain(null);
    if (this.valId !== null && !this.items.some((d) => d.id === this.valId)) this.selectValidation(null);
  }

  get importing(): boolean {
    return this.progress !== null;
  }

  /**
   * Imports the picked or dropped files one after another; a .bin's `<name>.meta.json` travels with it. Stops at the
   * first file that is refused, whose problem is shown; the files before it stay imported.
   */
  async importFiles(files: readonly File[]): Promise<void> {
    const model = engine.selectedModel;
    if (files.length === 0 || this.importing || !model) return;
    this.importError = null;
    const metaFor = (bin: File) => files.find((f) => f.name === metaName(bin.name)) ?? null;
    // A .bin's .meta.json is imported with it, never as a dataset of its own.
    const metas = new Set(files.filter((f) => /\.bin$/i.test(f.name)).map((f) => metaName(f.name)));
    const data = files.filter((f) => !metas.has(f.name));
    this.controller = new AbortController();
    try {
      for (const file of data) {
        this.progressStartedAt = Date.now();
        this.progress = { phase: `Checking ${file.name}`, done: 0, total: file.size, unit: 'bytes' };
        // Refused here already, so a huge file is never handed to the worker at all.
        checkDatasetSize(file.name, file.size);
        await engine.requestPersistence();
        const { dataset } = await engine.client.call(
          'importDataset',
          { modelId: model.id, file, meta: /\.bin$/i.test(file.name) ? metaFor(file) : null },
          { signal: this.controller.signal, onProgress: (p) => (this.progress = p) },
        );
        await this.refresh();
        this.selectTrain(dataset.id);
      }
    } catch (e) {
      this.importError = errorDetail(e);
    } finally {
      this.progress = null;
      this.controller = null;
      await engine.refreshStorage();
    }
  }

  cancelImport(): void {
    this.controller?.abort();
  }

  async remove(id: string): Promise<void> {
    await deleteDataset(await openDatabase(), id);
    await this.refresh();
    await engine.refreshStorage();
  }

  /** Chooses the training dataset; the config's train_data names it, so a run's config.yaml says what it learnt from. */
  selectTrain(id: string | null): void {
    this.trainId = id;
    store(TRAIN_KEY, id);
    if (id !== null && id === this.valId) this.selectValidation(null);
    const name = this.items.find((d) => d.id === id)?.name ?? '';
    if (runConfig.value.train_data !== name) runConfig.set({ train_data: name });
  }

  selectValidation(id: string | null): void {
    this.valId = id;
    store(VAL_KEY, id);
    const name = this.items.find((d) => d.id === id)?.name ?? null;
    if (runConfig.value.val_data !== name) runConfig.set({ val_data: name });
  }
}

function store(key: string, value: string | null): void {
  if (value === null) localStorage.removeItem(key);
  else localStorage.setItem(key, value);
}

/** Any failure as the ErrorNote shows it: a person's mistake (with its subject) or a bug. */
export function errorDetail(e: unknown): ErrorDetail {
  if (e instanceof WorkerError) return e.detail;
  if (isUserError(e)) return { message: e.message, subject: e.subject, fix: e.fix, userError: true };
  if (e instanceof DOMException && e.name === 'AbortError') return { message: 'Cancelled.', userError: true };
  return { message: (e as Error).message, userError: false };
}

/**
 * A measured training speed for the time estimate: the median tokens/s of the newest run of this model on this
 * backend (the one in progress or just ended, else the newest stored). Throughput varies with batch_size and
 * seq_len, so it is a rough guide, and said to be one.
 */
export async function measuredThroughput(modelId: string, backend: string): Promise<{ tokensPerSecond: number; runName: string } | null> {
  const db = await openDatabase();
  for (const run of await listRuns(db)) {
    if (run.modelId !== modelId || run.backend !== backend) continue;
    const speeds = (await readMetrics(db, run.id)).flatMap((m) => (m.tokensPerSecond !== null && m.tokensPerSecond > 0 ? [m.tokensPerSecond] : []));
    if (speeds.length === 0) continue;
    speeds.sort((a, b) => a - b);
    return { tokensPerSecond: speeds[Math.floor(speeds.length / 2)]!, runName: run.name };
  }
  return null;
}

export const datasets = new DatasetStore();
