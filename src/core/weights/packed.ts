import * as tf from '@tensorflow/tfjs';

/**
 * How a frozen matrix is encoded in 32-bit words: two 16-bit floats, four int8 codes with one scale per
 * output channel, or eight NF4 codes with one absmax per block of 64 consecutive elements. Elements are
 * numbered row-major over the stored shape and fill each word from its low bits up (the byte order of
 * the checkpoint's own little-endian halves, so BF16/F16 tensors are uploaded as they are stored).
 */
export type Packing<Scales> =
  | { readonly format: 'bf16' | 'f16' }
  /** value = code · scales[channel], the channel being the stored row (axis 0) or column (axis 1). */
  | { readonly format: 'int8'; readonly channelAxis: 0 | 1; readonly scales: Scales }
  /** value = NF4_CODE_BOOK[code] · absmax[element / 64]. */
  | { readonly format: 'nf4'; readonly absmax: Scales };

export type PackedFormat = Packing<unknown>['format'];

export type PackedMatrix<Words, Scales> = Packing<Scales> & {
  /** The stored shape [rows, cols], as in the checkpoint. */
  readonly shape: readonly [number, number];
  readonly words: Words;
};

/** A packed matrix in JavaScript memory: what the loader builds and what tests decode independently. */
export type HostPackedMatrix = PackedMatrix<Int32Array, Float32Array>;

/** A packed matrix on the backend: int32 words and float32 scales, ordinary tensors tfjs accounts for. */
export type PackedWeight = PackedMatrix<tf.Tensor1D, tf.Tensor1D>;

/**
 * A frozen base-model matrix as the kernels receive it: a float32 tensor, or packed words that our WGSL
 * kernels decode as they read them. The models never branch on which (see kernels/frozen_matrix.ts).
 */
export type FrozenMatrix = tf.Tensor2D | PackedWeight;

export const ELEMENTS_PER_WORD: Readonly<Record<PackedFormat, number>> = { bf16: 2, f16: 2, int8: 4, nf4: 8 };

export function isPacked(m: tf.Tensor | PackedWeight): m is PackedWeight {
  return !(m instanceof tf.Tensor);
}

export function matrixShape(m: FrozenMatrix): readonly [number, number] {
  return isPacked(m) ? m.shape : (m.shape as [number, number]);
}

/** The tensors that hold a matrix: the float32 values, or the words and any scales. */
export function tensorsOf(m: FrozenMatrix): tf.Tensor[] {
  if (!isPacked(m)) return [m];
  switch (m.format) {
    case 'bf16':
    case 'f16':
      return [m.words];
    case 'int8':
      return [m.words, m.scales];
    case 'nf4':
      return [m.words, m.absmax];
  }
}

/**
 * The same matrix held by other tensors, given in tensorsOf's order: how a gradient function rebuilds
 * a matrix from the copies tf.customGrad saved for it.
 */
export function withTensors(m: FrozenMatrix, tensors: readonly tf.Tensor[]): FrozenMatrix {
  const [first, second] = tensors;
  if (!first) throw new Error('withTensors: no tensors given');
  if (!isPacked(m)) return first as tf.Tensor2D;
  const words = first as tf.Tensor1D;
  switch (m.format) {
    case 'bf16':
    case 'f16':
      return { ...m, words };
    case 'int8':
      return { ...m, words, scales: second as tf.Tensor1D };
    case 'nf4':
      return { ...m, words, absmax: second as tf.Tensor1D };
  }
}

/** Bytes the matrix holds on the backend. */
export function deviceBytes(m: FrozenMatrix): number {
  return tensorsOf(m).reduce((sum, t) => sum + 4 * t.size, 0);
}

export function disposeMatrix(m: FrozenMatrix): void {
  tf.dispose(tensorsOf(m));
}

/** Moves a host-packed matrix to the active backend. */
export function uploadPacked(m: HostPackedMatrix): PackedWeight {
  const words = tf.tensor1d(m.words, 'int32');
  switch (m.format) {
    case 'bf16':
    case 'f16':
      return { format: m.format, shape: m.shape, words };
    case 'int8':
      return { format: 'int8', shape: m.shape, words, channelAxis: m.channelAxis, scales: tf.tensor1d(m.scales, 'float32') };
    case 'nf4':
      return { format: 'nf4', shape: m.shape, words, absmax: tf.tensor1d(m.absmax, 'float32') };
  }
}
