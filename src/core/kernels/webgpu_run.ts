import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import type { ProgramUniform } from './program_util';

/**
 * The webgpu backend when it is the active one, else null. Checked per call, not once, because the
 * app may switch backends; every fused op takes its WebGPU path only when this returns a backend.
 */
export function activeWebGPUBackend(): WebGPUBackend | null {
  if (tf.getBackend() !== 'webgpu') return null;
  const backend = tf.backend() as Partial<WebGPUBackend>;
  return typeof backend.runWebGPUProgram === 'function' ? (backend as WebGPUBackend) : null;
}

/** Runs one of our programs and returns its output as an ordinary tensor (tidy and tf.memory() see it). */
export function runProgram(
  backend: WebGPUBackend,
  program: WebGPUProgram & { uniformData: ProgramUniform[] },
  inputs: tf.Tensor[],
): tf.Tensor {
  const info = backend.runWebGPUProgram(program, inputs, 'float32', program.uniformData);
  // A bare TensorInfo is invisible to tidy and to tf.memory() but holds a GPU buffer: wrap it at once.
  return tf.engine().makeTensorFromTensorInfo(info);
}
