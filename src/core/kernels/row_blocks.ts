import * as tf from '@tensorflow/tfjs';
import { isRowBlocks, type ModelMatrix, type RowBlocks } from '../weights/row-blocks';
import { embeddingLookup } from './embedding';
import { frozenLinear } from './frozen_linear';
import { unpackMatrix } from './frozen_matrix';
import { fusedKernelBackend } from './webgpu_run';

/**
 * The frozen projection with a weight held as row blocks: with nn.Linear's [out, in] the blocks are
 * slices of the outputs, whose results are concatenated; with Conv1D's [in, out] they are slices of
 * the inputs, whose partial products are summed. Gradients flow through slice, concat and add.
 */
export function rowBlockedLinear(args: { x: tf.Tensor2D; weight: RowBlocks; layout: 'in_out' | 'out_in'; bias: tf.Tensor1D | null }): tf.Tensor2D {
  const { x, weight, layout, bias } = args;
  const { blockRows, blocks } = weight;
  return tf.tidy(() => {
    if (layout === 'out_in') {
      const parts = blocks.map((block, b) => {
        const rows = blockRowsOf(weight, b);
        const blockBias = bias ? (tf.slice(bias, [b * blockRows], [rows]) as tf.Tensor1D) : null;
        return frozenLinear({ x, weight: block, layout, bias: blockBias });
      });
      return tf.concat(parts, 1) as tf.Tensor2D;
    }
    const partial = blocks.map((block, b) =>
      frozenLinear({ x: tf.slice(x, [0, b * blockRows], [x.shape[0], blockRowsOf(weight, b)]) as tf.Tensor2D, weight: block, layout, bias: null }),
    );
    const sum = tf.addN(partial) as tf.Tensor2D;
    return bias ? (tf.add(sum, bias) as tf.Tensor2D) : sum;
  });
}

/**
 * Rows of a table held as row blocks. On webgpu each block's lookup gives zeros for ids outside it,
 * so the sum of the blocks' lookups (ids shifted to each block's first row) is the table's lookup.
 */
export function rowBlockedLookup(table: RowBlocks, ids: tf.Tensor1D): tf.Tensor2D {
  return tf.tidy(() => {
    if (!fusedKernelBackend()) return tf.gather(unpackRowBlocks(table), ids) as tf.Tensor2D;
    const intIds = tf.cast(ids, 'int32') as tf.Tensor1D;
    const parts = table.blocks.map((block, b) => embeddingLookup(block, tf.sub(intIds, b * table.blockRows) as tf.Tensor1D));
    return tf.addN(parts) as tf.Tensor2D;
  });
}

/** The whole matrix as float32 (the stock paths' view; it may exceed one binding, so not on the fused path). */
export function unpackRowBlocks(m: RowBlocks): tf.Tensor2D {
  return tf.tidy(() => tf.concat(m.blocks.map((b) => unpackMatrix(b)), 0) as tf.Tensor2D);
}

/** Any model matrix as float32; a new tensor unless it was one already (then it is returned as it is). */
export function unpackModelMatrix(m: ModelMatrix): tf.Tensor2D {
  return isRowBlocks(m) ? unpackRowBlocks(m) : unpackMatrix(m);
}

function blockRowsOf(m: RowBlocks, b: number): number {
  return Math.min(m.blockRows, m.shape[0] - b * m.blockRows);
}
