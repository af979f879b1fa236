import type { StoredDiffusionModel } from '../storage/diffusion-models';
import type { ImageAdapterInfo } from '../storage/image-adapters';
import type { ImageDatasetSummary } from '../storage/image-datasets';
import { WorkerError } from '../worker/client';
import type { ErrorDetail, Progress } from '../worker/protocol';
import { engine } from './engine.svelte';

const MODEL_KEY = 'lora-lab.image-model';
const TRAIN_KEY = 'lora-lab.image-train';
const VAL_KEY = 'lora-lab.image-val';

/** A picked file by its path inside the picked folder (without the folder's own name), as the worker stores it. */
export interface FolderFile {
  readonly path: string;
  readonly file: File;
}

/** What an import shows while it runs: its progress and when it began (the ETA is measured from then). */
export interface ImportInProgress {
  readonly what: 'model' | 'images' | 'adapter';
  readonly progress: Progress;
  readonly startedAt: number;
}

/**
 * The image side's library, as the text side's engine (models) and datasets stores keep theirs: the Stable
 * Diffusion models and image folders stored in IndexedDB (listed by the worker, which owns the storage), the image
 * LoRAs stored with each model, and which model, training folder and validation folder are chosen. The choice
 * survives reloads (localStorage), like the text side's; a choice whose record is gone is dropped on the next list.
 * One import at a time: the model and image imports are large and share the storage budget.
 */
class ImageLibraryStore {
  models = $state.raw<StoredDiffusionModel[]>([]);
  datasets = $state.raw<ImageDatasetSummary[]>([]);
  /** Model id → its image LoRAs, newest first; a model not read yet has no entry. */
  adaptersByModel = $state.raw<Record<string, readonly ImageAdapterInfo[]>>({});
  modelId = $state<string | null>(localStorage.getItem(MODEL_KEY));
  trainId = $state<string | null>(localStorage.getItem(TRAIN_KEY));
  valId = $state<string | null>(localStorage.getItem(VAL_KEY));
  importing = $state.raw<ImportInProgress | null>(null);
  /** The last failed import or delete, shown until the next one or a dismissal; nothing stored is lost with it. */
  error = $state<ErrorDetail | null>(null);
  /** True once the first listing has come back (before, "nothing stored yet" would be a guess). */
  listed = $state(false);
  private controller: AbortController | null = null;

  readonly model = $derived(this.models.find((m) => m.id === this.modelId) ?? null);
  readonly train = $derived(this.datasets.find((d) => d.id === this.trainId) ?? null);
  readonly validation = $derived(this.datasets.find((d) => d.id === this.valId) ?? null);
  readonly adapters = $derived(this.modelId === null ? [] : (this.adaptersByModel[this.modelId] ?? []));

  /** Lists models and image folders again; drops choices whose record is gone. */
  async refresh(): Promise<void> {
    const { models, datasets } = await engine.client.call('listImageLibrary', {});
    this.models = models;
    this.datasets = datasets;
    this.listed = true;
    if (this.modelId !== null && !models.some((m) => m.id === this.modelId)) this.selectModel(null);
    if (this.trainId !== null && !datasets.some((d) => d.id === this.trainId)) this.selectTrain(null);
    if (this.valId !== null && !datasets.some((d) => d.id === this.valId)) this.selectValidation(null);
    if (this.modelId !== null) await this.refreshAdapters(this.modelId);
  }

  selectModel(id: string | null): void {
    this.modelId = id;
    remember(MODEL_KEY, id);
    if (id !== null && this.adaptersByModel[id] === undefined) void this.refreshAdapters(id).catch((e: unknown) => (this.error = describe(e)));
  }

  /** A folder is either the training set or the validation set, never both (the eval loss would flatter). */
  selectTrain(id: string | null): void {
    this.trainId = id;
    remember(TRAIN_KEY, id);
    if (id !== null && this.valId === id) this.selectValidation(null);
  }

  selectValidation(id: string | null): void {
    this.valId = id;
    remember(VAL_KEY, id);
    if (id !== null && this.trainId === id) this.selectTrain(null);
  }

  get busy(): boolean {
    return this.importing !== null;
  }

  /** Checks and stores a diffusers folder or a single-file checkpoint (with vocab.json and merges.txt), then selects it. */
  async importModel(name: string, files: readonly FolderFile[]): Promise<StoredDiffusionModel | null> {
    const result = await this.run('model', (onProgress, signal) => engine.client.call('importDiffusionModel', { name, files: [...files] }, { onProgress, signal }));
    if (!result) return null;
    await this.refresh();
    this.selectModel(result.model.id);
    return result.model;
  }

  /** Reads and stores an image folder, then selects it as `role`'s set. */
  async importImages(name: string, files: readonly FolderFile[], role: 'train' | 'val'): Promise<ImageDatasetSummary | null> {
    const result = await this.run('images', (onProgress, signal) => engine.client.call('importImageDataset', { name, files: [...files] }, { onProgress, signal }));
    if (!result) return null;
    await this.refresh();
    if (role === 'train') this.selectTrain(result.dataset.id);
    else this.selectValidation(result.dataset.id);
    return result.dataset;
  }

  /** Checks an image LoRA (a kohya .safetensors or a PEFT folder) against the model and stores it with it. */
  async importAdapter(modelId: string, name: string, files: readonly File[]): Promise<ImageAdapterInfo | null> {
    const result = await this.run('adapter', (onProgress, signal) => engine.client.call('importImageAdapter', { modelId, name, files: [...files] }, { onProgress, signal }));
    if (!result) return null;
    await this.refreshAdapters(modelId);
    return result.adapter;
  }

  async refreshAdapters(modelId: string): Promise<void> {
    const { adapters } = await engine.client.call('listImageAdapters', { modelId });
    this.adaptersByModel = { ...this.adaptersByModel, [modelId]: adapters };
  }

  /** Deletes a model with its cached latents and image LoRAs; the worker refuses while a run trains on it. */
  async deleteModel(id: string): Promise<void> {
    await this.guard(() => engine.client.call('deleteDiffusionModel', { modelId: id }));
    await this.refresh();
    await engine.refreshStorage();
  }

  async deleteAdapter(modelId: string, name: string): Promise<void> {
    await this.guard(() => engine.client.call('deleteImageAdapter', { modelId, name }));
    await this.refreshAdapters(modelId);
    await engine.refreshStorage();
  }

  async deleteDataset(id: string): Promise<void> {
    await this.guard(() => engine.client.call('deleteImageDataset', { datasetId: id }));
    await this.refresh();
    await engine.refreshStorage();
  }

  cancelImport(): void {
    this.controller?.abort();
  }

  /** One import: its progress shown, its failure kept in `error` (null returned), the storage meter refreshed. */
  private async run<T>(what: ImportInProgress['what'], call: (onProgress: (p: Progress) => void, signal: AbortSignal) => Promise<T>): Promise<T | null> {
    if (this.importing) return null;
    this.error = null;
    const startedAt = Date.now();
    this.importing = { what, startedAt, progress: { phase: 'Checking files', done: 0, total: 0, unit: 'steps' } };
    this.controller = new AbortController();
    try {
      await engine.requestPersistence();
      return await call((progress) => (this.importing = { what, startedAt, progress }), this.controller.signal);
    } catch (e) {
      this.error = describe(e);
      return null;
    } finally {
      this.importing = null;
      this.controller = null;
      void engine.refreshStorage();
    }
  }

  private async guard(call: () => Promise<unknown>): Promise<void> {
    this.error = null;
    try {
      await call();
    } catch (e) {
      this.error = describe(e);
    }
  }
}

function remember(key: string, id: string | null): void {
  if (id === null) localStorage.removeItem(key);
  else localStorage.setItem(key, id);
}

export function describe(e: unknown): ErrorDetail {
  return e instanceof WorkerError ? e.detail : { message: (e as Error).message, userError: false };
}

/**
 * The picked files as the worker stores them: paths inside the picked folder. A folder picker gives each file's
 * path from the folder's parent (`tiny-sd/unet/config.json`), so the folder's name is the first component and is
 * returned as the name; files picked loose (a single-file checkpoint and its tokenizer files) keep their names, and
 * the name is the checkpoint's (or the first file's) without its extension.
 */
export function folderFiles(files: readonly File[]): { name: string; files: FolderFile[] } | null {
  if (files.length === 0) return null;
  const paths = files.map((file) => (file.webkitRelativePath || file.name).replace(/\\/g, '/'));
  const first = paths.find((p) => p.includes('/'));
  if (first !== undefined) {
    const name = first.slice(0, first.indexOf('/'));
    return { name, files: files.map((file, i) => ({ path: paths[i]!.startsWith(`${name}/`) ? paths[i]!.slice(name.length + 1) : paths[i]!, file })) };
  }
  const named = files.find((f) => f.name.toLowerCase().endsWith('.safetensors')) ?? files[0]!;
  return { name: named.name.replace(/\.[^.]+$/, ''), files: files.map((file) => ({ path: file.name, file })) };
}

export const imageLibrary = new ImageLibraryStore();
