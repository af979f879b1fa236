import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraAdapter, selectTargets, type LoraModuleTensors, type LoraSettings } from '../../src/core/lora/index';
import {
  applyLinear,
  buildModel,
  causalLmLoss,
  expectedTensors,
  loadWeightsFromSafetensors,
  parseModelConfig,
  parseModelConfigText,
  type CausalLM,
} from '../../src/core/models/index';
import { checkpoint, isCheckpointable } from '../../src/core/models/checkpointing';
import { uniformArray } from '../../src/core/random';
import { bytesSource } from '../../src/core/safetensors/index';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

async function loadFixture(dir: string): Promise<CausalLM> {
  const cfg = parseModelConfigText(readFileSync(join(FIXTURES, dir, 'config.json'), 'utf8'));
  const bytes = new Uint8Array(readFileSync(join(FIXTURES, dir, 'model.safetensors')));
  return buildModel(cfg, await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', bytes)]));
}

/** A random model of any shape (norm weights 1), for checks that need no reference values. */
function randomModel(raw: Record<string, unknown>): CausalLM {
  const cfg = parseModelConfig(raw);
  const weights = new Map<string, tf.Tensor>();
  let i = 0;
  for (const [name, shape] of expectedTensors(cfg)) {
    const norm = /norm\.weight$|ln_\d\.weight$|ln_f\.weight$/.test(name);
    weights.set(name, norm ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.2, 'float32', 100 + i++));
  }
  return buildModel(cfg, weights);
}

/**
 * An adapter on every linear but the head with random A and B: a fresh adapter's B is zero, which
 * would leave every A gradient zero and prove nothing about it.
 */
function randomAdapter(model: CausalLM, dropout: number): LoraAdapter {
  const settings: LoraSettings = { rank: 4, alpha: 8, dropout, targetModules: 'all-linear', useRslora: false };
  const tensors = new Map<string, LoraModuleTensors>();
  selectTargets(model, settings.targetModules).forEach((l, i) => {
    tensors.set(l.path, {
      A: uniformArray(1000 + i, settings.rank * l.inFeatures, 0.3),
      B: uniformArray(2000 + i, l.outFeatures * settings.rank, 0.3),
    });
  });
  return LoraAdapter.fromTensors(model, settings, tensors);
}

function batchOf(model: CausalLM, batch: number, seq: number) {
  const vocab = model.config.vocabSize;
  const n = batch * seq;
  const ids = tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 37 + 11) % vocab), [batch, seq], 'int32');
  const targets = tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 53 + 5) % vocab), [batch, seq], 'int32');
  // Some positions masked out, as a chat dataset's prompt tokens are.
  const mask = tf.tensor2d(Array.from({ length: n }, (_, i) => (i % 5 === 1 ? 0 : 1)), [batch, seq], 'float32');
  return { ids, targets, mask, dispose: () => tf.dispose([ids, targets, mask]) };
}

interface StepResult {
  loss: number;
  grads: Float32Array[];
}

/**
 * One training micro-batch as the trainer runs it (tf.variableGrads over the adapter's variables).
 * `passes` forward passes through the same apply are summed, so the second pass's dropout draws
 * (later call numbers) are covered too.
 */
async function step(model: CausalLM, adapter: LoraAdapter, b: ReturnType<typeof batchOf>, checkpointing: boolean, seed = 7, passes = 1): Promise<StepResult> {
  const linear = adapter.apply({ training: true, seed, step: 3 });
  const { value, grads } = tf.variableGrads(() => {
    let total = tf.scalar(0);
    for (let p = 0; p < passes; p++) {
      total = tf.add(total, causalLmLoss(model.forward(b.ids, { linear, gradientCheckpointing: checkpointing }), b.targets, b.mask));
    }
    return total;
  }, adapter.variables());
  const out = { loss: (await value.data())[0]!, grads: await Promise.all(adapter.variables().map(async (v) => (await grads[v.name]!.data()) as Float32Array)) };
  tf.dispose([value, ...Object.values(grads)]);
  return out;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('gradient checkpointing gives the gradients of the plain forward pass', () => {
  for (const dir of ['tiny-gpt2', 'tiny-llama']) {
    describe(dir, () => {
      let model: CausalLM;
      let adapter: LoraAdapter;
      beforeAll(async () => {
        model = await loadFixture(dir);
        adapter = randomAdapter(model, 0.2);
      });
      afterAll(() => {
        adapter.dispose();
        model.dispose();
      });

      it('loss and every LoRA gradient within 1e-6, with dropout 0.2, masked targets', async () => {
        const b = batchOf(model, 2, 24);
        try {
          const plain = await step(model, adapter, b, false);
          const ckpt = await step(model, adapter, b, true);
          expect(Math.abs(ckpt.loss - plain.loss)).toBeLessThanOrEqual(1e-6);
          expect(ckpt.grads.length).toBe(adapter.variables().length);
          for (let i = 0; i < plain.grads.length; i++) {
            // Every module's gradient is really there (B non-zero makes A's gradient non-zero too).
            expect(maxAbs(plain.grads[i]!)).toBeGreaterThan(1e-5);
            expect(maxAbsDiff(ckpt.grads[i]!, plain.grads[i]!)).toBeLessThanOrEqual(1e-6);
          }
          // Dropout is really on: other masks give other gradients, so equal gradients above mean the
          // recompute drew the forward pass's masks.
          const otherMasks = await step(model, adapter, b, false, 8);
          expect(maxAbsDiff(otherMasks.grads[0]!, plain.grads[0]!)).toBeGreaterThan(1e-4);
        } finally {
          b.dispose();
        }
      });

      it('two forward passes through one apply (later dropout calls) also match', async () => {
        const b = batchOf(model, 1, 16);
        try {
          const plain = await step(model, adapter, b, false, 5, 2);
          const ckpt = await step(model, adapter, b, true, 5, 2);
          expect(Math.abs(ckpt.loss - plain.loss)).toBeLessThanOrEqual(1e-6);
          for (let i = 0; i < plain.grads.length; i++) expect(maxAbsDiff(ckpt.grads[i]!, plain.grads[i]!)).toBeLessThanOrEqual(1e-6);
        } finally {
          b.dispose();
        }
      });

      it('leaves no tensor behind, and the logits are the same', async () => {
        const b = batchOf(model, 1, 8);
        const linear = adapter.apply({ training: false });
        const before = tf.memory().numTensors;
        const { value, grads } = tf.variableGrads(
          () => causalLmLoss(model.forward(b.ids, { linear, gradientCheckpointing: true }), b.targets, b.mask),
          adapter.variables(),
        );
        tf.dispose([value, ...Object.values(grads)]);
        expect(tf.memory().numTensors).toBe(before);
        const plain = model.forward(b.ids, { linear });
        const ckpt = model.forward(b.ids, { linear, gradientCheckpointing: true });
        expect(maxAbsDiff(await ckpt.data(), await plain.data())).toBe(0);
        tf.dispose([plain, ckpt]);
        b.dispose();
      });
    });
  }
});

describe('gradient checkpointing saves memory', () => {
  it('peak tf.memory().numBytes of a training step is lower with it (4-layer Llama, batch 2 × seq 32)', async () => {
    const model = randomModel({
      model_type: 'llama', vocab_size: 128, hidden_size: 64, intermediate_size: 128, num_hidden_layers: 4,
      num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 64, tie_word_embeddings: true,
    });
    const adapter = randomAdapter(model, 0.1);
    const b = batchOf(model, 2, 32);
    const peakOf = async (checkpointing: boolean): Promise<number> => {
      const linear = adapter.apply({ training: true, seed: 1, step: 0 });
      const info = await tf.profile(() => {
        const { value, grads } = tf.variableGrads(
          () => causalLmLoss(model.forward(b.ids, { linear, gradientCheckpointing: checkpointing }), b.targets, b.mask),
          adapter.variables(),
        );
        tf.dispose([value, ...Object.values(grads)]);
      });
      return info.peakBytes;
    };
    try {
      const plain = await peakOf(false);
      const ckpt = await peakOf(true);
      // Measured: 0.33 (15.2 MB → 5.0 MB); what remains is the blocks' inputs, one block's activations
      // and gradients while it is recomputed, and the head and loss.
      expect(ckpt).toBeLessThan(0.5 * plain);
    } finally {
      b.dispose();
      adapter.dispose();
      model.dispose();
    }
  });
});

describe('checkpoint()', () => {
  it('routes gradients to the params it is given and to its input, with the context it keeps', async () => {
    const w = tf.variable(tf.tensor2d([[0.5, -1], [2, 0.25]]));
    const x = tf.tensor2d([[1, 2], [3, -1]]);
    const ctx = tf.tensor2d([[0.1, 0.2], [0.3, 0.4]]);
    const block = (h: tf.Tensor2D, c: readonly tf.Tensor[]) => tf.tanh(tf.add(tf.matMul(h, w), c[0]!)) as tf.Tensor2D;
    const f = (useCheckpoint: boolean) => (xx: tf.Tensor) =>
      tf.sum(tf.square(useCheckpoint ? checkpoint(block, xx as tf.Tensor2D, [w], [ctx], (r) => r()) : block(xx as tf.Tensor2D, [ctx])));
    const plain = tf.grads(f(false))([x]);
    const ckpt = tf.grads(f(true))([x]);
    expect(maxAbsDiff(await ckpt[0]!.data(), await plain[0]!.data())).toBeLessThanOrEqual(1e-7);
    const gPlain = tf.variableGrads(() => f(false)(x) as tf.Scalar, [w]);
    const gCkpt = tf.variableGrads(() => f(true)(x) as tf.Scalar, [w]);
    expect(maxAbs(await gPlain.grads[w.name]!.data())).toBeGreaterThan(0.01);
    expect(maxAbsDiff(await gCkpt.grads[w.name]!.data(), await gPlain.grads[w.name]!.data())).toBeLessThanOrEqual(1e-7);
    tf.dispose([w, x, ctx, ...plain, ...ckpt, gPlain.value, gCkpt.value, ...Object.values(gPlain.grads), ...Object.values(gCkpt.grads)]);
  });

  it('refuses a model whose projections are trainable variables, rather than leave them without gradients', () => {
    // Trained from scratch: every weight a variable, as the demo's pretraining builds its model.
    const cfg = parseModelConfig({ model_type: 'gpt2', vocab_size: 32, n_embd: 16, n_layer: 1, n_head: 2, n_positions: 8 });
    const weights = new Map<string, tf.Tensor>();
    for (const [name, shape] of expectedTensors(cfg)) weights.set(name, tf.variable(tf.randomNormal(shape, 0, 0.2, 'float32', 3)));
    const model = buildModel(cfg, weights);
    const ids = tf.tensor2d([[1, 2, 3]], [1, 3], 'int32');
    try {
      expect(isCheckpointable(applyLinear)).toBe(false);
      expect(() => tf.variableGrads(() => tf.sum(model.forward(ids, { gradientCheckpointing: true })))).toThrow(/trainable base weights/);
    } finally {
      ids.dispose();
      model.dispose();
    }
  });
});
