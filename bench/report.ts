import type { FusedOpRow, OptimizerBenchRow } from './fused-ops';
import type { KernelBenchRow } from './kernels';
import type { ShapeRow } from './shape-steps';
import type { TrainStepRow } from './train-step';

// The benchmark's printed report, shared by `npm run bench` (Chromium) and `npm run bench:node` (Dawn).
// Every speed-up is LoRA Lab over plain tfjs (time ÷ time, or tokens/s ÷ tokens/s), both from one run.

const ms = (x: number) => (x < 10 ? x.toFixed(2) : x.toFixed(1));
const ratio = (plain: number, ours: number) => `${(plain / ours).toFixed(2)}×`;

export function kernelLines(rows: readonly KernelBenchRow[]): string[] {
  return [
    'LoRA linear (T tokens, r 8): median ms, plain tfjs ÷ fused = speed-up',
    ...rows.map(
      (r) =>
        `  ${r.shape.name.padEnd(24)} T ${r.shape.tokens}  forward ${ms(r.fusedForwardMs)} vs ${ms(r.referenceForwardMs)} ms = ${ratio(r.referenceForwardMs, r.fusedForwardMs)}` +
        `   fwd+bwd ${ms(r.fusedTrainMs)} vs ${ms(r.referenceTrainMs)} ms = ${ratio(r.referenceTrainMs, r.fusedTrainMs)}`,
    ),
  ];
}

export function fusedOpLines(rows: readonly FusedOpRow[], optimizer: OptimizerBenchRow): string[] {
  return [
    "The other fused ops at the tiny GPT-2's shapes: median ms, plain tfjs ÷ fused = speed-up",
    ...rows.map(
      (r) =>
        `  ${r.name.padEnd(28)} forward ${ms(r.fusedForwardMs)} vs ${ms(r.referenceForwardMs)} ms = ${ratio(r.referenceForwardMs, r.fusedForwardMs)}` +
        `   fwd+bwd ${ms(r.fusedTrainMs)} vs ${ms(r.referenceTrainMs)} ms = ${ratio(r.referenceTrainMs, r.fusedTrainMs)}`,
    ),
    `  ${`clipping + AdamW, ${optimizer.variables} vars`.padEnd(28)} step    ${ms(optimizer.fusedMs)} vs ${ms(optimizer.referenceMs)} ms = ${ratio(optimizer.referenceMs, optimizer.fusedMs)}`,
  ];
}

export function trainStepLines(rows: readonly TrainStepRow[]): string[] {
  const lines = [
    'Training step, tiny GPT-2 (64 wide, 2 layers), batch 8 × seq 64, LoRA r 8 on c_attn (variants in turns, median round):',
    ...rows.map((r) => `  ${r.backend.padEnd(7)} ${r.variant.padEnd(24)} ${r.tokensPerSecond.toFixed(0).padStart(7)} tokens/s  (${ms(r.msPerStep)} ms/step)`),
  ];
  const find = (backend: string, ours: boolean) => rows.find((r) => r.backend === backend && r.variant.startsWith('LoRA') === ours);
  for (const backend of ['webgpu', 'wasm']) {
    const plain = find(backend, false);
    const ours = find(backend, true);
    if (plain && ours) lines.push(`  ${backend} step speed-up, LoRA Lab ÷ plain tfjs: ${ratio(ours.tokensPerSecond, plain.tokensPerSecond)}`);
  }
  const gpu = find('webgpu', true);
  const cpu = find('wasm', true);
  if (gpu && cpu) lines.push(`  wasm vs webgpu (LoRA Lab): ${ratio(cpu.tokensPerSecond, gpu.tokensPerSecond)} the tokens/s`);
  return lines;
}

const mb = (bytes: number) => (bytes / 1e6).toFixed(bytes < 1e8 ? 1 : 0);

/**
 * A real-width model's training steps: one line per backend and variant (tokens/s, peak tfjs memory,
 * the base weights as held, load speed), then the fused ÷ plain ratio per backend and quantization.
 * `heading` says which model and settings; `importBytesPerSecond` is null where nothing was imported.
 */
export function shapeLines(heading: readonly string[], storedBytes: number, importBytesPerSecond: number | null, rows: readonly ShapeRow[]): string[] {
  const lines = [...heading];
  if (importBytesPerSecond !== null) lines.push(`  import into IndexedDB: ${mb(storedBytes)} MB at ${mb(importBytesPerSecond)} MB/s`);
  const label = (r: ShapeRow) => `${r.backend.padEnd(7)} ${(r.fused ? `LoRA Lab, ${r.quantization}` : 'plain tfjs').padEnd(16)}`;
  for (const r of rows) {
    if (!r.step) {
      lines.push(`  ${label(r)} skipped: ${r.skipped ?? 'no measurement'}`);
      continue;
    }
    const s = r.step;
    // The wasm heap never shrinks: after the second variant it is the larger of the two.
    const heap = r.wasmHeapBytes ? `, wasm heap so far ${mb(r.wasmHeapBytes)} MB` : '';
    const load = r.loadBytesPerSecond ? `, load ${mb(r.loadBytesPerSecond)} MB/s` : '';
    lines.push(
      `  ${label(r)} ${s.tokensPerSecond.toFixed(s.tokensPerSecond < 100 ? 1 : 0).padStart(7)} tokens/s (${ms(s.msPerStep)} ms/step), ` +
        `peak ${mb(s.peakBytes)} MB, base weights ${mb(s.baseWeightBytes)} MB as held${heap}${load}`,
    );
  }
  for (const backend of new Set(rows.map((r) => r.backend))) {
    const plain = rows.find((r) => r.backend === backend && !r.fused)?.step;
    for (const ours of rows.filter((r) => r.backend === backend && r.fused && r.step)) {
      if (plain) lines.push(`  ${backend} step speed-up, LoRA Lab (${ours.quantization}) ÷ plain tfjs: ${ratio(ours.step!.tokensPerSecond, plain.tokensPerSecond)}`);
    }
  }
  return lines;
}
