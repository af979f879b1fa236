import * as tf from '@tensorflow/tfjs';
import type { RunConfig } from '../src/core/config';
import { withStockWasmMatMul } from '../src/core/kernels/wasm_matmul';
import { FUSED_KERNELS_FLAG } from '../src/core/kernels/webgpu_run';
import type { CausalLM } from '../src/core/models/model';
import { placementFor, type WeightPlacement } from '../src/core/weights/hold';
import { measureSteps, uploadWeights, type ShapeRow } from './shape-steps';

export interface VariantOptions {
  readonly fused: boolean;
  /** The run config: LoRA, batch, seq and base_quantization. */
  readonly config: RunConfig;
  readonly steps: number;
  readonly warmup: number;
  /** The checkpoint's bytes as stored, for the load's MB/s. */
  readonly storedBytes: number;
  /** Loads the model the app's way, holding each weight as `placement` says. */
  load(placement: WeightPlacement): Promise<CausalLM>;
  /** Extra figures for the row once the steps ran (the page adds the wasm heap). */
  extra?(): Partial<ShapeRow>;
}

/**
 * One backend, fused or plain, measured the same way in a page and in Node: the model loaded with the
 * placement that variant gets (packed on webgpu with the fused kernels; float32 for stock tfjs, which
 * cannot read packed words), every weight sent to the device, then timed steps. The plain figure on
 * wasm also takes tfjs's stock BatchMatMul. Whatever fails becomes the row's one-line `skipped`.
 */
export async function measureVariant(o: VariantOptions): Promise<ShapeRow> {
  const backend = tf.getBackend();
  const quantization = o.config.base_quantization;
  const run = async (): Promise<ShapeRow> => {
    const start = performance.now();
    const model = await o.load(placementFor(quantization));
    try {
      await uploadWeights(model);
      const loadBytesPerSecond = o.storedBytes / ((performance.now() - start) / 1000);
      const step = await measureSteps(model, o.config, o.steps, o.warmup);
      return { backend, fused: o.fused, quantization, step, loadBytesPerSecond, ...o.extra?.() };
    } finally {
      model.dispose();
    }
  };
  tf.env().set(FUSED_KERNELS_FLAG, o.fused);
  try {
    const outcome = await withGpuErrors(() => (backend === 'wasm' && !o.fused ? withStockWasmMatMul(run) : run()));
    return 'gpuError' in outcome ? { backend, fused: o.fused, quantization, skipped: `the GPU reported: ${outcome.gpuError}` } : outcome.value;
  } catch (e) {
    return { backend, fused: o.fused, quantization, skipped: oneLine(e) };
  } finally {
    tf.env().set(FUSED_KERNELS_FLAG, true);
  }
}

/** WebGPU does not throw on running out of memory or on a bad dispatch: its error scopes are the only sign, and the numbers would be wrong. */
async function withGpuErrors<T>(body: () => Promise<T>): Promise<{ value: T } | { gpuError: string }> {
  if (tf.getBackend() !== 'webgpu') return { value: await body() };
  const device = (tf.backend() as unknown as { device: GPUDevice }).device;
  device.pushErrorScope('validation');
  device.pushErrorScope('out-of-memory');
  let outcome: { value: T } | { failure: unknown };
  try {
    outcome = { value: await body() };
  } catch (e) {
    outcome = { failure: e };
  }
  const errors = [await device.popErrorScope(), await device.popErrorScope()].filter((e): e is GPUError => e !== null);
  // A GPU error first: a later JavaScript error (a NaN loss, say) is its consequence.
  if (errors.length > 0) return { gpuError: errors.map((e) => e.message).join('; ') };
  if ('failure' in outcome) throw outcome.failure;
  return outcome;
}

export function oneLine(e: unknown): string {
  const message = e instanceof Error ? e.message : String(e);
  return message.split('\n')[0]!;
}
