import { readFileSync } from 'node:fs';
import { unzipSync } from 'fflate';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { parseEventFiles } from '../../src/storage/imported-logs';
import type { BrowserSession } from './harness';
import { storedRuns } from './support/run-files';
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

/** Stored runs by name, in the order the worker created them. */
async function storedRunsInOrder(page: Page): Promise<{ name: string; status: string; step: number }[]> {
  return (await storedRuns(page)).sort((a, b) => a.createdAt - b.createdAt).map(({ name, status, step }) => ({ name, status, step }));
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
      const csv = new TextDecoder().decode(files.find((f) => f.path === 'metrics.csv')!.bytes as Uint8Array).trim().split('\n');
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

/** metrics.csv read on its own terms: the column named in the header, empty cells skipped. */
function column(csv: string, name: string): { step: number; value: number }[] {
  const [header, ...rows] = csv.trim().split('\n');
  const at = header!.split(',').indexOf(name);
  const stepAt = header!.split(',').indexOf('step');
  return rows.map((r) => r.split(',')).filter((c) => c[at] !== undefined && c[at] !== '').map((c) => ({ step: Number(c[stepAt]), value: Number(c[at]) }));
}

test("the sweep downloads as one zip laid out as the headless runner's output_dir: each run's folder and a ranked sweep_summary.csv", async () => {
  const { page } = browser;
  const names = ['lr_1e-3', 'lr_3e-2'];
  // Keyboard only: focus the button and press Enter.
  const button = page.getByRole('button', { name: 'Download sweep sweep/ as a zip' });
  await expect(button.textContent()).resolves.toContain('Download sweep');
  await button.focus();
  const [download] = await Promise.all([page.waitForEvent('download'), page.keyboard.press('Enter')]);
  expect(download.suggestedFilename()).toBe('sweep.zip');
  const zipped = unzipSync(new Uint8Array(readFileSync((await download.path())!)));
  const text = (path: string) => new TextDecoder().decode(zipped[path]);

  // The top folder holds the two runs' folders and the summary, nothing else.
  expect([...new Set(Object.keys(zipped).map((p) => p.split('/').slice(0, 2).join('/')))].sort()).toEqual(['sweep/lr_1e-3', 'sweep/lr_3e-2', 'sweep/sweep_summary.csv']);
  // Each run's folder holds what that run's own download holds, byte for byte where made at export.
  for (const name of names) {
    const own = await page.evaluate(async (name) => {
      const runs = await new Promise<{ id: string; name: string }[]>((resolve, reject) => {
        const open = indexedDB.open('lora-lab');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const r = open.result.transaction('runs').objectStore('runs').getAll();
          r.onsuccess = () => {
            open.result.close();
            resolve(r.result as { id: string; name: string }[]);
          };
        };
      });
      const { files } = await window.loraLab!.call('exportRun', { runId: runs.find((r) => r.name === name)!.id });
      return { paths: files.map((f) => f.path).sort(), metrics: new TextDecoder().decode(files.find((f) => f.path === 'metrics.csv')!.bytes as Uint8Array) };
    }, name);
    expect(Object.keys(zipped).filter((p) => p.startsWith(`sweep/${name}/`)).map((p) => p.slice(`sweep/${name}/`.length)).sort()).toEqual(own.paths);
    expect(own.paths).toContainEqual(expect.stringMatching(/^logs\/.*tfevents/));
    expect(text(`sweep/${name}/metrics.csv`)).toBe(own.metrics);
  }

  // The summary: one row per run, each number what the run's own files say, best (lowest final train loss: no eval here) first.
  const [header, ...rows] = text('sweep/sweep_summary.csv').trim().split('\n');
  expect(header).toBe('rank,folder,learning_rate,final_train_loss,best_eval_loss,best_eval_step,diagnosis,tokens_per_second');
  const parsed = rows.map((r) => r.split(','));
  expect(parsed.map((c) => c[0])).toEqual(['1', '2']);
  expect(parsed.map((c) => c[1]).sort()).toEqual(names);
  for (const c of parsed) {
    const folder = `sweep/${c[1]}`;
    const losses = column(text(`${folder}/metrics.csv`), 'loss');
    expect(losses.map((l) => l.step)).toEqual([1, 2, 3]);
    expect(Number(c[2])).toBe(Number(c[1]!.slice('lr_'.length)));
    expect(Number(c[3])).toBe(losses.at(-1)!.value);
    expect(column(text(`${folder}/metrics.csv`), 'eval_loss')).toEqual([]);
    expect([c[4], c[5]]).toEqual(['', '']);
    expect(c[6]).toBe((JSON.parse(text(`${folder}/diagnosis.json`)) as { code: string }[])[0]!.code);
    expect(Number(c[7])).toBe((JSON.parse(text(`${folder}/run_summary.json`)) as { tokens_per_second: number }).tokens_per_second);
  }
  const finals = parsed.map((c) => Number(c[3]));
  expect(finals[0]).toBeLessThan(finals[1]!);
  // The status line names the same best run as the summary's first row and the runs panel's marker.
  await expect.poll(() => page.getByTestId('sweep-download-status').textContent()).toBe(`Saved sweep.zip: 2 runs and sweep_summary.csv; best: ${parsed[0]![1]}.`);
  await expect(page.getByTestId('best-run').locator('xpath=ancestor::li[1]').getAttribute('data-run')).resolves.toBe(parsed[0]![1]);

  // TensorBoard pointed at the unzipped folder: our reader, given every event file in it, finds the two runs.
  const events = Object.keys(zipped).filter((p) => p.includes('tfevents'));
  expect(events).toHaveLength(2);
  const logs = parseEventFiles(events.map((path) => ({ path: path.slice('sweep/'.length), bytes: zipped[path]! })));
  expect(logs.problems).toEqual([]);
  expect(logs.logs.map((l) => l.name).sort()).toEqual(names);
  for (const log of logs.logs) {
    const losses = column(text(`sweep/${log.name}/metrics.csv`), 'loss');
    expect(Array.from(log.scalars['train/loss']!.steps)).toEqual([1, 2, 3]);
    expect(Array.from(log.scalars['train/loss']!.values)).toEqual(losses.map((l) => Math.fround(l.value)));
    expect(log.config?.learning_rate).toBe(Number(log.name.slice('lr_'.length)));
  }
  expect(browser.errors).toEqual([]);
});
