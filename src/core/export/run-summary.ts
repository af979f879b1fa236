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

export function runSummaryJson(summary: RunSummary): string {
  return `${JSON.stringify(summary, null, 2)}\n`;
}
