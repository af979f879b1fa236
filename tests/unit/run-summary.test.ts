import { describe, expect, it } from 'vitest';
import { median, runSummaryJson, summarizeRun, type RunMeasurements } from '../../src/core/export/run-summary';

const base: RunMeasurements = {
  backend: 'webgpu',
  adapter: 'SwiftShader Device (Subzero)',
  peakMemoryBytes: 9_000_000,
  baseWeightBytes: 500_000,
  wasmHeapBytes: null,
  steps: [],
  totalSeconds: 12.5,
};

describe('median', () => {
  it('takes the middle value, or the mean of the two middle ones, whatever the order', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNull();
  });
});

describe('summarizeRun → run_summary.json', () => {
  it('reports median step time and median per-step throughput, not the means a slow first step skews', () => {
    // A first step 10× slower (shader compilation), then steady steps; a short last step of an epoch.
    const steps = [
      { seconds: 5, tokens: 256 },
      { seconds: 0.5, tokens: 256 },
      { seconds: 0.4, tokens: 256 },
      { seconds: 0.5, tokens: 256 },
      { seconds: 0.1, tokens: 64 },
    ];
    const s = summarizeRun({ ...base, steps });
    expect(s.steps).toBe(5);
    expect(s.step_seconds).toBe(0.5);
    // Per step: 51.2, 512, 640, 512, 640 tokens/s → sorted middle value 512.
    expect(s.tokens_per_second).toBe(512);
    expect(s.total_seconds).toBe(12.5);

    const json = JSON.parse(runSummaryJson(s)) as Record<string, unknown>;
    expect(json).toEqual({
      backend: 'webgpu',
      adapter: 'SwiftShader Device (Subzero)',
      peak_memory_bytes: 9_000_000,
      wasm_heap_bytes: null,
      base_weight_bytes: 500_000,
      steps: 5,
      tokens_per_second: 512,
      step_seconds: 0.5,
      total_seconds: 12.5,
    });
  });

  it('says null, not 0 or NaN, for the rates of a run stopped before its first step', () => {
    const s = summarizeRun({ ...base, backend: 'wasm', adapter: null, wasmHeapBytes: 16_777_216 });
    expect(s).toMatchObject({ steps: 0, tokens_per_second: null, step_seconds: null, adapter: null, wasm_heap_bytes: 16_777_216 });
    expect(runSummaryJson(s)).not.toMatch(/NaN/);
  });

  it('leaves steps too quick for the clock out of the throughput instead of dividing by zero', () => {
    const s = summarizeRun({ ...base, steps: [{ seconds: 0, tokens: 100 }, { seconds: 0.25, tokens: 100 }] });
    expect(s.tokens_per_second).toBe(400);
    expect(s.step_seconds).toBe(0.125);
  });

  it('refuses measurements that cannot be right', () => {
    expect(() => summarizeRun({ ...base, peakMemoryBytes: Number.NaN })).toThrow(/peakMemoryBytes/);
    expect(() => summarizeRun({ ...base, totalSeconds: -1 })).toThrow(/totalSeconds/);
  });
});
