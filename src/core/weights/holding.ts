import type { Dtype } from '../safetensors/dtype.js';
import type { PackedFormat } from './packed.js';

/**
 * Which format each weight is held in on the backend, and what that costs: pure arithmetic shared by the
 * loader (weights/hold.ts) and the run estimate, so that the two can never disagree.
 */

/** The run config's `base_quantization`: how the frozen projections of the transformer blocks are held. */
export type BaseQuantization = 'none' | 'int8' | 'nf4';

export const BASE_QUANTIZATIONS: readonly BaseQuantization[] = ['none', 'int8', 'nf4'];

export interface WeightPlacement {
  /** Whether packed matrices can be held: our WGSL kernels decode them, so only on webgpu with them on. */
  readonly packed: boolean;
  readonly quantization: BaseQuantization;
  /**
   * The most bytes one matrix may hold in one binding (the adapter's maxStorageBufferBindingSize);
   * larger ones are held as row blocks. Null: no limit (wasm, cpu).
   */
  readonly maxBindingBytes?: number | null;
}

/** Every weight as float32, quantization none: what every backend can run. */
export const FLOAT32_PLACEMENT: WeightPlacement = { packed: false, quantization: 'none', maxBindingBytes: null };

export type HeldFormat = 'f32' | PackedFormat;

/**
 * The projections inside transformer blocks, which quantization applies to. Embeddings, the output head
 * and norms keep their stored precision, as in QLoRA (a small share of a model's bytes, but sensitive to
 * rounding); block projections are the only 2-D weights under `h.N.` / `layers.N.`.
 */
export function isBlockProjection(name: string, shape: readonly number[]): boolean {
  return shape.length === 2 && /\.(h|layers)\.\d+\./.test(name);
}

/**
 * How one weight is held. Packed only when the placement allows it: a block projection quantized when
 * asked, any other BF16/F16 matrix as its own halves. Vectors (norms, biases) and float32 matrices are
 * float32. Without packing, quantized weights are float32 tensors of the quantized values.
 */
export function heldFormat(name: string, dtype: Dtype, shape: readonly number[], placement: WeightPlacement): HeldFormat {
  if (shape.length !== 2 || !placement.packed) return 'f32';
  if (placement.quantization !== 'none' && isBlockProjection(name, shape)) return placement.quantization;
  return dtype === 'BF16' ? 'bf16' : dtype === 'F16' ? 'f16' : 'f32';
}

/**
 * The axis of a stored projection weight that indexes output channels (int8's scales): columns of
 * GPT-2's Conv1D [in, out], rows of nn.Linear [out, in].
 */
export function outputChannelAxis(arch: 'gpt2' | 'llama'): 0 | 1 {
  return arch === 'gpt2' ? 1 : 0;
}

/** Bytes a matrix (or vector) of `shape` takes held as `format`: its words and its scales. */
export function heldBytes(format: HeldFormat, shape: readonly number[], channelAxis: 0 | 1): number {
  const count = shape.reduce((a, b) => a * b, 1);
  switch (format) {
    case 'f32':
      return 4 * count;
    case 'bf16':
    case 'f16':
      return 4 * Math.ceil(count / 2);
    case 'int8':
      return 4 * Math.ceil(count / 4) + 4 * shape[channelAxis]!;
    case 'nf4':
      return 4 * Math.ceil(count / 8) + 4 * Math.ceil(count / 64);
  }
}
