import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { importPeftAdapter } from '../../src/core/export/peft';
import { bytesSource } from '../../src/core/safetensors/index';
import { FLOAT32_PLACEMENT } from '../../src/core/weights/hold';
import type { LoraLabDb, StoredModel, StoredRun } from '../../src/storage/db';
import { loadStoredModel, type RunnableModel } from '../../src/storage/model-weights';
import { getModel } from '../../src/storage/models';
import { putArtifact, putRun } from '../../src/storage/runs';
import { adaptedLogits, compareSideBySide, type PlaygroundAdapter } from '../../src/worker/playground';
import { freshDbWithModelFolder } from './support/stored-model';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const ADAPTER_DIR = join(FIXTURES, 'tiny-gpt2-adapter');
const expected = JSON.parse(readFileSync(join(FIXTURES, 'tiny-gpt2.expected.json'), 'utf8')) as {
  text: string;
  tokens: number[];
  logits_base: number[][];
  logits_with_adapter: number[][];
};
const VOCAB = expected.logits_base[0]!.length;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** Softmax of one row, written out here in float64 as the independent reference for the probabilities shown. */
function softmaxRow(logits: ArrayLike<number>, row: number): number[] {
  const xs = Array.from({ length: VOCAB }, (_, i) => logits[row * VOCAB + i]!);
  const max = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

let db: LoraLabDb;
let stored: StoredModel;
let loaded: RunnableModel;
const run: PlaygroundAdapter = { kind: 'run', runId: 'run-playground' };

beforeAll(async () => {
  const fresh = await freshDbWithModelFolder(join(FIXTURES, 'tiny-gpt2'), 'tiny-gpt2');
  db = fresh.db;
  stored = (await getModel(db, fresh.modelId))!;
  // A finished run as the trainer leaves it: its record and its PEFT adapter files (here the fixture's adapter).
  await putRun(db, { id: 'run-playground', name: 'r', modelId: stored.id, modelName: 'tiny-gpt2', status: 'completed' } as unknown as StoredRun);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors']) await putArtifact(db, 'run-playground', f, new Uint8Array(readFileSync(join(ADAPTER_DIR, f))));
  loaded = await loadStoredModel(db, stored, FLOAT32_PLACEMENT);
});

describe('playground: base and base + adapter side by side', () => {
  it('scale 1 gives the fixture adapter\'s logits, scale 0 exactly the base model\'s', async () => {
    const one = await adaptedLogits(db, stored, loaded.model, expected.tokens, run, 1);
    expect(maxAbsDiff(one, expected.logits_with_adapter.flat())).toBeLessThan(1e-4);
    const zero = await adaptedLogits(db, stored, loaded.model, expected.tokens, run, 0);
    const plain = tf.tidy(() => loaded.model.forward(tf.tensor2d([expected.tokens], undefined, 'int32')));
    expect(Array.from(zero)).toEqual(Array.from(await plain.data()));
    plain.dispose();
    expect(maxAbsDiff(zero, expected.logits_base.flat())).toBeLessThan(1e-4);
  });

  it('the scale really scales ΔW: scale 2 equals the adapter with lora_alpha doubled, and 0.5 differs from both', async () => {
    const config = JSON.parse(readFileSync(join(ADAPTER_DIR, 'adapter_config.json'), 'utf8')) as { lora_alpha: number };
    const doubled = await importPeftAdapter(
      loaded.model,
      JSON.stringify({ ...config, lora_alpha: config.lora_alpha * 2 }),
      bytesSource('adapter_model.safetensors', new Uint8Array(readFileSync(join(ADAPTER_DIR, 'adapter_model.safetensors')))),
    );
    const ref = tf.tidy(() => loaded.model.forward(tf.tensor2d([expected.tokens], undefined, 'int32'), { linear: doubled.apply({ training: false }) }));
    const two = await adaptedLogits(db, stored, loaded.model, expected.tokens, run, 2);
    expect(maxAbsDiff(two, await ref.data())).toBeLessThan(1e-5);
    ref.dispose();
    doubled.dispose();
    const half = await adaptedLogits(db, stored, loaded.model, expected.tokens, run, 0.5);
    const base = expected.logits_base.flat();
    const full = expected.logits_with_adapter.flat();
    expect(maxAbsDiff(half, base)).toBeGreaterThan(0.05);
    expect(maxAbsDiff(half, full)).toBeGreaterThan(0.05);
    await expect(adaptedLogits(db, stored, loaded.model, expected.tokens, run, 2.5)).rejects.toThrow(/adapter scale/);
  });

  it('shows each token\'s probability and alternatives as the softmax of the logits, for both sides', async () => {
    const prompt = expected.text.slice(0, 40);
    const result = await compareSideBySide(db, stored, loaded, { modelId: stored.id, adapter: run, scale: 1, prompt, maxNewTokens: 4, temperature: 0, seed: 7, topK: 5 });
    expect(result.promptTokens).toBe(40);
    for (const [side, tokens, scale] of [['base', result.base, 0], ['adapted', result.adapted, 1]] as const) {
      expect(tokens.length).toBe(4);
      const ids = [...new TextEncoder().encode(prompt)];
      for (const t of tokens) {
        const probs = softmaxRow(await adaptedLogits(db, stored, loaded.model, ids, run, scale), ids.length - 1);
        expect(Math.abs(t.prob - probs[t.id]!), side).toBeLessThan(1e-6);
        const order = probs.map((p, id) => ({ id, p })).sort((a, b) => b.p - a.p).slice(0, 5);
        expect(t.top.map((a) => a.id)).toEqual(order.map((o) => o.id));
        for (const [i, a] of t.top.entries()) expect(Math.abs(a.prob - order[i]!.p)).toBeLessThan(1e-6);
        expect(t.id).toBe(order[0]!.id); // greedy
        expect(t.text).toBe(loaded.tokenizer.tokenText(t.id));
        ids.push(t.id);
      }
    }
    // The first step's distributions match the fixture's own logits at the prompt's last position.
    expect(Math.abs(result.adapted[0]!.prob - softmaxRow(expected.logits_with_adapter.flat(), 39)[result.adapted[0]!.id]!)).toBeLessThan(1e-5);
    expect(Math.abs(result.base[0]!.prob - softmaxRow(expected.logits_base.flat(), 39)[result.base[0]!.id]!)).toBeLessThan(1e-5);
  });

  it('same seed and sampling on both sides: at scale 0 the two columns are identical, token by token', async () => {
    const request = { modelId: stored.id, adapter: run, prompt: 'Permission is', maxNewTokens: 12, temperature: 0.9, seed: 11, topK: 3 };
    const zero = await compareSideBySide(db, stored, loaded, { ...request, scale: 0 });
    expect(zero.adapted).toEqual(zero.base);
    const one = await compareSideBySide(db, stored, loaded, { ...request, scale: 1 });
    expect(one.base).toEqual(zero.base); // the base column does not depend on the scale
    expect(one.adapted.map((t) => t.id)).not.toEqual(one.base.map((t) => t.id));
  });
});
