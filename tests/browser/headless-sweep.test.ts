import { mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { expect, test } from 'vitest';
import { parseEventFiles } from '../../src/storage/imported-logs';
import { MODELS_DIR } from './support/fixtures';
import { runHeadless } from './support/headless';

/** Every file under a folder, paths relative to it: what TensorBoard pointed at the folder walks. */
function walk(root: string, dir = root): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(root, path) : [relative(root, path)];
  });
}

/** metrics.csv read on its own terms: the column named in the header, empty cells skipped. */
function column(csv: string, name: string): { step: number; value: number }[] {
  const [header, ...rows] = csv.trim().split('\n');
  const at = header!.split(',').indexOf(name);
  const stepAt = header!.split(',').indexOf('step');
  return rows.map((r) => r.split(',')).filter((c) => c[at] !== '').map((c) => ({ step: Number(c[stepAt]), value: Number(c[at]) }));
}

test('a 2 × 2 sweep in the run config trains four runs back to back into their own folders, ranked in sweep_summary.csv', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-sweep-'));
  writeFileSync(join(dir, 'train.txt'), Array.from({ length: 12 }, () => 'zebra quilt jinx! '.repeat(8)).join('\n\n'));
  writeFileSync(join(dir, 'val.txt'), 'zebra quilt jinx! '.repeat(8));
  symlinkSync(join(MODELS_DIR, 'tiny-gpt2'), join(dir, 'model'));
  writeFileSync(
    join(dir, 'run.yaml'),
    ['base_model: ./model', 'train_data: ./train.txt', 'val_data: ./val.txt', 'output_dir: ./output', 'lora_alpha: 8', 'lr_scheduler: constant',
      'max_steps: 3', 'batch_size: 2', 'seq_len: 32', 'log_steps: 1', 'eval_steps: 2', 'backend: wasm',
      'sweep:', '  learning_rate: [1.0e-3, 3.0e-2]', '  lora_rank: [2, 4]'].join('\n'),
  );
  const result = runHeadless(['train', '--config', join(dir, 'run.yaml')], { timeoutMs: 280_000 });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  const names = ['lr_1e-3_r_2', 'lr_1e-3_r_4', 'lr_3e-2_r_2', 'lr_3e-2_r_4'];
  // Back to back, in the grid's order.
  expect([...result.stdout.matchAll(/^sweep run (\d) of 4: (\S+)$/gm)].map((m) => m[2])).toEqual(names);

  const out = join(dir, 'output');
  expect(readdirSync(out).sort()).toEqual([...names, 'sweep_summary.csv'].sort());
  for (const name of names) {
    const config = readFileSync(join(out, name, 'config.yaml'), 'utf8');
    const [, lr, rank] = /^lr_(\S+)_r_(\d+)$/.exec(name)!;
    expect(Number(/^learning_rate: (\S+)/m.exec(config)![1])).toBe(Number(lr));
    expect(config).toMatch(new RegExp(`^lora_rank: ${rank}\\b`, 'm'));
    expect(config).not.toMatch(/^sweep/m);
  }

  // The summary: one row per run, each number equal to what the run's own files say, best eval loss first.
  const [header, ...rows] = readFileSync(join(out, 'sweep_summary.csv'), 'utf8').trim().split('\n');
  expect(header).toBe('rank,folder,learning_rate,lora_rank,final_train_loss,best_eval_loss,best_eval_step,diagnosis,tokens_per_second');
  expect(rows).toHaveLength(4);
  const parsed = rows.map((r) => r.split(','));
  expect(parsed.map((c) => c[0])).toEqual(['1', '2', '3', '4']);
  expect(parsed.map((c) => c[1]).sort()).toEqual([...names].sort());
  for (const c of parsed) {
    const folder = join(out, c[1]!);
    const metrics = readFileSync(join(folder, 'metrics.csv'), 'utf8');
    const losses = column(metrics, 'loss');
    const evals = column(metrics, 'eval_loss');
    expect(losses).toHaveLength(3);
    expect(evals.length).toBeGreaterThan(0);
    const best = evals.reduce((a, b) => (b.value < a.value ? b : a));
    expect(Number(c[4])).toBe(losses.at(-1)!.value);
    expect(Number(c[5])).toBe(best.value);
    expect(Number(c[6])).toBe(best.step);
    expect(c[7]).toBe((JSON.parse(readFileSync(join(folder, 'diagnosis.json'), 'utf8')) as { code: string }[])[0]!.code);
    expect(Number(c[8])).toBe((JSON.parse(readFileSync(join(folder, 'run_summary.json'), 'utf8')) as { tokens_per_second: number }).tokens_per_second);
  }
  const bestEvals = parsed.map((c) => Number(c[5]));
  expect(bestEvals).toEqual([...bestEvals].sort((a, b) => a - b));
  // The rates differ 30-fold, so the runs really differ.
  expect(new Set(bestEvals).size).toBeGreaterThan(1);

  // TensorBoard pointed at output_dir: our reader, given every event file under it, finds the four runs.
  const eventFiles = walk(out).filter((p) => p.includes('tfevents'));
  expect(eventFiles).toHaveLength(4);
  const logs = parseEventFiles(eventFiles.map((path) => ({ path, bytes: new Uint8Array(readFileSync(join(out, path))) })));
  expect(logs.problems).toEqual([]);
  expect(logs.logs.map((l) => l.name).sort()).toEqual([...names].sort());
  for (const log of logs.logs) {
    expect(Array.from(log.scalars['train/loss']!.steps)).toEqual([1, 2, 3]);
    expect(log.config?.lora_rank).toBe(Number(/_r_(\d+)$/.exec(log.name)![1]));
  }
});

test('a bad sweep is refused in one line naming the key and its line, before anything is built', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-bad-sweep-'));
  mkdirSync(join(dir, 'model'));
  writeFileSync(join(dir, 'model', 'config.json'), '{}');
  writeFileSync(join(dir, 'train.txt'), 'text');
  writeFileSync(join(dir, 'run.yaml'), ['base_model: ./model', 'train_data: ./train.txt', 'output_dir: ./out', 'sweep:', '  learning_rate: []'].join('\n'));
  const result = runHeadless(['train', '--config', join(dir, 'run.yaml')], { timeoutMs: 60_000, build: 'own' });
  expect(result.status).toBe(2);
  expect(result.stderr).toBe('error: sweep.learning_rate: the list is empty; give at least one value, or remove the key (run.yaml line 5)\n');
  expect(result.stdout).not.toMatch(/building/);
});
