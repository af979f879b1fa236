import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { MODELS_DIR } from './support/fixtures';
import { importFixtureModel, openApp } from './support/train';
import { readFileSync } from 'node:fs';

// Issue 12, "adapters in", in the app: a PEFT adapter folder picked under a model of the library is checked,
// listed, evaluated against the fixture's PyTorch reference loss, refused with the tensor's name when it does not
// fit, and set as the run config's starting point.

const REFERENCE = (JSON.parse(readFileSync(`${MODELS_DIR}tiny-gpt2.expected.json`, 'utf8')) as {
  loss_base: { loss: number };
  loss_with_adapter: { text: string; seq_len: number; windows: number; loss: number };
});

let browser: BrowserSession;
let page: Page;

beforeAll(async () => {
  browser = await openApp();
  page = browser.page;
  await importFixtureModel(page, 'tiny-gpt2');
});
afterAll(async () => {
  await browser?.close();
});

const adapters = () => page.getByRole('region', { name: 'Adapters of tiny-gpt2' });

describe('adapters in the model library', () => {
  test('a fixture adapter folder is listed under its model with its rank, alpha and targets', async () => {
    await page.getByTestId('adapter-folder-input').setInputFiles(`${MODELS_DIR}tiny-gpt2-adapter`);
    const item = adapters().getByRole('listitem').filter({ hasText: 'tiny-gpt2-adapter' });
    await item.waitFor({ timeout: 60_000 });
    await expect(item.textContent()).resolves.toMatch(/r 4 · alpha 8 · c_attn, c_proj · 5\.6k params/);
  });

  test('an adapter for another model is refused naming what does not fit, and nothing is added', async () => {
    await page.getByTestId('adapter-folder-input').setInputFiles(`${MODELS_DIR}tiny-llama-adapter`);
    const alert = adapters().getByRole('alert');
    await expect(alert.textContent({ timeout: 60_000 })).resolves.toMatch(/adapter_config\.json: "target_modules": down_proj matches no module of this gpt2 model/);
    await expect(adapters().getByRole('listitem').count()).resolves.toBe(1);
    await alert.getByRole('button', { name: 'Dismiss' }).click();
  });

  test('Evaluate: the eval loss on a stored dataset equals the PyTorch reference, with and without the adapter', async () => {
    await page.getByTestId('dataset-file-input').setInputFiles({ name: 'val.txt', mimeType: 'text/plain', buffer: Buffer.from(REFERENCE.loss_with_adapter.text) });
    await page.getByRole('radio', { name: /^val\.txt/ }).waitFor({ timeout: 60_000 });
    await adapters().getByRole('button', { name: 'Evaluate tiny-gpt2-adapter' }).click();
    const group = page.getByRole('group', { name: 'Evaluate tiny-gpt2-adapter' });
    await group.getByLabel('Dataset').selectOption({ label: 'val.txt' });
    await group.getByLabel('Sequence length').fill(String(REFERENCE.loss_with_adapter.seq_len));
    await group.getByLabel('Sequence length').dispatchEvent('change');
    await group.getByRole('button', { name: 'Measure eval loss' }).click();
    const text = await page.getByTestId('adapter-eval').textContent({ timeout: 120_000 });
    const m = /over (\d+) windows: base ([\d.]+), with tiny-gpt2-adapter ([\d.]+)/.exec(text ?? '');
    expect(m, text ?? '').not.toBeNull();
    expect(Number(m![1])).toBe(REFERENCE.loss_with_adapter.windows);
    // Shown to 4 decimals: within 1e-4 of the reference, plus the rounding.
    expect(Math.abs(Number(m![2]) - REFERENCE.loss_base.loss)).toBeLessThan(1.5e-4);
    expect(Math.abs(Number(m![3]) - REFERENCE.loss_with_adapter.loss)).toBeLessThan(1.5e-4);
  });

  test('Train further fills the run config with the adapter, its rank, alpha and targets', async () => {
    await adapters().getByRole('button', { name: 'Train tiny-gpt2-adapter further' }).click();
    await expect(page.locator('#config-init_adapter').inputValue()).resolves.toBe('tiny-gpt2-adapter');
    await expect(page.locator('#config-lora_rank').inputValue()).resolves.toBe('4');
    await expect(page.locator('#config-lora_alpha').inputValue()).resolves.toBe('8');
    const saved = await page.evaluate(() => JSON.parse(localStorage.getItem('lora-lab.run-config') ?? '{}') as Record<string, unknown>);
    expect(saved).toMatchObject({ init_adapter: 'tiny-gpt2-adapter', lora_rank: 4, lora_alpha: 8, target_modules: ['c_attn', 'c_proj'] });
  });

  test('an adapter goes when its model is deleted', async () => {
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Delete tiny-gpt2' }).click();
    await page.getByRole('radio', { name: /^tiny-gpt2\b/ }).waitFor({ state: 'detached', timeout: 30_000 });
    const left = await page.evaluate(
      () =>
        new Promise<number>((resolve, reject) => {
          const open = indexedDB.open('lora-lab');
          open.onsuccess = () => {
            const request = open.result.transaction('adapters').objectStore('adapters').count();
            request.onsuccess = () => {
              open.result.close();
              resolve(request.result);
            };
            request.onerror = () => reject(request.error);
          };
          open.onerror = () => reject(open.error);
        }),
    );
    expect(left).toBe(0);
  });
});
