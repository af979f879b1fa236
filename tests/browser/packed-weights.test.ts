import { describe, expect, test } from 'vitest';
import type { PackedFormat } from '../../src/core/weights/packed';
import { useWebGpuPage } from './support/webgpu-suite';
import type { PackedLinearCase } from './pages/packed-checks';

// Frozen weights held packed on the GPU (BF16/F16 halves, int8 and NF4 codes with their scales) and
// decoded inside our kernels, against float32 weights with the same values decoded in JavaScript.
const page = useWebGpuPage('/tests/browser/pages/packed-checks.ts');
const FORMATS: PackedFormat[] = ['bf16', 'f16', 'int8', 'nf4'];

describe('the WGSL decoder gives exactly the values the JavaScript decoder gives', () => {
  const shapes: [number, number, 0 | 1][] = [[1, 1, 0], [3, 5, 1], [17, 33, 0], [65, 129, 1]];
  test.each(FORMATS.flatMap((f) => shapes.map((s) => [f, ...s] as const)))('%s %i×%i (channel axis %i)', async (format, rows, cols, axis) => {
    const r = await page.call<{ mismatches: number; count: number; gpuErrors: string[] }>('checkUnpack', format, rows, cols, axis);
    expect(r.gpuErrors).toEqual([]);
    expect(r.count).toBe(rows * cols);
    expect(r.mismatches).toBe(0);
  });
});

describe('embedding rows come straight from the packed table', () => {
  test.each(FORMATS.map((f) => [f] as const))('%s', async (format) => {
    const r = await page.call<{ error: number; programs: string[]; gpuErrors: string[] }>('checkGather', format, 37, 29);
    expect(r.gpuErrors).toEqual([]);
    expect(r.programs).toEqual(['gatherRows']);
    expect(r.error).toBe(0);
  });
});

const LINEAR_CASES: PackedLinearCase[] = [
  { format: 'bf16', tokens: 37, inFeatures: 33, outFeatures: 65, layout: 'out_in', rank: 0, bias: false },
  { format: 'bf16', tokens: 7, inFeatures: 24, outFeatures: 41, layout: 'in_out', rank: 8, bias: true },
  { format: 'f16', tokens: 130, inFeatures: 33, outFeatures: 65, layout: 'in_out', rank: 0, bias: true },
  { format: 'f16', tokens: 37, inFeatures: 64, outFeatures: 33, layout: 'out_in', rank: 4, bias: false },
  { format: 'int8', tokens: 37, inFeatures: 33, outFeatures: 65, layout: 'out_in', rank: 8, bias: true },
  { format: 'int8', tokens: 5, inFeatures: 65, outFeatures: 31, layout: 'in_out', rank: 0, bias: false },
  { format: 'nf4', tokens: 37, inFeatures: 33, outFeatures: 65, layout: 'out_in', rank: 8, bias: false },
  { format: 'nf4', tokens: 130, inFeatures: 65, outFeatures: 40, layout: 'in_out', rank: 1, bias: true },
  { format: 'nf4', tokens: 9, inFeatures: 64, outFeatures: 129, layout: 'out_in', rank: 0, bias: true },
];

describe('projections with a packed weight match float32 weights of the same values', () => {
  test.each(LINEAR_CASES.map((c, i) => [`${c.format} T${c.tokens} ${c.inFeatures}→${c.outFeatures} ${c.layout} r${c.rank}${c.bias ? ' +bias' : ''}`, c, i] as const))(
    '%s',
    async (_, c, i) => {
      type Result = { fusedError: number; stockError: number; forwardPrograms: string[]; stockPrograms: string[]; leakedTensors: number; gpuErrors: string[] };
      const r = await page.call<Result>('checkPackedLinear', c, 100 + i);
      expect(r.gpuErrors).toEqual([]);
      // Fused: the packed words go straight into the matmul; nothing is unpacked first.
      expect(r.forwardPrograms).toEqual(c.rank === 0 ? ['loraMatMul'] : ['loraProject', 'loraMatMul']);
      // Stock tfjs (the benchmarks' baseline) unpacks the weight, then multiplies.
      expect(r.stockPrograms).toContain('unpackMatrix');
      expect(r.stockPrograms).not.toContain('loraMatMul');
      expect(r.fusedError).toBeLessThan(1e-4);
      expect(r.stockError).toBeLessThan(1e-4);
      expect(r.leakedTensors).toBe(0);
    },
  );
});

describe('matrices past the binding limit, held as row blocks, compute what whole ones do', () => {
  test.each(['gpt2', 'llama'] as const)('%s', async (arch) => {
    type Result = { blocked: number; wholeBlocked: number; logitsError: number; lossDiff: number; gradError: number; gradNorm: number; unpacked: number; leakedTensors: number; gpuErrors: string[] };
    const r = await page.call<Result>('checkRowBlocks', arch);
    expect(r.gpuErrors).toEqual([]);
    expect(r.wholeBlocked).toBe(0);
    // GPT-2: wte, and c_fc and the MLP's c_proj of both layers; Llama: the embedding, the head, gate/up/down of both.
    expect(r.blocked).toBe(arch === 'gpt2' ? 5 : 8);
    expect(r.unpacked).toBe(0);
    expect(r.logitsError).toBeLessThan(1e-5);
    expect(r.lossDiff).toBeLessThan(1e-5);
    expect(r.gradNorm).toBeGreaterThan(0);
    expect(r.gradError).toBeLessThan(1e-4);
    expect(r.leakedTensors).toBe(0);
  });
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
