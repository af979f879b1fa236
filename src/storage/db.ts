import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import type { RunConfig } from '../core/config';
import type { Finding } from '../core/diagnose';
import type { RunDataSummary } from '../core/export/model-card';
import type { Dtype } from '../core/safetensors';
import type { ImportedLog } from './imported-logs';
import type { CheckpointChunk, StoredCheckpoint } from './checkpoints';
import type { DatasetChunk, StoredDataset } from './datasets';
import type { StoredAdapter } from './adapters';
import type { StoredDiffusionModel } from './diffusion-models';
import type { StoredImageDataset } from './image-datasets';
import type { StoredFileChunk } from './stored-files';
import type { LatentRow } from './latent-cache';
import type { StoredImageAdapter } from './image-adapters';

/** A base model as the library lists it. Its weights live in the `tensors` store. */
export interface StoredModel {
  readonly id: string;
  readonly name: string;
  /** `importing` until the last chunk is written; such leftovers of a crash are swept on start. */
  readonly status: 'importing' | 'ready';
  readonly arch: string;
  readonly parameterCount: number;
  /** Bytes of weights as stored (original dtype). */
  readonly sizeBytes: number;
  readonly importedAt: number;
  readonly files: {
    readonly config: string;
    readonly tokenizer: string;
    readonly tokenizerConfig: string | null;
    /** generation_config.json as imported; absent in models stored before it was kept. */
    readonly generationConfig?: string | null;
  };
  readonly tensors: readonly StoredTensorInfo[];
}

export interface StoredTensorInfo {
  /** Canonical (Hugging Face `*ForCausalLM`) name. */
  readonly name: string;
  /** The name in the imported checkpoint when it differs (a GPT2Model save without `transformer.`); a merged model is written under it. */
  readonly nameInFile?: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly byteLength: number;
  readonly chunkCount: number;
}

/** One slice of one tensor's raw bytes, in its original dtype. */
export interface TensorChunk {
  readonly modelId: string;
  readonly tensor: string;
  readonly index: number;
  readonly bytes: ArrayBuffer;
}

/**
 * `interrupted`: stored as running or paused, but no live tab owns it any more (the tab was reloaded or closed,
 * or its worker crashed); the start-up sweep sets it (runs.ts, markInterruptedRuns).
 */
export type RunStatus = 'running' | 'paused' | 'completed' | 'stopped' | 'diverged' | 'failed' | 'interrupted';

/** One training run: its resolved config and where it stands. Curves, logs and files are stored beside it. */
export interface StoredRun {
  readonly id: string;
  /** The last component of output_dir, e.g. `lr_1e-4`. */
  readonly name: string;
  readonly modelId: string;
  readonly modelName: string;
  readonly config: RunConfig;
  readonly status: RunStatus;
  readonly createdAt: number;
  readonly updatedAt: number;
  readonly backend: string;
  readonly step: number;
  readonly totalSteps: number;
  readonly bestEvalLoss: number | null;
  /** The latest diagnosis of the curves. */
  readonly findings: readonly Finding[];
  /** The TensorBoard event file's name; null when log_steps is 0 (no file is written). */
  readonly logFile: string | null;
  /** Why a failed run failed. */
  readonly error: string | null;
  /** What the run trains on, kept so that a resume reads the same data. Absent on runs stored before resuming existed. */
  readonly data?: RunData;
  /** Each time the run was interrupted and resumed, oldest first (run_summary.json lists them). */
  readonly interruptions?: readonly Interruption[];
  /**
   * An image run's stored image datasets (image-datasets.ts) by id; null for a folder picked for the run alone, and
   * for val also when the run has no validation images: valPicked tells the two apart (absent on older records).
   */
  readonly imageData?: { readonly train: string | null; readonly val: string | null; readonly valPicked?: boolean };
}

/**
 * A run's training and validation data: a dataset of the library by id, or a file picked for this run alone, kept
 * as its bytes and name (IndexedDB stores a Blob; some implementations return a File as a bare Blob, without its
 * name, and the name says the file's format).
 */
export type StoredDataRef = { readonly datasetId: string } | { readonly fileName: string; readonly blob: Blob };

export interface RunData {
  readonly train: StoredDataRef;
  readonly val: StoredDataRef | null;
  /** Each file's format, kind, records and tokens as the run read them, for the model card. Absent on older runs. */
  readonly summary?: RunDataSummary;
}

export interface Interruption {
  /** The last step the interrupted run had stored. */
  readonly at_step: number;
  /** The step of the checkpoint it resumed from (0: no checkpoint yet, trained again from the start). */
  readonly resumed_from_step: number;
}

/** One row of a run's curves (one per optimizer step; eval rows carry evalLoss). */
export interface MetricRow {
  readonly runId: string;
  readonly step: number;
  /** Null on rows that only carry an evaluation or a custom metric. */
  readonly epoch: number | null;
  readonly loss: number | null;
  readonly learningRate: number | null;
  readonly gradNorm: number | null;
  readonly tokensPerSecond: number | null;
  readonly evalLoss: number | null;
  /** Updates skipped so far for a non-finite loss or gradient; on training rows only, absent on rows stored before it was counted. */
  readonly skippedSteps?: number | null;
  /** Metrics added by custom callbacks, by name. */
  readonly custom: Readonly<Record<string, number>>;
}

/** A slice of a run's TensorBoard event file, appended as the log grows. */
export interface LogChunk {
  readonly runId: string;
  readonly index: number;
  readonly bytes: ArrayBuffer;
}

/** A file a run produced (adapter, checkpoints, config.yaml, …) under its path in the export. */
export interface RunArtifact {
  readonly runId: string;
  readonly path: string;
  /**
   * Small files as their bytes; the merged model's files as a Blob built from slices (runs.ts, putArtifact), which
   * the browser keeps on disk, so a 2 GB shard is never one buffer in memory. Read with artifactBytes/artifactSize.
   */
  readonly bytes: ArrayBuffer | Blob;
}

export interface LoraLabSchema extends DBSchema {
  models: { key: string; value: StoredModel };
  tensors: { key: [string, string, number]; value: TensorChunk; indexes: { byModel: string } };
  runs: { key: string; value: StoredRun };
  metrics: { key: [string, number]; value: MetricRow };
  logs: { key: [string, number]; value: LogChunk };
  artifacts: { key: [string, string]; value: RunArtifact };
  importedLogs: { key: string; value: ImportedLog };
  datasets: { key: string; value: StoredDataset };
  datasetChunks: { key: [string, number]; value: DatasetChunk };
  checkpoints: { key: [string, number]; value: StoredCheckpoint };
  checkpointChunks: { key: [string, number, number]; value: CheckpointChunk };
  adapters: { key: [string, string]; value: StoredAdapter };
  diffusionModels: { key: string; value: StoredDiffusionModel };
  diffusionFiles: { key: [string, string, number]; value: StoredFileChunk };
  imageDatasets: { key: string; value: StoredImageDataset };
  imageDatasetFiles: { key: [string, string, number]; value: StoredFileChunk };
  latents: { key: [string, string, number, number, number]; value: LatentRow; indexes: { byDataset: string } };
  imageAdapters: { key: [string, string]; value: StoredImageAdapter };
}

export const DB_NAME = 'lora-lab';
export const DB_VERSION = 8;

export type LoraLabDb = IDBPDatabase<LoraLabSchema>;

let opened: Promise<LoraLabDb> | undefined;

/** The one database of the app (page and worker each hold a connection). Migrations go by version. */
export function openDatabase(): Promise<LoraLabDb> {
  if (opened) return opened;
  const opening = openDB<LoraLabSchema>(DB_NAME, DB_VERSION, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) {
        db.createObjectStore('models', { keyPath: 'id' });
        const tensors = db.createObjectStore('tensors', { keyPath: ['modelId', 'tensor', 'index'] });
        tensors.createIndex('byModel', 'modelId');
      }
      if (oldVersion < 2) {
        db.createObjectStore('runs', { keyPath: 'id' });
        db.createObjectStore('metrics', { keyPath: ['runId', 'step'] });
        db.createObjectStore('logs', { keyPath: ['runId', 'index'] });
        db.createObjectStore('artifacts', { keyPath: ['runId', 'path'] });
      }
      if (oldVersion < 3) {
        // TensorBoard logs imported for comparison (see imported-logs.ts).
        db.createObjectStore('importedLogs', { keyPath: 'id' });
      }
      if (oldVersion < 4) {
        // Training datasets: a record per file and its raw bytes in slices (see datasets.ts).
        db.createObjectStore('datasets', { keyPath: 'id' });
        db.createObjectStore('datasetChunks', { keyPath: ['datasetId', 'index'] });
      }
      if (oldVersion < 5) {
        // Training checkpoints for exact resume: a record per checkpoint and its bytes in slices (see checkpoints.ts).
        db.createObjectStore('checkpoints', { keyPath: ['runId', 'step'] });
        db.createObjectStore('checkpointChunks', { keyPath: ['runId', 'step', 'index'] });
      }
      if (oldVersion < 6) {
        // PEFT adapters imported onto a model: one record each, keyed by model id and name (see adapters.ts).
        db.createObjectStore('adapters', { keyPath: ['modelId', 'name'] });
      }
      if (oldVersion < 7) {
        // Stable Diffusion models and image folders, each file's bytes in slices (see diffusion-models.ts,
        // image-datasets.ts, stored-files.ts), and the VAE latents of (model, dataset, resolution, flip) (latent-cache.ts).
        db.createObjectStore('diffusionModels', { keyPath: 'id' });
        db.createObjectStore('diffusionFiles', { keyPath: ['ownerId', 'path', 'index'] });
        db.createObjectStore('imageDatasets', { keyPath: 'id' });
        db.createObjectStore('imageDatasetFiles', { keyPath: ['ownerId', 'path', 'index'] });
        const latents = db.createObjectStore('latents', { keyPath: ['modelId', 'datasetId', 'resolution', 'flip', 'index'] });
        latents.createIndex('byDataset', 'datasetId');
      }
      if (oldVersion < 8) {
        // Image LoRAs (kohya files, PEFT folders) imported onto a Stable Diffusion model, keyed by model id and name
        // (see image-adapters.ts); deleted with the model.
        db.createObjectStore('imageAdapters', { keyPath: ['modelId', 'name'] });
      }
    },
    blocking() {
      // A newer version of the app wants to migrate: let it, rather than wedging both tabs.
      void closeDatabase();
    },
    terminated() {
      // The browser dropped the connection (storage cleared, disk error): the next caller opens a fresh one.
      if (opened === opening) opened = undefined;
    },
  });
  // A failed open (blocked upgrade, storage disabled) must not be cached, or every later call fails the same way.
  opening.catch(() => {
    if (opened === opening) opened = undefined;
  });
  opened = opening;
  return opening;
}

/**
 * Closes the cached connection and forgets it, so the next openDatabase() opens a new one. For tests (a fresh
 * database per test) and for the app before deleting the whole database.
 */
export async function closeDatabase(): Promise<void> {
  const current = opened;
  opened = undefined;
  if (!current) return;
  try {
    (await current).close();
  } catch {
    // The open itself failed: there is no connection to close.
  }
}
