import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { readEventFile, scalarSeries } from '../../src/core/logging';
import { MODELS_DIR } from './support/fixtures';
import { runHeadless } from './support/headless';
import { curvesOf, eventsOf, filesUnder } from './support/run-files';

// `npm run headless -- train --config RUN.yaml --crash-at-step 5`: the worker stops dead right after step 5, the page
// is torn down, the app reopens on the same profile and resumes the run from its step-4 checkpoint. The output
// folder must be what the same config writes uninterrupted (clock readings aside), with the interruption listed in
// run_summary.json.

function headless(configPath: string, ...extra: string[]) {
  return runHeadless(['train', '--config', configPath, ...extra], { timeoutMs: 280_000 });
}

/** A run folder: data, a link to the fixture model, and the config; the same relative output_dir in each. */
function runFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-crash-'));
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'train.txt'), Array.from({ length: 12 }, (_, i) => `zebra ${i} quilt jinx! `.repeat(8)).join('\n\n'));
  writeFileSync(join(dir, 'data', 'val.txt'), 'quilt zebra! jinx '.repeat(8));
  symlinkSync(join(MODELS_DIR, 'tiny-gpt2'), join(dir, 'model'));
  writeFileSync(
    join(dir, 'run.yaml'),
    ['base_model: ./model', 'train_data: ./data/train.txt', 'val_data: ./data/val.txt', 'output_dir: ./output/run', 'lora_rank: 4', 'lora_dropout: 0.1',
      'learning_rate: 1e-2', 'max_steps: 8', 'batch_size: 2', 'grad_accum_steps: 2', 'seq_len: 32', 'log_steps: 1', 'eval_steps: 4', 'save_steps: 2', 'backend: wasm'].join('\n'),
  );
  return dir;
}

const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);

test('--crash-at-step 5: the resumed run writes what the uninterrupted run writes, and lists the interruption', () => {
  const crashedDir = runFolder();
  const crashed = headless(join(crashedDir, 'run.yaml'), '--crash-at-step', '5');
  expect(crashed.stderr).toBe('');
  expect(crashed.status).toBe(0);
  expect(crashed.stdout).toMatch(/^crash: tore the page down right after step 5;/m);
  // Steps 1–5, then the resumed 5–8 (step 5 again: the checkpoint was at 4), then the end.
  expect([...crashed.stdout.matchAll(/^step (\d+) /gm)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4, 5, 5, 6, 7, 8]);
  expect(crashed.stdout).toMatch(/run completed after 8 steps/);

  const straightDir = runFolder();
  const straight = headless(join(straightDir, 'run.yaml'));
  expect(straight.status).toBe(0);

  const got = filesUnder(join(crashedDir, 'output', 'run'));
  const want = filesUnder(join(straightDir, 'output', 'run'));
  expect([...got.keys()].map((p) => p.replace(/tfevents\..*/, 'tfevents')).sort()).toEqual([...want.keys()].map((p) => p.replace(/tfevents\..*/, 'tfevents')).sort());
  for (const path of ['adapter_model.safetensors', 'adapter_config.json', 'checkpoint-4/adapter_model.safetensors', 'config.yaml', 'diagnosis.json']) {
    expect(got.get(path), path).toEqual(want.get(path));
  }
  expect(curvesOf(got)).toEqual(curvesOf(want));
  expect(eventsOf(got)).toEqual(eventsOf(want));
  const logPath = [...got.keys()].find((p) => p.startsWith('logs/'))!;
  expect(scalarSeries(readEventFile(logPath, got.get(logPath)!)).get('train/loss')!.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);

  // The summary covers the whole run, each step once: 1–4 measured before the crash (stored with the step-4
  // checkpoint), 5–8 after the resume; the crashed segment's own step 5 is not counted twice.
  expect(JSON.parse(text(got.get('run_summary.json')))).toMatchObject({ steps: 8, interruptions: [{ at_step: 5, resumed_from_step: 4 }] });
  expect(JSON.parse(text(want.get('run_summary.json')))).toMatchObject({ steps: 8, interruptions: [] });
}, 600_000);

test('--crash-at-step without a step number is refused in one line, before anything is built', () => {
  const result = runHeadless(['train', '--config', join(runFolder(), 'run.yaml'), '--crash-at-step', 'soon'], { timeoutMs: 60_000, build: 'own' });
  expect(result.status).toBe(2);
  expect(result.stderr).toBe('error: --crash-at-step: needs a step number (1 or more), not soon\n');
});
