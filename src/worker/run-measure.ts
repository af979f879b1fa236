import * as tf from '@tensorflow/tfjs';
import { mergeMeasurements, summarizeRun, type MeasuredSoFar, type NumberedStepTiming, type RunSummary } from '../core/export/run-summary';
import type { LossFn } from '../core/train/batch';
import { watchPeakBytes } from '../core/train/device-memory';
import type { TrainerCallbacks } from '../core/train/trainer';
import { adapterDescription, wasmHeapBytes } from './backend';

export interface RunMeasure {
  /**
   * The training loss, timed: a step starts when its first micro-batch's forward pass does. `units` is what the
   * batch counts for throughput (its tokens; its images).
   */
  lossFn<B>(inner: LossFn<B>, units: (batch: B) => number): LossFn<B>;
  /** Ends a step's timing; listed first among the run's callbacks, so theirs is not counted. */
  readonly callbacks: TrainerCallbacks;
  /** Ends the measurement (memory watch, total time): call when training ends, however it ends. Idempotent. */
  stop(): void;
  /**
   * What the whole run has measured by `step` (earlier segments included): stored with the checkpoint of that step,
   * so that a run resumed from it goes on counting from there (see `earlier` of measureRun).
   */
  soFar(step: number): MeasuredSoFar;
  /** The run summed up, as of stop(), every segment of a resumed run included. */
  summary(): RunSummary;
}

/** A resumed run's measurements before this segment: those stored with the checkpoint it resumed from. */
export interface EarlierSegments {
  readonly measured: MeasuredSoFar;
  /** The checkpoint's step: this segment trains the steps after it. */
  readonly fromStep: number;
}

/**
 * Measures one training run for run_summary.json: memory (tfjs's high-water mark, the wasm heap),
 * the base weights as held (`baseBytes`, e.g. baseWeightBytes(model)), and each step's time and tokens (or images). Started once the model is loaded, so
 * the peak includes its weights. Nothing here reads back from the device or waits. A resumed run passes
 * what was measured before its checkpoint (`earlier`), so that its summary counts every step of the run once.
 */
export function measureRun(baseBytes: number, earlier: EarlierSegments | null = null): RunMeasure {
  const peak = watchPeakBytes();
  const started = now();
  const steps: NumberedStepTiming[] = [];
  let current: { step: number; start: number; tokens: number } | null = null;
  let ended: number | null = null;
  let heap: number | null = null;
  return {
    lossFn: (inner, units) => (batch, ctx) => {
      if (current?.step !== ctx.step) current = { step: ctx.step, start: now(), tokens: 0 };
      current.tokens += units(batch);
      return inner(batch, ctx);
    },
    callbacks: {
      onStepEnd(m) {
        // StepMetrics.step is 1-based; LossContext.step is the 0-based step being computed.
        if (current?.step === m.step - 1) steps.push({ step: m.step, seconds: (now() - current.start) / 1000, tokens: current.tokens });
        current = null;
      },
    },
    stop() {
      if (ended !== null) return;
      ended = now();
      peak.stop();
      heap = wasmHeapBytes();
    },
    soFar(step) {
      return measured(step);
    },
    summary() {
      const whole = measured(Number.POSITIVE_INFINITY);
      return summarizeRun({ backend: tf.getBackend(), adapter: adapterDescription(), baseWeightBytes: baseBytes, ...whole });
    },
  };

  /** This segment's measurements through `step`, after those of the segments before it. */
  function measured(step: number): MeasuredSoFar {
    const segment: MeasuredSoFar = {
      steps: steps.filter((s) => s.step <= step),
      peakMemoryBytes: peak.peakBytes(),
      wasmHeapBytes: ended === null ? wasmHeapBytes() : heap,
      totalSeconds: ((ended ?? now()) - started) / 1000,
    };
    return earlier ? mergeMeasurements(earlier.measured, earlier.fromStep, segment) : segment;
  }
}

function now(): number {
  return globalThis.performance?.now() ?? Date.now();
}
