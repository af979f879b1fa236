import { expect, inject, test } from 'vitest';
import { callInPage, openBrowser } from './harness';

// WebAssembly memory, measured: training steps on the wasm backend at real models' widths, in a fresh
// page each (wasm memory never shrinks), against the estimate the worker checks before a wasm run
// (estimate.ts wasmMemoryBytes). The estimate must cover what the heap really grew to, or a run it lets
// through aborts; and a 135M model must train, which it did not (the wasm Identity copied every weight
// the backward pass saved: kernels/wasm_identity.ts).
const PAGE = '/tests/browser/pages/wasm-memory-checks.ts';
const MiB = 2 ** 20;

interface Measured {
  heapBytes: number;
  tensorPeakBytes: number;
  losses: number[];
  error: string | null;
  estimatedWasmBytes: number;
}

async function measure(c: { config: Record<string, unknown>; targetModules: string[]; batch: number; seq: number; steps: number }): Promise<Measured> {
  const browser = await openBrowser();
  try {
    await browser.page.goto(`${inject('devUrl')}/tests/browser/pages/blank.html`);
    expect(await callInPage<{ backend: string }>(browser.page, PAGE, 'setup')).toEqual({ backend: 'wasm' });
    return await callInPage<Measured>(browser.page, PAGE, 'measureWasmSteps', c);
  } finally {
    await browser.close();
  }
}

// SmolLM2-135M's config.json: 30 layers, 576 wide, GQA 9/3, vocabulary 49152, tied head (135M parameters, 513 MiB as float32).
const smollm2 = { model_type: 'llama', hidden_size: 576, intermediate_size: 1536, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, vocab_size: 49152, max_position_embeddings: 8192, rms_norm_eps: 1e-5, rope_theta: 100000, tie_word_embeddings: true, hidden_act: 'silu' };
// GPT-2 small's widths (768, 12 heads, vocabulary 50257, tied), cut to 2 layers: its Conv1D weights are multiplied untransposed.
const gpt2 = { model_type: 'gpt2', vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 2, n_head: 12, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, tie_word_embeddings: true };

test('SmolLM2-135M, all 30 layers, trains on wasm at batch 2 × seq 128 within the estimate', async () => {
  const r = await measure({ config: smollm2, targetModules: ['q_proj', 'v_proj'], batch: 2, seq: 128, steps: 2 });
  expect(r.error).toBeNull();
  expect(r.losses).toHaveLength(2);
  // Random weights at init scale: about ln(49152) = 10.8.
  for (const loss of r.losses) expect(Math.abs(loss - Math.log(49152))).toBeLessThan(0.5);
  expect(r.heapBytes).toBeGreaterThan(513 * MiB); // the weights alone are in there
  // Every tensor lives in wasm memory, so the tensor peak run_summary.json reports fits inside it.
  expect(r.tensorPeakBytes).toBeGreaterThan(513 * MiB);
  expect(r.tensorPeakBytes).toBeLessThanOrEqual(r.heapBytes);
  expect(r.estimatedWasmBytes).toBeGreaterThanOrEqual(r.heapBytes);
  expect(r.estimatedWasmBytes).toBeLessThanOrEqual(1.5 * r.heapBytes);
}, 600_000);

test('GPT-2 small widths (2 layers) on wasm at batch 4 × seq 128: the heap stays within the estimate', async () => {
  const r = await measure({ config: gpt2, targetModules: ['c_attn'], batch: 4, seq: 128, steps: 2 });
  expect(r.error).toBeNull();
  for (const loss of r.losses) expect(Math.abs(loss - Math.log(50257))).toBeLessThan(0.5);
  expect(r.estimatedWasmBytes).toBeGreaterThanOrEqual(r.heapBytes);
  expect(r.estimatedWasmBytes).toBeLessThanOrEqual(1.5 * r.heapBytes);
}, 600_000);
