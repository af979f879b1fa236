import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { lockName } from '../../src/storage/locks';
import type { BrowserSession } from './harness';
import { importFixtureModel, openApp, startedApp } from './support/train';

// One owner per run, with real Web Locks across two tabs of one browser profile: the training tab refuses a
// second run and anything that would unload its model (and the page disables those controls); a second tab
// starting up leaves the live run alone; once the training tab is gone, the run reads as interrupted and can be
// downloaded and deleted. Imports: a second tab's start-up sweep skips an import whose lock a live tab holds.
// On wasm: SwiftShader WebGPU is too slow on a 2-core machine for a run that must keep going for a while.

let browser: BrowserSession;
beforeAll(async () => {
  browser = await openApp();
});
afterAll(async () => browser?.close());

/** The number after "Step" in the live status, e.g. "12 / 5000". */
async function stepShown(page: Page): Promise<number> {
  const text = (await page.getByTestId('train-status').locator('div', { hasText: 'Step' }).locator('dd').textContent()) ?? '';
  return Number(text.split('/')[0]);
}

/** Every record of an object store of the app's database, read with the plain IndexedDB API. */
async function storedRecords<T>(page: Page, store: string): Promise<T[]> {
  return page.evaluate(
    (name) =>
      new Promise<T[]>((resolve, reject) => {
        const open = indexedDB.open('lora-lab');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const request = open.result.transaction(name, 'readonly').objectStore(name).getAll();
          request.onsuccess = () => {
            open.result.close();
            resolve(request.result as T[]);
          };
          request.onerror = () => reject(request.error);
        };
      }),
    store,
  );
}

/** A worker request through the app's own client; resolves with its error message, or null if it succeeded. */
async function refusalOf(page: Page, type: string, payload: unknown): Promise<string | null> {
  return page.evaluate(
    async ({ type, payload }) => {
      try {
        await window.loraLab!.call(type as never, payload as never);
        return null;
      } catch (e) {
        return (e as Error).message;
      }
    },
    { type, payload },
  );
}

test('one run per worker, its model pinned; a second tab leaves the live run alone; a closed tab\'s run becomes interrupted', async () => {
  const trainer = browser.page;
  const llamaId = await importFixtureModel(trainer, 'tiny-llama');
  const gpt2Id = await importFixtureModel(trainer, 'tiny-gpt2');
  await trainer.getByRole('radio', { name: /^tiny-gpt2\b/ }).check();
  await trainer.getByTestId('dataset-file-input').setInputFiles({
    name: 'phrases.txt',
    mimeType: 'text/plain',
    buffer: Buffer.from(Array.from({ length: 40 }, () => 'zebra quilt jinx! '.repeat(10)).join('\n\n')),
  });
  await trainer.getByTestId('dataset-item').first().waitFor({ timeout: 60_000 });
  await trainer.getByLabel('Max steps').fill('5000');
  await trainer.getByLabel('Max steps').press('Tab');
  await trainer.getByRole('button', { name: 'Start training' }).click();
  await expect.poll(() => stepShown(trainer), { timeout: 60_000 }).toBeGreaterThanOrEqual(2);

  // The worker refuses, with a message, what would start a second run or unload this one's model.
  const train = { modelId: gpt2Id, configYaml: 'max_steps: 2\nbackend: wasm\n', trainData: { datasetId: 'none' }, valData: null };
  expect(await refusalOf(trainer, 'train', train)).toMatch(/^training: is already running: LoRA Lab trains one run at a time\./);
  const predict = { modelId: llamaId, prompt: 'hi', topK: 3, maxNewTokens: 2, temperature: 0, seed: 1 };
  expect(await refusalOf(trainer, 'predict', predict)).toMatch(/^model: cannot be loaded while a run trains on "tiny-gpt2"/);
  expect(await refusalOf(trainer, 'logits', { modelId: llamaId, tokens: [1, 2] })).toMatch(/while a run trains/);
  expect(await refusalOf(trainer, 'deleteModel', { modelId: gpt2Id })).toMatch(/^model: cannot be deleted while a run trains on it\./);
  // The run's own model still answers (it shares the loaded weights), and another model can be deleted.
  expect(await refusalOf(trainer, 'logits', { modelId: gpt2Id, tokens: [1, 2] })).toBeNull();

  // The page disables what the worker would refuse.
  await expect(trainer.getByRole('button', { name: 'Delete tiny-gpt2' }).isDisabled()).resolves.toBe(true);
  await expect(trainer.getByRole('button', { name: 'Delete tiny-llama' }).isDisabled()).resolves.toBe(false);
  await expect(trainer.getByTestId('backend').locator('select').isDisabled()).resolves.toBe(true);
  await trainer.getByRole('radio', { name: /^tiny-llama\b/ }).check();
  await expect(trainer.getByRole('button', { name: 'Run', exact: true }).isDisabled()).resolves.toBe(true);
  await trainer.getByTestId('playground-blocked').waitFor();

  // A second tab starts up while the run trains: its sweep leaves the run running, and it cannot delete the model.
  const viewer = await browser.context.newPage();
  await startedApp(viewer);
  const [live] = await storedRecords<{ id: string; status: string }>(viewer, 'runs');
  expect(live?.status).toBe('running');
  expect(await refusalOf(viewer, 'deleteModel', { modelId: gpt2Id })).toMatch(/^model: cannot be deleted while the run ".*" trains on it in another tab\./);
  const item = viewer.getByTestId('run-item').first();
  await expect(item.locator('.badge').textContent()).resolves.toBe('running');
  await expect(item.getByRole('button', { name: /^Delete / }).isDisabled()).resolves.toBe(true);

  // The training tab goes away mid-run, without a word. Its worker and its lock go with it.
  await trainer.close();
  // Reloads until the sweep finds the lock free: the browser drops a closed tab's locks soon, not synchronously.
  await expect
    .poll(
      async () => {
        await startedApp(viewer);
        return (await storedRecords<{ id: string; status: string }>(viewer, 'runs')).map((r) => `${r.id}:${r.status}`);
      },
      { timeout: 30_000, interval: 1000 },
    )
    .toEqual([`${live!.id}:interrupted`]);
  const row = viewer.getByTestId('run-item').first();
  await expect.poll(() => row.locator('.badge').textContent()).toBe('interrupted');
  await expect(row.getByRole('button', { name: /^Download .* as a zip$/ }).isDisabled()).resolves.toBe(false);
  await row.getByRole('button', { name: /^Delete / }).click();
  await row.getByRole('group', { name: /^Confirm deleting/ }).getByRole('button', { name: 'Delete' }).click();
  await expect.poll(async () => (await storedRecords(viewer, 'runs')).length).toBe(0);

  // With no run left, the model can be deleted again.
  expect(await refusalOf(viewer, 'deleteModel', { modelId: gpt2Id })).toBeNull();
  expect(browser.errors.filter((e) => !/cannot be|already running/.test(e))).toEqual([]);
});

test('a second tab\'s start-up sweep skips an import that a live tab holds the lock of', async () => {
  const holder = await browser.context.newPage();
  await startedApp(holder);
  const id = 'import-in-progress';
  const name = lockName.modelImport(id);
  // What an importing tab has: a model record still marked importing, one slice written, and the import's lock.
  await holder.evaluate(
    ({ id, name }) =>
      new Promise<void>((resolve, reject) => {
        const open = indexedDB.open('lora-lab');
        open.onsuccess = () => {
          const tx = open.result.transaction(['models', 'tensors'], 'readwrite');
          tx.objectStore('models').put({ id, name: 'half imported', status: 'importing', arch: 'gpt2', parameterCount: 0, sizeBytes: 4, importedAt: Date.now(), files: { config: '{}', tokenizer: '{}', tokenizerConfig: null }, tensors: [] });
          tx.objectStore('tensors').put({ modelId: id, tensor: 'wte', index: 0, bytes: new ArrayBuffer(4) });
          tx.oncomplete = () => {
            open.result.close();
            // Held until this tab closes, as an import in progress holds it.
            void navigator.locks.request(name, () => new Promise<void>(() => undefined));
            resolve();
          };
          tx.onerror = () => reject(tx.error);
        };
      }),
    { id, name },
  );
  await holder.waitForFunction(async (lock) => ((await navigator.locks.query()).held ?? []).some((l) => l.name === lock), name);

  const other = await browser.context.newPage();
  await startedApp(other);
  expect((await storedRecords<{ id: string }>(other, 'models')).map((m) => m.id)).toContain(id);
  expect((await storedRecords<{ modelId: string }>(other, 'tensors')).filter((t) => t.modelId === id)).toHaveLength(1);

  // The importing tab dies: the next start-up sweeps its leftovers.
  await holder.close();
  await expect
    .poll(
      async () => {
        await startedApp(other);
        return (await storedRecords<{ id: string }>(other, 'models')).map((m) => m.id);
      },
      { timeout: 30_000, interval: 1000 },
    )
    .not.toContain(id);
  expect((await storedRecords<{ modelId: string }>(other, 'tensors')).filter((t) => t.modelId === id)).toHaveLength(0);
  await other.close();
});
