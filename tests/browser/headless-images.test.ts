import { existsSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { readEventFile, scalarSeries } from '../../src/core/logging/reader';
import { bytesSource, readHeader } from '../../src/core/safetensors/index';
import { decodePng } from '../unit/support/png';
import { SD_DIR } from './support/fixtures';
import { runHeadless } from './support/headless';
import { curvesOf, filesUnder } from './support/run-files';

// An image LoRA through the headless runner, end to end in Chromium: a diffusers folder as base_model and image
// folders as train_data and val_data (linked, as the fixture's own), the run trained in the app's worker, and the
// output folder written as the issue lists it.

/** A run folder: links to the fixture's model and image folders, and the config; the same relative output_dir in each. */
function runFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-images-'));
  symlinkSync(join(SD_DIR, 'tiny-sd'), join(dir, 'tiny-sd'));
  symlinkSync(join(SD_DIR, 'data-stripes'), join(dir, 'stripes'));
  symlinkSync(join(SD_DIR, 'data-stripes-heldout'), join(dir, 'heldout'));
  writeFileSync(
    join(dir, 'run.yaml'),
    [
      'pretrained_model_name_or_path: ./tiny-sd',
      'train_data_dir: ./stripes',
      'val_data: ./heldout',
      'output_dir: ./output/stripes-style',
      'network_dim: 4',
      'network_alpha: 4',
      'lora_dropout: 0',
      'resolution: "32,32"',
      'learning_rate: 3e-3',
      'lr_scheduler: constant',
      'train_batch_size: 8',
      'max_train_steps: 6',
      'eval_steps: 3',
      'eval_on_start: true',
      'log_steps: 1',
      'sample_steps: 3',
      'save_steps: 2',
      'sample_prompts:',
      '  - "a small red circle on a blue background, stripes style --s 4 --d 1"',
    ].join('\n'),
  );
  return dir;
}

/** The uninterrupted run's output folder, which the crashed run's must equal. */
let straightOut = '';

test('npm run headless trains an image LoRA from a diffusers folder and an image folder', async () => {
  const dir = runFolder();
  const result = runHeadless(['train', '--config', join(dir, 'run.yaml')], { timeoutMs: 400_000 });
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  expect(result.stdout).toMatch(/^run [0-9a-f-]+: 6 steps, 40 training images, 20 validation images, \d+ trainable parameters$/m);

  const out = (straightOut = join(dir, 'output', 'stripes-style'));
  // The kohya file image UIs load: every attention projection's down/up/alpha, and sd-scripts' notes.
  const kohya = await readHeader(bytesSource('stripes-style.safetensors', new Uint8Array(readFileSync(join(out, 'stripes-style.safetensors')))));
  expect(kohya.tensors).toHaveLength(48 * 3);
  expect(kohya.tensors.map((t) => t.name)).toContain('lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight');
  expect(kohya.metadata).toMatchObject({ ss_network_dim: '4', ss_network_alpha: '4.0', ss_num_train_images: '40', ss_resolution: '(32, 32)', ss_output_name: 'stripes-style' });
  expect(JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'))).toMatchObject({ peft_type: 'LORA', r: 4, lora_alpha: 4 });
  expect(existsSync(join(out, 'adapter_model.safetensors'))).toBe(true);
  expect(readFileSync(join(out, 'config.yaml'), 'utf8')).toMatch(/^resolution: 32\b/m);

  // metrics.csv: a row per step and the fixed-noise validation loss at 0, 3 and 6.
  const rows = readFileSync(join(out, 'metrics.csv'), 'utf8').trim().split('\n');
  const columns = rows[0]!.split(',');
  const records = rows.slice(1).map((line) => Object.fromEntries(line.split(',').map((cell, i) => [columns[i]!, cell])));
  const evals = records.filter((r) => r.eval_loss !== '').map((r) => [Number(r.step), Number(r.eval_loss)]);
  expect(evals.map(([step]) => step)).toEqual([0, 3, 6]);
  expect(evals.every(([, loss]) => Number.isFinite(loss) && loss! > 0)).toBe(true);
  expect(records.filter((r) => r.loss !== '')).toHaveLength(6);
  expect(JSON.parse(readFileSync(join(out, 'diagnosis.json'), 'utf8'))).toBeInstanceOf(Array);
  expect(JSON.parse(readFileSync(join(out, 'run_summary.json'), 'utf8'))).toMatchObject({ steps: 6 });

  // Samples at steps 3 and 6, as PNG files and as the event file's image summaries.
  expect(readdirSync(join(out, 'samples')).sort()).toEqual(['3_0.png', '6_0.png']);
  for (const name of ['3_0.png', '6_0.png']) {
    const png = decodePng(new Uint8Array(readFileSync(join(out, 'samples', name))));
    expect([png.width, png.height]).toEqual([32, 32]);
  }
  const logs = readdirSync(join(out, 'logs'));
  expect(logs).toHaveLength(1);
  const events = readEventFile(logs[0]!, new Uint8Array(readFileSync(join(out, 'logs', logs[0]!))));
  const images = events.flatMap((e) => (e.kind === 'summary' ? e.values.filter((v) => v.kind === 'image').map((v) => `${e.step}:${v.tag}`) : []));
  expect(images).toEqual(['3:samples/0', '6:samples/0']);
  expect(scalarSeries(events).get('eval/loss')?.map((p) => p.step)).toEqual([0, 3, 6]);
  expect(scalarSeries(events).get('train/loss')?.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6]);
});

test('--crash-at-step 5: the resumed image run writes what the uninterrupted run writes, and lists the interruption', async () => {
  expect(straightOut, 'the uninterrupted run of the test above').not.toBe('');
  const dir = runFolder();
  const crashed = runHeadless(['train', '--config', join(dir, 'run.yaml'), '--crash-at-step', '5'], { timeoutMs: 400_000 });
  expect(crashed.stderr).toBe('');
  expect(crashed.status).toBe(0);
  expect(crashed.stdout).toMatch(/^crash: tore the page down right after step 5;/m);
  // Steps 1–5, then the resumed 5–6 (step 5 again: the checkpoint was at 4).
  expect([...crashed.stdout.matchAll(/^step (\d+) /gm)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4, 5, 5, 6]);

  const got = filesUnder(join(dir, 'output', 'stripes-style'));
  const want = filesUnder(straightOut);
  const names = (files: Map<string, Uint8Array>) => [...files.keys()].map((p) => p.replace(/tfevents\..*/, 'tfevents')).sort();
  expect(names(got)).toEqual(names(want));
  // The same adapter, samples and diagnosis, byte for byte (wasm is deterministic); the kohya file's data section too
  // (its notes hold the clock's start and finish).
  for (const path of ['adapter_model.safetensors', 'adapter_config.json', 'config.yaml', 'diagnosis.json', 'samples/3_0.png', 'samples/6_0.png']) {
    expect(got.get(path), path).toEqual(want.get(path));
  }
  const dataOf = async (bytes: Uint8Array) => bytes.subarray((await readHeader(bytesSource('kohya', bytes))).dataStart);
  expect(await dataOf(got.get('stripes-style.safetensors')!)).toEqual(await dataOf(want.get('stripes-style.safetensors')!));
  // Each step once in the curves, with the same numbers (throughput aside).
  expect(curvesOf(got)).toEqual(curvesOf(want));
  expect(JSON.parse(new TextDecoder().decode(got.get('run_summary.json'))).interruptions).toEqual([{ at_step: 5, resumed_from_step: 4 }]);
});
