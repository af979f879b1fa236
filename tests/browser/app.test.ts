import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import type { Page } from 'playwright-core';
import { foreignRequests, openBrowser, type BrowserSession } from './harness';
import { MODELS_DIR, expectedOutputs, maxAbsDiff } from './support/fixtures';

let browser: BrowserSession;
let page: Page;
const appUrl = inject('appUrl');

beforeAll(async () => {
  browser = await openBrowser();
  page = browser.page;
  await page.goto(appUrl);
});
afterAll(async () => browser?.close());

async function backendShown(name: string): Promise<void> {
  await page.locator(`[data-testid=backend] .badge[data-backend=${name}]`).waitFor({ timeout: 60_000 });
}

async function importFolder(folder: string): Promise<string> {
  await page.locator('[data-testid=model-folder-input]').setInputFiles(`${MODELS_DIR}${folder}`);
  const entry = page.getByRole('radio', { name: new RegExp(`^${folder}\\b`) });
  await entry.waitFor({ timeout: 60_000 });
  return entry.inputValue();
}

/** Decodes a PNG with the browser's own decoder and returns the RGBA of one pixel. */
async function pixelAt(png: Buffer, x: number, y: number): Promise<number[]> {
  return page.evaluate(
    async ({ dataUrl, x, y }) => {
      const image = new Image();
      image.src = dataUrl;
      await image.decode();
      const canvas = new OffscreenCanvas(image.width, image.height);
      const context = canvas.getContext('2d')!;
      context.drawImage(image, 0, 0);
      return Array.from(context.getImageData(Math.round(x), Math.round(y), 1, 1).data);
    },
    { dataUrl: `data:image/png;base64,${png.toString('base64')}`, x, y },
  );
}

async function logitsInWorker(modelId: string, tokens: number[]): Promise<number[]> {
  return (await forwardInWorker(modelId, tokens)).logits;
}

async function forwardInWorker(modelId: string, tokens: number[]): Promise<{ logits: number[]; weightBytes: number }> {
  return page.evaluate(
    async ({ modelId, tokens }) => {
      await window.loraLab!.ready;
      const { logits, weightBytes } = await window.loraLab!.call('logits', { modelId, tokens });
      return { logits: Array.from(logits), weightBytes };
    },
    { modelId, tokens },
  );
}

describe('the app in headless Chromium', () => {
  test('starts on the WebAssembly backend on a software-only GPU and says why', async () => {
    await backendShown('wasm');
    await expect(page.getByTestId('backend').textContent()).resolves.toMatch(/software GPU \(swiftshader\)/);
  });

  test('imports GPT-2 and Llama folders into IndexedDB; the worker forward on WebGPU matches PyTorch', async () => {
    await page.getByLabel('Backend').selectOption('webgpu');
    await backendShown('webgpu');
    await expect(page.getByTestId('backend').textContent()).resolves.toMatch(/max buffer/);
    for (const model of ['tiny-gpt2', 'tiny-llama']) {
      const id = await importFolder(model);
      const expected = expectedOutputs(model);
      const logits = await logitsInWorker(id, expected.tokens);
      expect(logits.length).toBe(expected.tokens.length * expected.logits_base[0]!.length);
      expect(maxAbsDiff(logits, expected.logits_base)).toBeLessThan(1e-4);
    }
  });

  test('BF16 and F16 checkpoints stay 16-bit on the GPU, and their forward matches PyTorch', async () => {
    // tiny-gpt2-f16 has its own test below (deleting a model).
    const halves = { 'tiny-gpt2': ['tiny-gpt2-bf16'], 'tiny-llama': ['tiny-llama-bf16', 'tiny-llama-f16'] };
    for (const [arch, copies] of Object.entries(halves)) {
      // Imported by the test before.
      const fullId = await page.getByRole('radio', { name: new RegExp(`^${arch}\\b`) }).inputValue();
      const full = await forwardInWorker(fullId, expectedOutputs(arch).tokens);
      for (const half of copies) {
        const expected = expectedOutputs(half);
        const { logits, weightBytes } = await forwardInWorker(await importFolder(half), expected.tokens);
        expect(maxAbsDiff(logits, expected.logits_base)).toBeLessThan(1e-4);
        // Every matrix packed two halves to a word; only the norm and bias vectors stay float32.
        expect(weightBytes).toBeLessThan(0.55 * full.weightBytes);
        // Gone again, so that the tests below find one model per name.
        page.once('dialog', (dialog) => void dialog.accept());
        await page.getByRole('button', { name: `Delete ${half}` }).click();
        await expect.poll(() => page.getByRole('radio', { name: new RegExp(`^${half}\\b`) }).count()).toBe(0);
      }
    }
  });

  test('a corrupt model is refused with a message naming the file, and nothing is stored', async () => {
    const before = await page.getByRole('radio').count();
    await page.locator('[data-testid=model-files-input]').setInputFiles([
      { name: 'config.json', mimeType: 'application/json', buffer: Buffer.from('{"model_type": "gpt2", ') },
      { name: 'model.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.alloc(16) },
      { name: 'tokenizer.json', mimeType: 'application/json', buffer: Buffer.from('{}') },
    ]);
    await expect(page.getByRole('alert').filter({ hasText: 'config.json' }).textContent()).resolves.toMatch(/config\.json.*JSON/);
    expect(await page.getByRole('radio').count()).toBe(before);
  });

  test('after a reload the models are still listed and the Playground runs one', async () => {
    await page.reload();
    await backendShown('webgpu');
    await page.getByRole('radio', { name: /^tiny-gpt2\b/ }).check();
    const expected = expectedOutputs('tiny-gpt2');
    await page.getByLabel(/Prompt for/).fill(expected.text);
    await page.getByLabel('New tokens').fill('5');
    await page.getByRole('button', { name: 'Run' }).click();
    const result = page.getByTestId('playground-result');
    await result.waitFor({ timeout: 60_000 });
    // The most likely next token after the text is the argmax of the reference's last row.
    const last = expected.logits_base.at(-1)!;
    const argmax = last.indexOf(Math.max(...last));
    const shown = String.fromCharCode(argmax).replace(/ /g, '␣');
    await expect(result.locator('.distribution li code').first().textContent()).resolves.toBe(shown);
  });

  test('the main screen: steps left to right, readable, nothing overflowing (screenshot saved)', async () => {
    const result = page.getByTestId('playground-result');
    await result.waitFor();
    mkdirSync('test-results', { recursive: true });
    const png = await page.screenshot({ path: 'test-results/main-screen.png', fullPage: true });
    expect(png.byteLength).toBeGreaterThan(10_000);
    const model = (await page.getByRole('region', { name: /Model/ }).first().boundingBox())!;
    const train = (await page.locator('section[aria-labelledby=step-train]').boundingBox())!;
    expect(train.x).toBeGreaterThan(model.x + model.width - 1); // step 2 sits right of step 1 at 1280 px
    expect(Math.abs(train.y - model.y)).toBeLessThan(2);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBe(0);
    // The step badge really is painted in the accent colour: read the screenshot's own pixels.
    const badge = (await page.locator('#step-model .step').boundingBox())!;
    const accent = await page.evaluate(() => getComputedStyle(document.querySelector('#step-model .step')!).backgroundColor);
    const [r, g, b] = await pixelAt(png, badge.x + badge.width / 2, badge.y + 3);
    expect(`rgb(${r}, ${g}, ${b})`).toBe(accent);
  });

  test('offline after one visit: the app loads from the service worker and runs a stored model', async () => {
    // Precaching has finished once the service worker is active and controls the page.
    await page.waitForFunction(async () => (await navigator.serviceWorker.ready).active !== null && navigator.serviceWorker.controller !== null, null, {
      timeout: 60_000,
    });
    await browser.context.setOffline(true);
    try {
      await page.reload();
      await backendShown('webgpu');
      const id = await page.getByRole('radio', { name: /^tiny-llama\b/ }).inputValue();
      const expected = expectedOutputs('tiny-llama');
      expect(maxAbsDiff(await logitsInWorker(id, expected.tokens), expected.logits_base)).toBeLessThan(1e-4);
      // The wasm binaries come from the precache too: switch backends while offline.
      await page.getByLabel('Backend').selectOption('wasm');
      await backendShown('wasm');
      expect(maxAbsDiff(await logitsInWorker(id, expected.tokens), expected.logits_base)).toBeLessThan(1e-4);
    } finally {
      await browser.context.setOffline(false);
    }
  });

  test('a deleted model is gone from the library and can no longer be run', async () => {
    const id = await importFolder('tiny-gpt2-f16');
    expect(maxAbsDiff(await logitsInWorker(id, expectedOutputs('tiny-gpt2-f16').tokens), expectedOutputs('tiny-gpt2-f16').logits_base)).toBeLessThan(1e-4);
    page.once('dialog', (dialog) => void dialog.accept());
    await page.getByRole('button', { name: 'Delete tiny-gpt2-f16' }).click();
    await expect.poll(() => page.getByRole('radio', { name: /^tiny-gpt2-f16\b/ }).count()).toBe(0);
    const error = await page.evaluate(async (modelId) => {
      try {
        await window.loraLab!.call('logits', { modelId, tokens: [1, 2, 3] });
        return null;
      } catch (e) {
        return (e as Error).message;
      }
    }, id);
    expect(error).toMatch(/not in the library any more/);
  });

  test('the app requested nothing outside its origin and logged no errors', () => {
    expect(foreignRequests(browser.requests, new URL(appUrl).origin)).toEqual([]);
    expect(browser.errors).toEqual([]);
  });
});
