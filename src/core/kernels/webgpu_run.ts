import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import type { ProgramUniform } from './program_util';

/**
 * A tfjs environment flag, true by default. Set to false, every op takes its stock-tfjs composition even
 * on webgpu: the baseline the benchmarks measure the fused kernels against, and a way around a GPU
 * driver that miscompiles one of them.
 */
export const FUSED_KERNELS_FLAG = 'LORA_LAB_FUSED_KERNELS';
tf.env().registerFlag(FUSED_KERNELS_FLAG, () => true);

/**
 * The webgpu backend when it is the active one and fused kernels are on, else null. Checked per call,
 * not once, because the app may switch backends; every fused op takes its WebGPU path only when this
 * returns a backend.
 */
export function fusedKernelBackend(): WebGPUBackend | null {
  if (tf.getBackend() !== 'webgpu' || !tf.env().getBool(FUSED_KERNELS_FLAG)) return null;
  const backend = tf.backend() as Partial<WebGPUBackend>;
  return typeof backend.runWebGPUProgram === 'function' ? (backend as WebGPUBackend) : null;
}

/**
 * True for a weight that training updates (a tf.Variable marked trainable). The fused ops close over
 * the weights they are given and compute no gradient for them, so such a weight takes the stock path.
 */
export function isTrainable(t: tf.Tensor | null): boolean {
  return t instanceof tf.Variable && t.trainable;
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
