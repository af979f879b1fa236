import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { MODELS_DIR } from './support/fixtures';
import { runHeadless } from './support/headless';

// init_adapter in the headless runner, end to end: a PEFT adapter folder next to the YAML (here the fixture's,
// through a link) is stored with the model and the run starts from it: its step-0 evaluation (eval_on_start) is the
// fixture's PyTorch loss with the adapter, and the run's adapter keeps the imported r, alpha and targets.

const REFERENCE = (JSON.parse(readFileSync(join(MODELS_DIR, 'tiny-gpt2.expected.json'), 'utf8')) as { loss_with_adapter: { text: string; seq_len: number; loss: number } }).loss_with_adapter;

test('npm run headless with init_adapter: ./adapter starts from that adapter', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-init-'));
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'train.txt'), 'zebra quilt jinx! '.repeat(40));
  writeFileSync(join(dir, 'data', 'val.txt'), REFERENCE.text);
  symlinkSync(join(MODELS_DIR, 'tiny-gpt2'), join(dir, 'model'));
  symlinkSync(join(MODELS_DIR, 'tiny-gpt2-adapter'), join(dir, 'adapter'));
  writeFileSync(
    join(dir, 'run.yaml'),
    ['base_model: ./model', 'train_data: ./data/train.txt', 'val_data: ./data/val.txt', 'output_dir: ./output/further', 'init_adapter: ./adapter',
      'eval_on_start: true', 'learning_rate: 1e-3', 'max_steps: 2', 'batch_size: 2', `seq_len: ${REFERENCE.seq_len}`, 'log_steps: 1', 'backend: wasm'].join('\n'),
  );
  const result = runHeadless(['train', '--config', join(dir, 'run.yaml')], { timeoutMs: 240_000 });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout).toMatch(/^importing the adapter \.\/adapter$/m);

  const out = join(dir, 'output', 'further');
  const rows = readFileSync(join(out, 'metrics.csv'), 'utf8').trim().split('\n');
  const columns = rows[0]!.split(',');
  const step0 = rows.slice(1).map((line) => Object.fromEntries(line.split(',').map((cell, i) => [columns[i]!, cell]))).find((r) => r.step === '0');
  expect(step0, 'a step-0 row').toBeDefined();
  expect(Math.abs(Number(step0!.eval_loss) - REFERENCE.loss)).toBeLessThan(1e-4);
  expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ r: 4, lora_alpha: 8, fan_in_fan_out: true, target_modules: ['c_attn', 'c_proj'] });
  expect(readFileSync(join(out, 'config.yaml'), 'utf8')).toMatch(/^init_adapter: \.\/adapter\b/m);
});
