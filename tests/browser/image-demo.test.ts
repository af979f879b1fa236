import { afterAll, beforeAll, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { openApp } from './support/train';

// "Try the image demo" with zero files: the built-in tiny diffusion model and its style set load from the app itself,
// the preview lists the images, and the run trains and shows samples.

let browser: BrowserSession;

beforeAll(async () => {
  browser = await openApp();
}, 120_000);

afterAll(() => browser?.close());

test('Try the image demo: loads the built-in model and style set, trains, and shows samples', async () => {
  const { page } = browser;
  const panel = page.getByTestId('image-lora');
  await panel.getByRole('button', { name: 'Try the image demo' }).click();
  const summary = panel.getByTestId('image-preview-summary');
  await summary.waitFor({ timeout: 60_000 });
  expect(await summary.textContent()).toMatch(/^\d+ images, \d+ per epoch with repeats\.$/);
  expect(await panel.getByTestId('image-warning').count()).toBe(0);
  expect(await panel.getByTestId('image-config').inputValue()).toMatch(/^resolution: 32\b/m);

  // The demo's config as shipped (100 steps), cut to 10 for time; samples come at the end.
  const config = panel.getByTestId('image-config');
  await config.fill((await config.inputValue()).replace(/^max_steps: \d+/m, 'max_steps: 10').replace(/^sample_steps: \d+/m, 'sample_steps: 0').replace(/^eval_steps: \d+/m, 'eval_steps: 5'));
  await panel.getByTestId('image-start').click();
  const ended = panel.getByTestId('image-status').filter({ hasText: 'ended:' });
  await Promise.race([
    ended.waitFor({ timeout: 600_000 }),
    panel.locator('.error[role=alert]').first().waitFor({ timeout: 600_000 }).then(async () => expect.fail(`the demo run failed: ${await panel.locator('.error[role=alert]').first().textContent()}`)),
  ]);
  expect(await ended.textContent()).toMatch(/ended: completed/);
  // One sample per prompt of the demo's config, at the last step; the fixed-noise validation curve has its points.
  expect(await panel.getByTestId('sample-step').locator('figcaption').allTextContents()).toEqual(['Step 10']);
  expect(await panel.getByTestId('sample-image').count()).toBe(3);
  expect(await panel.getByTestId('image-chart').getAttribute('data-points')).toBe('11');
  // The samples are real pictures: their pixels are not one flat colour.
  const colours = await panel.getByTestId('sample-image').first().evaluate((img: HTMLImageElement) => {
    const canvas = Object.assign(document.createElement('canvas'), { width: img.naturalWidth, height: img.naturalHeight });
    const context = canvas.getContext('2d')!;
    context.drawImage(img, 0, 0);
    const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
    const seen = new Set<number>();
    for (let i = 0; i < data.length; i += 4) seen.add((data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!);
    return seen.size;
  });
  expect(colours).toBeGreaterThan(8);
  expect(browser.errors).toEqual([]);
}, 900_000);
