import { readFileSync } from 'node:fs';
import type { Page } from 'playwright-core';
import type { ExportedFile, RunEvent } from '../../../src/worker/protocol';
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
    return { ...run, events, files: files.map((f: ExportedFile) => ({ path: f.path, bytes: Array.from(f.bytes) })) };
  }, request);
  return { ...result, files: new Map(result.files.map((f) => [f.path, Uint8Array.from(f.bytes)])) };
}

export function fixtureBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(`${MODELS_DIR}${path}`));
}
