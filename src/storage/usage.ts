import type { LoraLabDb, RunStatus, StoredModel, StoredRun } from './db';
import type { StoredAdapter } from './adapters';
import type { StoredDataset } from './datasets';
import { slicesOf } from './chunked-records';
import { artifactSize } from './runs';
import { imageAdapterInfo } from './image-adapters';
import { latentBytesByModel } from './latent-cache';

/**
 * What each stored thing uses, in bytes, for the Storage panel: read from the records' own sizes where they keep
 * them (a model's weights, a dataset's file, a checkpoint's bytes) and from the stored slices otherwise (a run's
 * event file and files). Curve rows are small objects whose stored size the browser does not reveal: they are
 * counted as their JSON text, which is close to what IndexedDB keeps.
 */

export interface ModelUsage {
  readonly id: string;
  readonly name: string;
  /** Weights as stored, the config and tokenizer files kept with them, and the adapters imported onto it. */
  readonly bytes: number;
  /** Of `bytes`, the adapters imported onto the model (adapters.ts): they go when the model goes. */
  readonly adapterBytes: number;
}

export interface DatasetUsage {
  readonly id: string;
  readonly name: string;
  readonly bytes: number;
  /** Runs that may still need it (training, paused, or interrupted and resumable); empty when it can be deleted. */
  readonly neededBy: readonly string[];
}

export interface RunUsage {
  readonly id: string;
  readonly name: string;
  readonly status: RunStatus;
  /** Everything of the run: the parts below together. */
  readonly bytes: number;
  /** Its checkpoints (for resuming) and the adapters saved at save_steps (checkpoint-N/ files). */
  readonly checkpointBytes: number;
  readonly checkpointCount: number;
  /** The final adapter and the other files of its output folder, the TensorBoard log, the curves, its own data file. */
  readonly keptBytes: number;
}

/**
 * A Stable Diffusion model (diffusion-models.ts): its files, and what goes with it when it is deleted: the latents
 * cached under it and the image LoRAs imported for it (image-adapters.ts).
 */
export interface DiffusionModelUsage {
  readonly id: string;
  readonly name: string;
  readonly bytes: number;
  /** Of `bytes`, the cached latents of datasets encoded by this model (latent-cache.ts). */
  readonly latentBytes: number;
  /** Of `bytes`, the image LoRAs stored with it. */
  readonly adapterBytes: number;
}

export interface StorageUsage {
  readonly models: readonly ModelUsage[];
  readonly datasets: readonly DatasetUsage[];
  readonly runs: readonly RunUsage[];
  readonly diffusionModels: readonly DiffusionModelUsage[];
  /** Image folders (image-datasets.ts); neededBy lists the image runs training on them now. */
  readonly imageDatasets: readonly DatasetUsage[];
  /** The sum of all the above. */
  readonly totalBytes: number;
}

/** A run's files saved at save_steps live under this prefix; the output folder's own files do not. */
export const CHECKPOINT_FILE_PREFIX = 'checkpoint-';

/** Runs that may still read their data: a live one, or an interrupted one that can be resumed. */
const NEEDS_DATA: ReadonlySet<RunStatus> = new Set(['running', 'paused', 'interrupted']);

export async function storageUsage(db: LoraLabDb): Promise<StorageUsage> {
  const adapters = await db.getAll('adapters');
  const models = (await db.getAll('models')).filter((m) => m.status === 'ready').map((m) => modelUsage(m, adapters));
  const storedRuns = (await db.getAll('runs')).sort((a, b) => b.createdAt - a.createdAt);
  const datasets = (await db.getAll('datasets'))
    .filter((d) => d.status === 'ready')
    .map((d) => datasetUsage(d, storedRuns));
  const runs: RunUsage[] = [];
  for (const run of storedRuns) runs.push(await runUsage(db, run));
  const latents = await latentBytesByModel(db);
  const imageAdapterBytes = new Map<string, number>();
  for (const a of await db.getAll('imageAdapters')) imageAdapterBytes.set(a.modelId, (imageAdapterBytes.get(a.modelId) ?? 0) + imageAdapterInfo(a).sizeBytes);
  const diffusionModels = (await db.getAll('diffusionModels'))
    .filter((m) => m.status === 'ready')
    .map((m): DiffusionModelUsage => {
      const latentBytes = latents.get(m.id) ?? 0;
      const adapterBytes = imageAdapterBytes.get(m.id) ?? 0;
      return { id: m.id, name: m.name, bytes: m.sizeBytes + latentBytes + adapterBytes, latentBytes, adapterBytes };
    });
  const imageDatasets = (await db.getAll('imageDatasets'))
    .filter((d) => d.status === 'ready')
    .map((d): DatasetUsage => ({
      id: d.id,
      name: d.name,
      bytes: d.sizeBytes + d.images.reduce((n, i) => n + i.thumbnail.byteLength, 0),
      neededBy: storedRuns.filter((r) => NEEDS_DATA.has(r.status) && usesImageDataset(r, d.id)).map((r) => r.name),
    }));
  const totalBytes = [...models, ...datasets, ...runs, ...diffusionModels, ...imageDatasets].reduce((n, u) => n + u.bytes, 0);
  return { models, datasets, runs, diffusionModels, imageDatasets, totalBytes };
}

function modelUsage(m: StoredModel, adapters: readonly StoredAdapter[]): ModelUsage {
  const files = Object.values(m.files).reduce((n, text) => n + (typeof text === 'string' ? utf8Bytes(text) : 0), 0);
  const adapterBytes = adapters.filter((a) => a.modelId === m.id).reduce((n, a) => n + a.files.weights.size + utf8Bytes(a.files.config), 0);
  return { id: m.id, name: m.name, bytes: m.sizeBytes + files + adapterBytes, adapterBytes };
}

function datasetUsage(d: StoredDataset, runs: readonly StoredRun[]): DatasetUsage {
  const neededBy = runs.filter((r) => NEEDS_DATA.has(r.status) && usesDataset(r, d.id)).map((r) => r.name);
  return { id: d.id, name: d.name, bytes: d.sizeBytes + (d.metaJson ? utf8Bytes(d.metaJson) : 0), neededBy };
}

/** Whether the run trains or evaluates on the stored dataset `datasetId`. */
export function usesDataset(run: StoredRun, datasetId: string): boolean {
  const refs = run.data ? [run.data.train, run.data.val] : [];
  return refs.some((ref) => ref !== null && 'datasetId' in ref && ref.datasetId === datasetId);
}

/** Whether the image run trains or evaluates on the stored image dataset `datasetId`. */
export function usesImageDataset(run: StoredRun, datasetId: string): boolean {
  return run.imageData !== undefined && (run.imageData.train === datasetId || run.imageData.val === datasetId);
}

async function runUsage(db: LoraLabDb, run: StoredRun): Promise<RunUsage> {
  const range = slicesOf(run.id);
  const checkpoints = await db.getAll('checkpoints', range);
  let checkpointBytes = checkpoints.reduce((n, c) => n + c.byteLength, 0);
  let keptBytes = 0;
  for (const a of await db.getAll('artifacts', range)) {
    if (a.path.startsWith(CHECKPOINT_FILE_PREFIX)) checkpointBytes += artifactSize(a);
    else keptBytes += artifactSize(a);
  }
  for (const chunk of await db.getAll('logs', range)) keptBytes += chunk.bytes.byteLength;
  for (const row of await db.getAll('metrics', range)) keptBytes += utf8Bytes(JSON.stringify(row));
  for (const ref of run.data ? [run.data.train, run.data.val] : []) {
    if (ref !== null && 'blob' in ref) keptBytes += ref.blob.size;
  }
  return { id: run.id, name: run.name, status: run.status, bytes: checkpointBytes + keptBytes, checkpointBytes, checkpointCount: checkpoints.length, keptBytes };
}

function utf8Bytes(text: string): number {
  return new TextEncoder().encode(text).byteLength;
}
