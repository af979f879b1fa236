import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { importFixtureModel, openApp } from './support/train';

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openApp();
});
afterAll(async () => browser?.close());

async function setField(page: Page, label: string, value: string): Promise<void> {
  // The set-up folds away while a run trains (run-setup.svelte.ts): unfold it to edit the config.
  const setup = page.getByTestId('run-setup');
  if (!(await setup.evaluate((d) => (d as HTMLDetailsElement).open))) await setup.locator(':scope > summary').click();
  const field = page.getByLabel(label, { exact: true });
  await field.fill(value);
  await field.press('Tab');
}

/** The queue as listed: name and status of each entry, top to bottom. */
function queueShown(page: Page): Promise<string[]> {
  // A failure's message comes along, so a failed run says why.
  return page.getByTestId('queue-item').evaluateAll((items) =>
    items.map((li) => `${li.getAttribute('data-name')}:${li.getAttribute('data-status')}${li.querySelector('.error') ? ` (${li.querySelector('.error')!.textContent})` : ''}`),
  );
}

/** Stored runs by name, in the order the worker created them (read from IndexedDB as any tab could). */
function storedRunsInOrder(page: Page): Promise<{ name: string; status: string; step: number }[]> {
  return page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open('lora-lab');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const request = open.result.transaction('runs', 'readonly').objectStore('runs').getAll();
          request.onsuccess = () => {
            open.result.close();
            const runs = request.result as { name: string; status: string; step: number; createdAt: number }[];
            resolve(runs.sort((a, b) => a.createdAt - b.createdAt).map(({ name, status, step }) => ({ name, status, step })));
          };
          request.onerror = () => reject(request.error);
        };
      }),
  );
}

test('two queued configs, reordered from the keyboard, train to completion one after the other; the queue survives a reload', async () => {
  const { page } = browser;
  await importFixtureModel(page, 'tiny-gpt2');
  await page.getByTestId('dataset-file-input').setInputFiles({
    name: 'phrases.txt',
    mimeType: 'text/plain',
    buffer: Buffer.from(Array.from({ length: 40 }, () => 'zebra quilt jinx! '.repeat(10)).join('\n\n')),
  });
  await page.getByTestId('dataset-item').first().waitFor({ timeout: 60_000 });

  await setField(page, 'Max steps', '3');
  await setField(page, 'Log every', '1');
  await setField(page, 'Output dir', './output/first');
  await page.getByRole('button', { name: 'Add current config' }).click();
  await setField(page, 'Output dir', './output/second');
  await setField(page, 'Learning rate', '0.002');
  await page.getByRole('button', { name: 'Add current config' }).click();
  await expect(queueShown(page)).resolves.toEqual(['first:waiting', 'second:waiting']);

  // Keyboard only: focus "Move second up" and press Enter; the focus stays with the entry that moved.
  await page.getByRole('button', { name: 'Move second up' }).focus();
  await page.keyboard.press('Enter');
  await expect.poll(() => queueShown(page)).toEqual(['second:waiting', 'first:waiting']);
  await expect(page.evaluate(() => document.activeElement?.getAttribute('aria-label'))).resolves.toBe('Move second down');

  // The queue is kept across a reload.
  await page.reload();
  await expect.poll(() => queueShown(page), { timeout: 60_000 }).toEqual(['second:waiting', 'first:waiting']);
  await page.getByTestId('dataset-item').first().waitFor({ timeout: 60_000 });

  await page.getByRole('button', { name: 'Run queue' }).click();
  await expect.poll(() => queueShown(page), { timeout: 120_000 }).not.toContainEqual(expect.stringMatching(/:(waiting|running)/));
  expect((await queueShown(page)).join('\n')).toBe(['second:completed', 'first:completed'].join('\n'));
  // In the queue's order, each to its end, one at a time: the second started after the first was done.
  const stored = await storedRunsInOrder(page);
  expect(stored.slice(-2)).toEqual([
    { name: 'second', status: 'completed', step: 3 },
    { name: 'first', status: 'completed', step: 3 },
  ]);
  expect(browser.errors).toEqual([]);
});

test('a grid queues one run per combination, named from its values; its runs are overlaid and the best is marked', async () => {
  const { page } = browser;
  await page.getByRole('button', { name: 'Clear finished' }).click();
  await setField(page, 'Output dir', './output/sweep');
  await page.getByText('Add a grid (sweep)').click();
  const grid = page.getByLabel(/^Values to try/);

  await grid.fill('learning_rate: [1e-3, 2]');
  await page.getByRole('button', { name: 'Add grid' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'sweep.learning_rate' }).textContent()).resolves.toBe(
    'line 1: sweep.learning_rate: must be a number from 0 to 1, got 2',
  );
  await expect(page.getByTestId('queue-item').count()).resolves.toBe(0);

  await grid.fill('learning_rate: [1e-3, 3e-2]');
  await page.getByRole('button', { name: 'Add grid' }).click();
  await expect(queueShown(page)).resolves.toEqual(['lr_1e-3:waiting', 'lr_3e-2:waiting']);
  await page.getByRole('button', { name: 'Run queue' }).click();
  await expect.poll(() => queueShown(page), { timeout: 120_000 }).toEqual(['lr_1e-3:completed', 'lr_3e-2:completed']);

  // Both runs of the sweep are ticked for comparison without a click, and one is marked best: the one
  // whose last train loss, as stored, is lower.
  for (const name of ['lr_1e-3', 'lr_3e-2']) {
    await expect.poll(() => page.locator(`[data-testid=run-item][data-run="${name}"] input[type=checkbox]`).isChecked()).toBe(true);
  }
  await expect.poll(() => page.getByTestId('compare-legend').locator('li').count(), { timeout: 30_000 }).toBe(2);
  const best = await page.getByTestId('best-run').locator('xpath=ancestor::li[1]').getAttribute('data-run');
  // The last train loss of each run, from the metrics.csv the run exports.
  const lastLoss = (name: string) =>
    page.evaluate(async (name) => {
      const open = indexedDB.open('lora-lab');
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
      const runs = await new Promise<{ id: string; name: string }[]>((resolve) => {
        const r = db.transaction('runs').objectStore('runs').getAll();
        r.onsuccess = () => resolve(r.result as { id: string; name: string }[]);
      });
      db.close();
      const runId = runs.find((r) => r.name === name)!.id;
      const { files } = await window.loraLab!.call('exportRun', { runId });
      const csv = new TextDecoder().decode(files.find((f) => f.path === 'metrics.csv')!.bytes).trim().split('\n');
      const at = csv[0]!.split(',').indexOf('loss');
      return Number(csv.at(-1)!.split(',')[at]);
    }, name);
  const [a, b] = [await lastLoss('lr_1e-3'), await lastLoss('lr_3e-2')];
  expect(a).not.toBe(b);
  expect(best).toBe(a < b ? 'lr_1e-3' : 'lr_3e-2');
  // The legend's "best" sits on the same run's entry.
  await expect(page.getByTestId('compare-best').locator('xpath=..').textContent()).resolves.toContain(best!);
  expect(browser.errors).toEqual([]);
});
