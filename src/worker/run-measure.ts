import * as tf from '@tensorflow/tfjs';
import { summarizeRun, type RunSummary, type StepTiming } from '../core/export/run-summary';
import type { LossFn } from '../core/train/batch';
import { baseWeightBytes, watchPeakBytes } from '../core/train/device-memory';
import type { CausalLM } from '../core/models/model';
import type { TrainerCallbacks } from '../core/train/trainer';
import { adapterDescription, wasmHeapBytes } from './backend';

export interface RunMeasure {
  /** The training loss, timed: a step starts when its first micro-batch's forward pass does. */
  lossFn(inner: LossFn): LossFn;
  /** Ends a step's timing; listed first among the run's callbacks, so theirs is not counted. */
  readonly callbacks: TrainerCallbacks;
  /** Ends the measurement (memory watch, total time): call when training ends, however it ends. Idempotent. */
  stop(): void;
  /** The run summed up, as of stop(). */
  summary(): RunSummary;
}

/**
 * Measures one training run for run_summary.json: memory (tfjs's high-water mark, the wasm heap),
 * the base weights as held, and each step's time and tokens. Started once the model is loaded, so
 * the peak includes its weights. Nothing here reads back from the device or waits.
 */
export function measureRun(model: Pick<CausalLM, 'weights'>): RunMeasure {
  const peak = watchPeakBytes();
  const started = now();
  const steps: StepTiming[] = [];
  let current: { step: number; start: number; tokens: number } | null = null;
  let ended: number | null = null;
  let heap: number | null = null;
  return {
    lossFn: (inner) => (batch, ctx) => {
      if (current?.step !== ctx.step) current = { step: ctx.step, start: now(), tokens: 0 };
      current.tokens += batch.inputs.size;
      return inner(batch, ctx);
    },
    callbacks: {
      onStepEnd(m) {
        // StepMetrics.step is 1-based; LossContext.step is the 0-based step being computed.
        if (current?.step === m.step - 1) steps.push({ seconds: (now() - current.start) / 1000, tokens: current.tokens });
        current = null;
      },
    },
    stop() {
      if (ended !== null) return;
      ended = now();
      peak.stop();
      heap = wasmHeapBytes();
    },
    summary() {
      return summarizeRun({
        backend: tf.getBackend(),
        adapter: adapterDescription(),
        peakMemoryBytes: peak.peakBytes(),
        baseWeightBytes: baseWeightBytes(model),
        wasmHeapBytes: ended === null ? wasmHeapBytes() : heap,
        steps,
        totalSeconds: ((ended ?? now()) - started) / 1000,
      });
    },
  };
}

function now(): number {
  return globalThis.performance?.now() ?? Date.now();
}
