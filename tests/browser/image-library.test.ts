import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { ldmSingleFile } from '../unit/support/ldm-single-file';
import type { BrowserSession } from './harness';
import { SD_DIR } from './support/fixtures';
import { waitInPanel } from './support/image-panel';
import { openApp } from './support/train';

// The image library's other paths, as a person meets them: files the worker refuses (a single-file checkpoint that
// is not SD 1.5, an adapter folder without an adapter) leave a clear error and the library as it was; a PEFT
// folder imports beside a kohya file; deleting a model asks first and takes its LoRAs and the choice with it.

let browser: BrowserSession;

beforeAll(async () => {
  browser = await openApp();
}, 120_000);

afterAll(() => browser?.close());

const alertText = (panel: import('playwright-core').Locator) => panel.locator('.error[role=alert]').first().textContent();

test('refused imports say why and store nothing; kohya and PEFT LoRAs list with their shapes and are deleted one by one; a model is deleted once confirmed', async () => {
  const { page } = browser;
  const panel = page.getByTestId('image-lora');
  const library = panel.getByTestId('image-library');
  const models = library.getByRole('list', { name: 'Stable Diffusion 1.x models' });

  // tiny-sd as one LDM checkpoint, picked with its tokenizer files: read as a single file, checked against SD 1.5's
  // shapes (the only single-file layout the app knows), and refused; nothing is listed.
  const tokenizer = (name: string) => ({ name, mimeType: 'application/octet-stream', buffer: readFileSync(join(SD_DIR, 'tiny-sd', 'tokenizer', name)) });
  await library.getByTestId('image-model-files').setInputFiles([
    { name: 'tiny-ldm.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from(ldmSingleFile()) },
    tokenizer('vocab.json'),
    tokenizer('merges.txt'),
  ]);
  await panel.locator('.error[role=alert]').first().waitFor({ timeout: 60_000 });
  // Its LDM names were mapped (model.diffusion_model.*) with SD 1.5's UNet config, which has blocks tiny-sd lacks.
  expect(await alertText(panel)).toMatch(/^Could not use this input\s*tiny-ldm\.safetensors: tensor "model\.diffusion_model\.[\w.]+" is missing/);
  expect(await models.count()).toBe(0);
  expect(await library.getByText('No models yet').count()).toBe(1);
  await panel.getByRole('button', { name: 'Dismiss' }).click();

  await panel.getByTestId('image-model-folder').setInputFiles(join(SD_DIR, 'tiny-sd'));
  await waitInPanel(panel, library.getByRole('radio', { name: /^tiny-sd\b/, checked: true }), 'the model import', 60_000);

  // An image folder is no adapter: refused with the adapter's fix, nothing stored.
  await library.getByTestId('image-adapter-folder').setInputFiles(join(SD_DIR, 'data-stripes-heldout'));
  await panel.locator('.error[role=alert]').first().waitFor({ timeout: 60_000 });
  expect(await alertText(panel)).toMatch(/has no \.safetensors file and no adapter_config\.json/);
  expect(await library.getByRole('list', { name: 'Image LoRAs of tiny-sd' }).count()).toBe(0);
  await panel.getByRole('button', { name: 'Dismiss' }).click();

  // The fixture's two LoRAs (the same tensors as kohya and PEFT files): both r 4, alpha 4 on the 48 UNet attention projections.
  await library.getByTestId('image-adapter-file').setInputFiles(join(SD_DIR, 'adapters', 'stripes-kohya.safetensors'));
  const adapters = library.getByRole('list', { name: 'Image LoRAs of tiny-sd' }).getByRole('listitem');
  await waitInPanel(panel, adapters.first(), 'the kohya import', 60_000);
  await library.getByTestId('image-adapter-folder').setInputFiles(join(SD_DIR, 'adapters', 'stripes-peft'));
  await expect.poll(() => adapters.count(), { timeout: 60_000 }).toBe(2);
  const shown = (await adapters.allTextContents()).map((t) => t.replace(/\s+/g, ' ').trim());
  expect(shown).toEqual([
    expect.stringMatching(/^stripes-peft PEFT · r 4 · alpha 4 · 48 UNet modules · /),
    expect.stringMatching(/^stripes-kohya kohya · r 4 · alpha 4 · 48 UNet modules · /),
  ]);
  expect(await panel.locator('.error[role=alert]').count()).toBe(0);

  // Start from one, then start fresh: the YAML gets init_adapter, then loses it.
  await library.getByRole('button', { name: 'Start from stripes-peft' }).click();
  expect(await panel.getByTestId('image-config').inputValue()).toMatch(/^init_adapter: stripes-peft\s+#/m);
  await library.getByRole('button', { name: 'Start fresh instead of from stripes-peft' }).click();
  expect(await panel.getByTestId('image-config').inputValue()).not.toMatch(/^init_adapter:/m);

  // Deleting the LoRA the run starts from asks first, removes it from the library and starts the run fresh.
  await library.getByRole('button', { name: 'Start from stripes-kohya' }).click();
  const askedForLora: string[] = [];
  page.once('dialog', (d) => {
    askedForLora.push(d.message());
    void d.accept();
  });
  await library.getByRole('button', { name: 'Delete stripes-kohya' }).click();
  await expect.poll(() => adapters.count(), { timeout: 30_000 }).toBe(1);
  expect(askedForLora).toEqual([expect.stringMatching(/^Delete the image LoRA "stripes-kohya" of tiny-sd/)]);
  expect(await adapters.first().textContent()).toMatch(/stripes-peft/);
  expect(await panel.getByTestId('image-config').inputValue()).not.toMatch(/^init_adapter:/m);
  const modelId = await library.getByRole('radio', { name: /^tiny-sd\b/ }).getAttribute('value');
  const stored = await page.evaluate((id) => window.loraLab!.call('listImageAdapters', { modelId: id! }), modelId);
  expect(stored.adapters.map((a) => a.name)).toEqual(['stripes-peft']);

  // Declining the confirmation keeps the model; accepting deletes it, its LoRAs and the choice.
  page.once('dialog', (d) => void d.dismiss());
  await library.getByRole('button', { name: 'Delete tiny-sd' }).click();
  await page.waitForTimeout(500);
  expect(await models.getByRole('listitem').count()).toBe(1);
  const asked: string[] = [];
  page.once('dialog', (d) => {
    asked.push(d.message());
    void d.accept();
  });
  await library.getByRole('button', { name: 'Delete tiny-sd' }).click();
  await expect.poll(() => models.count(), { timeout: 30_000 }).toBe(0);
  expect(asked).toEqual([expect.stringMatching(/^Delete the model "tiny-sd" from this browser/)]);
  expect(await library.getByRole('list', { name: /^Image LoRAs/ }).count()).toBe(0);
  expect(await page.evaluate(() => localStorage.getItem('lora-lab.image-model'))).toBe(null);
  // After a reload the deletion holds (the library is IndexedDB).
  await page.reload();
  await library.getByText('No models yet').waitFor({ timeout: 60_000 });
  expect(browser.errors).toEqual([]);
}, 300_000);
