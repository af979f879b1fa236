import { readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { inject } from 'vitest';
import type { RunEvent } from '../../../src/worker/protocol';
import { openBrowser, type BrowserSession } from '../harness';
import { MODELS_DIR } from './fixtures';

export interface TrainedRun {
  readonly runId: string;
  readonly reason: string;
  readonly steps: number;
  readonly events: RunEvent[];
  readonly files: Map<string, Uint8Array>;
}

/** Sets the engine's backend before the app starts (the setting the Backend menu writes). */
export async function useBackend(page: Page, backend: 'webgpu' | 'wasm'): Promise<void> {
  await page.evaluate((b) => localStorage.setItem('lora-lab.backend', b), backend);
  await page.reload();
  await page.locator(`[data-testid=backend] .badge[data-backend=${backend}]`).waitFor({ timeout: 60_000 });
}

/**
 * A fresh browser on the app (appUrl), its engine on `backend` (useBackend: set, reload, wait for the badge).
 * `viewport` is set before the app loads; `beforeBackend` runs on the loaded app before useBackend's reload (e.g. to
 * put settings in localStorage that the app reads as it starts). If a step fails, the browser is closed.
 */
export async function openApp(
  options: { backend?: 'webgpu' | 'wasm'; viewport?: { width: number; height: number }; beforeBackend?: (page: Page) => Promise<unknown> } = {},
): Promise<BrowserSession> {
  const browser = await openBrowser();
  try {
    if (options.viewport) await browser.page.setViewportSize(options.viewport);
    await browser.page.goto(inject('appUrl'));
    await options.beforeBackend?.(browser.page);
    await useBackend(browser.page, options.backend ?? 'wasm');
    return browser;
  } catch (e) {
    await browser.close();
    throw e;
  }
}

/** Loads the app (appUrl) in `page` and waits until its engine is ready (window.loraLab.ready). */
export async function startedApp(page: Page): Promise<void> {
  await page.goto(inject('appUrl'));
  await page.waitForFunction(() => window.loraLab !== undefined);
  await page.evaluate(() => window.loraLab!.ready);
}

/** Presses "Try the demo" and waits until its set-up has finished: the demo model chosen and the button back. */
export async function tryTheDemo(page: Page): Promise<void> {
  await page.getByRole('button', { name: 'Try the demo' }).click();
  await page.getByRole('radio', { name: /^demo-gpt2-moby-dick\b/, checked: true }).waitFor({ timeout: 60_000 });
  await page.getByRole('button', { name: 'Try the demo' }).waitFor({ timeout: 60_000 }); // set-up finished
}

/** Imports a fixture model folder through the app's folder picker; returns its id. */
export async function importFixtureModel(page: Page, folder: string): Promise<string> {
  await page.locator('[data-testid=model-folder-input]').setInputFiles(`${MODELS_DIR}${folder}`);
  const entry = page.getByRole('radio', { name: new RegExp(`^${folder}\\b`) });
  await entry.waitFor({ timeout: 60_000 });
  return entry.inputValue();
}

/** Trains through window.loraLab (the app's own request) and brings the run's output folder back. */
export async function trainInPage(
  page: Page,
  request: { modelId: string; configYaml: string; train: { name: string; text: string }; val: { name: string; text: string } | null },
): Promise<TrainedRun> {
  const result = await page.evaluate(async ({ modelId, configYaml, train, val }) => {
    const events: RunEvent[] = [];
    const run = await window.loraLab!.call(
      'train',
      { modelId, configYaml, trainData: new File([train.text], train.name), valData: val ? new File([val.text], val.name) : null },
      { onEvent: (e) => events.push(e) },
    );
    const { files } = await window.loraLab!.call('exportRun', { runId: run.runId });
    // A merged model's files come as Blobs (OutputFile): read whole here, the test files are small.
    const bytesOf = async (b: Uint8Array | Blob) => Array.from(b instanceof Blob ? new Uint8Array(await b.arrayBuffer()) : b);
    return { ...run, events, files: await Promise.all(files.map(async (f) => ({ path: f.path, bytes: await bytesOf(f.bytes) }))) };
  }, request);
  return { ...result, files: new Map(result.files.map((f) => [f.path, Uint8Array.from(f.bytes)])) };
}

export function fixtureBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(`${MODELS_DIR}${path}`));
}
