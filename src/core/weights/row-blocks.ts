import type * as tf from '@tensorflow/tfjs';
import { isPacked, matrixShape, tensorsOf, type FrozenMatrix, type PackedWeight } from './packed.js';

/**
 * A matrix larger than one storage binding may be (a 128K-vocabulary embedding, an untied head), held
 * as blocks of whole rows: block b holds rows [b·blockRows, (b+1)·blockRows), the last one shorter.
 * Each block is an ordinary frozen matrix; kernels/row_blocks.ts combines the kernels' results.
 */
export interface RowBlocks {
  readonly kind: 'row-blocks';
  readonly shape: readonly [number, number];
  readonly blockRows: number;
  readonly blocks: readonly FrozenMatrix[];
}

/** A frozen matrix of the model: one binding, or row blocks of them. */
export type ModelMatrix = FrozenMatrix | RowBlocks;

export function isRowBlocks(m: object): m is RowBlocks {
  return (m as Partial<RowBlocks>).kind === 'row-blocks';
}

export function modelMatrixShape(m: ModelMatrix): readonly [number, number] {
  return isRowBlocks(m) ? m.shape : matrixShape(m);
}

/** Every tensor that holds a weight: itself, the words and scales of a packed one, or those of each block. */
export function heldTensors(m: tf.Tensor | PackedWeight | RowBlocks): tf.Tensor[] {
  if (isRowBlocks(m)) return m.blocks.flatMap((b) => tensorsOf(b));
  return isPacked(m) ? tensorsOf(m) : [m];
}

/** Rows per block so that no block exceeds `maxBytes`, given a row's bytes; whole multiples of 64 rows where possible. */
export function blockRowsFor(rows: number, rowBytes: number, maxBytes: number): number {
  const fit = Math.floor(maxBytes / rowBytes);
  if (fit < 1) throw new Error(`one row of ${rowBytes} bytes exceeds the ${maxBytes}-byte binding limit`);
  return Math.min(rows, fit >= 64 ? fit - (fit % 64) : fit);
}
