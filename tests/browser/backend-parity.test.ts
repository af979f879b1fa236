import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { callInPage, openBrowser, type BrowserSession } from './harness';

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openBrowser();
  await browser.page.goto(`${inject('devUrl')}/tests/browser/pages/blank.html`);
});
afterAll(async () => browser?.close());

test('loss gradient, global-norm clipping, AdamW and transposed products agree on webgpu, wasm and cpu in Chromium', async () => {
  const result = await callInPage<Record<string, { norm: number; maxDiff: Record<string, number> }>>(browser.page, '/tests/browser/pages/backend-parity.ts', 'run');
  expect(result.cpu!.norm).toBeGreaterThan(10); // ten tensors, the later ones large: clipping is active
  for (const backend of ['webgpu', 'wasm']) {
    const { maxDiff } = result[backend]!;
    expect(maxDiff.norm, `${backend} norm`).toBeLessThan(1e-4);
    expect(maxDiff.clipped, `${backend} clipped`).toBeLessThan(1e-6);
    expect(maxDiff.variables, `${backend} AdamW`).toBeLessThan(1e-6);
    expect(maxDiff.lossGrad, `${backend} loss gradient`).toBeLessThan(1e-6);
    expect(maxDiff.matMul, `${backend} transposed products`).toBeLessThan(1e-5);
  }
});
