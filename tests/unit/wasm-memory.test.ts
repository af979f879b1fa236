import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseRunConfigYaml, unwrapRunConfig } from '../../src/core/config';
import { isUserError } from '../../src/core/errors';
import { parseModelConfig } from '../../src/core/models/config';
import { estimateRun, WASM_MEMORY_LIMIT_BYTES, wasmMemoryBytes, wasmMemoryProblem } from '../../src/core/train/estimate';
import type { StoredModel } from '../../src/storage/db';
import { projectionsOf } from '../../src/worker/datasets';
import { checkWasmFits, runFailure } from '../../src/worker/wasm-memory';

const WASM_DIST = fileURLToPath(new URL('../../node_modules/@tensorflow/tfjs-backend-wasm/dist/', import.meta.url));

/** The maximum of the memory a wasm binary defines (section 5), in 64 KiB pages. */
function memoryMaximumPages(bytes: Uint8Array): number | null {
  let p = 8;
  const leb = () => {
    let result = 0;
    let shift = 0;
    let byte;
    do {
      byte = bytes[p++]!;
      result += (byte & 0x7f) * 2 ** shift;
      shift += 7;
    } while (byte & 0x80);
    return result;
  };
  while (p < bytes.length) {
    const id = bytes[p++]!;
    const size = leb();
    const end = p + size;
    if (id === 5) {
      leb(); // count: one memory
      const flags = leb();
      leb(); // minimum
      return flags & 1 ? leb() : null;
    }
    p = end;
  }
  return null;
}

// SmolLM2-135M as its config.json gives it, and Llama 3.2 1B's widths (1.24B parameters: 5 GB as float32).
const smollm2 = parseModelConfig({ model_type: 'llama', hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, vocab_size: 49152, max_position_embeddings: 8192, rms_norm_eps: 1e-5, rope_theta: 100000, tie_word_embeddings: true, hidden_act: 'silu' });
const llama1b = parseModelConfig({ model_type: 'llama', hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, head_dim: 64, vocab_size: 128256, max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: true, hidden_act: 'silu' });

const qv = (model: typeof smollm2) => projectionsOf(model).filter((p) => /\.(q_proj|v_proj)$/.test(p.path));
const estimateFor = (model: typeof smollm2, batch: number, seq: number) =>
  estimateRun({ model, targets: qv(model), rank: 8, batchSize: batch, gradAccumSteps: 1, seqLen: seq, epochs: 1, maxSteps: 1, trainTokens: 0 });

describe('wasm memory limit', () => {
  it("is what tfjs-backend-wasm's single-threaded builds can grow to", () => {
    for (const file of ['tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm.wasm']) {
      expect(memoryMaximumPages(new Uint8Array(readFileSync(WASM_DIST + file)))).toBe(65536); // 4 GiB
    }
    // emscripten's heap stops one page short of the memory's maximum.
    const glue = readFileSync(WASM_DIST + 'tf-backend-wasm.es2017.js', 'utf8');
    const heapMax = [...glue.matchAll(/getHeapMax\(\)\{return (\d+)\}/g)].map((m) => Number(m[1]));
    expect(new Set(heapMax)).toEqual(new Set([WASM_MEMORY_LIMIT_BYTES]));
  });

  it('lets a 135M model train at batch 2 × seq 128 (the run that used to abort) and refuses one that cannot fit', () => {
    const fits = estimateFor(smollm2, 2, 128);
    expect(wasmMemoryProblem(fits)).toBeNull();
    // More than the tensors alone: XNNPACK's packed weight copies and the transposed scratch come on top.
    expect(wasmMemoryBytes(fits)).toBeGreaterThan(fits.memory.totalBytes + fits.memory.weightsBytes);

    const big = estimateFor(smollm2, 8, 512);
    const problem = wasmMemoryProblem(big);
    expect(problem).not.toBeNull();
    expect(problem!.problem).toMatch(/^needs about \d+(\.\d)? GiB on WebAssembly, which holds at most 4 GiB\.$/);
    expect(problem!.fix).toMatch(/batch_size/);
    expect(problem!.fix).toMatch(/WebGPU/);
  });

  it('says when the weights alone are too much, since no batch setting helps then', () => {
    const problem = wasmMemoryProblem(estimateFor(llama1b, 1, 32));
    expect(problem!.problem).toMatch(/weights alone take 4\.\d GiB/);
    expect(problem!.fix).toBe('Use WebGPU, or a smaller model.');
  });

  it('is a warning of the estimate when the run will be on wasm, and only then', () => {
    const input = { model: smollm2, targets: qv(smollm2), rank: 8, batchSize: 8, gradAccumSteps: 1, seqLen: 512, epochs: 1, maxSteps: 1, trainTokens: 0 };
    expect(estimateRun(input).warnings.map((w) => w.code)).not.toContain('wasm_memory');
    const warned = estimateRun({ ...input, wasmMemoryLimitBytes: WASM_MEMORY_LIMIT_BYTES }).warnings.find((w) => w.code === 'wasm_memory');
    expect(warned?.message).toMatch(/^This run needs about .* GiB on WebAssembly, which holds at most 4 GiB\. Lower batch_size/);
  });
});

describe('a wasm run that cannot fit is refused before anything is loaded', () => {
  const stored = (config: object) => ({ files: { config: JSON.stringify(config) } }) as unknown as StoredModel;
  const runConfig = (yaml: string) => unwrapRunConfig(parseRunConfigYaml(yaml)).config;
  const smolJson = { model_type: 'llama', hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, vocab_size: 49152, max_position_embeddings: 8192, tie_word_embeddings: true };

  it('passes a run that fits and refuses, in one line naming the size and the limit, one that does not', () => {
    expect(() => checkWasmFits(stored(smolJson), runConfig('batch_size: 2\nseq_len: 128\n'))).not.toThrow();
    let error: unknown;
    try {
      checkWasmFits(stored(smolJson), runConfig('batch_size: 16\nseq_len: 1024\n'));
    } catch (e) {
      error = e;
    }
    expect(isUserError(error)).toBe(true);
    const message = (error as Error).message;
    expect(message).not.toMatch(/\n/);
    expect(message).toMatch(/^backend: this run needs about \d+ GiB on WebAssembly, which holds at most 4 GiB\. Lower batch_size or seq_len/);
    expect(message).toMatch(/use WebGPU\.$/);
  });

  it('turns a wasm trap during training into one line, and leaves other errors alone', () => {
    const abort = runFailure(new WebAssembly.RuntimeError('Aborted(). Build with -sASSERTIONS for more info.'));
    expect(isUserError(abort)).toBe(true);
    expect((abort as Error).message).toBe(
      'backend: WebAssembly ran out of memory during training (Aborted()). Lower batch_size or seq_len, or use WebGPU; reload the page before training again.',
    );
    const oob = runFailure(new WebAssembly.RuntimeError('memory access out of bounds'));
    expect((oob as Error).message).toMatch(/^backend: WebAssembly ran out of memory during training \(memory access out of bounds\)\./);
    const other = new TypeError('x is undefined');
    expect(runFailure(other)).toBe(other);
  });
});
