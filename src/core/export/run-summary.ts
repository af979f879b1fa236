/**
 * run_summary.json: what a run cost on this machine, one file per run next to metrics.csv. Pure: the
 * worker measures, this module only turns the measurements into the file.
 */

/** One optimizer step as it was timed: forward, backward and update, evaluation and callbacks excluded. */
export interface StepTiming {
  readonly seconds: number;
  /** Input tokens the step trained on (windows × seq_len). */
  readonly tokens: number;
}

export interface RunMeasurements {
  /** 'webgpu' or 'wasm' (tf.getBackend()). */
  readonly backend: string;
  /** The GPU adapter's description on WebGPU; null where there is none (wasm). */
  readonly adapter: string | null;
  /** The most bytes tfjs held at once during the run, base weights included. */
  readonly peakMemoryBytes: number;
  /** The frozen base weights as the device holds them. */
  readonly baseWeightBytes: number;
  /** wasm's linear memory at the end of the run (it only grows, so also its largest); null on WebGPU. */
  readonly wasmHeapBytes: number | null;
  readonly steps: readonly StepTiming[];
  /** Wall-clock seconds from the start of training to its end, evaluations and callbacks included. */
  readonly totalSeconds: number;
}

export interface RunSummary {
  readonly backend: string;
  readonly adapter: string | null;
  readonly peak_memory_bytes: number;
  readonly wasm_heap_bytes: number | null;
  readonly base_weight_bytes: number;
  readonly steps: number;
  /** Median over steps of each step's own tokens / seconds; null when no step was taken. */
  readonly tokens_per_second: number | null;
  /** Median step time; null when no step was taken. */
  readonly step_seconds: number | null;
  readonly total_seconds: number;
}

/** The middle value (mean of the two middle ones for an even count); null for none. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * Medians rather than means: the first step compiles shaders and warms caches, and a step that shares
 * the machine with an evaluation or a checkpoint is slow for reasons that are not the step's.
 * Steps timed at zero seconds (a clock too coarse to see them) give no throughput and are left out of it.
 */
export function summarizeRun(m: RunMeasurements): RunSummary {
  for (const [name, v] of [
    ['peakMemoryBytes', m.peakMemoryBytes],
    ['baseWeightBytes', m.baseWeightBytes],
    ['totalSeconds', m.totalSeconds],
  ] as const) {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`summarizeRun: ${name} must be finite and ≥ 0, got ${v}`);
  }
  const timed = m.steps.filter((s) => s.seconds > 0);
  return {
    backend: m.backend,
    adapter: m.adapter,
    peak_memory_bytes: m.peakMemoryBytes,
    wasm_heap_bytes: m.wasmHeapBytes,
    base_weight_bytes: m.baseWeightBytes,
    steps: m.steps.length,
    tokens_per_second: median(timed.map((s) => s.tokens / s.seconds)),
    step_seconds: median(m.steps.map((s) => s.seconds)),
    total_seconds: m.totalSeconds,
  };
}

/**
 * Which adapter the run's output holds (see worker/best-adapter.ts): with evaluation, the one of the best eval loss;
 * `adapter_from_step` is the step its weights are from (the last step when nothing was evaluated).
 */
export interface AdapterOrigin {
  readonly best_eval: { readonly step: number; readonly eval_loss: number } | null;
  readonly adapter_from_step: number;
}

/** A timed step with its number: what is kept across a resume, so that each step is counted once. */
export interface NumberedStepTiming extends StepTiming {
  /** The optimizer step (1-based) this timing is of. */
  readonly step: number;
}

/**
 * What a run had measured when a checkpoint was taken, every earlier segment of it included; stored with the
 * checkpoint so that a resumed run's run_summary.json covers the whole run, not only the part after the resume.
 */
export interface MeasuredSoFar {
  /** Steps 1 … the checkpoint's step, each once. */
  readonly steps: readonly NumberedStepTiming[];
  readonly peakMemoryBytes: number;
  /** Seconds of training up to the checkpoint, summed over the segments. */
  readonly totalSeconds: number;
  readonly wasmHeapBytes: number | null;
}

/**
 * A run measured in segments (interrupted, then resumed from a checkpoint) as one: the earlier segments' steps up to
 * `throughStep` (the checkpoint the later segment resumed from; the steps after it were trained again, so their
 * first timings are dropped) followed by the later segment's, the peaks the larger of the two, the times summed.
 */
export function mergeMeasurements(earlier: MeasuredSoFar, throughStep: number, later: MeasuredSoFar): MeasuredSoFar {
  const larger = (a: number | null, b: number | null) => (a === null ? b : b === null ? a : Math.max(a, b));
  return {
    steps: [...earlier.steps.filter((s) => s.step <= throughStep), ...later.steps.filter((s) => s.step > throughStep)],
    peakMemoryBytes: Math.max(earlier.peakMemoryBytes, later.peakMemoryBytes),
    totalSeconds: earlier.totalSeconds + later.totalSeconds,
    wasmHeapBytes: larger(earlier.wasmHeapBytes, later.wasmHeapBytes),
  };
}

export function runSummaryJson(summary: RunSummary): string {
  return `${JSON.stringify(summary, null, 2)}\n`;
}
