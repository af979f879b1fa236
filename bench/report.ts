import type { FusedOpRow, OptimizerBenchRow } from './fused-ops';
import type { KernelBenchRow } from './kernels';
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
    'Training step, tiny GPT-2 (64 wide, 2 layers), batch 8 × seq 64, LoRA r 8 on c_attn:',
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
