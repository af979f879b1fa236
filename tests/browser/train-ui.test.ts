import { afterAll, beforeAll, expect, test } from 'vitest';
import type { BrowserSession } from './harness';
import { importFixtureModel, openApp } from './support/train';

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openApp();
});
afterAll(async () => browser?.close());

/** The number after "Step" in the live status, e.g. "12 / 400". */
async function stepShown(): Promise<number> {
  const text = (await browser.page.getByTestId('train-status').locator('div', { hasText: 'Step' }).locator('dd').textContent()) ?? '';
  return Number(text.split('/')[0]);
}

test('a person trains from the page: start, watch it live, pause, resume, stop; the run is listed', async () => {
  const { page } = browser;
  await importFixtureModel(page, 'tiny-gpt2');
  await page.getByTestId('dataset-file-input').setInputFiles({
    name: 'phrases.txt',
    mimeType: 'text/plain',
    buffer: Buffer.from(Array.from({ length: 40 }, () => 'zebra quilt jinx! '.repeat(10)).join('\n\n')),
  });
  await page.getByTestId('dataset-item').first().waitFor({ timeout: 60_000 });

  // Through the form: a long run, so there is time to pause and stop it.
  await page.getByLabel('Max steps').fill('400');
  await page.getByLabel('Max steps').press('Tab');
  await page.getByLabel('Log every').fill('2');
  await page.getByLabel('Log every').press('Tab');
  await page.getByLabel('Learning rate', { exact: true }).fill('0.01');
  await page.getByLabel('Learning rate', { exact: true }).press('Tab');
  await page.getByRole('button', { name: 'Start training' }).click();

  await expect.poll(stepShown, { timeout: 60_000 }).toBeGreaterThanOrEqual(6);
  await expect(page.getByTestId('train-status').textContent()).resolves.toMatch(/\/ 400/);
  // Live charts: loss (raw + smoothed), learning rate, grad norm, tokens/s, and the custom perplexity metric.
  for (const title of ['Loss (nats)', 'Learning rate', 'Gradient norm', 'Tokens per second', 'train/perplexity']) {
    await expect(page.getByRole('img', { name: `${title} chart` }).locator('canvas').count()).resolves.toBe(1);
  }

  await page.getByRole('button', { name: 'Pause' }).click();
  await page.getByRole('button', { name: 'Resume' }).waitFor();
  const paused = await stepShown();
  await page.waitForTimeout(1500);
  expect(await stepShown()).toBeLessThanOrEqual(paused + 1); // at most the step in flight finishes

  await page.getByRole('button', { name: 'Resume' }).click();
  await expect.poll(stepShown, { timeout: 60_000 }).toBeGreaterThan(paused + 2);

  await page.getByRole('button', { name: 'Stop' }).click();
  await page.getByRole('button', { name: 'Start training' }).waitFor({ timeout: 60_000 });
  const stoppedAt = await stepShown();
  expect(stoppedAt).toBeLessThan(400);
  await expect(page.getByTestId('train-status').textContent()).resolves.toMatch(/stopped/);

  // The run is stored with where it stopped, and its files can be zipped.
  const row = page.getByTestId('run-item').first();
  await expect(row.textContent()).resolves.toMatch(new RegExp(`stopped[\\s\\S]*${stoppedAt} / 400`));

  // Duplicate with changes: the stopped run's config comes back into the form under a new name,
  // with the cursor on the learning rate.
  await page.getByRole('button', { name: /^Duplicate .* with changes$/ }).first().click();
  await expect(page.getByLabel('Output dir').inputValue()).resolves.toBe('./output/run-copy');
  await expect(page.getByLabel('Learning rate', { exact: true }).inputValue()).resolves.toBe('0.01');
  await expect(page.evaluate(() => document.activeElement?.id)).resolves.toBe('config-learning_rate');
  expect(browser.errors).toEqual([]);
});

test('the YAML view and the form edit one config; aliases are named, unknown keys get a suggestion', async () => {
  const { page } = browser;
  await page.getByText('YAML (lora-scripts / LLaMA-Factory keys accepted)').click();
  const yaml = page.getByLabel('Run config as YAML');
  await yaml.fill('num_train_epochs: 3\nnetwork_dim: 16\nlearning_rate: "2e-4"\noutput_dir: ./output/lr_2e-4\n');
  await page.getByRole('button', { name: 'Apply YAML' }).click();
  await expect(page.getByLabel('Epochs').inputValue()).resolves.toBe('3');
  await expect(page.getByLabel('Rank').inputValue()).resolves.toBe('16');
  await expect(page.getByLabel('Learning rate', { exact: true }).inputValue()).resolves.toBe('0.0002');
  const notes = await page.locator('.notes').textContent();
  expect(notes).toContain('num_train_epochs → epochs');
  expect(notes).toContain('network_dim → lora_rank');

  // The form writes back into the YAML text.
  await page.getByLabel('Seed').fill('7');
  await page.getByLabel('Seed').press('Tab');
  await expect(yaml.inputValue()).resolves.toMatch(/^seed: 7\b/m);

  await yaml.fill('lora_rnak: 8\n');
  await page.getByRole('button', { name: 'Apply YAML' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'lora_rnak' }).textContent()).resolves.toMatch(/did you mean lora_rank/);
  await expect(page.getByLabel('Rank').inputValue()).resolves.toBe('16'); // nothing applied
});
