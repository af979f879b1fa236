import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchOrder, trainWindows } from '../../src/core/data/packing';
import { LoraAdapter } from '../../src/core/lora/adapter';
import type { LoraSettings } from '../../src/core/lora/settings';
import {
  buildModel,
  causalLmLoss,
  loadWeightsFromSafetensors,
  parseModelConfig,
  type CausalLM,
  type ModelConfig,
} from '../../src/core/models/index';
import { bytesSource } from '../../src/core/safetensors/index';
import { estimateRun, type RunEstimateInput } from '../../src/core/train/estimate';
import { windowExamples } from '../../src/core/train/examples';
import { Trainer } from '../../src/core/train/trainer';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const configOf = (dir: string): ModelConfig =>
  parseModelConfig(JSON.parse(readFileSync(join(FIXTURES, dir, 'config.json'), 'utf8')) as unknown);

async function loadModel(dir: string): Promise<CausalLM> {
  const cfg = configOf(dir);
  const bytes = new Uint8Array(readFileSync(join(FIXTURES, dir, 'model.safetensors')));
  return buildModel(cfg, await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', bytes)]));
}

const gpt2 = configOf('tiny-gpt2'); // vocab 257, n_embd 64, 2 layers, 4 heads, n_inner 4·64, 128 positions, tied
const llama = configOf('tiny-llama'); // vocab 257, hidden 64, inter 176, 2 layers, 4 heads / 2 kv heads, head_dim 16, untied

/** The LoRA-wrapped projections, written out from the config, not taken from the model. */
const gpt2CAttn = (c: ModelConfig) =>
  Array.from({ length: c.numLayers }, () => ({ inFeatures: c.hiddenSize, outFeatures: 3 * c.hiddenSize }));
const llamaQV = (c: ModelConfig) =>
  Array.from({ length: c.numLayers }, () => [
    { inFeatures: c.hiddenSize, outFeatures: c.numHeads * c.headDim },
    { inFeatures: c.hiddenSize, outFeatures: c.numKvHeads * c.headDim },
  ]).flat();

function input(over: Partial<RunEstimateInput> & Pick<RunEstimateInput, 'model' | 'targets'>): RunEstimateInput {
  return { rank: 8, batchSize: 2, gradAccumSteps: 1, seqLen: 8, epochs: 1, maxSteps: 0, trainTokens: 10_000, ...over };
}
const codes = (e: { warnings: readonly { code: string }[] }) => e.warnings.map((w) => w.code);

/** A GPT-2 small config (124M); `n_embd` overridable for a variant whose embedding fits 128 MiB. */
const gpt2Small = (nEmbd = 768, nHead = 12) =>
  parseModelConfig({ model_type: 'gpt2', vocab_size: 50257, n_embd: nEmbd, n_layer: 12, n_head: nHead, n_positions: 1024 });

describe('parameter counts', () => {
  let gptModel: CausalLM;
  let llamaModel: CausalLM;
  beforeAll(async () => {
    gptModel = await loadModel('tiny-gpt2');
    llamaModel = await loadModel('tiny-llama');
  });
  afterAll(() => {
    gptModel.dispose();
    llamaModel.dispose();
  });

  it('trainable = r·(in + out) per target: GPT-2 c_attn 64→192 × 2 layers at r 8 is 8·256·2 = 4096', () => {
    const e = estimateRun(input({ model: gpt2, targets: gpt2CAttn(gpt2), rank: 8 }));
    expect(e.trainableParameters).toBe(4096);
    // The adapter the run would build counts the same.
    const settings: LoraSettings = { rank: 8, alpha: 16, dropout: 0, targetModules: ['c_attn'], useRslora: false };
    const adapter = LoraAdapter.create(gptModel, settings, 1);
    expect(adapter.parameterCount()).toBe(4096);
    adapter.dispose();
  });

  it('trainable, Llama q_proj 64→64 and v_proj 64→32 (GQA) × 2 layers at r 4: 4·(128 + 96)·2 = 1792', () => {
    const e = estimateRun(input({ model: llama, targets: llamaQV(llama), rank: 4 }));
    expect(e.trainableParameters).toBe(1792);
    const settings: LoraSettings = { rank: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj'], useRslora: false };
    const adapter = LoraAdapter.create(llamaModel, settings, 1);
    expect(adapter.parameterCount()).toBe(1792);
    // all-linear on the real model, targets taken from the adapter's own modules.
    const all = LoraAdapter.create(llamaModel, { ...settings, targetModules: 'all-linear' }, 1);
    expect(estimateRun(input({ model: llama, targets: all.modules.map((m) => m.linear), rank: 4 })).trainableParameters).toBe(
      all.parameterCount(),
    );
    adapter.dispose();
    all.dispose();
  });

  it('base parameters by hand, and equal to the fixture checkpoints as loaded', () => {
    // GPT-2: wte 257·64 + wpe 128·64 + 2 × (ln_1 128 + c_attn 64·192+192 + c_proj 64·64+64 + ln_2 128
    //        + c_fc 64·256+256 + mlp.c_proj 256·64+64) + ln_f 128; the head is tied to wte.
    const gptHand = 16448 + 8192 + 2 * (128 + 12480 + 4160 + 128 + 16640 + 16448) + 128;
    expect(gptHand).toBe(124736);
    // Llama: embed 257·64 + 2 × (2 norms 128 + q 4096 + k 2048 + v 2048 + o 4096 + 3 MLP 176·64) + norm 64 + lm_head 257·64.
    const llamaHand = 16448 + 2 * (128 + 4096 + 2048 + 2048 + 4096 + 3 * 11264) + 64 + 16448;
    expect(llamaHand).toBe(125376);
    const loaded = (m: CausalLM) => [...m.weights.values()].reduce((n, t) => n + (t as tf.Tensor).size, 0);
    for (const [cfg, model, hand] of [
      [gpt2, gptModel, gptHand],
      [llama, llamaModel, llamaHand],
    ] as const) {
      const e = estimateRun(input({ model: cfg, targets: [] }));
      expect(e.baseParameters).toBe(hand);
      expect(loaded(model)).toBe(hand);
      expect(e.memory.weightsBytes).toBe(4 * hand);
    }
  });
});

describe('memory', () => {
  it('tiny GPT-2, c_attn r 8, batch 2 × seq 8: every figure by hand', () => {
    const e = estimateRun(input({ model: gpt2, targets: gpt2CAttn(gpt2), rank: 8, batchSize: 2, seqLen: 8 }));
    // T = 16 tokens, H 64, I 256, V 257, scores 2·4·8·8 = 512 per layer.
    // Per layer: 31·T·H 31744 + (2 + 9 gelu_new ops)·T·I 45056 + 3·512 + 8·T norm statistics 128 = 78464.
    // LoRA branch per target: 2·T·r 256 + 2·T·192 6144 = 6400.
    // Embeddings 2·T·H + S·H = 2560; mask 5·S² = 320; ln_f 5·T·H + 4·T = 5184; logits T·V = 4112; inputs/loss 10·T = 160.
    const F = 2 * (78464 + 6400) + 2560 + 320 + 5184 + 4112 + 160;
    expect(F).toBe(182064);
    // peak = F + max(F + 2·M, 5·T·V) + 2·P, M = the largest intermediate (logits, 4112), P = 4096.
    const peak = F + Math.max(F + 2 * 4112, 5 * 4112) + 2 * 4096;
    expect(peak).toBe(380544);
    expect(e.memory).toEqual({
      weightsBytes: 4 * 124736,
      loraBytes: 4 * 4096,
      optimizerBytes: 2 * 4 * 4096,
      activationsBytes: 4 * 380544,
      totalBytes: 4 * (124736 + 4096 + 2 * 4096 + 380544),
    });
    // The largest tensor here is the tied embedding [257, 64] (65792 B), above the logits [16, 257] (16448 B).
    expect(e.largestBufferBytes).toBe(257 * 64 * 4);
    expect(e.largestBufferName).toMatch(/token embedding/);
  });

  it('tiny Llama, q/v r 4, batch 2 × seq 8: every figure by hand', () => {
    const e = estimateRun(input({ model: llama, targets: llamaQV(llama), rank: 4, batchSize: 2, seqLen: 8 }));
    // T = 16, H 64, qDim 64, kvDim 32, I 176, scores 2·4·8·8 = 512.
    // Per layer: 2 norms (3·T·H + 3·T) 6240; q 1024 + 1024 + RoPE 5.5·1024; k 512 + 512 + 5.5·512;
    // v 512 + 512; q, k, v concatenated and split again 2·T·128 4096; attention 3·T·qDim 3072 + 3·512;
    // o 1024; MLP 5·T·I 14080; down 1024; residuals 2048.
    const layer = 6240 + (2048 + 5632) + (1024 + 2816) + 1024 + 4096 + 3072 + 1536 + 1024 + 14080 + 1024 + 2048;
    expect(layer).toBe(45664);
    // LoRA per layer: q 2·T·4 + 2·T·64, v 2·T·4 + 2·T·32. Embedding T·H + cos/sin 2·S·16; mask 5·S²;
    // final norm 3120; logits T·V 4112; inputs/loss 160.
    const F = 2 * layer + 2 * (128 + 2048 + 128 + 1024) + (1024 + 256) + 320 + 3120 + 4112 + 160;
    expect(F).toBe(106976);
    const peak = F + Math.max(F + 2 * 4112, 5 * 4112) + 2 * 1792;
    expect(e.memory.activationsBytes).toBe(4 * peak);
    expect(e.memory.totalBytes).toBe(4 * (125376 + 3 * 1792 + peak));
    expect(e.memory.totalBytes).toBe(1_426_048);
  });

  it('activations grow linearly in batch and quadratically (attention) in seq_len', () => {
    const at = (batchSize: number, seqLen: number) =>
      estimateRun(input({ model: gpt2, targets: gpt2CAttn(gpt2), batchSize, seqLen })).memory.activationsBytes;
    // Everything scales with batch except the 2·P LoRA gradients and, counted twice (value and
    // gradient), the wpe rows S·H and the causal mask 5·S².
    const fixed = (seq: number) => 4 * (2 * 4096 + 2 * (seq * 64 + 5 * seq * seq));
    expect(at(8, 32) - fixed(32)).toBe(2 * (at(4, 32) - fixed(32)));
    expect(at(12, 32) - fixed(32)).toBe(3 * (at(4, 32) - fixed(32)));
    // Doubling seq more than doubles the activations: the scores are seq².
    expect(at(1, 128) - fixed(128)).toBeGreaterThan(2 * (at(1, 64) - fixed(64)));
  });

  /**
   * The estimate against what tfjs really holds: the cpu backend's live buffers (counted per data
   * buffer, so views that share one are not double-counted, unlike tf.memory().numBytes) during one
   * training micro-batch, exactly as the trainer runs it. The estimate must not be below the
   * measured peak, and not far above it.
   */
  describe('against the measured peak of tfjs (cpu backend)', () => {
    let gptModel: CausalLM;
    let llamaModel: CausalLM;
    beforeAll(async () => {
      await tf.ready();
      gptModel = await loadModel('tiny-gpt2');
      llamaModel = await loadModel('tiny-llama');
    });
    afterAll(() => {
      gptModel.dispose();
      llamaModel.dispose();
    });

    function measurePeak(model: CausalLM, adapter: LoraAdapter, batch: number, seq: number, gradientCheckpointing = false): number {
      type Store = { set(id: object, v: { values?: ArrayBufferView }): void; delete(id: object): boolean };
      const store = (tf.backend() as unknown as { data?: Store }).data;
      if (tf.getBackend() !== 'cpu' || !store) throw new Error(`expected the cpu backend, got ${tf.getBackend()}`);
      const ids = tf.tensor2d(Array.from({ length: batch * seq }, (_, i) => (i * 7) % 256), [batch, seq], 'int32');
      const targets = tf.tensor2d(Array.from({ length: batch * seq }, (_, i) => (i * 7 + 3) % 256), [batch, seq], 'int32');
      const mask = tf.ones([batch, seq]) as tf.Tensor2D;
      const linear = adapter.apply({ training: true, seed: 1, step: 0 });
      const sizes = new Map<object, number>();
      let live = 0;
      let peak = 0;
      const { set, delete: del } = store;
      store.set = function (id, v) {
        const bytes = v.values?.byteLength ?? 0;
        live += bytes - (sizes.get(id) ?? 0);
        sizes.set(id, bytes);
        peak = Math.max(peak, live);
        set.call(this, id, v);
      };
      store.delete = function (id) {
        live -= sizes.get(id) ?? 0;
        sizes.delete(id);
        return del.call(this, id);
      };
      try {
        const { value, grads } = tf.variableGrads(
          () => tf.tidy(() => causalLmLoss(model.forward(ids, { linear, gradientCheckpointing }), targets, mask)),
          adapter.variables(),
        );
        tf.dispose([value, ...Object.values(grads)]);
      } finally {
        store.set = set;
        store.delete = del;
        tf.dispose([ids, targets, mask]);
      }
      return peak;
    }

    const cases = [
      ['tiny-gpt2', ['c_attn'], 2, 32],
      ['tiny-gpt2', ['c_attn'], 2, 128],
      ['tiny-gpt2', 'all-linear', 4, 64],
      ['tiny-llama', ['q_proj', 'v_proj'], 2, 32],
      ['tiny-llama', ['q_proj', 'v_proj'], 2, 128],
      ['tiny-llama', 'all-linear', 4, 64],
    ] as const;
    it.each(cases)('%s %j at batch %i × seq %i: measured ≤ estimate ≤ 1.3 × measured', (dir, targetModules, batch, seq) => {
      const model = dir === 'tiny-gpt2' ? gptModel : llamaModel;
      const settings: LoraSettings = { rank: 8, alpha: 16, dropout: 0, targetModules: targetModules === 'all-linear' ? targetModules : [...targetModules], useRslora: false };
      const adapter = LoraAdapter.create(model, settings, 1);
      try {
        const measured = measurePeak(model, adapter, batch, seq);
        const e = estimateRun(
          input({ model: model.config, targets: adapter.modules.map((m) => m.linear), rank: 8, batchSize: batch, seqLen: seq }),
        );
        expect(measured).toBeGreaterThan(0);
        expect(e.memory.activationsBytes).toBeGreaterThanOrEqual(measured);
        expect(e.memory.activationsBytes).toBeLessThanOrEqual(1.3 * measured);
      } finally {
        adapter.dispose();
      }
    });

    // The same with gradient_checkpointing (measured 5–13% below the estimate; about 60% of the peak
    // without it at these two-layer shapes).
    const checkpointed = [
      ['tiny-gpt2', 'all-linear', 4, 64],
      ['tiny-llama', 'all-linear', 4, 64],
      ['tiny-llama', ['q_proj', 'v_proj'], 2, 128],
    ] as const;
    it.each(checkpointed)('gradient_checkpointing, %s %j at batch %i × seq %i: measured ≤ estimate ≤ 1.3 × measured', (dir, targetModules, batch, seq) => {
      const model = dir === 'tiny-gpt2' ? gptModel : llamaModel;
      const settings: LoraSettings = { rank: 8, alpha: 16, dropout: 0, targetModules: targetModules === 'all-linear' ? targetModules : [...targetModules], useRslora: false };
      const adapter = LoraAdapter.create(model, settings, 1);
      try {
        const measured = measurePeak(model, adapter, batch, seq, true);
        const e = estimateRun(
          input({ model: model.config, targets: adapter.modules.map((m) => m.linear), rank: 8, batchSize: batch, seqLen: seq, gradientCheckpointing: true }),
        );
        expect(e.memory.activationsBytes).toBeGreaterThanOrEqual(measured);
        expect(e.memory.activationsBytes).toBeLessThanOrEqual(1.3 * measured);
      } finally {
        adapter.dispose();
      }
    });
  });
});

describe('steps', () => {
  it('a hand example: 1000 tokens, seq 64, batch 4, accum 3, 2.5 epochs', () => {
    const e = estimateRun(
      input({ model: gpt2, targets: gpt2CAttn(gpt2), trainTokens: 1000, seqLen: 64, batchSize: 4, gradAccumSteps: 3, epochs: 2.5, tokensPerSecond: 100 }),
    );
    // windows floor(999 / 64) = 15; micro-batches ceil(15 / 4) = 4; steps ceil(4 / 3) = 2; total ceil(2.5 · 2) = 5.
    expect(e.tokensPerEpoch).toBe(15 * 64);
    expect(e.stepsPerEpoch).toBe(2);
    expect(e.totalSteps).toBe(5);
    // Two whole epochs (30 windows) and one step of a third (12 windows): 42 · 64 tokens at 100 tokens/s.
    expect(e.secondsEstimate).toBeCloseTo((42 * 64) / 100, 9);
    expect(e.warnings).toEqual([]);
  });

  it('max_steps > 0 wins over epochs', () => {
    const e = estimateRun(input({ model: gpt2, targets: [], trainTokens: 1000, seqLen: 64, batchSize: 4, epochs: 3, maxSteps: 7 }));
    expect(e.stepsPerEpoch).toBe(4);
    expect(e.totalSteps).toBe(7);
  });

  /** The window count, steps and tokens of the real Trainer (over windows cut by packing.ts) and of its batch order. */
  it('equals what the Trainer computes, and the tokens its loop would feed', () => {
    const variable = tf.variable(tf.zeros([1]));
    const lossFn = () => tf.sum(variable) as tf.Scalar;
    const grid: [tokens: number, seqLen: number, batch: number, accum: number, epochs: number, maxSteps: number][] = [
      [1000, 64, 4, 3, 2.5, 0],
      [65, 64, 1, 1, 1, 0],
      [129, 64, 8, 1, 1, 0],
      [5000, 16, 7, 5, 0.3, 0],
      [5000, 16, 7, 5, 3, 0],
      [777, 10, 3, 2, 1, 11],
      [777, 10, 3, 2, 1, 200],
      [2049, 128, 16, 4, 1.75, 0],
      [300, 7, 1, 1, 0.01, 0],
      // Multiples of seq_len: the last window would need one token more than the stream has.
      [128, 64, 1, 1, 1, 0],
      [5120, 16, 4, 1, 1, 0],
    ];
    try {
      for (const [tokens, seqLen, batchSize, gradAccumSteps, epochs, maxSteps] of grid) {
        const stream = { ids: new Int32Array(tokens), lossMask: new Uint8Array(tokens).fill(1) };
        const windows = trainWindows(stream, seqLen);
        const trainer = new Trainer({
          variables: [variable],
          lossFn,
          train: windowExamples(windows),
          options: { batchSize, gradAccumSteps, epochs, maxSteps, learningRate: 0, seed: 1 },
        });
        const e = estimateRun(
          input({ model: gpt2, targets: [], trainTokens: tokens, seqLen, batchSize, gradAccumSteps, epochs, maxSteps, tokensPerSecond: 1 }),
        );
        const label = JSON.stringify({ tokens, seqLen, batchSize, gradAccumSteps, epochs, maxSteps });
        expect(e.tokensPerEpoch, label).toBe(windows.count * seqLen);
        expect(e.stepsPerEpoch, label).toBe(trainer.stepsPerEpoch);
        expect(e.totalSteps, label).toBe(trainer.totalSteps);
        // The trainer's loop: each epoch's micro-batches in groups of gradAccumSteps, until totalSteps.
        let fed = 0;
        let step = 0;
        for (let epoch = 0; step < trainer.totalSteps; epoch++) {
          const micro = batchOrder(windows.count, batchSize, epoch, 1);
          for (let first = 0; first < micro.length && step < trainer.totalSteps; first += gradAccumSteps, step++) {
            fed += micro.slice(first, first + gradAccumSteps).reduce((n, b) => n + b.length, 0) * seqLen;
          }
        }
        expect(e.secondsEstimate, label).toBe(fed);
      }
    } finally {
      variable.dispose();
    }
  });

  it('secondsEstimate is null without a usable throughput', () => {
    for (const tokensPerSecond of [undefined, null, 0, -5, Number.NaN]) {
      expect(estimateRun(input({ model: gpt2, targets: [], tokensPerSecond })).secondsEstimate).toBeNull();
    }
  });
});

describe('warnings', () => {
  const limits128 = { maxBufferSize: 256 * MiB, maxStorageBufferBindingSize: 128 * MiB };

  it('buffer_too_large: GPT-2-small-like (vocab 50257) at batch 64 × seq 1024 against 128 MiB, with the head trained (whole logits)', () => {
    // n_embd 512 keeps the embedding [50257, 512] at 98 MiB, under the limit, so only batch × seq decides.
    // An untied head that LoRA adapts: the loss takes its logits whole.
    const cfg = parseModelConfig({ model_type: 'gpt2', vocab_size: 50257, n_embd: 512, n_layer: 12, n_head: 8, n_positions: 1024, tie_word_embeddings: false });
    const targets = [...gpt2CAttn(cfg), { path: 'lm_head', inFeatures: 512, outFeatures: 50257 }];
    const big = estimateRun(input({ model: cfg, targets, batchSize: 64, seqLen: 1024, limits: limits128 }));
    expect(big.largestBufferBytes).toBe(64 * 1024 * 50257 * 4);
    expect(big.largestBufferName).toMatch(/^logits \[batch/);
    const warning = big.warnings.find((w) => w.code === 'buffer_too_large');
    expect(warning?.message).toMatch(/batch_size 64 and seq_len 1024/);
    // One window of 1024 tokens already needs 1024·50257·4 B = 196 MiB of logits: the fix is seq_len,
    // at most floor(128 MiB / (50257·4)) = 667 tokens at batch 1.
    expect(warning?.message).toMatch(/batch_size to 1 and seq_len to 667 or less/);
    expect(estimateRun(input({ model: cfg, targets, batchSize: 1, seqLen: 667, limits: limits128 })).warnings).toEqual([]);
    expect(codes(estimateRun(input({ model: cfg, targets, batchSize: 1, seqLen: 668, limits: limits128 })))).toEqual(['buffer_too_large']);

    const small = estimateRun(input({ model: cfg, targets, batchSize: 1, seqLen: 128, limits: limits128 }));
    expect(small.warnings).toEqual([]);
    expect(small.largestBufferBytes).toBe(50257 * 512 * 4);
    // No limits (wasm): nothing to compare with.
    expect(codes(estimateRun(input({ model: cfg, targets, batchSize: 64, seqLen: 1024 })))).not.toContain('buffer_too_large');
  });

  it('a frozen head takes the loss in chunks of at most 64 MiB of logits: the logits no longer decide', () => {
    const cfg = gpt2Small(512, 8);
    const targets = gpt2CAttn(cfg);
    // floor(64 MiB / (50257·4)) = 333 tokens a chunk, 67 MB: under 128 MiB at any batch and seq_len.
    const one = estimateRun(input({ model: cfg, targets, batchSize: 1, seqLen: 1024, limits: limits128 }));
    expect(one.warnings).toEqual([]);
    const big = estimateRun(input({ model: cfg, targets, batchSize: 64, seqLen: 1024, limits: limits128 }));
    expect(big.largestBufferName).toMatch(/^attention scores/);
    // Per window the stock-op scores are 8·1024²·4 B = 32 MiB: 4 fit in 128 MiB.
    expect(big.warnings.find((w) => w.code === 'buffer_too_large')?.message).toMatch(/attention scores .* Lower batch_size to 4 or less/);
    const fused = estimateRun(input({ model: cfg, targets, batchSize: 64, seqLen: 1024, limits: limits128, fusedKernels: true }));
    // Fused: the MLP activations [65536, 2048] (512 MiB) remain; 16 windows make exactly 128 MiB.
    expect(fused.largestBufferName).toMatch(/^MLP activations/);
    expect(fused.warnings.find((w) => w.code === 'buffer_too_large')?.message).toMatch(/Lower batch_size to 16 or less/);

    // A Llama 3 vocabulary: 128,256 × 4 B a token, 130 tokens a chunk.
    const llama3 = parseModelConfig({
      model_type: 'llama', vocab_size: 128256, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 2,
      num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 2048, tie_word_embeddings: true,
    });
    const qv = llamaQV(llama3);
    const chunked = estimateRun(input({ model: llama3, targets: qv, batchSize: 1, seqLen: 1024, fusedKernels: true }));
    const whole = estimateRun(input({ model: llama3, targets: [...qv, { path: 'lm_head', inFeatures: 2048, outFeatures: 128256 }], batchSize: 1, seqLen: 1024, fusedKernels: true }));
    expect(chunked.largestBufferName).not.toMatch(/logits/);
    // In chunks saves at least the whole logits and their gradient, 2 · 1024 · 128256 · 4 B = 1 GiB.
    expect(whole.memory.activationsBytes - chunked.memory.activationsBytes).toBeGreaterThan(2 * 1024 * 128256 * 4);
  });

  it('with the fused WebGPU kernels there are no attention scores: no buffer warning for them, and less memory', () => {
    // A small vocabulary, so the [batch, heads, seq, seq] scores are the largest stock-op activation:
    // 8 × 4 × 1024² × 4 B = 128 MiB + one window over the limit at batch 9.
    const cfg = parseModelConfig({ model_type: 'gpt2', vocab_size: 257, n_embd: 64, n_layer: 2, n_head: 4, n_positions: 1024 });
    const targets = gpt2CAttn(cfg);
    const run = { model: cfg, targets, batchSize: 9, seqLen: 1024, limits: limits128 };
    const stock = estimateRun(input(run));
    expect(stock.largestBufferName).toMatch(/^attention scores/);
    expect(stock.warnings.find((w) => w.code === 'buffer_too_large')?.message).toMatch(/attention scores .* Lower batch_size to 8 or less/);
    const fused = estimateRun(input({ ...run, fusedKernels: true }));
    expect(fused.warnings).toEqual([]);
    expect(fused.largestBufferName).not.toMatch(/scores/);
    // The scores were three [9, 4, 1024, 1024] tensors per layer, kept and differentiated.
    expect(fused.memory.activationsBytes).toBeLessThan(stock.memory.activationsBytes / 10);
  });

  it('buffer_too_large suggests the largest batch_size that fits when one window fits', () => {
    const cfg = gpt2Small();
    const limits = { maxBufferSize: 4 * GiB, maxStorageBufferBindingSize: 1 * GiB };
    const e = estimateRun(input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 64, seqLen: 1024, limits }));
    // Per window the stock-op attention scores are 12·1024²·4 B = 48 MiB: 21 fit in 1 GiB.
    expect(e.warnings.find((w) => w.code === 'buffer_too_large')?.message).toMatch(/Lower batch_size to 21 or less/);
    expect(estimateRun(input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 21, seqLen: 1024, limits })).warnings).toEqual([]);
    expect(codes(estimateRun(input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 22, seqLen: 1024, limits })))).toEqual([
      'buffer_too_large',
    ]);
  });

  it('buffer_too_large for the weights themselves: real GPT-2 small has a 147 MiB embedding, over a 128 MiB binding limit at any batch', () => {
    const cfg = gpt2Small();
    const e = estimateRun(input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 1, seqLen: 128, limits: limits128 }));
    expect(e.largestBufferBytes).toBe(50257 * 768 * 4);
    expect(e.warnings).toHaveLength(1);
    expect(e.warnings[0]!.code).toBe('buffer_too_large');
    expect(e.warnings[0]!.message).toMatch(/token embedding .*147 MiB.*No batch_size, seq_len or lora_rank setting changes that/);
    // The limit of a typical desktop adapter takes it.
    const desktop = { maxBufferSize: 4 * GiB, maxStorageBufferBindingSize: 2 * GiB };
    expect(estimateRun(input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 1, seqLen: 128, limits: desktop })).warnings).toEqual([]);
  });

  it('with LoRA Lab\'s kernels a weight past the limit is held as row blocks: no warning', () => {
    const cfg = gpt2Small();
    expect(estimateRun(input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 1, seqLen: 128, limits: limits128, fusedKernels: true })).warnings).toEqual([]);
  });

  it('buffer_too_large compares with maxBufferSize too when that is the lower limit', () => {
    const cfg = gpt2Small(512, 8);
    const limits = { maxBufferSize: 64 * MiB, maxStorageBufferBindingSize: 2 * GiB };
    const e = estimateRun(input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 1, seqLen: 128, limits }));
    expect(e.warnings.map((w) => w.message).join(' ')).toMatch(/maxBufferSize/);
  });

  it('no_windows when the training tokens are ≤ seq_len', () => {
    for (const trainTokens of [0, 1, 63, 64]) {
      const e = estimateRun(input({ model: gpt2, targets: gpt2CAttn(gpt2), seqLen: 64, trainTokens, tokensPerSecond: 1000 }));
      expect(codes(e), `trainTokens ${trainTokens}`).toEqual(['no_windows']);
      expect(e.warnings[0]!.message).toMatch(trainTokens >= 3 ? /seq_len to \d+ or less/ : /Add more training text/);
      expect(e.tokensPerEpoch).toBe(0);
      expect(e.totalSteps).toBe(0);
      expect(e.secondsEstimate).toBeNull();
    }
    const one = estimateRun(input({ model: gpt2, targets: gpt2CAttn(gpt2), seqLen: 64, trainTokens: 65 }));
    expect(one.warnings).toEqual([]);
    expect(one.tokensPerEpoch).toBe(64);
    expect(one.totalSteps).toBe(1);
  });

  it('seq_len_too_long beyond the model positions', () => {
    expect(codes(estimateRun(input({ model: gpt2, targets: [], seqLen: 129 })))).toEqual(['seq_len_too_long']);
    expect(estimateRun(input({ model: gpt2, targets: [], seqLen: 129 })).warnings[0]!.message).toMatch(/seq_len to 128 or less/);
    expect(estimateRun(input({ model: gpt2, targets: [], seqLen: 128 })).warnings).toEqual([]);
  });

  it('memory_high above 80% of the device memory, naming what to change', () => {
    const cfg = gpt2Small();
    const base = input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 16, seqLen: 1024 });
    const e = estimateRun(base);
    const total = e.memory.totalBytes;
    expect(estimateRun({ ...base, deviceMemoryBytes: total / 0.79 }).warnings).toEqual([]);
    const high = estimateRun({ ...base, deviceMemoryBytes: total / 0.81 });
    expect(codes(high)).toEqual(['memory_high']);
    expect(high.warnings[0]!.message).toMatch(/close to/);
    expect(high.warnings[0]!.message).toMatch(/batch_size.*grad_accum_steps.*seq_len/);
    expect(high.warnings[0]!.message).not.toMatch(/lora_rank/);
    expect(estimateRun({ ...base, deviceMemoryBytes: total / 2 }).warnings[0]!.message).toMatch(/more than/);
    // Weights alone too big: a smaller model is the only fix.
    expect(estimateRun({ ...base, deviceMemoryBytes: e.memory.weightsBytes }).warnings[0]!.message).toMatch(/smaller model/);
  });

  it('memory_high names lora_rank when the adapter and its optimizer state are a large share', () => {
    // all-linear on tiny GPT-2: Σ(in + out) = (256 + 128 + 320 + 320) per layer × 2 = 2048; rank 256 → 524288 parameters.
    const targets = Array.from({ length: 2 }, () => [
      { inFeatures: 64, outFeatures: 192 },
      { inFeatures: 64, outFeatures: 64 },
      { inFeatures: 64, outFeatures: 256 },
      { inFeatures: 256, outFeatures: 64 },
    ]).flat();
    const base = input({ model: gpt2, targets, rank: 256, batchSize: 1, seqLen: 8 });
    const e = estimateRun(base);
    expect(e.trainableParameters).toBe(524288);
    const high = estimateRun({ ...base, deviceMemoryBytes: e.memory.totalBytes });
    expect(high.warnings[0]!.message).toMatch(/lora_rank/);
  });

  it('gradient_checkpointing: counted when on, and recommended by memory_high when it would help', () => {
    const cfg = gpt2Small();
    const base = input({ model: cfg, targets: gpt2CAttn(cfg), batchSize: 8, seqLen: 512, fusedKernels: true });
    const off = estimateRun(base);
    const on = estimateRun({ ...base, gradientCheckpointing: true });
    expect(off.gradientCheckpointing).toEqual({ enabled: false, activationsBytes: on.memory.activationsBytes, recommended: false });
    expect(on.gradientCheckpointing).toEqual({ enabled: true, activationsBytes: on.memory.activationsBytes, recommended: false });
    // Twelve layers keep one block's activations instead of twelve.
    expect(on.memory.activationsBytes).toBeLessThan(off.memory.activationsBytes / 3);
    expect(on.memory.totalBytes - on.memory.activationsBytes).toBe(off.memory.totalBytes - off.memory.activationsBytes);

    // On a device that the run does not fit without it, but does with it: memory_high says so first.
    const device = (off.memory.totalBytes + on.memory.totalBytes) / 2;
    const tight = estimateRun({ ...base, deviceMemoryBytes: device });
    expect(tight.gradientCheckpointing.recommended).toBe(true);
    expect(tight.warnings[0]!.message).toMatch(/more than .* Set gradient_checkpointing: true .* batch_size/);
    const already = estimateRun({ ...base, deviceMemoryBytes: device, gradientCheckpointing: true });
    expect(already.gradientCheckpointing.recommended).toBe(false);
    expect(already.warnings.map((w) => w.message).join(' ')).not.toMatch(/gradient_checkpointing/);
    // Room to spare: nothing to recommend.
    expect(estimateRun({ ...base, deviceMemoryBytes: 10 * off.memory.totalBytes }).gradientCheckpointing.recommended).toBe(false);
  });

  it('rejects nonsense inputs', () => {
    for (const over of [{ rank: 0 }, { batchSize: 0 }, { gradAccumSteps: 1.5 }, { seqLen: -1 }, { epochs: Number.NaN }, { maxSteps: -1 }, { trainTokens: 0.5 }]) {
      expect(() => estimateRun(input({ model: gpt2, targets: [], ...over })), JSON.stringify(over)).toThrow(RangeError);
    }
  });
});

describe('base weights as held: packed halves, int8, NF4', () => {
  // SmolLM2-135M's shape, stored BF16; the byte counts are worked out here from the config by hand.
  const smol = parseModelConfig({
    model_type: 'llama', vocab_size: 49152, hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3,
    intermediate_size: 1536, max_position_embeddings: 8192, tie_word_embeddings: true,
  });
  const h = 576;
  const embed = 49152 * h;
  const layerMatrices = [h * h, h * 192, h * 192, h * h, h * 1536, h * 1536, 1536 * h];
  const norms = 30 * 2 * h + h;
  const run = (placement: { packed: boolean; quantization: 'none' | 'int8' | 'nf4' }) =>
    estimateRun(input({ model: smol, targets: [{ inFeatures: h, outFeatures: h }], weights: { storedDtype: 'BF16', placement } }));

  it('on webgpu BF16 stays two bytes a weight; int8 and NF4 shrink only the block projections', () => {
    const none = run({ packed: true, quantization: 'none' });
    expect(none.memory.weightsBytes).toBe(2 * embed + 30 * 2 * layerMatrices.reduce((a, b) => a + b) + 4 * norms);
    // int8: a byte per weight and a float32 scale per output channel (the rows of [out, in]).
    const outputs = [h, 192, 192, h, 1536, 1536, h];
    const int8Layer = layerMatrices.reduce((a, n) => a + n, 0) + 4 * outputs.reduce((a, b) => a + b);
    expect(none.weightsBytesByQuantization.int8).toBe(2 * embed + 30 * int8Layer + 4 * norms);
    // NF4: half a byte per weight and a float32 absmax per 64.
    const nf4Layer = layerMatrices.reduce((a, n) => a + n / 2 + (4 * n) / 64, 0);
    expect(none.weightsBytesByQuantization.nf4).toBe(2 * embed + 30 * nf4Layer + 4 * norms);
    expect(run({ packed: true, quantization: 'nf4' }).memory.weightsBytes).toBe(none.weightsBytesByQuantization.nf4);
  });

  it('on wasm every weight is float32, whatever the quantization', () => {
    const wasm = run({ packed: false, quantization: 'nf4' });
    const all = embed + 30 * layerMatrices.reduce((a, b) => a + b) + norms;
    expect(wasm.memory.weightsBytes).toBe(4 * all);
    expect(wasm.weightsBytesByQuantization).toEqual({ none: 4 * all, int8: 4 * all, nf4: 4 * all });
  });
});
