import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { SD_DIR } from './support/fixtures';
import { openApp } from './support/train';

// The image LoRA panel, as a person uses it: pick the model folder and the image folders, read the preview, edit the
// YAML, train, and watch the curve and the sample gallery fill in; the run then sits in the runs list.

let browser: BrowserSession;

beforeAll(async () => {
  // wasm: SwiftShader's software WebGPU runs the UNet's convolutions far slower (the app's auto choice there too).
  browser = await openApp();
}, 120_000);

afterAll(() => browser?.close());

test('picks a diffusers folder and an image folder, previews them, trains, and shows samples by step', async () => {
  const { page } = browser;
  const panel = page.getByTestId('image-lora');
  await panel.getByTestId('image-model-folder').setInputFiles(join(SD_DIR, 'tiny-sd'));
  await panel.getByTestId('image-train-folder').setInputFiles(join(SD_DIR, 'data-stripes'));
  await panel.getByTestId('image-val-folder').setInputFiles(join(SD_DIR, 'data-stripes-heldout'));
  await Promise.race([
    panel.getByTestId('image-preview-summary').waitFor({ timeout: 60_000 }),
    panel.locator('.error[role=alert]').first().waitFor({ timeout: 60_000 }).then(async () => expect.fail(`the preview failed: ${await panel.locator('.error[role=alert]').first().textContent()}`)),
  ]);
  expect(await panel.getByTestId('image-preview-summary').textContent()).toBe('40 images, 40 per epoch with repeats.');
  // At the default resolution (512) these 32-pixel images would be enlarged 16 times: the preview says so.
  expect(await panel.getByTestId('image-warning').allTextContents()).toEqual([expect.stringMatching(/\(40 images\)$/)]);
  const grid = panel.getByRole('list', { name: 'Training images' });
  expect(await grid.getByRole('img').count()).toBe(40);
  // Each thumbnail is labelled by its caption, here the caption file beside the first image.
  expect(await grid.getByRole('img').first().getAttribute('alt')).toBe(readFileSync(join(SD_DIR, 'data-stripes', 'img_0000.txt'), 'utf8').split('\n')[0]!.trim());

  await panel.getByTestId('image-config').fill(
    [
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
    ].join('\n'),
  );
  // Leaving the YAML re-reads the folder at the new resolution (32): the warning goes.
  await panel.getByTestId('image-config').blur();
  await expect.poll(() => panel.getByTestId('image-warning').count(), { timeout: 60_000 }).toBe(0);
  await panel.getByTestId('image-start').click();
  const ended = panel.getByTestId('image-status').filter({ hasText: 'ended:' });
  await Promise.race([
    ended.waitFor({ timeout: 240_000 }),
    panel.locator('.error[role=alert]').first().waitFor({ timeout: 240_000 }).then(async () => expect.fail(`the run failed: ${await panel.locator('.error[role=alert]').first().textContent()}`)),
  ]);
  expect(await ended.textContent()).toMatch(/^\s*Step 4 of 4 .* ended: completed\s*$/s);

  // The gallery: steps 4 and 2 (newest first), two prompts each, real 32×32 pictures that are not one flat colour.
  const steps = panel.getByTestId('sample-step');
  expect(await steps.locator('figcaption').allTextContents()).toEqual(['Step 4', 'Step 2']);
  const pixels = await panel.getByTestId('sample-image').evaluateAll((images) =>
    (images as HTMLImageElement[]).map((img) => {
      const canvas = Object.assign(document.createElement('canvas'), { width: img.naturalWidth, height: img.naturalHeight });
      const context = canvas.getContext('2d')!;
      context.drawImage(img, 0, 0);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      const values = new Set<number>();
      for (let i = 0; i < data.length; i += 4) values.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!);
      return { width: img.naturalWidth, height: img.naturalHeight, colours: values.size };
    }),
  );
  expect(pixels).toHaveLength(4);
  for (const p of pixels) {
    expect([p.width, p.height]).toEqual([32, 32]);
    expect(p.colours).toBeGreaterThan(8);
  }
  // The chart drew a point per step plus the step-0 evaluation; the run is listed for download and comparison.
  expect(await panel.getByTestId('image-chart').getAttribute('data-points')).toBe('5');
  await expect.poll(() => page.getByText('ui-stripes').count(), { timeout: 30_000 }).toBeGreaterThan(0);
  expect(browser.errors).toEqual([]);
}, 300_000);
