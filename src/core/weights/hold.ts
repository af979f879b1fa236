import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { fusedKernelBackend } from '../kernels/webgpu_run.js';
import type { ModelConfig } from '../models/config.js';
import { BYTES_PER_ELEMENT, toFloat32, type Dtype } from '../safetensors/dtype.js';
import { packHalves, quantizeInt8, quantizeNf4, unpackHost } from './host.js';
import { heldBytes, heldFormat, outputChannelAxis, type BaseQuantization, type WeightPlacement } from './holding.js';
import { uploadPacked, type FrozenMatrix, type HostPackedMatrix, type PackedWeight } from './packed.js';
import { blockRowsFor, heldTensors, type RowBlocks } from './row-blocks.js';

export { BASE_QUANTIZATIONS, FLOAT32_PLACEMENT, type BaseQuantization, type WeightPlacement } from './holding.js';

/**
 * The placement for the active backend: packed wherever our kernels run (webgpu with them switched on),
 * within the binding limit of the device tfjs created (tfjs asks for the adapter's largest).
 */
export function placementFor(quantization: BaseQuantization): WeightPlacement {
  const backend = fusedKernelBackend();
  if (!backend) return { packed: false, quantization, maxBindingBytes: null };
  return { packed: true, quantization, maxBindingBytes: (backend as WebGPUBackend).device.limits.maxStorageBufferBindingSize };
}

export function samePlacement(a: WeightPlacement, b: WeightPlacement): boolean {
  return a.packed === b.packed && a.quantization === b.quantization && (a.maxBindingBytes ?? null) === (b.maxBindingBytes ?? null);
}

/** A model weight as it is held on the backend: float32 values, packed words, or row blocks of either. */
export type HeldWeight = tf.Tensor | PackedWeight | RowBlocks;

/**
 * One stored tensor as the backend should hold it (see holding.ts for which format): BF16/F16 matrices
 * packed as their own bytes (never widened), block projections quantized when asked, from whatever
 * precision the checkpoint has. Quantized without packing (wasm), a weight is float32 of the quantized
 * values, so that every backend computes with the same weights. A matrix held larger than the
 * placement's binding limit is held as row blocks, each within it.
 */
export function holdWeight(
  cfg: ModelConfig,
  name: string,
  dtype: Dtype,
  shape: readonly number[],
  bytes: Uint8Array,
  placement: WeightPlacement,
): HeldWeight {
  if (shape.length !== 2) return tf.tensor(toFloat32(dtype, bytes), [...shape], 'float32');
  const [rows, cols] = shape as [number, number];
  const limit = placement.maxBindingBytes ?? null;
  const held = (r: number, b: Uint8Array) => holdMatrix(cfg, name, dtype, [r, cols], b, placement);
  const axis = outputChannelAxis(cfg.arch);
  if (limit === null || heldBytes(heldFormat(name, dtype, shape, placement), shape, axis) <= limit) return held(rows, bytes);
  // Sized by the float32 bound, so that every block fits whatever format holds it.
  const blockRows = blockRowsFor(rows, 4 * cols, limit);
  const rowBytes = cols * BYTES_PER_ELEMENT[dtype];
  const blocks: FrozenMatrix[] = [];
  try {
    for (let r0 = 0; r0 < rows; r0 += blockRows) {
      const r1 = Math.min(rows, r0 + blockRows);
      blocks.push(held(r1 - r0, bytes.subarray(r0 * rowBytes, r1 * rowBytes)));
    }
  } catch (e) {
    disposeWeights(blocks);
    throw e;
  }
  return { kind: 'row-blocks', shape: [rows, cols], blockRows, blocks };
}

function holdMatrix(
  cfg: ModelConfig,
  name: string,
  dtype: Dtype,
  matrix: readonly [number, number],
  bytes: Uint8Array,
  placement: WeightPlacement,
): FrozenMatrix {
  // The format it would have packed; an unpacked backend keeps only the quantization's values.
  const format = heldFormat(name, dtype, matrix, { ...placement, packed: true });
  const widened = format === 'f32' || (!placement.packed && (format === 'bf16' || format === 'f16'));
  if (widened) return tf.tensor2d(toFloat32(dtype, bytes), [...matrix], 'float32');
  let host: HostPackedMatrix;
  switch (format) {
    case 'bf16':
    case 'f16':
      host = packHalves(format, matrix, bytes);
      break;
    case 'int8':
      host = quantizeInt8(toFloat32(dtype, bytes), matrix, outputChannelAxis(cfg.arch));
      break;
    case 'nf4':
      host = quantizeNf4(toFloat32(dtype, bytes), matrix);
      break;
  }
  return placement.packed ? uploadPacked(host) : tf.tensor2d(unpackHost(host), [...matrix], 'float32');
}

export function disposeWeights(weights: Iterable<HeldWeight>): void {
  for (const w of weights) tf.dispose(heldTensors(w));
}
