import { closeSync, mkdtempSync, openSync, rmSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseModelConfigText } from '../../src/core/models/config';
import { loadWeightsFromSafetensors } from '../../src/core/models/load';
import { buildModel } from '../../src/core/models/model';
import { bytesSource } from '../../src/core/safetensors';
import type { BrowserSession } from './harness';
import { fixtureBytes, importFixtureModel, openApp } from './support/train';

// Chat records whose user turns are noise the tiny licence-text model finds very unlikely, and whose replies are
// licence prose it predicts well: the masked mean and the mean over every token then differ by more than a nat.
const RECORDS = [
  { user: 'Q7#zx? qq@@ 9|~', assistant: 'The software is provided as is, without warranty of any kind.' },
  { user: '%%kV^ 3& ZZ0 ~`', assistant: 'Permission is hereby granted, free of charge, to any person.' },
  { user: 'x9 Jw? {{!}} 88', assistant: 'The above copyright notice shall be included in all copies.' },
];
const CHAT_JSONL = RECORDS.map((r) => JSON.stringify({ messages: [{ role: 'user', content: r.user }, { role: 'assistant', content: r.assistant }] })).join('\n') + '\n';
const SEQ_LEN = 128;
const BATCH_SIZE = 4;

/**
 * The run config, saved where the config form keeps it. seq_len 128 makes the three records 309 tokens = 2
 * windows, fewer than batch_size, so the first step's batch holds every window and the shuffle cannot change its
 * loss. LoRA's B starts at zero, so that loss is the base model's, whatever the learning rate.
 */
const CONFIG = {
  lora_rank: 4,
  lora_alpha: 8,
  lora_dropout: 0,
  target_modules: ['c_attn'],
  learning_rate: 0,
  lr_scheduler: 'constant',
  warmup_steps: 0,
  epochs: 1,
  max_steps: 3,
  batch_size: BATCH_SIZE,
  grad_accum_steps: 1,
  seq_len: SEQ_LEN,
  val_split: 0,
  log_steps: 1,
  eval_steps: 0,
  seed: 7,
  backend: 'wasm',
  output_dir: './output/chat-masking',
};

/**
 * The packed training stream as the fallback chat layout (Zephyr's: "<|user|>\n{content}<eos>\n" per turn) and
 * the masks should make it, written out independently of the app: tiny-gpt2's tokenizer maps each UTF-8 byte to
 * its value and <|endoftext|> to 256. Per record: the user turn and the assistant header are read only; the reply
 * and its <eos> are trained; the newline after it is read only; the separator packing adds is trained.
 */
function expectedStream(): { ids: number[]; trained: number[] } {
  const ids: number[] = [];
  const trained: number[] = [];
  const put = (part: string | number, isTrained: boolean) => {
    for (const id of typeof part === 'number' ? [part] : new TextEncoder().encode(part)) {
      ids.push(id);
      trained.push(isTrained ? 1 : 0);
    }
  };
  for (const r of RECORDS) {
    put(`<|user|>\n${r.user}`, false);
    put(256, false);
    put('\n<|assistant|>\n', false);
    put(r.assistant, true);
    put(256, true);
    put('\n', false);
    put(256, true);
  }
  return { ids, trained };
}

/**
 * Mean cross-entropy of tiny-gpt2 (loaded in Node on tfjs's cpu backend) over the windows of the stream, stepping
 * seq_len, each target counted when its token is trained (masked) or always (unmasked). Token-weighted over the
 * whole batch, as the loss of one micro-batch is.
 */
async function referenceLosses(): Promise<{ masked: number; unmasked: number; windows: number }> {
  await tf.setBackend('cpu');
  const config = parseModelConfigText(new TextDecoder().decode(fixtureBytes('tiny-gpt2/config.json')));
  const model = buildModel(config, await loadWeightsFromSafetensors(config, [bytesSource('model.safetensors', fixtureBytes('tiny-gpt2/model.safetensors'))]));
  const { ids, trained } = expectedStream();
  const windows = Math.floor((ids.length - 1) / SEQ_LEN);
  const inputs = ids.slice(0, windows * SEQ_LEN);
  const logits = model.forward(tf.tensor2d(inputs, [windows, SEQ_LEN], 'int32'));
  const logProbs = tf.logSoftmax(logits.reshape([windows * SEQ_LEN, config.vocabSize]));
  const values = (await logProbs.data()) as Float32Array;
  tf.dispose([logits, logProbs]);
  model.dispose();
  let maskedSum = 0;
  let maskedCount = 0;
  let allSum = 0;
  for (let i = 0; i < windows * SEQ_LEN; i++) {
    const nll = -values[i * config.vocabSize + ids[i + 1]!]!;
    allSum += nll;
    if (trained[i + 1] === 1) {
      maskedSum += nll;
      maskedCount++;
    }
  }
  return { masked: maskedSum / maskedCount, unmasked: allSum / (windows * SEQ_LEN), windows };
}

/** The runs and curves as the app stored them, read with the plain IndexedDB API. */
async function storedRuns(page: Page) {
  return page.evaluate(async () => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const open = indexedDB.open('lora-lab');
      open.onsuccess = () => resolve(open.result);
      open.onerror = () => reject(open.error);
    });
    const all = <T,>(store: string) =>
      new Promise<T[]>((resolve, reject) => {
        const request = db.transaction(store).objectStore(store).getAll();
        request.onsuccess = () => resolve(request.result as T[]);
        request.onerror = () => reject(request.error);
      });
    try {
      const runs = await all<{ id: string; status: string; config: { seq_len: number; learning_rate: number } }>('runs');
      const metrics = await all<{ runId: string; step: number; loss: number | null }>('metrics');
      return { runs, metrics };
    } finally {
      db.close();
    }
  });
}

const tokenTexts = (page: Page, trained: boolean) => page.getByTestId('preview-record').first().locator(`.tok[data-trained=${trained}]`).allTextContents();

let browser: BrowserSession;
let page: Page;
let scratch: string;

beforeAll(async () => {
  browser = await openApp({
    // The config as the form would have saved it; useBackend's reload then starts the app with it.
    beforeBackend: (p) => p.evaluate((config) => localStorage.setItem('lora-lab.run-config', JSON.stringify(config)), CONFIG),
  });
  page = browser.page;
  scratch = mkdtempSync(join(tmpdir(), 'lora-lab-datasets-'));
});
afterAll(async () => {
  await browser?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('datasets in the app', () => {
  test('importing waits for a model, and says why', async () => {
    await expect(page.getByTestId('dataset-needs-model').textContent()).resolves.toMatch(/Pick a model first.*tokenizer/);
    await expect(page.getByTestId('dataset-file-input').isDisabled()).resolves.toBe(true);
    await importFixtureModel(page, 'tiny-gpt2');
    await expect(page.getByTestId('dataset-file-input').isEnabled()).resolves.toBe(true);
  });

  test('a bad JSONL line is reported next to the picker, naming the file and line, and nothing is stored', async () => {
    const bad = `${CHAT_JSONL.split('\n')[0]}\n{"messages": [{"role": "user"\n`;
    await page.getByTestId('dataset-file-input').setInputFiles({ name: 'broken.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(bad) });
    const error = page.getByTestId('dataset-error');
    await expect(error.getByRole('alert').textContent({ timeout: 30_000 })).resolves.toMatch(/broken\.jsonl: line 2 is not JSON/);
    await expect(page.getByTestId('dataset-item').count()).resolves.toBe(0);
    await expect(page.getByTestId('dataset-empty').isVisible()).resolves.toBe(true);
  });

  test('a 2 GB file is refused with a message, without reading it, and the page stays usable', async () => {
    // A sparse file: 2 GiB on paper, no disk used; the app must refuse it from its size alone.
    const path = join(scratch, 'huge.jsonl');
    const fd = openSync(path, 'w');
    ftruncateSync(fd, 2 ** 31);
    closeSync(fd);
    await page.getByTestId('dataset-file-input').setInputFiles(path);
    await expect(page.getByTestId('dataset-error').getByRole('alert').textContent()).resolves.toMatch(/huge\.jsonl: is 2\.15 GB; LoRA Lab takes datasets under 2 GB/);
    await expect(page.getByTestId('dataset-item').count()).resolves.toBe(0);
  });

  test('a chat dataset imported through the picker: the preview dims and strikes through the user turns, not the replies', async () => {
    await page.getByTestId('dataset-file-input').setInputFiles({ name: 'chat.jsonl', mimeType: 'application/jsonl', buffer: Buffer.from(CHAT_JSONL) });
    const radio = page.getByRole('radio', { name: /^chat\.jsonl/ });
    await radio.waitFor({ timeout: 30_000 });
    await expect(radio.isChecked()).resolves.toBe(true);
    await expect(page.getByTestId('dataset-error').count()).resolves.toBe(0); // the earlier error went with the new import

    await page.getByTestId('preview-record').first().waitFor({ timeout: 30_000 });
    const masked = (await tokenTexts(page, false)).join('');
    const trained = (await tokenTexts(page, true)).join('');
    const first = RECORDS[0]!;
    // ↵ is how the preview draws a line break.
    expect(masked).toBe(`<|user|>↵\n${first.user}<|endoftext|>↵\n<|assistant|>↵\n↵\n`);
    expect(trained).toBe(`${first.assistant}<|endoftext|><|endoftext|>`);

    // Dimmed AND struck through (not colour alone); the replies are neither.
    const style = (trainedFlag: boolean) =>
      page.getByTestId('preview-record').first().locator(`.tok[data-trained=${trainedFlag}]`).first().evaluate((el) => {
        const s = getComputedStyle(el);
        return { opacity: Number(s.opacity), line: s.textDecorationLine };
      });
    const maskedStyle = await style(false);
    const trainedStyle = await style(true);
    expect(maskedStyle.opacity).toBeLessThan(0.8);
    expect(maskedStyle.line).toContain('line-through');
    expect(trainedStyle.opacity).toBe(1);
    expect(trainedStyle.line).not.toContain('line-through');
    // Screen readers hear where the untrained stretch starts.
    await expect(page.getByTestId('preview-record').first().locator('.sr-only').first().textContent()).resolves.toBe('[not trained:]');

    const { ids, trained: mask } = expectedStream();
    await expect(page.getByTestId('count-records').textContent()).resolves.toBe('3');
    await expect(page.getByTestId('count-windows').textContent()).resolves.toBe('2');
    await expect(page.getByTestId('count-tokens').textContent()).resolves.toBe(`${ids.length}`);
    await expect(page.getByTestId('count-trained').textContent()).resolves.toMatch(new RegExp(`^${mask.reduce((a, b) => a + b)} `));
  });

  test('after a reload the dataset is still listed and chosen, and the estimate counts its steps', async () => {
    await page.reload();
    await page.locator('[data-testid=backend] .badge[data-backend=wasm]').waitFor({ timeout: 60_000 });
    const radio = page.getByRole('radio', { name: /^chat\.jsonl/ });
    await radio.waitFor({ timeout: 30_000 });
    await expect(radio.isChecked()).resolves.toBe(true);
    await expect(page.getByTestId('dataset-item').count()).resolves.toBe(1);
    // 2 windows in batches of 4: one step per epoch; max_steps 3 wins.
    await expect.poll(() => page.getByTestId('estimate-steps').textContent(), { timeout: 30_000 }).toMatch(/^3 \(1 per epoch\)/);
    await expect(page.getByTestId('estimate-params').textContent()).resolves.toMatch(/^2\.0k/); // 2 layers × 4 × (64 + 192)
    await expect(page.getByTestId('estimate-tokens').textContent()).resolves.toBe(`${2 * SEQ_LEN}`);
    await expect(page.getByTestId('estimate-buffer').textContent()).resolves.toMatch(/WebAssembly has no per-buffer limit/);
  });

  test('training on it: the first loss is the masked mean cross-entropy, clearly not the unmasked one', async () => {
    const reference = referenceLosses();
    await page.getByRole('button', { name: 'Start training' }).click();
    await expect.poll(async () => (await storedRuns(page)).runs[0]?.status, { timeout: 60_000, interval: 250 }).toBe('completed');
    const { runs, metrics } = await storedRuns(page);
    expect(runs).toHaveLength(1);
    const run = runs[0]!;
    expect(run.config).toMatchObject({ seq_len: SEQ_LEN, learning_rate: 0 });
    const losses = metrics.filter((m) => m.runId === run.id && m.loss !== null).sort((a, b) => a.step - b.step);
    expect(losses.map((m) => m.step)).toEqual([1, 2, 3]);

    const { masked, unmasked, windows } = await reference;
    expect(windows).toBeLessThanOrEqual(BATCH_SIZE);
    expect(Math.abs(losses[0]!.loss! - masked)).toBeLessThan(1e-4);
    expect(Math.abs(masked - unmasked)).toBeGreaterThan(0.5);

    // With a measured speed, the estimate now gives a time, and says where the speed came from.
    await expect.poll(() => page.getByTestId('estimate-time').textContent(), { timeout: 30_000 }).toMatch(/(about .+|under a second) \(at [\d.,k]+ tok\/s, as run chat-masking went\)/);
  });
});
