import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { foreignRequests, type BrowserSession } from './harness';
import { openApp, tryTheDemo } from './support/train';

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openApp();
});
afterAll(async () => browser?.close());

test('zero files: "Try the demo" sets up the built-in model, texts and config, and a short run learns', async () => {
  const { page } = browser;
  await tryTheDemo(page);
  const items = await page.getByTestId('dataset-item').allTextContents();
  expect(items.some((t) => t.includes('style.txt'))).toBe(true);
  expect(items.some((t) => t.includes('style-val.txt'))).toBe(true);
  await expect(page.getByLabel('Output dir').inputValue()).resolves.toBe('./output/demo');
  await expect(page.getByLabel('Rank').inputValue()).resolves.toBe('8');

  // Shorter than the suggested 100 steps, to fit a test; two evaluations to compare.
  for (const [label, value] of [['Max steps', '30'], ['Evaluate every', '15'], ['Log every', '5']] as const) {
    await page.getByLabel(label, { exact: true }).fill(value);
    await page.getByLabel(label, { exact: true }).press('Tab');
  }
  await page.getByRole('button', { name: 'Start training' }).click();
  await page.getByRole('button', { name: 'Start training' }).waitFor({ timeout: 240_000 });
  await expect(page.getByTestId('train-status').textContent()).resolves.toMatch(/30 \/ 30[\s\S]*completed/);

  // The adapter learned the new style: the best eval loss on Grant's address is below the base
  // model's (1.966 nats, measured by scripts/pretrain-demo.ts; see public/demo/README.md).
  const row = page.getByTestId('run-item').filter({ hasText: 'demo' }).first();
  await expect(row.textContent()).resolves.toMatch(/completed/);
  const bestEval = Number((await row.textContent())!.match(/best eval ([\d.]+)/)![1]);
  expect(bestEval).toBeLessThan(1.94);
  expect(foreignRequests(browser.requests, new URL(inject('appUrl')).origin)).toEqual([]);
});
