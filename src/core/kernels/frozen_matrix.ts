import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { isPacked, type FrozenMatrix } from '../weights/packed';
import { encodingOf, matrixBindings } from './packed_weight_webgpu';
import { UnpackMatrixProgram } from './unpack_matrix_webgpu';
import { runProgram } from './webgpu_run';

/**
 * A frozen matrix as float32 values, for the stock-tfjs paths (the benchmarks' baseline, a trainable
 * weight's path): a float32 matrix is returned as it is, a packed one is decoded into a new tensor that
 * the caller owns (inside a tidy it goes with the scope). Packed matrices only exist on webgpu, where the
 * loader puts them, so the decoding kernel runs whether or not the fused kernels are switched on.
 */
export function unpackMatrix(m: FrozenMatrix): tf.Tensor2D {
  if (!isPacked(m)) return m;
  const backend = tf.backend() as Partial<WebGPUBackend>;
  if (tf.getBackend() !== 'webgpu' || typeof backend.runWebGPUProgram !== 'function') {
    throw new Error(`a packed ${m.format} matrix can only be read on webgpu, not on ${tf.getBackend()}`);
  }
  const [rows, cols] = m.shape;
  const [words, scales] = matrixBindings(m, m.words);
  const flat = runProgram(backend as WebGPUBackend, new UnpackMatrixProgram({ rows, cols, encoding: encodingOf(m) }), [words, scales]);
  const values = flat.reshape([rows, cols]) as tf.Tensor2D;
  flat.dispose();
  return values;
}
