import { describe, expect, it } from 'vitest';
import { mergeMeasurements, summarizeRun, type MeasuredSoFar, type NumberedStepTiming } from '../../src/core/export/run-summary';

// run_summary.json of a resumed run covers the whole run: the segment before the crash (as stored with the checkpoint
// it resumed from) and the segment after, each step once. The expected numbers are worked out by hand below.

const timed = (step: number, seconds: number, tokens = 100): NumberedStepTiming => ({ step, seconds, tokens });

describe('mergeMeasurements', () => {
  // Before the crash: steps 1–5 trained, the checkpoint at step 3 (its measurements stop there).
  const earlier: MeasuredSoFar = { steps: [timed(1, 4), timed(2, 1), timed(3, 1)], peakMemoryBytes: 900, totalSeconds: 7, wasmHeapBytes: 64 };
  // After the resume from step 3: steps 4–6.
  const later: MeasuredSoFar = { steps: [timed(4, 2), timed(5, 2), timed(6, 2)], peakMemoryBytes: 700, totalSeconds: 6.5, wasmHeapBytes: 32 };

  it('counts every step once, sums the time and keeps the larger peak', () => {
    const whole = mergeMeasurements(earlier, 3, later);
    expect(whole.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(whole).toMatchObject({ peakMemoryBytes: 900, totalSeconds: 13.5, wasmHeapBytes: 64 });
    const summary = summarizeRun({ backend: 'wasm', adapter: null, baseWeightBytes: 10, ...whole });
    // Step times 4, 1, 1, 2, 2, 2: median 2 (not the later segment's alone, nor a median of medians).
    expect(summary).toMatchObject({ steps: 6, step_seconds: 2, tokens_per_second: 50, total_seconds: 13.5, peak_memory_bytes: 900 });
  });

  it('drops the earlier timings of steps after the checkpoint, which were trained again', () => {
    const stale: MeasuredSoFar = { ...earlier, steps: [...earlier.steps, timed(4, 9), timed(5, 9)] };
    expect(mergeMeasurements(stale, 3, later).steps).toEqual([...earlier.steps, ...later.steps]);
  });

  it('chains over two interruptions and keeps a wasm heap seen in either segment', () => {
    const twice = mergeMeasurements(mergeMeasurements(earlier, 3, later), 5, { steps: [timed(6, 3), timed(7, 3)], peakMemoryBytes: 1000, totalSeconds: 1, wasmHeapBytes: null });
    expect(twice.steps.map((s) => [s.step, s.seconds])).toEqual([[1, 4], [2, 1], [3, 1], [4, 2], [5, 2], [6, 3], [7, 3]]);
    expect(twice).toMatchObject({ peakMemoryBytes: 1000, totalSeconds: 14.5, wasmHeapBytes: 64 });
  });
});
