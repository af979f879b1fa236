import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { SD_DIR } from './support/fixtures';
import { listedFolders, sampleColours, trainAndWait, waitInPanel } from './support/image-panel';
import { openApp } from './support/train';

// The image LoRA panel, as a person uses it: import the model and the image folders into the library through the
// panel's pickers, read the preview, edit the YAML, train, and watch the curve and the sample gallery fill in; train
// again on the same model and folders (the latents come from the cache), start a run from an imported kohya LoRA,
// and find the library as it was after a reload.

let browser: BrowserSession;

beforeAll(async () => {
  // wasm: SwiftShader's software WebGPU runs the UNet's convolutions far slower (the app's auto choice there too).
  browser = await openApp();
}, 120_000);

afterAll(() => browser?.close());

const RUN_CONFIG = [
  'output_dir: ./output/ui-stripes',
  'lora_rank: 4',
  'lora_alpha: 4',
  'lora_dropout: 0',
  'resolution: 32',
  'learning_rate: 3e-3',
  'lr_scheduler: constant',
  'batch_size: 8',
  'max_steps: 4',
  'eval_steps: 2',
  'eval_on_start: true',
  'log_steps: 1',
  'sample_steps: 2',
  'sample_prompts:',
  '  - "a small red circle on a blue background, stripes style --s 4"',
  '  - "a large green square on a white background --s 4"',
].join('\n');

test('imports a model and image folders into the library, trains from them, and trains again from the cached latents', async () => {
  const { page } = browser;
  const panel = page.getByTestId('image-lora');
  const library = panel.getByTestId('image-library');

  await panel.getByTestId('image-model-folder').setInputFiles(join(SD_DIR, 'tiny-sd'));
  await waitInPanel(panel, library.getByRole('radio', { name: /^tiny-sd\b/, checked: true }), 'the model import', 60_000);
  expect(await library.getByRole('list', { name: 'Stable Diffusion 1.x models' }).textContent()).toMatch(/tiny-sd\s*diffusers folder · /);

  await panel.getByTestId('image-train-folder').setInputFiles(join(SD_DIR, 'data-stripes'));
  await waitInPanel(panel, library.getByRole('combobox', { name: 'Use data-stripes as' }), 'the image import', 60_000);
  await panel.getByTestId('image-val-folder').setInputFiles(join(SD_DIR, 'data-stripes-heldout'));
  await waitInPanel(panel, library.getByRole('combobox', { name: 'Use data-stripes-heldout as' }), 'the validation import', 60_000);
  // Newest first; each with its image count (the fixture's 40 and 20 PNGs), chosen in the role it was picked for.
  expect((await listedFolders(panel)).map((f) => [f.name, f.meta.replace(/ · .*/, '')])).toEqual([
    ['data-stripes-heldout', '20 images'],
    ['data-stripes', '40 images'],
  ]);
  expect(await library.getByRole('combobox', { name: 'Use data-stripes as' }).inputValue()).toBe('train');
  expect(await library.getByRole('combobox', { name: 'Use data-stripes-heldout as' }).inputValue()).toBe('val');

  // The preview of the chosen training folder, from the library (stored thumbnails, captions, sizes).
  await waitInPanel(panel, panel.getByTestId('image-preview-summary'), 'the preview', 60_000);
  expect(await panel.getByTestId('image-preview-summary').textContent()).toBe('40 images, 40 per epoch with repeats.');
  // At the default resolution (512) these 32-pixel images would be enlarged 16 times: the preview says so.
  expect(await panel.getByTestId('image-warning').allTextContents()).toEqual([expect.stringMatching(/\(40 images\)$/)]);
  const grid = panel.getByRole('list', { name: 'Training images' });
  expect(await grid.getByRole('img').count()).toBe(40);
  // Each thumbnail is labelled by its caption, here the caption file beside the first image, and is a decoded 64-px PNG.
  expect(await grid.getByRole('img').first().getAttribute('alt')).toBe(readFileSync(join(SD_DIR, 'data-stripes', 'img_0000.txt'), 'utf8').split('\n')[0]!.trim());
  await expect.poll(() => grid.getByRole('img').first().evaluate((img: HTMLImageElement) => [img.complete, img.naturalWidth]), { timeout: 10_000 }).toEqual([true, 64]);

  await panel.getByTestId('image-config').fill(RUN_CONFIG);
  // Leaving the YAML re-reads the folder at the new resolution (32): the warning goes.
  await panel.getByTestId('image-config').blur();
  await expect.poll(() => panel.getByTestId('image-warning').count(), { timeout: 60_000 }).toBe(0);
  expect(await trainAndWait(panel, 240_000)).toMatch(/^\s*Step 4 of 4 .* ended: completed\s*$/s);
  // The first run on this model and these folders read and encoded their images (the worker reported it).
  expect(await panel.getByTestId('image-latents').getAttribute('data-encoded')).toBe('true');

  // The gallery: steps 4 and 2 (newest first), two prompts each, real 32×32 pictures that are not one flat colour.
  expect(await panel.getByTestId('sample-step').locator('figcaption').allTextContents()).toEqual(['Step 4', 'Step 2']);
  const pixels = await sampleColours(panel);
  expect(pixels).toHaveLength(4);
  for (const p of pixels) {
    expect([p.width, p.height]).toEqual([32, 32]);
    expect(p.colours).toBeGreaterThan(8);
  }
  // The chart drew a point per step plus the step-0 evaluation; the run is listed for download and comparison.
  expect(await panel.getByTestId('image-chart').getAttribute('data-points')).toBe('5');
  await expect.poll(() => page.getByText('ui-stripes').count(), { timeout: 30_000 }).toBeGreaterThan(0);

  // A kohya LoRA onto the model: listed with its shape (r 4, alpha 4 on the 48 UNet attention projections).
  await library.getByTestId('image-adapter-file').setInputFiles(join(SD_DIR, 'adapters', 'stripes-kohya.safetensors'));
  const adapters = library.getByRole('list', { name: 'Image LoRAs of tiny-sd' });
  await waitInPanel(panel, adapters, 'the LoRA import', 60_000);
  expect(await adapters.getByRole('listitem').allTextContents()).toEqual([expect.stringMatching(/^\s*stripes-kohya\s*kohya · r 4 · alpha 4 · 48 UNet modules · /)]);
  // "Start from" writes init_adapter, with the LoRA's rank and alpha, into the YAML; the rest stays as written.
  await library.getByRole('button', { name: 'Start from stripes-kohya' }).click();
  const yaml = await panel.getByTestId('image-config').inputValue();
  expect(yaml).toMatch(/^init_adapter: stripes-kohya\b/m);
  expect(yaml).toMatch(/^lora_rank: 4\b/m);
  expect(yaml).toMatch(/^lora_alpha: 4\b/m);
  expect(yaml).toMatch(/^output_dir: \.\/output\/ui-stripes\b/m);
  expect(yaml).toMatch(/^max_steps: 4\b/m);

  // The second run on the same model and folders, from the LoRA: no image is read or encoded (the latents come from
  // the cache), and it trains.
  await panel.getByTestId('image-config').fill(yaml.replace(/^output_dir: .*$/m, 'output_dir: ./output/ui-stripes-again').replace(/^max_steps: 4\b/m, 'max_steps: 2'));
  expect(await trainAndWait(panel, 240_000)).toMatch(/^\s*Step 2 of 2 .* ended: completed\s*$/s);
  expect(await panel.getByTestId('image-latents').getAttribute('data-encoded')).toBe('false');
  expect(await panel.getByTestId('image-latents').textContent()).toMatch(/no image was decoded or encoded/);
  expect(await panel.getByTestId('image-chart').getAttribute('data-points')).toBe('3');
  expect(browser.errors).toEqual([]);
}, 600_000);

test('after a reload the library and its choices are still there; a folder is deleted once confirmed', async () => {
  const { page } = browser;
  await page.reload();
  const panel = page.getByTestId('image-lora');
  const library = panel.getByTestId('image-library');
  await library.getByRole('radio', { name: /^tiny-sd\b/, checked: true }).waitFor({ timeout: 60_000 });
  expect((await listedFolders(panel)).map((f) => f.name)).toEqual(['data-stripes-heldout', 'data-stripes']);
  expect(await library.getByRole('combobox', { name: 'Use data-stripes as' }).inputValue()).toBe('train');
  expect(await library.getByRole('combobox', { name: 'Use data-stripes-heldout as' }).inputValue()).toBe('val');
  await library.getByRole('list', { name: 'Image LoRAs of tiny-sd' }).getByText('stripes-kohya').waitFor({ timeout: 30_000 });
  await waitInPanel(panel, panel.getByTestId('image-preview-summary'), 'the preview after the reload', 60_000);
  // The run config as it was left: the second run's, started from the kohya LoRA.
  expect(await panel.getByTestId('image-config').inputValue()).toMatch(/^init_adapter: stripes-kohya\b/m);

  // Deleting asks first; once accepted, the folder and its choice are gone.
  const asked: string[] = [];
  page.once('dialog', (d) => {
    asked.push(d.message());
    void d.accept();
  });
  await library.getByRole('button', { name: 'Delete data-stripes-heldout' }).click();
  await expect.poll(async () => (await listedFolders(panel)).map((f) => f.name), { timeout: 30_000 }).toEqual(['data-stripes']);
  expect(asked).toEqual([expect.stringMatching(/^Delete the image folder "data-stripes-heldout"/)]);
  expect(await page.evaluate(() => localStorage.getItem('lora-lab.image-val'))).toBe(null);
  expect(browser.errors).toEqual([]);
}, 120_000);
