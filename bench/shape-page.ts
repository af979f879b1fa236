import * as tf from '@tensorflow/tfjs';
import { wasmHeapBytes } from '../src/worker/backend'; // also registers webgpu and wasm as the app does
import { checkWasmFits } from '../src/worker/wasm-memory';
import { parseRunConfigYaml, unwrapRunConfig, type RunConfig } from '../src/core/config';
import { blobSource } from '../src/core/safetensors';
import { openDatabase, type LoraLabDb, type StoredModel } from '../src/storage/db';
import { importModel } from '../src/storage/import-model';
import { loadStoredModel } from '../src/storage/model-weights';
import { deleteModel } from '../src/storage/models';
import type { ShapeRow } from './shape-steps';
import { measureVariant, oneLine } from './shape-variant';

// `npm run bench -- --shape NAME`, the page's half: the model folder written by the Node side (random
// weights at a real model's widths) goes through the app's own import into IndexedDB and its own load
// onto the backend, then trains with the fused kernels and with plain tfjs, on webgpu and on wasm.

export interface ShapeBenchOptions {
  /** The <input type=file> the Node side put the model folder's files into. */
  readonly inputId: string;
  /** The run config (YAML, the app's keys): lora_rank, batch_size, seq_len, base_quantization, … */
  readonly configYaml: string;
  readonly steps: number;
  readonly warmup: number;
  readonly backends: readonly ('webgpu' | 'wasm')[];
}

export interface ShapeBenchResult {
  readonly storedBytes: number;
  readonly importBytesPerSecond: number;
  readonly rows: ShapeRow[];
}

export async function runShapeBench(options: ShapeBenchOptions): Promise<ShapeBenchResult> {
  const { config } = unwrapRunConfig(parseRunConfigYaml(options.configYaml, 'bench config'));
  const input = document.getElementById(options.inputId) as HTMLInputElement | null;
  if (!input?.files?.length) throw new Error(`runShapeBench: no files in #${options.inputId}`);
  const db = await openDatabase();
  const { stored, bytesPerSecond } = await timedImport(db, [...input.files]);
  const rows: ShapeRow[] = [];
  try {
    for (const backend of options.backends) {
      if (!(await tf.setBackend(backend)) || tf.getBackend() !== backend) throw new Error(`the ${backend} backend did not start`);
      for (const fused of [false, true]) rows.push(await measurePageVariant(db, stored, config, fused, options));
    }
  } finally {
    await deleteModel(db, stored.id);
  }
  return { storedBytes: stored.sizeBytes, importBytesPerSecond: bytesPerSecond, rows };
}

/** The app's import, timed from the first weight slice (config and tokenizer parsing excluded) to the model marked ready. */
async function timedImport(db: LoraLabDb, files: File[]): Promise<{ stored: StoredModel; bytesPerSecond: number }> {
  let start: number | null = null;
  const stored = await importModel(db, files.map((f) => blobSource(f, f.name)), {
    name: 'bench model',
    onProgress: () => void (start ??= performance.now()),
  });
  return { stored, bytesPerSecond: stored.sizeBytes / ((performance.now() - start!) / 1000) };
}

/** One variant on the active backend; on wasm the app's own memory check first, which refuses a run that cannot fit. */
async function measurePageVariant(db: LoraLabDb, stored: StoredModel, config: RunConfig, fused: boolean, options: ShapeBenchOptions): Promise<ShapeRow> {
  if (tf.getBackend() === 'wasm') {
    try {
      checkWasmFits(stored, config);
    } catch (e) {
      return { backend: 'wasm', fused, quantization: config.base_quantization, skipped: oneLine(e) };
    }
  }
  return measureVariant({
    fused,
    config,
    steps: options.steps,
    warmup: options.warmup,
    storedBytes: stored.sizeBytes,
    load: async (placement) => (await loadStoredModel(db, stored, placement)).model,
    extra: () => ({ wasmHeapBytes: wasmHeapBytes() }),
  });
}
