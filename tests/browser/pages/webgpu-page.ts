// What every WebGPU kernel-check page needs: switching to webgpu (loudly), counting the programs that
// run, catching the validation errors WebGPU does not throw, running a reference on another backend,
// and comparing float arrays.
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';

/** Programs run through the backend since the last `takePrograms()`, by the first part of their shaderKey. */
let programs: string[] = [];

export function takePrograms(): string[] {
  const taken = programs;
  programs = [];
  return taken;
}

export function webgpu(): WebGPUBackend {
  return tf.engine().findBackend('webgpu') as WebGPUBackend;
}

/**
 * Runs `body` with `name` as the active backend. References run on the cpu backend: an independent
 * implementation, and no stock WebGPU shaders to compile (SwiftShader compiles take most of the time).
 * Seeded tf.randomUniform draws its numbers in JS, so every backend gets the same inputs.
 */
export async function onBackend<T>(name: 'cpu' | 'webgpu', body: () => Promise<T>): Promise<T> {
  const previous = tf.getBackend();
  await tf.setBackend(name);
  try {
    return await body();
  } finally {
    await tf.setBackend(previous);
  }
}

let counting = false;

/** Switches to WebGPU (failing loudly: tfjs silently stays on cpu without an adapter) and counts dispatches. */
export async function setup(): Promise<{ backend: string; adapter: string }> {
  tf.env().set('WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD', 0);
  await tf.setBackend('webgpu');
  await tf.ready();
  if (tf.getBackend() !== 'webgpu') throw new Error(`backend is ${tf.getBackend()}, not webgpu`);
  const backend = webgpu();
  if (!counting) {
    counting = true;
    const run = backend.runWebGPUProgram.bind(backend);
    backend.runWebGPUProgram = (program: WebGPUProgram, ...rest) => {
      // Read before the call: the backend rewrites shaderKey into its cache key.
      programs.push(program.shaderKey.split('_')[0] ?? program.shaderKey);
      return run(program, ...rest);
    };
  }
  const info = (backend as unknown as { adapterInfo?: { vendor?: string; architecture?: string } }).adapterInfo;
  return { backend: tf.getBackend(), adapter: `${info?.vendor ?? '?'} ${info?.architecture ?? '?'}` };
}

/** Validation errors (a WGSL compile error, a bad binding) do not throw; they only reach an error scope. */
export async function withErrorScope<T>(body: () => Promise<T>): Promise<{ value: T; gpuErrors: string[] }> {
  const device = webgpu().device;
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  let value: T | undefined;
  let failure: unknown = null;
  try {
    value = await body();
  } catch (e) {
    failure = e;
  }
  const oom = await device.popErrorScope();
  const validation = await device.popErrorScope();
  if (failure !== null) throw failure;
  const gpuErrors = [validation, oom].filter((e): e is GPUError => e !== null).map((e) => e.message);
  return { value: value as T, gpuErrors };
}

/** max |got − want| / max(1, max |want|); Infinity if anything is not finite. */
export function relErr(got: Float32Array, want: Float32Array): number {
  if (got.length !== want.length) throw new Error(`size ${got.length} != ${want.length}`);
  let maxDiff = 0;
  let maxRef = 1;
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(got[i]!)) return Infinity;
    maxDiff = Math.max(maxDiff, Math.abs(got[i]! - want[i]!));
    maxRef = Math.max(maxRef, Math.abs(want[i]!));
  }
  return maxDiff / maxRef;
}
