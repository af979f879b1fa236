import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import {
  readHeader,
  readTensorBytes,
  toFloat32,
  type ByteSource,
  type Dtype,
  type TensorEntry,
} from '../safetensors/index.js';
import type { ModelConfig } from './config.js';
import { canonicalTensorName, checkTensors } from './manifest.js';

/**
 * One stored tensor as a float32 tf.Tensor. Shared by every loader (safetensors files here, the
 * IndexedDB cache elsewhere), so half-precision checkpoints are widened the same way everywhere.
 */
export function tensorFromBytes(dtype: Dtype, shape: readonly number[], bytes: Uint8Array): tf.Tensor {
  return tf.tensor(toFloat32(dtype, bytes), [...shape], 'float32');
}

export interface LoadProgress {
  readonly loadedBytes: number;
  readonly totalBytes: number;
}

export interface LoadOptions {
  readonly onProgress?: (p: LoadProgress) => void;
}

/**
 * Loads a checkpoint, possibly sharded over several files, into float32 tensors under canonical
 * names ready for buildModel. Every header is checked against config.json before any tensor data
 * is read, so a mismatched download fails in milliseconds instead of after gigabytes.
 */
export async function loadWeightsFromSafetensors(
  cfg: ModelConfig,
  sources: readonly ByteSource[],
  opts: LoadOptions = {},
): Promise<Map<string, tf.Tensor>> {
  if (sources.length === 0) {
    throw new UserError('model.safetensors', 'no weight files were given.', 'Add the model\'s .safetensors file(s).');
  }
  const headers = await Promise.all(sources.map((s) => readHeader(s)));
  const planned: { source: ByteSource; entry: TensorEntry; name: string }[] = [];
  const checked: { name: string; shape: readonly number[]; file: string }[] = [];
  headers.forEach((header, i) => {
    const source = sources[i]!;
    for (const entry of header.tensors) {
      checked.push({ name: entry.name, shape: entry.shape, file: source.name });
      const name = canonicalTensorName(cfg, entry.name);
      if (name !== null) planned.push({ source, entry, name });
    }
  });
  checkTensors(cfg, checked, sources.map((s) => s.name));

  const totalBytes = planned.reduce((sum, p) => sum + (p.entry.end - p.entry.begin), 0);
  let loadedBytes = 0;
  const weights = new Map<string, tf.Tensor>();
  try {
    for (const { source, entry, name } of planned) {
      const bytes = await readTensorBytes(source, entry);
      weights.set(name, tensorFromBytes(entry.dtype, entry.shape, bytes));
      loadedBytes += bytes.length;
      opts.onProgress?.({ loadedBytes, totalBytes });
    }
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
  return weights;
}
