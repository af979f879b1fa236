import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { readEventFile, scalarSeries } from '../../src/core/logging';
import { bytesSource, readHeader } from '../../src/core/safetensors';
import { MODELS_DIR } from './support/fixtures';

test('npm run headless -- train --config RUN.yaml writes the run folder into output_dir', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-run-'));
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'train.txt'), Array.from({ length: 12 }, () => 'zebra quilt jinx! '.repeat(8)).join('\n\n'));
  writeFileSync(join(dir, 'data', 'val.txt'), 'zebra quilt jinx! '.repeat(8));
  // Paths relative to the config file, as the runner documents.
  writeFileSync(
    join(dir, 'run.yaml'),
    [`base_model: ${join(MODELS_DIR, 'tiny-gpt2')}`, 'train_data: ./data/train.txt', 'val_data: ./data/val.txt', 'output_dir: ./output/lr_1e-2', 'lora_rank: 4',
      'lora_alpha: 8', 'learning_rate: 1e-2', 'lr_scheduler: constant', 'max_steps: 6', 'batch_size: 2', 'seq_len: 32', 'log_steps: 2', 'eval_steps: 6', 'backend: wasm'].join('\n'),
  );
  const result = spawnSync(process.execPath, ['scripts/headless.mjs', 'train', '--config', join(dir, 'run.yaml')], { encoding: 'utf8', timeout: 240_000 });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout).toMatch(/^step 6 epoch [\d.]+ loss [\d.]+ lr 0\.01 /m);
  expect(result.stdout).toMatch(/run completed after 6 steps/);

  const out = join(dir, 'output', 'lr_1e-2');
  for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'config.yaml', 'metrics.csv', 'diagnosis.json']) expect(existsSync(join(out, f)), f).toBe(true);
  const header = await readHeader(bytesSource('adapter_model.safetensors', new Uint8Array(readFileSync(join(out, 'adapter_model.safetensors')))));
  expect(header.tensors.map((t) => t.name)).toContain('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight');
  expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 4, lora_alpha: 8, fan_in_fan_out: true, target_modules: ['c_attn'] });
  expect(readFileSync(join(out, 'config.yaml'), 'utf8')).toMatch(/^learning_rate: 0\.01\b/m);
  const csv = readFileSync(join(out, 'metrics.csv'), 'utf8').trim().split('\n');
  expect(csv[0]).toMatch(/^step,epoch,loss,learning_rate,grad_norm,eval_loss,tokens_per_second/);
  expect(csv).toHaveLength(7);
  const [logFile] = readdirSync(join(out, 'logs'));
  expect(logFile).toMatch(/^events\.out\.tfevents\.\d+\.lora-lab\.0$/);
  const series = scalarSeries(readEventFile(logFile!, new Uint8Array(readFileSync(join(out, 'logs', logFile!)))));
  expect(series.get('train/loss')!.map((p) => p.step)).toEqual([2, 4, 6]);
  expect(series.get('eval/loss')!.map((p) => p.step)).toEqual([6]);
});
