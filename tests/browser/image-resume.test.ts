import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { readEventFile, scalarSeries } from '../../src/core/logging';
import { isSessionStart } from '../../src/core/logging/session-log';
import type { RunEvent } from '../../src/worker/protocol';
import type { BrowserSession } from './harness';
import { SD_DIR } from './support/fixtures';
import { openApp, startedApp } from './support/train';
import { curvesOf, eventsOf, exportedFiles, storedRuns } from './support/run-files';

// An image run's exact resume in the real app (wasm): a tab training an image LoRA on the library's tiny-sd and
// stripes folder is closed mid-run with no stop and no pause; a new tab of the same profile shows the run
// interrupted with a Resume button, and resuming it from the Runs panel finishes it from its last checkpoint with
// what the same run writes when nothing interrupts it: the same adapter bytes, curves (each step once) and events.

const STEPS = 12;
const CONFIG = [
  'backend: wasm',
  'output_dir: ./output/image-resume',
  'resolution: 32',
  'lora_rank: 4',
  'lora_alpha: 4',
  'lora_dropout: 0.1',
  'learning_rate: 3e-3',
  'batch_size: 4',
  `max_steps: ${STEPS}`,
  'flip_aug: true',
  'save_steps: 3',
  'log_steps: 1',
  'seed: 9',
].join('\n');

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openApp();
});
afterAll(async () => browser?.close());

/** A fixture folder into the image library through the app's own requests (importDiffusionModel / importImageDataset); its id. */
async function importFolder(page: Page, dir: string, request: 'importDiffusionModel' | 'importImageDataset'): Promise<string> {
  await page.evaluate(() => {
    const input = Object.assign(document.createElement('input'), { type: 'file', multiple: true, webkitdirectory: true });
    input.dataset.testid = 'fixture-folder';
    document.body.append(input);
  });
  await page.locator('[data-testid=fixture-folder]').setInputFiles(dir);
  return page.evaluate(async (kind) => {
    const input = document.querySelector<HTMLInputElement>('[data-testid=fixture-folder]')!;
    // Paths inside the folder, without the folder's own name (as the panel's picker gives them).
    const files = [...input.files!].map((file) => ({ path: file.webkitRelativePath.split('/').slice(1).join('/'), file }));
    const name = input.files![0]!.webkitRelativePath.split('/')[0]!;
    input.remove();
    return kind === 'importDiffusionModel'
      ? (await window.loraLab!.call('importDiffusionModel', { name, files })).model.id
      : (await window.loraLab!.call('importImageDataset', { name, files })).dataset.id;
  }, request);
}

test('an image run whose tab closed mid-run is resumed from the Runs panel and writes what an uninterrupted run writes', async () => {
  const trainer = browser.page;
  const modelId = await importFolder(trainer, join(SD_DIR, 'tiny-sd'), 'importDiffusionModel');
  const datasetId = await importFolder(trainer, join(SD_DIR, 'data-stripes'), 'importImageDataset');
  const request = { model: { modelId }, train: { datasetId }, val: null, configYaml: CONFIG };

  // The run starts; the tab goes away once a few checkpoints are stored, without a word to the worker.
  await trainer.evaluate((payload) => {
    const w = window as unknown as { lastStep: number };
    w.lastStep = 0;
    void window.loraLab!.call('trainImages', payload, { onEvent: (e: RunEvent) => void (e.kind === 'step' && (w.lastStep = e.step)) });
  }, request);
  await expect.poll(() => trainer.evaluate(() => (window as unknown as { lastStep: number }).lastStep), { timeout: 180_000, interval: 50 }).toBeGreaterThanOrEqual(7);
  await trainer.close();

  const viewer = await browser.context.newPage();
  await expect
    .poll(
      async () => {
        await startedApp(viewer);
        return (await storedRuns(viewer)).map((r) => r.status);
      },
      { timeout: 30_000, interval: 1000 },
    )
    .toEqual(['interrupted']);
  const [interrupted] = await storedRuns(viewer);
  const row = viewer.getByTestId('run-item').first();
  await row.getByRole('button', { name: /^Resume / }).click();
  await expect.poll(async () => (await storedRuns(viewer))[0]?.status, { timeout: 180_000, interval: 500 }).toBe('completed');

  const [run] = await storedRuns(viewer);
  expect(run!.interruptions).toHaveLength(1);
  const { at_step, resumed_from_step } = run!.interruptions![0]!;
  console.info(`image run interrupted after step ${at_step}, resumed from step ${resumed_from_step}`);
  // Checkpoints every 3 steps: it resumed from the last one the dead tab stored, at or before where it died.
  expect(resumed_from_step % 3).toBe(0);
  expect(resumed_from_step).toBeGreaterThanOrEqual(6);
  expect(at_step).toBeGreaterThanOrEqual(resumed_from_step);
  await expect.poll(() => row.getByTestId('run-interruptions').textContent()).toBe(`interrupted after step ${at_step}, resumed from step ${resumed_from_step}`);
  await expect(row.getByRole('button', { name: /^Resume / }).count()).resolves.toBe(0);

  const resumed = await exportedFiles(viewer, interrupted!.id);
  const straight = await viewer.evaluate(async (payload) => {
    const done = await window.loraLab!.call('trainImages', payload);
    return done.runId;
  }, request);
  const expected = await exportedFiles(viewer, straight);
  for (const path of ['adapter_model.safetensors', 'adapter_config.json', 'diagnosis.json', 'config.yaml']) expect(resumed.get(path), path).toEqual(expected.get(path));
  expect(curvesOf(resumed)).toEqual(curvesOf(expected));
  expect(curvesOf(resumed).slice(1).map((r) => Number(r[0]))).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
  expect(eventsOf(resumed)).toEqual(eventsOf(expected));
  const logPath = [...resumed.keys()].find((p) => p.startsWith('logs/'))!;
  const raw = readEventFile(logPath, resumed.get(logPath)!);
  expect(scalarSeries(raw).get('train/loss')!.map((p) => p.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
  expect(raw.filter(isSessionStart).map((e) => e.step)).toEqual([resumed_from_step + 1]);
  expect(browser.errors).toEqual([]);
});
