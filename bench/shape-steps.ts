import * as tf from '@tensorflow/tfjs';
import { loraSettingsOf, trainerOptionsOf, type RunConfig } from '../src/core/config';
import { packStream, trainWindows } from '../src/core/data/packing';
import { LoraAdapter } from '../src/core/lora';
import type { CausalLM } from '../src/core/models/model';
import { baseWeightBytes, watchPeakBytes } from '../src/core/train/device-memory';
import { loraLossFn } from '../src/core/train/loss-fns';
import { windowExamples } from '../src/core/train/examples';
import { Trainer } from '../src/core/train/trainer';
import type { BaseQuantization } from '../src/core/weights/hold';
import { heldTensors } from '../src/core/weights/row-blocks';

/** Training steps of one loaded model, timed, with what they held. Runs in a page or in Node (Dawn). */
export interface StepMeasure {
  readonly tokensPerSecond: number;
  readonly msPerStep: number;
  /** tfjs's high-water mark of tensor bytes (tf.memory().numBytes) over the steps, the weights included. */
  readonly peakBytes: number;
  /** The frozen base weights as the backend holds them (packed words and scales, or float32). */
  readonly baseWeightBytes: number;
}

export interface ShapeRow {
  readonly backend: string;
  /** true: LoRA Lab's kernels (and packed weights on webgpu); false: the plain tfjs composition. */
  readonly fused: boolean;
  /** base_quantization; the plain composition holds the quantized values as float32. */
  readonly quantization: BaseQuantization;
  /** What the run could not do, in one line (too big for wasm's memory, a GPU error); the numbers are then absent. */
  readonly skipped?: string;
  readonly step?: StepMeasure;
  /** Stored bytes ÷ seconds of loading (the app's loader: from IndexedDB in the page, the file in Node), every weight on the device at the end. */
  readonly loadBytesPerSecond?: number;
  /** The wasm heap's size after the steps (it never shrinks: the most they needed, the weights included). */
  readonly wasmHeapBytes?: number | null;
}

/**
 * `warmup` + `steps` optimizer steps of LoRA training, the app's way: the adapter, loss and trainer
 * options from the run config (its target_modules default to the model's PEFT defaults), token ids
 * spread over the whole vocabulary. Step time is measured from the end of the last warm-up step (pipelines
 * compiled, buffer pools filled) to the end of the last step; the trainer reads every step's loss back,
 * so each step's device work is finished when it ends.
 */
export async function measureSteps(model: CausalLM, config: RunConfig, steps: number, warmup: number): Promise<StepMeasure> {
  if (!(steps >= 1 && warmup >= 1)) throw new Error(`measureSteps: steps ${steps} and warmup ${warmup} must both be at least 1`);
  const total = steps + warmup;
  const tokensPerStep = config.batch_size * config.grad_accum_steps * config.seq_len;
  const vocab = model.config.vocabSize;
  const ids = Array.from({ length: total * tokensPerStep + 1 }, (_, i) => (i * 7919 + 13) % vocab);
  const peak = watchPeakBytes(); // started with the model loaded: the peak includes its weights
  const adapter = LoraAdapter.create(model, loraSettingsOf(config, model.config.arch), config.seed);
  try {
    const stepEnds: number[] = [];
    const trainer = new Trainer({
      variables: adapter.variables(),
      lossFn: loraLossFn(model, adapter, config.seed, { gradientCheckpointing: config.gradient_checkpointing }),
      train: windowExamples(trainWindows(packStream([{ ids }], null), config.seq_len)),
      options: { ...trainerOptionsOf(config), maxSteps: total, logSteps: 0, saveSteps: 0 },
      callbacks: { onStepEnd: () => void stepEnds.push(performance.now()) },
    });
    await trainer.run();
    const timed = stepEnds.slice(warmup - 1);
    const msPerStep = (timed.at(-1)! - timed[0]!) / (timed.length - 1);
    return { tokensPerSecond: (tokensPerStep * 1000) / msPerStep, msPerStep, peakBytes: peak.peakBytes(), baseWeightBytes: baseWeightBytes(model) };
  } finally {
    peak.stop();
    adapter.dispose();
  }
}

/**
 * Sends every weight to the device now. tfjs-backend-webgpu uploads a tensor's values on its first use
 * only, so without this a load "finishes" with the whole model still in JavaScript memory and its
 * upload falls into the first training step. Elsewhere (wasm copies into its heap at creation) a no-op.
 */
export async function uploadWeights(model: CausalLM): Promise<void> {
  if (tf.getBackend() !== 'webgpu') return;
  const backend = tf.backend() as unknown as { uploadToGPU(dataId: object): void; submitQueue(): void; commandEncoder: GPUCommandEncoder | null; device: GPUDevice };
  for (const w of model.weights.values()) {
    for (const t of heldTensors(w)) {
      backend.uploadToGPU(t.dataId);
      // A copy through a staging buffer was encoded: submit it, one tensor's staging buffer at a time.
      if (backend.commandEncoder) backend.submitQueue();
    }
  }
  await backend.device.queue.onSubmittedWorkDone();
}
