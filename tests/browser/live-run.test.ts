import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import type { BrowserSession } from './harness';
import { openApp, tryTheDemo } from './support/train';

// One tab trains, a second tab of the same browser profile shows the run live and read-only (live-run-channel.ts):
// opened mid-run, it gets the curve so far from IndexedDB and then the live steps, its Start, Pause and Stop are
// disabled with a line saying why, its worker refuses a run of its own, and when the run ends both tabs list it
// completed. On wasm: SwiftShader WebGPU is too slow on a 2-core machine for a run that must last a while.

// A demo step takes about 3 s on wasm on a loaded 2-core machine: enough steps to join mid-run and see it go on.
const STEPS = 8;

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openApp();
});
afterAll(async () => browser?.close());

/** The number after "Step" in the live status, e.g. "12 / 24"; 0 while there is none. */
async function stepShown(page: Page): Promise<number> {
  const status = page.getByTestId('train-status');
  if ((await status.count()) === 0) return 0;
  const text = (await status.locator('div', { hasText: 'Step' }).locator('dd').textContent()) ?? '';
  return Number(text.split('/')[0]);
}

/** How many steps the page's charts draw (TrainPanel's data-points), 0 before there is a chart. */
async function chartPoints(page: Page): Promise<number> {
  const controls = page.getByTestId('chart-controls');
  if ((await controls.count()) === 0) return 0;
  return Number(await controls.getAttribute('data-points'));
}

test('a second tab follows the first tab\'s run live, read-only, and both list it completed', async () => {
  const trainer = browser.page;
  await tryTheDemo(trainer);
  for (const [label, value] of [['Max steps', String(STEPS)], ['Evaluate every', String(STEPS)], ['Log every', '2']] as const) {
    await trainer.getByLabel(label, { exact: true }).fill(value);
    await trainer.getByLabel(label, { exact: true }).press('Tab');
  }
  await trainer.getByRole('button', { name: 'Start training' }).click();
  await expect.poll(() => stepShown(trainer), { timeout: 120_000, interval: 200 }).toBeGreaterThanOrEqual(2);

  // The second tab opens mid-run.
  const viewer = await browser.context.newPage();
  await viewer.goto(inject('appUrl'));
  await viewer.getByTestId('training-elsewhere').waitFor({ timeout: 60_000 });
  await expect(viewer.getByTestId('training-elsewhere').textContent()).resolves.toMatch(/^Training in another tab/);
  for (const name of ['Start training', 'Pause', 'Stop']) {
    await expect(viewer.getByRole('button', { name, exact: true }).isDisabled(), name).resolves.toBe(true);
  }
  // Its worker would refuse to delete the run's model: the library says so first, as in the training tab.
  await expect(viewer.getByRole('button', { name: 'Delete demo-gpt2-moby-dick' }).isDisabled()).resolves.toBe(true);
  // The curve so far came from storage: as many points as the steps shown, with none missing in between.
  await expect.poll(() => stepShown(viewer), { timeout: 60_000, interval: 200 }).toBeGreaterThanOrEqual(2);
  const firstStep = await stepShown(viewer);
  await expect.poll(() => chartPoints(viewer), { timeout: 30_000, interval: 200 }).toBeGreaterThanOrEqual(firstStep);
  const firstPoints = await chartPoints(viewer);
  await expect.poll(() => stepShown(viewer), { timeout: 120_000, interval: 200 }).toBeGreaterThan(firstStep);
  await expect.poll(() => chartPoints(viewer), { timeout: 30_000, interval: 200 }).toBeGreaterThan(firstPoints);
  for (const title of ['Loss (nats)', 'Learning rate', 'Gradient norm']) {
    await expect(viewer.getByRole('img', { name: `${title} chart` }).locator('canvas').count()).resolves.toBe(1);
  }

  // Starting a run in the watching tab is refused by its worker too: one run per origin, not only per worker.
  const refusal = await viewer.evaluate(async () => {
    try {
      await window.loraLab!.call('train', { modelId: 'any', configYaml: 'max_steps: 2\nbackend: wasm\n', trainData: { datasetId: 'none' }, valData: null });
      return null;
    } catch (e) {
      return (e as Error).message;
    }
  });
  expect(refusal).toMatch(/^training: is running in another tab: LoRA Lab trains one run at a time\./);

  // The run ends in the first tab: the second shows the end and the whole curve, each step once, and its runs list
  // (read again) shows the run completed, as the first tab's does.
  await expect.poll(() => stepShown(viewer), { timeout: 240_000, interval: 500 }).toBe(STEPS);
  await viewer.getByTestId('training-elsewhere').waitFor({ state: 'detached', timeout: 60_000 });
  await expect(viewer.getByTestId('train-status').textContent()).resolves.toMatch(new RegExp(`${STEPS} / ${STEPS}[\\s\\S]*completed`));
  expect(await chartPoints(viewer)).toBe(STEPS);
  expect(await chartPoints(trainer)).toBe(STEPS);
  for (const page of [trainer, viewer]) {
    const row = page.getByTestId('run-item').filter({ hasText: 'demo' }).first();
    await expect.poll(() => row.locator('.badge').textContent(), { timeout: 30_000 }).toBe('completed');
  }
  await expect(viewer.getByRole('button', { name: 'Pause', exact: true }).count()).resolves.toBe(0);
  expect(browser.errors.filter((e) => !/another tab/.test(e))).toEqual([]);
});
