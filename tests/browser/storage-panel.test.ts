import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { formatBytes } from '../../src/ui/format';
import type { BrowserSession } from './harness';
import { importFixtureModel, openApp, trainInPage, type TrainedRun } from './support/train';

// The Storage panel in the built app: the sizes it shows against the bytes the browser's IndexedDB actually holds
// (counted here with the raw IndexedDB API, apart from the app's code), and "Delete checkpoints" freeing exactly what
// it says while keeping the run's adapter. Trained on wasm with a tiny config, like the other run tests.

const CONFIG = [
  'base_model: tiny-gpt2', 'train_data: train.txt', 'output_dir: ./output/storage', 'lora_rank: 2', 'lora_alpha: 4',
  'target_modules: [c_attn]', 'max_steps: 4', 'batch_size: 2', 'seq_len: 16', 'log_steps: 1', 'save_steps: 2',
  'val_split: 0', 'seed: 5', 'backend: wasm',
].join('\n');

let browser: BrowserSession;
let page: Page;
let modelId: string;
let run: TrainedRun;

beforeAll(async () => {
  browser = await openApp();
  page = browser.page;
  modelId = await importFixtureModel(page, 'tiny-gpt2');
  run = await trainInPage(page, { modelId, configYaml: CONFIG, train: { name: 'train.txt', text: 'zebra quilt jinx! '.repeat(40) }, val: null });
});
afterAll(async () => browser?.close());

/** Bytes IndexedDB holds for the model and the run, read with the plain IndexedDB API in the page. */
function storedBytes(): Promise<{ model: number; checkpoints: number; checkpointChunks: number; artifacts: string[] }> {
  return page.evaluate(
    async ({ modelId, runId }) => {
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const open = indexedDB.open('lora-lab');
        open.onsuccess = () => resolve(open.result);
        open.onerror = () => reject(open.error);
      });
      const all = <T,>(store: string, range?: IDBKeyRange) =>
        new Promise<T[]>((resolve, reject) => {
          const request = db.transaction(store).objectStore(store).getAll(range);
          request.onsuccess = () => resolve(request.result as T[]);
          request.onerror = () => reject(request.error);
        });
      const ofId = (id: string) => IDBKeyRange.bound([id], [id, []]);
      const utf8 = (s: unknown) => (typeof s === 'string' ? new TextEncoder().encode(s).byteLength : 0);
      const model = (await all<{ id: string; files: Record<string, unknown> }>('models')).find((m) => m.id === modelId)!;
      const tensors = await all<{ bytes: ArrayBuffer }>('tensors', ofId(modelId));
      const chunks = await all<{ bytes: ArrayBuffer }>('checkpointChunks', ofId(runId));
      const artifacts = await all<{ path: string; bytes: ArrayBuffer }>('artifacts', ofId(runId));
      db.close();
      const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      return {
        model: sum(tensors.map((t) => t.bytes.byteLength)) + sum(Object.values(model.files).map(utf8)),
        checkpointChunks: chunks.length,
        checkpoints: sum(chunks.map((c) => c.bytes.byteLength)) + sum(artifacts.filter((a) => a.path.startsWith('checkpoint-')).map((a) => a.bytes.byteLength)),
        artifacts: artifacts.map((a) => a.path).sort(),
      };
    },
    { modelId, runId: run.runId },
  );
}

describe('the Storage panel', () => {
  test('shows what the model and the run\'s checkpoints use, and "Delete checkpoints" frees exactly that', async () => {
    expect(run.reason).toBe('completed');
    const panel = page.getByTestId('storage-panel');
    await panel.getByRole('button', { name: 'Refresh' }).click();
    const row = panel.locator(`[data-testid=storage-run][data-run-id="${run.runId}"]`);
    await row.waitFor();

    const before = await storedBytes();
    expect(before.checkpoints).toBeGreaterThan(0);
    expect(before.artifacts).toContain('adapter_model.safetensors');
    expect(before.artifacts.some((p) => p.startsWith('checkpoint-2/'))).toBe(true);
    await expect.poll(() => panel.getByTestId('storage-model').first().locator('td.size').textContent()).toBe(formatBytes(before.model));
    expect(await row.getByTestId('storage-run-checkpoints').textContent()).toBe(formatBytes(before.checkpoints));
    await expect.poll(() => panel.getByTestId('storage-estimate').textContent()).toMatch(/used of .+ allowed/);

    // One click; the message says what was freed, and that is what left IndexedDB.
    await row.getByRole('button', { name: 'Delete checkpoints of storage' }).click();
    const outcome = panel.getByTestId('storage-outcome');
    await expect.poll(() => outcome.textContent()).toMatch(/^Deleted the checkpoints of "storage"/);
    expect(await outcome.textContent()).toBe(`Deleted the checkpoints of "storage": ${formatBytes(before.checkpoints)} freed. Its adapter, logs and curves are kept.`);

    const after = await storedBytes();
    expect(after.checkpoints).toBe(0);
    expect(after.checkpointChunks).toBe(0);
    expect(after.artifacts).toEqual(before.artifacts.filter((p) => !p.startsWith('checkpoint-')));
    expect(after.artifacts).toContain('adapter_model.safetensors');
    await expect.poll(() => row.getByTestId('storage-run-checkpoints').textContent()).toBe('—');
    expect(await row.getByRole('button', { name: 'Delete checkpoints of storage' }).isDisabled()).toBe(true);
    expect(browser.errors).toEqual([]);
  });
});
