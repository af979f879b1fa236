// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { diagnose, type Finding } from '../../src/core/diagnose';
import type { LoraLabDb, StoredRun } from '../../src/storage/db';
import { artifactBytes, getRun, readArtifacts, readMetrics } from '../../src/storage/runs';
import type { RunEvent } from '../../src/worker/protocol';
import { diagnosisHistoryOf } from '../../src/worker/resume';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithModelFolder, freshDbWithTinyGpt2 } from './support/stored-model';

// The diagnosis on the curves of real runs (issue 11): the worker's whole training run (trainLora: the real Trainer,
// LoRA, the diagnosis callbacks, IndexedDB on fake-indexeddb) on the fixture GPT-2 and on the built-in demo model,
// trained on the demo's style text. A learning rate of 0.5 throws both models' loss up after the first updates and it
// settles above its start; 0.01 (the demo's own rate) trains them. The diagnosis must see that from every step, with
// log_steps 10 giving it no more than the event file's 6 points would.

const DEMO = fileURLToPath(new URL('../../public/demo/', import.meta.url));
const STYLE = readFileSync(`${DEMO}style.txt`, 'utf8');
/** A short held-out text: each evaluation (at steps 0, 30 and 60) costs a few training steps' time, no more. */
const STYLE_VAL = readFileSync(`${DEMO}style-val.txt`, 'utf8').slice(0, 2000);

const MODELS = [
  { name: 'the fixture GPT-2 (tiny-gpt2)', load: freshDbWithTinyGpt2 },
  { name: 'the demo model', load: () => freshDbWithModelFolder(`${DEMO}model`, 'demo-gpt2-moby-dick') },
] as const;

/** The run: 60 steps, logged every 10, evaluated every 30 and once before training (eval_on_start). */
function configYaml(learningRate: number): string {
  return [
    'base_model: x',
    'train_data: style.txt',
    'output_dir: ./out/run',
    `learning_rate: ${learningRate}`,
    'max_steps: 60',
    'log_steps: 10',
    'eval_steps: 30',
    'eval_on_start: true',
    // Small steps keep each run to a few seconds of wasm; the noise per step (about 5–8% of the loss) is real.
    'batch_size: 2',
    'seq_len: 32',
    'lora_rank: 4',
    'lora_alpha: 16',
    'target_modules: [c_attn, c_proj, c_fc]',
    'seed: 3',
  ].join('\n');
}

interface RealRun {
  readonly db: LoraLabDb;
  readonly run: StoredRun;
  readonly steps: Extract<RunEvent, { kind: 'step' }>[];
  readonly evals: Extract<RunEvent, { kind: 'eval' }>[];
  readonly reported: Finding[][];
}

async function train(model: (typeof MODELS)[number], learningRate: number): Promise<RealRun> {
  const { db, modelId } = await model.load();
  const events: RunEvent[] = [];
  const request = { modelId, configYaml: configYaml(learningRate), trainData: new File([STYLE], 'style.txt'), valData: new File([STYLE_VAL], 'style-val.txt') };
  const { runId } = await trainPinned(db, request, runContext((e) => events.push(e)));
  const run = await getRun(db, runId);
  if (!run) throw new Error('the run was not stored');
  return {
    db,
    run,
    steps: events.filter((e): e is Extract<RunEvent, { kind: 'step' }> => e.kind === 'step'),
    evals: events.filter((e): e is Extract<RunEvent, { kind: 'eval' }> => e.kind === 'eval'),
    reported: events.filter((e): e is Extract<RunEvent, { kind: 'diagnosis' }> => e.kind === 'diagnosis').map((e) => e.findings),
  };
}

const nats = (x: number) => `${x.toFixed(2)} nats`;
const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

beforeAll(async () => {
  // Node reads the wasm binaries from node_modules (the app's worker gets them as URLs from Vite instead).
  const dist = fileURLToPath(new URL('../../node_modules/@tensorflow/tfjs-backend-wasm/dist/', import.meta.url));
  setWasmPaths(Object.fromEntries(['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'].map((f) => [f, dist + f])));
  expect(await tf.setBackend('wasm')).toBe(true);
});

describe.each(MODELS)('the diagnosis of real runs of $name', (model) => {
  it('learning_rate 0.5, 60 steps, log_steps 10: lr_too_high, halving the rate, with the numbers of the run', { timeout: 180_000 }, async () => {
    const r = await train(model, 0.5);
    expect(r.run.status).toBe('completed');
    expect(r.steps).toHaveLength(60);
    const [f, ...rest] = r.run.findings;
    expect(rest).toEqual([]);
    expect(f!.code).toBe('lr_too_high');
    expect(f!.suggestion).toMatch(/^Halve learning_rate, from 0\.5 to 0\.25/);

    // The numbers in the message are the run's own, recomputed here from the per-step losses it reported.
    const losses = r.steps.map((s) => s.loss);
    const start = losses[0]!;
    const jump = median(losses.slice(1, 6));
    const level = Number(/has sat at about (\d+\.\d\d) nats/.exec(f!.message)?.[1]);
    expect(f!.message).toContain(`jumped to ${nats(jump)} right after step 1`);
    expect(f!.message).toContain(`above its start of ${nats(start)}`);
    expect(level).toBeGreaterThan(start * 1.1);
    // That level is a 12-step median the run really had (so it was judged on steps, not on 6 logged means).
    const windowMedians = losses.slice(11).map((_, i) => median(losses.slice(i, i + 12)).toFixed(2));
    expect(windowMedians).toContain(level.toFixed(2));

    // The eval before training (step 0) and the later ones agree, and the message quotes them.
    expect(r.evals.map((e) => e.step)).toEqual([0, 30, 60]);
    const [untrained, at30] = r.evals;
    expect(at30!.loss).toBeGreaterThan(untrained!.loss * 1.05);
    expect(f!.message).toContain(`the eval loss agrees: ${nats(at30!.loss)} at step 30, ${nats(at30!.loss - untrained!.loss)} above the untrained model's ${nats(untrained!.loss)}`);

    // Reported live when confirmed, at the step it stays at; the last report (at the end, now quoting the evals) is
    // what the run stored, and its diagnosis.json says the same.
    const reportedSteps = r.reported.filter((fs) => fs[0]!.code === 'lr_too_high').map((fs) => fs[0]!.step);
    expect(reportedSteps.length).toBeGreaterThanOrEqual(1);
    expect(new Set(reportedSteps)).toEqual(new Set([f!.step]));
    expect(r.reported.at(-1)).toEqual(r.run.findings);
    const file = (await readArtifacts(r.db, r.run.id)).find((a) => a.path === 'diagnosis.json')!;
    expect((JSON.parse(new TextDecoder().decode(await artifactBytes(file))) as Finding[]).map((x) => x.code)).toEqual(['lr_too_high']);

    // A resumed run rebuilds the same history from the stored per-step rows: every step, the eval at step 0 too.
    const history = diagnosisHistoryOf(await readMetrics(r.db, r.run.id), 60);
    expect(history.trainLoss.map((p) => p.value)).toEqual(losses);
    expect(history.evalLoss.map((p) => p.step)).toEqual([0, 30, 60]);
    expect(diagnose({ ...history, totalSteps: 60 })).toEqual(r.run.findings);
    // ...and cut back to a checkpoint at step 20, it holds exactly the steps before it.
    expect(diagnosisHistoryOf(await readMetrics(r.db, r.run.id), 20).trainLoss.map((p) => p.step)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it('the same run at learning_rate 0.01: healthy', { timeout: 180_000 }, async () => {
    const r = await train(model, 0.01);
    expect(r.run.status).toBe('completed');
    expect(r.run.findings.map((f) => f.code)).toEqual(['healthy']);
    // Judged on 60 points, not "too early to judge" as 6 logged points would be: from the first step's loss to the
    // median of the last 12.
    const losses = r.steps.map((s) => s.loss);
    expect(r.run.findings[0]!.message).toMatch(new RegExp(`^The training loss (fell|went) from ${nats(losses[0]!)} to ${nats(median(losses.slice(-12)))}\\.$`));
    expect(r.evals.map((e) => e.step)).toEqual([0, 30, 60]);
  });
});
