import { afterAll, beforeAll, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { listedFolders, sampleColours, trainAndWait, waitInPanel } from './support/image-panel';
import { openApp } from './support/train';

// "Try the image demo" with zero files: the built-in tiny diffusion model and its style set are imported into the
// image library from the app itself and chosen, the preview lists the images, and the run trains and shows samples.
// Pressing it again imports nothing and the second run reads the latents the first one cached.

let browser: BrowserSession;

beforeAll(async () => {
  browser = await openApp();
}, 120_000);

afterAll(() => browser?.close());

/** The demo's config as shipped (100 steps), cut to `steps` for time; no samples on the way (one set at the end). */
async function shorten(config: import('playwright-core').Locator, steps: number): Promise<void> {
  await config.fill((await config.inputValue()).replace(/^max_steps: \d+/m, `max_steps: ${steps}`).replace(/^sample_steps: \d+/m, 'sample_steps: 0').replace(/^eval_steps: \d+/m, 'eval_steps: 5'));
}

test('Try the image demo: imports the built-in model and style set into the library, trains, and shows samples', async () => {
  const { page } = browser;
  const panel = page.getByTestId('image-lora');
  const library = panel.getByTestId('image-library');
  await panel.getByRole('button', { name: 'Try the image demo' }).click();
  const summary = panel.getByTestId('image-preview-summary');
  await waitInPanel(panel, summary, 'the demo set-up', 120_000);
  await panel.getByRole('button', { name: 'Try the image demo' }).waitFor({ timeout: 60_000 }); // set-up finished
  // The demo in the library, chosen: its model, its 32 style images for training and 16 held-out ones for validation
  // (the counts of public/demo-image/manifest.json).
  expect(await library.getByRole('radio', { name: /^demo-tiny-sd-shapes\b/, checked: true }).count()).toBe(1);
  expect(await listedFolders(panel)).toEqual([
    { name: 'demo-image-style-val', meta: expect.stringMatching(/^16 images · /) },
    { name: 'demo-image-style', meta: expect.stringMatching(/^32 images · /) },
  ]);
  expect(await library.getByRole('combobox', { name: 'Use demo-image-style as' }).inputValue()).toBe('train');
  expect(await library.getByRole('combobox', { name: 'Use demo-image-style-val as' }).inputValue()).toBe('val');
  await expect.poll(() => summary.textContent(), { timeout: 30_000 }).toBe('32 images, 32 per epoch with repeats.');
  expect(await panel.getByTestId('image-warning').count()).toBe(0);
  const config = panel.getByTestId('image-config');
  expect(await config.inputValue()).toMatch(/^resolution: 32\b/m);

  await shorten(config, 10);
  expect(await trainAndWait(panel, 600_000)).toMatch(/ended: completed/);
  expect(await panel.getByTestId('image-latents').getAttribute('data-encoded')).toBe('true');
  // One sample per prompt of the demo's config, at the last step; the fixed-noise validation curve has its points.
  expect(await panel.getByTestId('sample-step').locator('figcaption').allTextContents()).toEqual(['Step 10']);
  expect(await panel.getByTestId('sample-image').count()).toBe(3);
  expect(await panel.getByTestId('image-chart').getAttribute('data-points')).toBe('11');
  // The samples are real pictures: their pixels are not one flat colour.
  expect((await sampleColours(panel))[0]!.colours).toBeGreaterThan(8);
  expect(browser.errors).toEqual([]);
}, 900_000);

test('Try the image demo again: reuses the stored model and images, and the run encodes no image', async () => {
  const { page } = browser;
  const panel = page.getByTestId('image-lora');
  const library = panel.getByTestId('image-library');
  await panel.getByRole('button', { name: 'Try the image demo' }).click();
  await panel.getByRole('button', { name: 'Try the image demo' }).waitFor({ timeout: 60_000 });
  await waitInPanel(panel, panel.getByTestId('image-preview-summary'), 'the demo set-up', 60_000);
  // Nothing imported twice: still one model and the two folders.
  expect(await library.getByRole('radio').count()).toBe(1);
  expect((await listedFolders(panel)).map((f) => f.name)).toEqual(['demo-image-style-val', 'demo-image-style']);

  await shorten(panel.getByTestId('image-config'), 2);
  expect(await trainAndWait(panel, 600_000)).toMatch(/Step 2 of 2 .*ended: completed/s);
  expect(await panel.getByTestId('image-latents').getAttribute('data-encoded')).toBe('false');
  expect(browser.errors).toEqual([]);
}, 900_000);
