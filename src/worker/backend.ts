import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import wasmPlain from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm?url';
import wasmSimd from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm?url';
import wasmThreadedSimd from '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm?url';
import { UserError } from '../core/errors';
import { registerWasmSharedIdentity } from '../core/kernels/wasm_identity';
import { registerWasmPlainMatMul } from '../core/kernels/wasm_matmul';
import type { AdapterSummary, BackendInfo, BackendPreference } from './protocol';

// The wasm binaries are served by the app itself (and precached): nothing comes from a CDN.
setWasmPaths({
  'tfjs-backend-wasm.wasm': wasmPlain,
  'tfjs-backend-wasm-simd.wasm': wasmSimd,
  'tfjs-backend-wasm-threaded-simd.wasm': wasmThreadedSimd,
});
// The threaded build hangs in a Vite bundle (see shared notes); single-threaded SIMD is what runs.
tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
registerWasmPlainMatMul();
// Without it every weight saved for a backward pass is copied: see wasm_identity.ts.
registerWasmSharedIdentity();

/**
 * Picks the backend: WebGPU when a real (non-fallback) GPU adapter exists, else wasm — a software
 * adapter such as SwiftShader is slower than wasm SIMD. A forced choice is honoured or refused
 * plainly. tfjs silently stays on cpu when WebGPU init fails, so the result is always verified.
 */
export async function selectBackend(preference: BackendPreference): Promise<BackendInfo> {
  const adapter = await probeAdapter();
  if (preference === 'webgpu') {
    if (!adapter) throw new UserError('backend', 'WebGPU was asked for, but this browser offers no WebGPU adapter.', 'Choose "auto" or "wasm", or enable WebGPU in the browser.');
    return activate('webgpu', adapter, 'WebGPU chosen in settings.');
  }
  if (preference === 'wasm') return activate('wasm', adapter, 'WebAssembly (CPU) chosen in settings.');
  if (!adapter) return activate('wasm', null, 'No WebGPU adapter in this browser: training runs on the CPU (WebAssembly).');
  if (adapter.isFallback) {
    return activate('wasm', adapter, `Only a software GPU (${adapter.architecture || adapter.vendor}) was found; WebAssembly on the CPU is faster than it.`);
  }
  return activate('webgpu', adapter, 'A WebGPU adapter was found.');
}

let active: BackendInfo | null = null;

async function activate(name: 'webgpu' | 'wasm', adapter: AdapterSummary | null, reason: string): Promise<BackendInfo> {
  const ok = await tf.setBackend(name);
  await tf.ready();
  if (!ok || tf.getBackend() !== name) {
    throw new Error(`The ${name} backend failed to start (tfjs is on "${tf.getBackend()}").`);
  }
  active = { name, reason, adapter };
  return active;
}

/**
 * The GPU a run computes on, in words (the adapter's description, or its vendor and architecture
 * where the browser leaves the description empty); null on wasm, where no GPU is used even if one
 * was found.
 */
export function adapterDescription(): string | null {
  if (active?.name !== 'webgpu' || !active.adapter) return null;
  const { description, vendor, architecture } = active.adapter;
  return description || [vendor, architecture].filter(Boolean).join(' ') || null;
}

/**
 * Bytes of WebAssembly memory the wasm backend has grown to, or null on another backend. Wasm memory
 * never shrinks, so read at the end of a run this is the most the run needed. The emscripten module
 * is tfjs's own (`backend.wasm`), whose HEAPU8 is replaced by a view of the new buffer on every growth.
 */
export function wasmHeapBytes(): number | null {
  if (tf.getBackend() !== 'wasm') return null;
  const heap = (tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } }).wasm?.HEAPU8;
  return heap ? heap.buffer.byteLength : null;
}

async function probeAdapter(): Promise<AdapterSummary | null> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) return null;
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) return null;
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const legacyFallback = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return {
    vendor: info.vendor,
    architecture: info.architecture,
    description: info.description,
    // Chrome moved the flag from the adapter to adapter.info; SwiftShader is a fallback either way.
    isFallback: Boolean(info.isFallbackAdapter ?? legacyFallback) || info.architecture === 'swiftshader',
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
  };
}
