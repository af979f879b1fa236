import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraAdapter, selectTargets, type LoraModuleTensors, type LoraSettings } from '../../src/core/lora/index';
import {
  buildModel,
  causalLmLoss,
  causalLmLossFromHidden,
  loadWeightsFromSafetensors,
  logitsChunkRows,
  parseModelConfigText,
  type CausalLM,
  type LinearApply,
} from '../../src/core/models/index';
import type { CheckpointableApply } from '../../src/core/models/checkpointing';
import { uniformArray } from '../../src/core/random';
import { bytesSource } from '../../src/core/safetensors/index';
import { loraEvalLossFn, loraLossFn, type Batch } from '../../src/core/train/index';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

async function loadFixture(dir: string): Promise<CausalLM> {
  const cfg = parseModelConfigText(readFileSync(join(FIXTURES, dir, 'config.json'), 'utf8'));
  const bytes = new Uint8Array(readFileSync(join(FIXTURES, dir, 'model.safetensors')));
  return buildModel(cfg, await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', bytes)]));
}

/** Random A and B (a fresh adapter's B is zero, which would leave A's gradients zero). */
function randomAdapter(model: CausalLM, targetModules: LoraSettings['targetModules'], dropout: number): LoraAdapter {
  const settings: LoraSettings = { rank: 4, alpha: 8, dropout, targetModules, useRslora: false };
  const tensors = new Map<string, LoraModuleTensors>();
  selectTargets(model, targetModules).forEach((l, i) => {
    tensors.set(l.path, { A: uniformArray(300 + i, 4 * l.inFeatures, 0.3), B: uniformArray(400 + i, l.outFeatures * 4, 0.3) });
  });
  return LoraAdapter.fromTensors(model, settings, tensors);
}

function batchOf(model: CausalLM, rows: number, seq: number, masked: (i: number) => boolean): Batch {
  const vocab = model.config.vocabSize;
  const n = rows * seq;
  const mask: number[] = Array.from({ length: n }, (_, i) => (masked(i) ? 0 : 1));
  return {
    inputs: tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 37 + 11) % vocab), [rows, seq], 'int32'),
    targets: tf.tensor2d(Array.from({ length: n }, (_, i) => (i * 53 + 5) % vocab), [rows, seq], 'int32'),
    mask: tf.tensor2d(mask, [rows, seq], 'float32'),
    rows,
    targetTokens: mask.reduce((a, b) => a + b, 0),
  };
}
const disposeBatch = (b: Batch) => tf.dispose([b.inputs, b.targets, b.mask]);

/** Records the row counts of every logits tensor the head makes through the adapter's `apply`. */
function watchHead(model: CausalLM, apply: CheckpointableApply): { apply: LinearApply; rows: number[] } {
  const rows: number[] = [];
  const watched: LinearApply = (linear, x) => {
    if (linear === model.lmHead) rows.push(x.shape[0]);
    return apply(linear, x);
  };
  // A wrapper passes the adapter's capabilities on; without them the loss could not know the head is frozen.
  return { rows, apply: Object.assign(watched, { trainables: apply.trainables, drawMark: apply.drawMark, replayDraws: apply.replayDraws }) };
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

async function gradsOf(f: () => tf.Scalar, vars: tf.Variable[]): Promise<{ loss: number; grads: Float32Array[] }> {
  const { value, grads } = tf.variableGrads(f, vars);
  const out = { loss: (await value.data())[0]!, grads: await Promise.all(vars.map(async (v) => (await grads[v.name]!.data()) as Float32Array)) };
  tf.dispose([value, ...Object.values(grads)]);
  return out;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('the loss from hidden states, in chunks, equals causalLmLoss of the whole logits', () => {
  for (const dir of ['tiny-llama', 'tiny-gpt2']) {
    describe(dir, () => {
      let model: CausalLM;
      let adapter: LoraAdapter;
      beforeAll(async () => {
        model = await loadFixture(dir);
        adapter = randomAdapter(model, 'all-linear', 0.1);
      });
      afterAll(() => {
        adapter.dispose();
        model.dispose();
      });

      // 10 tokens' logits per chunk: 48 tokens make 5 chunks, the last one short.
      const budget = (m: CausalLM) => 10 * 4 * m.config.vocabSize;

      it('loss, d(hidden) and every LoRA gradient within 1e-6, masked targets, 5 chunks', async () => {
        const b = batchOf(model, 2, 24, (i) => i % 4 === 2 || i < 3);
        expect(logitsChunkRows(model.config.vocabSize, budget(model))).toBe(10);
        // Two applies with the same seed and step draw the same dropout masks.
        const linear = adapter.apply({ training: true, seed: 9, step: 1 });
        const watched = watchHead(model, adapter.apply({ training: true, seed: 9, step: 1 }));
        try {
          const plain = await gradsOf(() => causalLmLoss(model.forward(b.inputs, { linear }), b.targets, b.mask), adapter.variables());
          const chunked = await gradsOf(
            () => causalLmLossFromHidden(model.hidden(b.inputs, { linear: watched.apply }), model.lmHead, watched.apply, b.targets, b.mask, { maxChunkBytes: budget(model) }),
            adapter.variables(),
          );
          // Five chunks forward, the same five again backward; never more than 10 tokens' logits at once.
          expect(watched.rows).toEqual([10, 10, 10, 10, 8, 10, 10, 10, 10, 8]);
          expect(Math.abs(chunked.loss - plain.loss)).toBeLessThanOrEqual(1e-6);
          for (let i = 0; i < plain.grads.length; i++) {
            expect(maxAbs(plain.grads[i]!)).toBeGreaterThan(1e-5);
            expect(maxAbsDiff(chunked.grads[i]!, plain.grads[i]!)).toBeLessThanOrEqual(1e-6);
          }

          // The gradient with respect to the hidden states themselves, under a loss scaled by 3 so that
          // the incoming gradient is not 1.
          const evalApply = adapter.apply({ training: false });
          const h = model.hidden(b.inputs, { linear: evalApply });
          const [dPlain] = tf.grads((x: tf.Tensor) =>
            tf.mul(causalLmLoss(evalApply(model.lmHead, x as tf.Tensor2D).reshape([2, 24, -1]), b.targets, b.mask), 3),
          )([h]);
          const [dChunked] = tf.grads((x: tf.Tensor) =>
            tf.mul(causalLmLossFromHidden(x as tf.Tensor2D, model.lmHead, evalApply, b.targets, b.mask, { maxChunkBytes: budget(model) }), 3),
          )([h]);
          const dp = await dPlain!.data();
          expect(maxAbs(dp)).toBeGreaterThan(1e-4);
          // Masked tokens get no gradient.
          expect(maxAbs((await dChunked!.slice([2, 0], [1, -1]).data()))).toBe(0);
          expect(maxAbsDiff(await dChunked!.data(), dp)).toBeLessThanOrEqual(1e-6);
          tf.dispose([h, dPlain!, dChunked!]);
        } finally {
          disposeBatch(b);
        }
      });

      it('without a mask, and with everything masked (0, not NaN)', async () => {
        const b = batchOf(model, 1, 24, () => false);
        const none = batchOf(model, 1, 24, () => true);
        const linear = adapter.apply({ training: false });
        try {
          const h = model.hidden(b.inputs, { linear });
          const whole = causalLmLoss(model.forward(b.inputs, { linear }), b.targets, null);
          const chunked = causalLmLossFromHidden(h, model.lmHead, linear, b.targets, null, { maxChunkBytes: budget(model) });
          expect(Math.abs((await chunked.data())[0]! - (await whole.data())[0]!)).toBeLessThanOrEqual(1e-6);
          const empty = causalLmLossFromHidden(h, model.lmHead, linear, none.targets, none.mask, { maxChunkBytes: budget(model) });
          expect((await empty.data())[0]).toBe(0);
          tf.dispose([h, whole, chunked, empty]);
        } finally {
          disposeBatch(b);
          disposeBatch(none);
        }
      });

      it('the training loss function with chunks and gradient checkpointing together matches the plain one', async () => {
        const b = batchOf(model, 2, 16, (i) => i % 3 === 0);
        const ctx = { step: 0, microBatch: 0, pass: 4 };
        try {
          const before = tf.memory().numTensors;
          const plain = await gradsOf(() => loraLossFn(model, adapter, 11, { maxLogitsChunkBytes: 1 << 30 })(b, ctx), adapter.variables());
          const both = await gradsOf(
            () => loraLossFn(model, adapter, 11, { gradientCheckpointing: true, maxLogitsChunkBytes: budget(model) })(b, ctx),
            adapter.variables(),
          );
          expect(tf.memory().numTensors).toBe(before);
          expect(Math.abs(both.loss - plain.loss)).toBeLessThanOrEqual(1e-6);
          for (let i = 0; i < plain.grads.length; i++) expect(maxAbsDiff(both.grads[i]!, plain.grads[i]!)).toBeLessThanOrEqual(1e-6);
          // And the evaluation loss function (chunked, nothing to differentiate) agrees with the logits' loss.
          const evalLoss = loraEvalLossFn(model, adapter)(b);
          const whole = causalLmLoss(model.forward(b.inputs, { linear: adapter.apply({ training: false }) }), b.targets, b.mask);
          expect(Math.abs((await evalLoss.data())[0]! - (await whole.data())[0]!)).toBeLessThanOrEqual(1e-6);
          tf.dispose([evalLoss, whole]);
        } finally {
          disposeBatch(b);
        }
      });
    });
  }

  it('a head that is itself a LoRA target is taken whole, with its gradients (untied Llama)', async () => {
    const model = await loadFixture('tiny-llama');
    const adapter = randomAdapter(model, ['q_proj', 'lm_head'], 0);
    const b = batchOf(model, 2, 24, (i) => i % 4 === 2);
    const linear = adapter.apply({ training: true, seed: 1, step: 0 });
    const watched = watchHead(model, adapter.apply({ training: true, seed: 1, step: 0 }));
    try {
      const plain = await gradsOf(() => causalLmLoss(model.forward(b.inputs, { linear }), b.targets, b.mask), adapter.variables());
      const viaHidden = await gradsOf(
        () => causalLmLossFromHidden(model.hidden(b.inputs, { linear: watched.apply }), model.lmHead, watched.apply, b.targets, b.mask, { maxChunkBytes: 4 * 257 * 10 }),
        adapter.variables(),
      );
      expect(watched.rows).toEqual([48]);
      const headB = adapter.modules.findIndex((m) => m.path === 'lm_head') * 2 + 1;
      expect(maxAbs(viaHidden.grads[headB]!)).toBeGreaterThan(1e-5);
      for (let i = 0; i < plain.grads.length; i++) expect(maxAbsDiff(viaHidden.grads[i]!, plain.grads[i]!)).toBeLessThanOrEqual(1e-6);
    } finally {
      disposeBatch(b);
      adapter.dispose();
      model.dispose();
    }
  });
});
