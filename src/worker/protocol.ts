import type { Finding } from '../core/diagnose';
import type { OutputFile } from '../core/export/run-bundle';
import type { StoredDataset } from '../storage/datasets';
import type { DatasetPreview, DatasetRef, EstimateRequest, EstimateResult } from './datasets';
import type { AdapterInfo } from '../storage/adapters';
import type { AdapterEvalRequest, AdapterEvalResult } from './stored-adapters';
import type { CompareRequest, CompareResult, PlaygroundAdapter } from './playground';
import type { ImageTrainRequest } from './image-run';
import type { ImageDatasetPreviewRequest, ImportFolderRequest } from './image-library';
import type { ImageAdapterImportRequest } from './image-adapters';
import type { ImageAdapterInfo } from '../storage/image-adapters';
import type { StoredDiffusionModel } from '../storage/diffusion-models';
import type { ImageDatasetPreview, ImageDatasetSummary } from '../storage/image-datasets';

/**
 * The one contract between the UI thread and the training worker. Every request carries an id;
 * the worker answers with any number of `progress` messages, then exactly one `result` or `error`.
 */

export type BackendPreference = 'auto' | 'webgpu' | 'wasm';
export type BackendName = 'webgpu' | 'wasm';

export interface AdapterSummary {
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  readonly isFallback: boolean;
  readonly maxBufferSize: number;
  readonly maxStorageBufferBindingSize: number;
}

export interface BackendInfo {
  readonly name: BackendName;
  /** Why this backend: shown next to it, e.g. that only a software GPU was found. */
  readonly reason: string;
  readonly adapter: AdapterSummary | null;
}

export interface TokenProbability {
  readonly id: number;
  readonly text: string;
  readonly prob: number;
}

export type RunControl = 'pause' | 'resume' | 'stop';

/** What a training run reports while it runs (besides `progress` for loading and tokenizing). */
export type RunEvent =
  /** fromStep: 0 for a new run; for a resumed one, its checkpoint's step (the steps up to it are stored already). */
  | {
      kind: 'started';
      runId: string;
      totalSteps: number;
      trainTokens: number;
      evalTokens: number;
      trainableParameters: number;
      fromStep: number;
      /** An image run's images per epoch (repeats counted) and validation images; its token counts are 0 and its step throughput is images/s. */
      images?: { readonly train: number; readonly eval: number };
    }
  | { kind: 'step'; step: number; epoch: number; loss: number; learningRate: number; gradNorm: number; tokensPerSecond: number; secondsLeft: number; skippedSteps: number }
  /** An update was skipped because a loss or gradient was not finite (see the trainer's SkippedUpdate). */
  | { kind: 'skipped'; step: number; skippedSteps: number; problem: string }
  | { kind: 'metric'; step: number; name: string; value: number }
  | { kind: 'eval'; step: number; loss: number }
  | { kind: 'diagnosis'; findings: Finding[] }
  /** reason: why the run paused itself (a full disk, see storage-full.ts); absent when the person paused it. */
  | { kind: 'paused'; reason?: string }
  | { kind: 'resumed' }
  /** An image run's sample image for sample_prompts[index] at `step` (PNG bytes), as it is made. */
  | { kind: 'sample'; step: number; index: number; prompt: string; png: Uint8Array }
  /** Only with `haltAfterStep`: step N is done and stored, and the worker has stopped dead (see halt.ts). */
  | { kind: 'halted'; step: number };

export interface ExportedFile {
  /** Path inside the run's output folder, e.g. `adapter_model.safetensors` or `logs/events.out.tfevents…`. */
  readonly path: string;
  readonly bytes: Uint8Array;
}

/** Request name → its payload and its result. */
export interface Requests {
  init: { payload: { backend: BackendPreference }; result: BackendInfo };
  importModel: { payload: { name: string; files: File[] }; result: { modelId: string } };
  /** Next-token distribution after a prompt, and a continuation. */
  predict: {
    payload: { modelId: string; prompt: string; topK: number; maxNewTokens: number; temperature: number; seed: number };
    result: { promptTokens: number; next: TokenProbability[]; continuation: string };
  };
  /**
   * Deletes a model from the library, freeing its weights if they are loaded. Refused while a run (in this tab or
   * another) trains on it.
   */
  deleteModel: { payload: { modelId: string }; result: { modelId: string } };
  /** Raw logits for given token ids (the Playground's numbers, and parity checks against references). */
  logits: {
    /** adapter: through base + that adapter scaled by `scale` (the playground's numbers); absent: the base model. */
    payload: { modelId: string; tokens: number[]; adapter?: { source: PlaygroundAdapter; scale: number } };
    /** weightBytes: what the model's weights hold on the backend (packed or quantized weights hold less). */
    result: { logits: Float32Array; vocabSize: number; weightBytes: number };
  };
  /**
   * Trains a LoRA adapter; streams RunEvents; ends when the run ends (completed, stopped, diverged).
   * The config is YAML text (the app's one config format); data (stored datasets or files) is read by the worker.
   * One run at a time: a second `train` while one is active is refused (an error, not a queue), and until the run
   * ends, requests that would unload its model (predict/logits on another model, deleteModel of it) are refused.
   */
  train: {
    payload: {
      modelId: string;
      configYaml: string;
      trainData: DatasetRef;
      valData: DatasetRef | null;
      /** Automation only (the headless runner's --crash-at-step): stop the worker dead right after this step. */
      haltAfterStep?: number;
    };
    result: TrainResult;
  };
  /**
   * Continues an interrupted run (same record, same data) from its latest checkpoint, as `train` does a new one:
   * the same events, the same one-run rule. `modelId` is the run's model, pinned before anything is read.
   */
  resumeRun: { payload: { runId: string; modelId: string }; result: TrainResult };
  /**
   * Trains a Stable Diffusion LoRA on a library model and image folders (the panel's runs: latents cached, resumable
   * by resumeImageRun) or on folders picked for the run (nothing stored but the run); the same events and one-run
   * rule as `train`. The run is stored like any other and exported by exportRun.
   */
  trainImages: { payload: ImageTrainRequest; result: TrainResult };
  /**
   * Continues an interrupted image run (same record, its library model and image folders) from its latest
   * checkpoint, as resumeRun does a text run: the same events (`started` with fromStep), the same one-run rule.
   * Refused for a run started from picked folders: they were not stored.
   */
  resumeImageRun: { payload: { runId: string }; result: TrainResult };
  /** Every file of a run's output folder (adapter, logs, config.yaml, metrics.csv, diagnosis.json). */
  /** The run's output folder; a merged model's files come as Blobs kept on disk, to be read in slices (OutputFile). */
  exportRun: { payload: { runId: string }; result: { files: OutputFile[] } };
  /** The "Merge into a model" button: writes merged/ (the base model with the run's adapter folded in) into the run's output; result: its paths. */
  mergeRun: { payload: { runId: string }; result: { files: string[] } };
  /** The playground's side by side: one prompt through the base model and base + adapter (scaled), same seed and sampling. */
  compare: { payload: CompareRequest; result: CompareResult };
  /** Checks a dataset file with the model's tokenizer, then stores it (nothing is stored when the check fails). */
  importDataset: { payload: { modelId: string; file: File; meta: File | null }; result: { dataset: StoredDataset } };
  /** The first records of a stored dataset as the model sees them, and its counts at seq_len. */
  previewDataset: { payload: { modelId: string; datasetId: string; seqLen: number; count: number }; result: DatasetPreview };
  /** Memory, steps and warnings for a config and the chosen data, before anything is loaded. */
  estimateRun: { payload: EstimateRequest; result: EstimateResult };
  /** Checks a PEFT adapter folder's files against a stored model, then stores it under `name` (nothing is stored when a check fails). */
  importAdapter: { payload: { modelId: string; name: string; files: File[] }; result: { adapter: AdapterInfo } };
  /** The eval loss on a dataset of the base model with a stored adapter (adapter null: the base model alone). */
  evaluateAdapter: { payload: AdapterEvalRequest; result: AdapterEvalResult };
  /**
   * Checks a Stable Diffusion 1.x model (a diffusers folder, or one single-file .safetensors with the tokenizer's
   * vocab.json and merges.txt) and stores it in the library; progress in bytes; nothing is stored when a check fails.
   */
  importDiffusionModel: { payload: ImportFolderRequest; result: { model: StoredDiffusionModel } };
  /** Stored Stable Diffusion models and image folders, newest first. */
  listImageLibrary: { payload: Record<string, never>; result: { models: StoredDiffusionModel[]; datasets: ImageDatasetSummary[] } };
  /** Checks an image LoRA (a kohya .safetensors, or a PEFT folder with its text_encoder/) against a stored SD model, then stores it under `name` with it (nothing is stored when a check fails). */
  importImageAdapter: { payload: ImageAdapterImportRequest; result: { adapter: ImageAdapterInfo } };
  /** The image LoRAs stored with an SD model, newest first (what `init_adapter` may name). */
  listImageAdapters: { payload: { modelId: string }; result: { adapters: ImageAdapterInfo[] } };
  /** Deletes one image LoRA of an SD model (a run that started from it has read it already). */
  deleteImageAdapter: { payload: { modelId: string; name: string }; result: { name: string } };
  /** Deletes a Stable Diffusion model and the latents cached with it; refused while a run trains on it. */
  deleteDiffusionModel: { payload: { modelId: string }; result: { modelId: string } };
  /** Reads an image folder (captions, repeats), decodes every image once, then stores it in the library. */
  importImageDataset: { payload: ImportFolderRequest; result: { dataset: ImageDatasetSummary } };
  /** Deletes a stored image folder and the latents cached from it; refused while a run trains on it. */
  deleteImageDataset: { payload: { datasetId: string }; result: { datasetId: string } };
  /** A stored image folder's rows, warnings (token counts with the model's tokenizer when given) and thumbnails. */
  previewImageDataset: { payload: ImageDatasetPreviewRequest; result: ImageDatasetPreview };
}

export interface TrainResult {
  readonly runId: string;
  readonly reason: 'completed' | 'stopped' | 'diverged' | 'early_stopped';
  readonly steps: number;
}

export type RequestName = keyof Requests;

export type Request = { [K in RequestName]: { id: number; type: K; payload: Requests[K]['payload'] } }[RequestName];

export interface Progress {
  /** What is happening, in words a person reads, e.g. "Storing weights". */
  readonly phase: string;
  readonly done: number;
  readonly total: number;
  /** Unit of done/total, so the UI can say MB/s or tokens. */
  readonly unit: 'bytes' | 'tokens' | 'steps';
}

/** A failure the person can fix names its subject (file or field) and a fix. */
export interface ErrorDetail {
  readonly message: string;
  readonly subject?: string;
  readonly fix?: string;
  /** True when the person caused it (bad file, bad value); false for bugs. */
  readonly userError: boolean;
}

export type Response =
  | { id: number; type: 'progress'; progress: Progress }
  | { id: number; type: 'result'; result: unknown }
  | { id: number; type: 'event'; event: RunEvent }
  | { id: number; type: 'error'; error: ErrorDetail };

/** Cancels request `id`; its handler stops at the next safe point and answers with an error. */
export interface CancelMessage {
  readonly type: 'cancel';
  readonly id: number;
}

/** Pauses, resumes or stops the training run started by request `id`. */
export interface ControlMessage {
  readonly type: 'control';
  readonly id: number;
  readonly action: RunControl;
}

export type ToWorker = Request | CancelMessage | ControlMessage;
