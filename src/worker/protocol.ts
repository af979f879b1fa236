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

/** Request name → its payload and its result. */
export interface Requests {
  init: { payload: { backend: BackendPreference }; result: BackendInfo };
  importModel: { payload: { name: string; files: File[] }; result: { modelId: string } };
  /** Next-token distribution after a prompt, and a continuation. */
  predict: {
    payload: { modelId: string; prompt: string; topK: number; maxNewTokens: number; temperature: number; seed: number };
    result: { promptTokens: number; next: TokenProbability[]; continuation: string };
  };
  /** Raw logits for given token ids (the Playground's numbers, and parity checks against references). */
  logits: { payload: { modelId: string; tokens: number[] }; result: { logits: Float32Array; vocabSize: number } };
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
  | { id: number; type: 'error'; error: ErrorDetail };

/** Cancels request `id`; its handler stops at the next safe point and answers with an error. */
export interface CancelMessage {
  readonly type: 'cancel';
  readonly id: number;
}

export type ToWorker = Request | CancelMessage;
