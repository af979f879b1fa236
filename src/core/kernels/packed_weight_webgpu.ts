import type * as tf from '@tensorflow/tfjs';
import prefix from '../../../shaders/packed_weight.wgsl?raw';
import { ELEMENTS_PER_WORD, isPacked, type FrozenMatrix, type PackedFormat } from '../weights/packed';
import type { WgslConstants } from './program_util';

/** The WGSL functions that decode a frozen matrix's elements; programs that read one prepend it. */
export const PACKED_WEIGHT_WGSL = prefix;

/** What a program must bake in to read a frozen matrix: its element format and where its scales apply. */
export interface MatrixEncoding {
  readonly format: 'f32' | PackedFormat;
  readonly scales: 'none' | 'row' | 'column' | 'block';
}

export const FLOAT32_ENCODING: MatrixEncoding = { format: 'f32', scales: 'none' };

export function encodingOf(m: FrozenMatrix): MatrixEncoding {
  if (!isPacked(m)) return FLOAT32_ENCODING;
  switch (m.format) {
    case 'bf16':
    case 'f16':
      return { format: m.format, scales: 'none' };
    case 'int8':
      return { format: 'int8', scales: m.channelAxis === 0 ? 'row' : 'column' };
    case 'nf4':
      return { format: 'nf4', scales: 'block' };
  }
}

const FORMAT_CODE: Record<MatrixEncoding['format'], number> = { f32: 0, bf16: 1, f16: 2, int8: 3, nf4: 4 };
const SCALE_CODE: Record<MatrixEncoding['scales'], number> = { none: 0, row: 1, column: 2, block: 3 };

/** The placeholders of packed_weight.wgsl. */
export function encodingConstants(e: MatrixEncoding): WgslConstants {
  return {
    PACK_FORMAT: FORMAT_CODE[e.format],
    PER_WORD: e.format === 'f32' ? 1 : ELEMENTS_PER_WORD[e.format],
    SCALE_MODE: SCALE_CODE[e.scales],
  };
}

/**
 * The two bindings a program reads a frozen matrix through: its values or words, and its scales. A
 * matrix without scales binds `standIn`, any tensor of the call: the program never reads it then.
 */
export function matrixBindings(m: FrozenMatrix, standIn: tf.Tensor): [tf.Tensor, tf.Tensor] {
  if (!isPacked(m)) return [m, standIn];
  switch (m.format) {
    case 'bf16':
    case 'f16':
      return [m.words, standIn];
    case 'int8':
      return [m.words, m.scales];
    case 'nf4':
      return [m.words, m.absmax];
  }
}
