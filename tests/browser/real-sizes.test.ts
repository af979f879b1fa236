import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { shapeConfig, writeSyntheticModel } from '../../scripts/synthetic-model';
import { realTokenizerFiles, type RealTokenizerName } from '../unit/reference-tokenizers';
import { runHeadless } from './support/headless';

// Models at the widths people fine-tune (random weights, real tokenizers), trained for one step through
// the headless runner, i.e. through the app's own import, load and training code. (SmolLM2-135M with all
// 30 layers on WebAssembly: wasm-memory.test.ts.)
const work = mkdtempSync(join(tmpdir(), 'lora-lab-real-sizes-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

function tokenizerFiles(name: RealTokenizerName): { json: string; configJson: string } {
  const { json, config } = realTokenizerFiles(name);
  return { json, configJson: config };
}

const TEXT = Array.from({ length: 40 }, (_, i) => `Paragraph ${i}: the quick brown fox jumps over the lazy dog; naïve café, 東京, ✓.`).join('\n\n');

interface Summary {
  backend: string;
  peak_memory_bytes: number;
  base_weight_bytes: number;
  tokens_per_second: number;
}

function train(name: string, modelDir: string, settings: string[]): { summary: Summary; losses: number[] } {
  const dir = join(work, name);
  writeFileSync(join(work, `${name}.txt`), TEXT);
  const config = join(work, `${name}.yaml`);
  writeFileSync(config, [`base_model: ${modelDir}`, `train_data: ./${name}.txt`, `output_dir: ${dir}`, 'max_steps: 1', 'log_steps: 1', 'lora_rank: 8', ...settings].join('\n'));
  const result = runHeadless(['train', '--config', config], { timeoutMs: 1_500_000 });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  const summaryText = readFileSync(join(dir, 'run_summary.json'), 'utf8');
  console.info(`${name}: ${summaryText}\n${result.stdout.trim().split('\n').slice(-3).join('\n')}`);
  const rows = readFileSync(join(dir, 'metrics.csv'), 'utf8').trim().split('\n').slice(1);
  return {
    summary: JSON.parse(summaryText) as Summary,
    losses: rows.map((r) => Number(r.split(',')[2])),
  };
}

test('Llama-3.2-1B width (2048 wide, GQA 32/8, MLP 8192, 128,256 tied vocabulary, llama3 RoPE) trains a step on WebGPU with its BF16 weights packed', () => {
  const model = writeSyntheticModel(join(work, 'llama3.2-1b-layer'), shapeConfig('llama3.2-1b-layer', 1), tokenizerFiles('llama3'));
  const { summary, losses } = train('llama', model.dir, ['backend: webgpu', 'batch_size: 1', 'seq_len: 16', 'target_modules: [q_proj, v_proj]']);
  expect(summary.backend).toBe('webgpu');
  // Held as stored: BF16 matrices two to a word, only the norm vectors widened to float32.
  expect(summary.base_weight_bytes).toBeGreaterThanOrEqual(model.weightBytes);
  expect(summary.base_weight_bytes).toBeLessThan(1.01 * model.weightBytes);
  expect(summary.peak_memory_bytes).toBeLessThanOrEqual(1.6 * model.weightBytes);
  // Small random weights give nearly uniform next-token probabilities: the loss starts at ln(vocab).
  expect(losses).toHaveLength(1);
  expect(Math.abs(losses[0]! - Math.log(128256))).toBeLessThan(0.5);
});
