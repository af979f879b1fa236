// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildModel, causalLmLoss, loadWeightsFromSafetensors, parseModelConfigText } from '../../src/core/models/index';
import { bytesSource, readHeader, readTensorBytes, toFloat32 } from '../../src/core/safetensors/index';
import type { TrainerCheckpoint } from '../../src/core/train/checkpoint';
import { keptAdapterSteps } from '../../src/storage/best-adapter';
import { readArtifacts } from '../../src/storage/runs';
import { bestAdapterKeeper } from '../../src/worker/best-adapter';
import { exportRunFiles } from '../../src/worker/run-files';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';

// The best adapter is kept: a run whose eval loss gets worse (a learning rate far too high for the fixture GPT-2)
// stops early, and its exported adapter_model.safetensors is the adapter of its best
// evaluation. Checked independently of the app's LoRA code: the exported A and B are merged into the fixture's
// base weights here, in float64 (W += scaling · (B·A)ᵀ for GPT-2's Conv1D), and the merged model, run as a plain
// model (its forward is the one checked against PyTorch's logits), must give the loss the run logged.

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const fixture = (rel: string) => new Uint8Array(readFileSync(join(FIXTURES, rel)));
const VAL = (JSON.parse(readFileSync(join(FIXTURES, 'tiny-gpt2.expected.json'), 'utf8')) as { loss_base: { text: string; seq_len: number } }).loss_base;

const CONFIG = [
  'base_model: tiny-gpt2',
  'train_data: train.txt',
  'val_data: val.txt',
  'output_dir: ./out/best',
  'lora_rank: 4',
  'lora_alpha: 8',
  'lora_dropout: 0',
  'target_modules: [c_attn, c_proj]',
  'max_steps: 30',
  'batch_size: 2',
  `seq_len: ${VAL.seq_len}`,
  'learning_rate: 0.025',
  'lr_scheduler: constant',
  'log_steps: 1',
  'eval_steps: 1',
  'early_stopping_patience: 2',
  'eval_on_start: true',
  'seed: 3',
].join('\n');

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/**
 * The eval loss of the fixture GPT-2 with a PEFT adapter folded into its weights, computed without LoraAdapter:
 * the merge in float64 here, the loss over the validation text's windows as the fixture README defines them.
 */
async function mergedEvalLoss(adapterConfigJson: string, adapterBytes: Uint8Array): Promise<number> {
  const cfg = parseModelConfigText(new TextDecoder().decode(fixture('tiny-gpt2/config.json')));
  const weights = await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', fixture('tiny-gpt2/model.safetensors'))]);
  const ac = JSON.parse(adapterConfigJson) as { r: number; lora_alpha: number; fan_in_fan_out: boolean; use_rslora: boolean };
  expect(ac.fan_in_fan_out).toBe(true);
  const scaling = ac.use_rslora ? ac.lora_alpha / Math.sqrt(ac.r) : ac.lora_alpha / ac.r;
  const source = bytesSource('adapter_model.safetensors', adapterBytes);
  const header = await readHeader(source);
  const tensor = async (name: string) => {
    const entry = header.tensors.find((t) => t.name === name);
    if (!entry) throw new Error(`no ${name} in the adapter`);
    return { shape: entry.shape, data: toFloat32(entry.dtype, await readTensorBytes(source, entry)) };
  };
  const modules = header.tensors.filter((t) => t.name.endsWith('.lora_A.weight')).map((t) => t.name.slice(0, -'.lora_A.weight'.length));
  expect(modules.length).toBeGreaterThan(0);
  for (const module of modules) {
    const A = await tensor(`${module}.lora_A.weight`); // [r, in]
    const B = await tensor(`${module}.lora_B.weight`); // [out, r]
    const name = `${module.replace(/^base_model\.model\./, '')}.weight`;
    const base = weights.get(name)!;
    const [inF, outF] = base.shape as [number, number]; // Conv1D: [in, out]
    const r = A.shape[0]!;
    expect(A.shape).toEqual([r, inF]);
    expect(B.shape).toEqual([outF, r]);
    const w = Float64Array.from(await base.data());
    for (let i = 0; i < inF; i++) {
      for (let o = 0; o < outF; o++) {
        let delta = 0;
        for (let k = 0; k < r; k++) delta += B.data[o * r + k]! * A.data[k * inF + i]!;
        w[i * outF + o] = w[i * outF + o]! + scaling * delta;
      }
    }
    base.dispose();
    weights.set(name, tf.tensor(Float32Array.from(w), [inF, outF]));
  }
  const model = buildModel(cfg, weights);
  // The run's validation set: the text's UTF-8 bytes (token id = byte), windows of seq_len stepping seq_len.
  const tokens = [...new TextEncoder().encode(VAL.text)];
  const s = VAL.seq_len;
  const inputs: number[][] = [];
  const targets: number[][] = [];
  for (let start = 0; start + s + 1 <= tokens.length; start += s) {
    inputs.push(tokens.slice(start, start + s));
    targets.push(tokens.slice(start + 1, start + s + 1));
  }
  const loss = tf.tidy(() => causalLmLoss(model.forward(tf.tensor2d(inputs, undefined, 'int32')), tf.tensor2d(targets, undefined, 'int32'), null));
  const value = (await loss.data())[0]!;
  loss.dispose();
  model.dispose();
  return value;
}

describe('the best adapter is kept', () => {
  it('early stopping on a worsening eval exports the best adapter, the last one under last/, and says which step', async () => {
    const { db, modelId } = await freshDbWithTinyGpt2();
    const evals: { step: number; loss: number }[] = [];
    const result = await trainPinned(
      db,
      { modelId, configYaml: CONFIG, trainData: new File([VAL.text.repeat(3)], 'train.txt'), valData: new File([VAL.text], 'val.txt') },
      runContext((e) => void (e.kind === 'eval' && evals.push({ step: e.step, loss: e.loss }))),
    );
    // Before training (B = 0), then one better evaluation, then two worse: patience 2 ends the run at step 3.
    expect(result.reason).toBe('early_stopped');
    expect(evals.map((e) => e.step)).toEqual([0, 1, 2, 3]);
    const best = evals.reduce((a, b) => (b.loss < a.loss ? b : a));
    expect(best.step).toBe(1);
    const last = evals.at(-1)!;

    const files = new Map((await exportRunFiles(db, result.runId)).map((f) => [f.path, f.bytes]));
    const text = (path: string) => new TextDecoder().decode(files.get(path));
    for (const path of ['adapter_model.safetensors', 'adapter_config.json', 'last/adapter_model.safetensors', 'last/adapter_config.json']) expect(files.has(path)).toBe(true);
    // The kept copies are the run's working state, not its output, and are gone once the output is written.
    expect([...files.keys()].filter((p) => p.startsWith('.best/'))).toEqual([]);
    expect((await readArtifacts(db, result.runId)).filter((a) => a.path.startsWith('.best/'))).toEqual([]);

    const summary = JSON.parse(text('run_summary.json')) as { best_eval: { step: number; eval_loss: number } | null; adapter_from_step: number };
    expect(summary.best_eval).toEqual({ step: best.step, eval_loss: best.loss });
    expect(summary.adapter_from_step).toBe(best.step);
    // adapter_config.json stays PEFT's, the same for both adapters.
    expect(text('adapter_config.json')).toBe(text('last/adapter_config.json'));
    expect(JSON.parse(text('adapter_config.json'))).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 8 });

    const bestLoss = await mergedEvalLoss(text('adapter_config.json'), files.get('adapter_model.safetensors')!);
    const lastLoss = await mergedEvalLoss(text('last/adapter_config.json'), files.get('last/adapter_model.safetensors')!);
    expect(Math.abs(bestLoss - best.loss)).toBeLessThan(1e-4);
    expect(Math.abs(lastLoss - last.loss)).toBeLessThan(1e-4);
    expect(Math.abs(bestLoss - lastLoss)).toBeGreaterThan(0.1);
  }, 180_000);
});

describe('bestAdapterKeeper: what stays stored', () => {
  // The adapter "at" a step is a one-byte file holding the step, so each stored copy says where it came from.
  let at = 0;
  const exportAdapter = async () => ({ 'adapter_model.safetensors': Uint8Array.of(at), 'adapter_config.json': '{"r": 4}' });
  const evalAt = async (keeper: ReturnType<typeof bestAdapterKeeper>, step: number, loss: number) => {
    at = step;
    await keeper.callbacks.onEval!({ step, loss });
  };
  const checkpointWithBest = (step: number | null) => ({ bestEval: step === null ? null : { step, loss: 0, evalsSince: 0 } }) as unknown as TrainerCheckpoint;

  it('replaces the kept adapter only when beaten, keeps the ones checkpoints rely on, and a resume finds its best', async () => {
    const { db } = await freshDbWithTinyGpt2();
    const runId = 'run-1';
    const keeper = bestAdapterKeeper(db, runId, exportAdapter, null);
    await evalAt(keeper, 1, 3.0);
    await evalAt(keeper, 2, 3.0); // equal is not better
    await evalAt(keeper, 3, Number.NaN);
    expect(await keptAdapterSteps(db, runId)).toEqual([1]);
    expect(keeper.best()).toEqual({ step: 1, loss: 3.0 });
    // A checkpoint taken now resumes with step 1 as its best: that adapter must outlive a better one.
    await keeper.callbacks.onCheckpoint!(checkpointWithBest(1), 'save');
    await evalAt(keeper, 4, 2.5);
    expect(await keptAdapterSteps(db, runId)).toEqual([1, 4]);
    // Once the newest KEEP_CHECKPOINTS (2) checkpoints point past it, it goes with the next replacement.
    await keeper.callbacks.onCheckpoint!(checkpointWithBest(4), 'save');
    await keeper.callbacks.onCheckpoint!(checkpointWithBest(4), 'save');
    await evalAt(keeper, 5, 2.0);
    expect(await keptAdapterSteps(db, runId)).toEqual([4, 5]);

    // The tab dies; the run resumes from the checkpoint whose best was step 4. Step 5 is undone, step 4 is the best.
    const resumed = bestAdapterKeeper(db, runId, exportAdapter, { step: 4, loss: 2.5, evalsSince: 0 });
    await evalAt(resumed, 5, 2.7); // the replayed step 5 came out worse this time
    at = 6;
    const out = await resumed.outputFiles(await exportAdapter(), 6);
    expect(out.origin).toEqual({ best_eval: { step: 4, eval_loss: 2.5 }, adapter_from_step: 4 });
    expect(out.files['adapter_model.safetensors']).toEqual(Uint8Array.of(4));
    expect(out.files['last/adapter_model.safetensors']).toEqual(Uint8Array.of(6));
    await resumed.discard();
    expect(await keptAdapterSteps(db, runId)).toEqual([]);
  });

  it('without any evaluation the output is the last adapter alone, from the last step', async () => {
    const { db } = await freshDbWithTinyGpt2();
    const keeper = bestAdapterKeeper(db, 'run-2', exportAdapter, null);
    at = 9;
    const out = await keeper.outputFiles(await exportAdapter(), 9);
    expect(out.origin).toEqual({ best_eval: null, adapter_from_step: 9 });
    expect(Object.keys(out.files).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
  });
});
