import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { readEventFile, scalarSeries } from '../../src/core/logging';
import { bytesSource, readHeader, readTensorBytes } from '../../src/core/safetensors';
import { MODELS_DIR } from './support/fixtures';
import { runHeadless } from './support/headless';

/** The runner, as a person runs it: the first test lets it build the app itself, the way a person's run does. */
function headless(configPath: string, build: 'own' | 'reuse' = 'reuse') {
  return runHeadless(['train', '--config', configPath], { timeoutMs: 240_000, build });
}

test('npm run headless -- train --config RUN.yaml writes the run folder into output_dir, the model given through a symbolic link', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-run-'));
  mkdirSync(join(dir, 'data'));
  writeFileSync(join(dir, 'data', 'train.txt'), Array.from({ length: 12 }, () => 'zebra quilt jinx! '.repeat(8)).join('\n\n'));
  writeFileSync(join(dir, 'data', 'val.txt'), 'zebra quilt jinx! '.repeat(8));
  // The model folder is a link to the fixture (Chromium's folder picker would see an empty folder).
  symlinkSync(join(MODELS_DIR, 'tiny-gpt2'), join(dir, 'model'));
  // Paths relative to the config file, as the runner documents.
  writeFileSync(
    join(dir, 'run.yaml'),
    ['base_model: ./model', 'train_data: ./data/train.txt', 'val_data: ./data/val.txt', 'output_dir: ./output/lr_1e-2', 'lora_rank: 4',
      'lora_alpha: 8', 'learning_rate: 1e-2', 'lr_scheduler: constant', 'max_steps: 6', 'batch_size: 2', 'seq_len: 32', 'log_steps: 2', 'eval_steps: 6', 'backend: wasm', 'export_merged: true'].join('\n'),
  );
  const result = headless(join(dir, 'run.yaml'), 'own');
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout).toMatch(/^step 6 epoch [\d.]+ loss [\d.]+ lr 0\.01 /m);
  expect(result.stdout).toMatch(/run completed after 6 steps/);

  const out = join(dir, 'output', 'lr_1e-2');
  for (const f of ['adapter_model.safetensors', 'adapter_config.json', 'config.yaml', 'metrics.csv', 'diagnosis.json', 'run_summary.json']) expect(existsSync(join(out, f)), f).toBe(true);
  // The run bundle's made files too: the model card and its plot, and the LLaMA-Factory hand-off with both data files.
  for (const f of ['README.md', 'loss_curves.png', 'llamafactory/train.yaml', 'llamafactory/dataset_info.json', 'llamafactory/train.jsonl', 'llamafactory/val.jsonl']) expect(existsSync(join(out, f)), f).toBe(true);
  // export_merged: merged/ comes out of the page as a Blob copied a slice at a time (headless-export.mjs): the base's
  // tensors under their own names, dtypes and shapes, the ones the adapter does not touch byte for byte.
  const mergedFile = bytesSource('merged', new Uint8Array(readFileSync(join(out, 'merged', 'model.safetensors'))));
  const baseFile = bytesSource('base', new Uint8Array(readFileSync(join(MODELS_DIR, 'tiny-gpt2', 'model.safetensors'))));
  const [mergedHeader, baseHeader] = [await readHeader(mergedFile), await readHeader(baseFile)];
  expect(mergedHeader.tensors.map((t) => [t.name, t.dtype, t.shape])).toEqual(baseHeader.tensors.map((t) => [t.name, t.dtype, t.shape]));
  for (const t of mergedHeader.tensors) {
    const same = Buffer.from(await readTensorBytes(mergedFile, t)).equals(Buffer.from(await readTensorBytes(baseFile, baseHeader.tensors.find((b) => b.name === t.name)!)));
    expect(same, t.name).toBe(!/attn\.c_attn\.weight$/.test(t.name));
  }
  for (const f of ['config.json', 'tokenizer.json']) expect(readFileSync(join(out, 'merged', f)).equals(readFileSync(join(MODELS_DIR, 'tiny-gpt2', f))), f).toBe(true);
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

  // run_summary.json: what the run cost. The base weights are the fixture's float32 tensors, counted
  // independently from its file; everything the run held includes them, and wasm's memory holds it all.
  const summary = JSON.parse(readFileSync(join(out, 'run_summary.json'), 'utf8')) as Record<string, number | string | null>;
  const model = await readHeader(bytesSource('model.safetensors', new Uint8Array(readFileSync(join(MODELS_DIR, 'tiny-gpt2', 'model.safetensors')))));
  const weightBytes = model.tensors.reduce((n, t) => n + 4 * t.shape.reduce((a, b) => a * b, 1), 0);
  expect(summary).toMatchObject({ backend: 'wasm', adapter: null, steps: 6, base_weight_bytes: weightBytes });
  const peak = summary.peak_memory_bytes as number;
  expect(peak).toBeGreaterThan(weightBytes);
  expect(summary.wasm_heap_bytes as number).toBeGreaterThanOrEqual(peak);
  expect(summary.tokens_per_second as number).toBeGreaterThan(0);
  // Each step trains on batch_size × seq_len = 64 tokens, so a step's rate is 64 / its time. The median
  // rate times the median time is then exactly 64 for an odd number of steps, and at least 64 for an
  // even one (the mean of two rates against the mean of their two times).
  const stepSeconds = summary.step_seconds as number;
  expect(stepSeconds).toBeGreaterThan(0);
  expect((summary.tokens_per_second as number) * stepSeconds).toBeGreaterThanOrEqual(64 - 1e-9);
  expect(summary.total_seconds as number).toBeGreaterThan(stepSeconds);
});

test('a run that cannot fit in WebAssembly is refused in one line before it starts, with a model folder of file links', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-refused-'));
  // A Hugging Face cache snapshot: a folder whose files are links to blobs elsewhere.
  mkdirSync(join(dir, 'snapshot'));
  for (const f of readdirSync(join(MODELS_DIR, 'tiny-gpt2'))) symlinkSync(join(MODELS_DIR, 'tiny-gpt2', f), join(dir, 'snapshot', f));
  writeFileSync(join(dir, 'train.txt'), 'zebra quilt jinx! '.repeat(400));
  writeFileSync(join(dir, 'run.yaml'), ['base_model: ./snapshot', 'train_data: ./train.txt', 'output_dir: ./out', 'batch_size: 512', 'seq_len: 128', 'backend: wasm'].join('\n'));
  const result = headless(join(dir, 'run.yaml'));
  expect(result.status).toBe(2);
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^error: backend: this run needs about \d+(\.\d)? GiB on WebAssembly, which holds at most 4 GiB\. Lower batch_size or seq_len .*, or use WebGPU\.$/);
  // The model was imported through its links; the run itself never started, and wrote nothing.
  expect(result.stdout).toMatch(/^importing /m);
  expect(result.stdout).not.toMatch(/^run /m);
  expect(existsSync(join(dir, 'out'))).toBe(false);
});
