import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import type { Page } from 'playwright-core';
import { openBrowser, type BrowserSession } from './harness';
import { MODELS_DIR, expectedOutputs, maxAbsDiff } from './support/fixtures';

// The app on the dev server, so the test can also reach its storage modules to set up a finished run.
let browser: BrowserSession;
let page: Page;
const devUrl = inject('devUrl');
const RUN_ID = 'playground-run';

beforeAll(async () => {
  browser = await openBrowser();
  page = browser.page;
  await page.goto(devUrl);
});
afterAll(async () => browser?.close());

type Source = { kind: 'run'; runId: string };
const run: Source = { kind: 'run', runId: RUN_ID };

async function workerLogits(modelId: string, tokens: number[], adapter?: { source: Source; scale: number }): Promise<number[]> {
  return page.evaluate(
    async ({ modelId, tokens, adapter }) => {
      await window.loraLab!.ready;
      const { logits } = await window.loraLab!.call('logits', adapter ? { modelId, tokens, adapter } : { modelId, tokens });
      return Array.from(logits);
    },
    { modelId, tokens, adapter },
  );
}

/** A finished run on `modelId` as the trainer leaves it in IndexedDB: its record and its PEFT adapter files (the fixture's). */
async function storeFinishedRun(modelId: string): Promise<void> {
  const files = Object.fromEntries(
    ['adapter_config.json', 'adapter_model.safetensors'].map((f) => [f, readFileSync(`${MODELS_DIR}tiny-gpt2-adapter/${f}`).toString('base64')]),
  );
  // Source text, not a function: vitest would rewrite import() inside a function passed to evaluate.
  await page.evaluate(`(async () => {
    const { openDatabase } = await import('/src/storage/db.ts');
    const { putRun, putArtifact } = await import('/src/storage/runs.ts');
    const db = await openDatabase();
    await putRun(db, { id: ${JSON.stringify(RUN_ID)}, name: 'tuned', modelId: ${JSON.stringify(modelId)}, modelName: 'tiny-gpt2', status: 'completed',
      config: null, createdAt: Date.now(), updatedAt: Date.now(), backend: 'wasm', step: 1, totalSteps: 1, bestEvalLoss: null, findings: [], logFile: null, error: null });
    const files = ${JSON.stringify(files)};
    for (const [path, b64] of Object.entries(files)) await putArtifact(db, ${JSON.stringify(RUN_ID)}, path, Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
  })()`);
}

function softmax(row: readonly number[]): number[] {
  const max = Math.max(...row);
  const e = row.map((x) => Math.exp(x - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / sum);
}

describe('the playground side by side', () => {
  let modelId = '';

  test('through the worker: scale 1 gives the fixture adapter\'s logits, scale 0 the base model\'s exactly', async () => {
    await page.locator('[data-testid=backend] .badge[data-backend]').waitFor({ timeout: 120_000 });
    await page.locator('[data-testid=model-folder-input]').setInputFiles(`${MODELS_DIR}tiny-gpt2`);
    const entry = page.getByRole('radio', { name: /^tiny-gpt2\b/ });
    await entry.waitFor({ timeout: 60_000 });
    modelId = await entry.inputValue();
    await storeFinishedRun(modelId);
    const expected = expectedOutputs('tiny-gpt2');
    const one = await workerLogits(modelId, expected.tokens, { source: run, scale: 1 });
    expect(maxAbsDiff(one, expected.logits_with_adapter!)).toBeLessThan(1e-4);
    const zero = await workerLogits(modelId, expected.tokens, { source: run, scale: 0 });
    expect(zero).toEqual(await workerLogits(modelId, expected.tokens));
    expect(maxAbsDiff(zero, expected.logits_base)).toBeLessThan(1e-4);
  });

  test('shows both columns; each token\'s probability on hover or focus is the softmax of the worker\'s logits', async () => {
    // A reload lists the stored run in the playground's picker (the run list is read at start).
    await page.reload();
    await page.getByRole('radio', { name: /^tiny-gpt2\b/ }).check();
    const prompt = 'It was a bright cold day';
    await page.getByLabel(/Prompt for/).fill(prompt);
    await page.getByLabel('New tokens').fill('4');
    await page.getByTestId('playground-adapter').selectOption({ label: 'Run tuned' });
    const slider = page.getByTestId('playground-scale');
    await slider.focus();
    await page.keyboard.press('ArrowLeft'); // keyboard-usable: 1 → 0.95
    await expect(slider.inputValue()).resolves.toBe('0.95');
    await page.keyboard.press('ArrowRight');
    await expect(slider.inputValue()).resolves.toBe('1');
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await page.getByTestId('playground-compare').waitFor({ timeout: 120_000 });

    for (const [column, scale] of [['playground-base', 0], ['playground-adapted', 1]] as const) {
      const tokens = page.getByTestId(column).locator('.tok');
      expect(await tokens.count()).toBe(4);
      const ids = [...new TextEncoder().encode(prompt)];
      for (let i = 0; i < 4; i++) {
        const tok = tokens.nth(i);
        const id = Number(await tok.getAttribute('data-id'));
        const logits = await workerLogits(modelId, ids, { source: run, scale });
        const probs = softmax(logits.slice((ids.length - 1) * 257, ids.length * 257));
        expect(Math.abs(Number(await tok.getAttribute('data-prob')) - probs[id]!)).toBeLessThan(1e-6);
        // On screen: focusing the token shows its tooltip, with the chosen probability and the alternatives.
        await tok.focus();
        const tip = tok.locator('.tip');
        await expect(tip.isVisible()).resolves.toBe(true);
        const best = probs.map((p, j) => ({ p, j })).sort((a, b) => b.p - a.p);
        const alts = await tip.locator('.alt').evaluateAll((els) => els.map((e) => Number(e.getAttribute('data-prob'))));
        expect(alts.length).toBe(5);
        alts.forEach((p, k) => expect(Math.abs(p - best[k]!.p)).toBeLessThan(1e-6));
        const shownPercent = (probs[id]! * 100 >= 0.1 ? (probs[id]! * 100).toFixed(1) : (probs[id]! * 100).toPrecision(2)) + '%';
        await expect(tip.textContent()).resolves.toContain(shownPercent);
        ids.push(id);
      }
    }
    await page.getByTestId('playground-base').locator('.tok').first().hover();
    await expect(page.getByTestId('playground-base').locator('.tok').first().locator('.tip').isVisible()).resolves.toBe(true);
  });

  test('"Merge into a model" on the finished run writes merged/ into its stored output', async () => {
    const merge = page.getByRole('button', { name: "Merge tuned's adapter into its base model" });
    await merge.click();
    await page.getByRole('status').filter({ hasText: /Merged model written: 5 files in merged\// }).waitFor({ timeout: 60_000 });
    // Read straight from the run's stored output (exportRun would also build the bundle, which needs a real run config).
    const paths = (await page.evaluate(`(async () => {
      const { openDatabase } = await import('/src/storage/db.ts');
      const { readArtifacts } = await import('/src/storage/runs.ts');
      return (await readArtifacts(await openDatabase(), ${JSON.stringify(RUN_ID)})).map((a) => a.path).filter((p) => p.startsWith('merged/')).sort();
    })()`)) as string[];
    expect(paths).toEqual(['merged/config.json', 'merged/generation_config.json', 'merged/model.safetensors', 'merged/tokenizer.json', 'merged/tokenizer_config.json']);
  });
});
