import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { isPacked, matrixShape, type FrozenMatrix } from '../weights/packed';
import { GatherRowsProgram } from './embedding_webgpu';
import { unpackMatrix } from './frozen_matrix';
import { encodingOf, matrixBindings } from './packed_weight_webgpu';
import { fusedKernelBackend, isTrainable, runProgram } from './webgpu_run';

/**
 * Rows of a frozen table (token or position embeddings) by id: ids int32 [T] → float32 [T, cols]. No
 * gradient flows to the table or the ids. On webgpu one dispatch reads the rows straight from the packed
 * words, so a BF16 or quantized table is never widened whole; elsewhere (or with a trainable table,
 * when training from scratch) it is tf.gather.
 */
export function embeddingLookup(table: FrozenMatrix, ids: tf.Tensor1D): tf.Tensor2D {
  const backend = fusedKernelBackend();
  if (!backend || (!isPacked(table) && isTrainable(table))) {
    return embeddingLookupReference(table, ids);
  }
  return fusedLookup(backend, table, ids);
}

export function embeddingLookupReference(table: FrozenMatrix, ids: tf.Tensor1D): tf.Tensor2D {
  return tf.tidy(() => tf.gather(unpackMatrix(table), ids));
}

function fusedLookup(backend: WebGPUBackend, table: FrozenMatrix, ids: tf.Tensor1D): tf.Tensor2D {
  const [rows, cols] = matrixShape(table);
  const intIds = ids.dtype === 'int32' ? ids : tf.cast(ids, 'int32');
  const [values, scales] = matrixBindings(table, intIds);
  const program = new GatherRowsProgram({ tokens: ids.shape[0], rows, cols, encoding: encodingOf(table) });
  const out = runProgram(backend, program, [intIds, values, scales]) as tf.Tensor2D;
  if (intIds !== ids) intIds.dispose();
  return out;
}
