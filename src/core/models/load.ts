import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import {
  readHeader,
  readTensorBytes,
  type ByteSource,
  type TensorEntry,
} from '../safetensors/index.js';
import type { ModelConfig } from './config.js';
import { canonicalTensorName, checkTensors } from './manifest.js';
import { disposeWeights, FLOAT32_PLACEMENT, holdWeight, type HeldWeight, type WeightPlacement } from '../weights/hold.js';

export interface LoadProgress {
  readonly loadedBytes: number;
  readonly totalBytes: number;
}

export interface LoadOptions {
  readonly onProgress?: (p: LoadProgress) => void;
  /** How the backend holds each weight (packed, quantized); float32 throughout by default. */
  readonly placement?: WeightPlacement;
}

/**
 * Loads a checkpoint, possibly sharded over several files, into weights under canonical names ready
 * for buildModel: float32 tensors, or packed matrices where `opts.placement` allows (without a
 * placement, float32 tensors only). Every header is checked against config.json before any tensor
 * data is read, so a mismatched download fails in milliseconds instead of after gigabytes.
 */
export async function loadWeightsFromSafetensors(
  cfg: ModelConfig,
  sources: readonly ByteSource[],
  opts?: LoadOptions & { placement?: undefined },
): Promise<Map<string, tf.Tensor>>;
export async function loadWeightsFromSafetensors(
  cfg: ModelConfig,
  sources: readonly ByteSource[],
  opts?: LoadOptions,
): Promise<Map<string, HeldWeight>>;
export async function loadWeightsFromSafetensors(
  cfg: ModelConfig,
  sources: readonly ByteSource[],
  opts: LoadOptions = {},
): Promise<Map<string, HeldWeight>> {
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
  const weights = new Map<string, HeldWeight>();
  const placement = opts.placement ?? FLOAT32_PLACEMENT;
  try {
    for (const { source, entry, name } of planned) {
      const bytes = await readTensorBytes(source, entry);
      weights.set(name, holdWeight(cfg, name, entry.dtype, entry.shape, bytes, placement));
      loadedBytes += bytes.length;
      opts.onProgress?.({ loadedBytes, totalBytes });
    }
  } catch (e) {
    disposeWeights(weights.values());
    throw e;
  }
  return weights;
}
