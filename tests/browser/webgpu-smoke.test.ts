import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { callInPage, openBrowser, type BrowserSession } from './harness';

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openBrowser();
});
afterAll(async () => browser?.close());

test('tfjs runs on WebGPU in headless Chromium and matches a plain matmul', async () => {
  const { page } = browser;
  await page.goto(`${inject('devUrl')}/tests/browser/pages/blank.html`);
  const result = await callInPage<{ backend: string; maxAbsDiff: number }>(page, '/tests/browser/pages/webgpu-smoke.ts', 'run');
  expect(result.backend).toBe('webgpu');
  expect(result.maxAbsDiff).toBeLessThan(1e-4);
});
