import { mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { unzipSync } from 'fflate';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { EventFileWriter } from '../../src/core/logging';
import type { BrowserSession } from './harness';
import { importFixtureModel, openApp, trainInPage, type TrainedRun } from './support/train';

// Comparing runs, as a person does it in the Result step: two runs that differ only in learning_rate,
// overlaid; then TensorBoard logs from elsewhere, imported through the picker. Trained on wasm with tiny
// configs: SwiftShader WebGPU is too slow on a 2-core machine for a test that trains twice.

const TFEVENTS = fileURLToPath(new URL('../../../shared/fixtures/tfevents/', import.meta.url));
const EVENT_FILE = 'events.out.tfevents.1700000000.golden.0.0';
const STEPS = 8;

const text = 'zebra quilt jinx! '.repeat(12);
const trainText = Array.from({ length: 6 }, () => text).join('\n\n');

function configYaml(learningRate: string): string {
  return [
    'base_model: tiny-gpt2',
    'train_data: train.txt',
    'val_data: val.txt',
    `output_dir: ./output/lr_${learningRate}`,
    'lora_rank: 4',
    'lora_alpha: 8',
    'lora_dropout: 0',
    'target_modules: [c_attn]',
    `learning_rate: ${learningRate}`,
    'lr_scheduler: constant',
    `max_steps: ${STEPS}`,
    'batch_size: 2',
    'seq_len: 32',
    'log_steps: 1',
    'eval_steps: 4',
    'seed: 7',
    'backend: wasm',
  ].join('\n');
}

/** Quoted-field CSV reader (RFC 4180), independent of the app's writer. */
function parseCsv(csv: string): Record<string, string>[] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < csv.length; i++) {
    const ch = csv[i]!;
    if (quoted) {
      if (ch === '"' && csv[i + 1] === '"') (field += '"'), i++;
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') row.push(field), (field = '');
    else if (ch === '\n') row.push(field), rows.push(row), (row = []), (field = '');
    else field += ch;
  }
  const [header, ...body] = rows;
  return body.map((r) => Object.fromEntries(header!.map((h, i) => [h, r[i] ?? ''])));
}

const stepEvents = (run: TrainedRun) => run.events.flatMap((e) => (e.kind === 'step' ? [e] : []));
const losses = (run: TrainedRun) => stepEvents(run).map((e) => e.loss);

let browser: BrowserSession;
let page: Page;
const trained: Record<string, TrainedRun> = {};

beforeAll(async () => {
  browser = await openApp();
  page = browser.page;
});
afterAll(async () => browser?.close());

const runItems = () => page.getByTestId('run-item');
const legend = () => page.getByTestId('compare-legend');

/** Clicks a download button and returns the file's text. */
async function download(button: string): Promise<string> {
  const [file] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: button, exact: true }).click()]);
  return readFileSync((await file.path())!, 'utf8');
}

/** Pixels of the chart's canvas within a small distance of each colour, decoded by the browser itself. */
async function pixelsNear(png: Buffer, colors: string[]): Promise<number[]> {
  return page.evaluate(
    async ({ dataUrl, colors }) => {
      const image = new Image();
      image.src = dataUrl;
      await image.decode();
      const canvas = new OffscreenCanvas(image.width, image.height);
      const context = canvas.getContext('2d')!;
      context.drawImage(image, 0, 0);
      const { data } = context.getImageData(0, 0, image.width, image.height);
      const targets = colors.map((c) => c.match(/\d+/g)!.map(Number));
      const counts = targets.map(() => 0);
      for (let i = 0; i < data.length; i += 4) {
        targets.forEach(([r, g, b], k) => {
          if (Math.abs(data[i]! - r!) + Math.abs(data[i + 1]! - g!) + Math.abs(data[i + 2]! - b!) <= 30) counts[k]!++;
        });
      }
      return counts;
    },
    { dataUrl: `data:image/png;base64,${png.toString('base64')}`, colors },
  );
}

describe('comparing runs', () => {
  test('two runs differing only in learning_rate: listed with the difference, overlaid, exported exactly as stored', async () => {
    const modelId = await importFixtureModel(page, 'tiny-gpt2');
    for (const lr of ['1e-4', '2e-4']) {
      const run = await trainInPage(page, { modelId, configYaml: configYaml(lr), train: { name: 'train.txt', text: trainText }, val: { name: 'val.txt', text } });
      expect(run.reason).toBe('completed');
      trained[`lr_${lr}`] = run;
    }
    // The list is read from IndexedDB, as after coming back to the app another day.
    await page.reload();
    await expect.poll(() => runItems().count(), { timeout: 30_000 }).toBe(2);
    const row = page.locator('[data-testid=run-item][data-run="lr_2e-4"]');
    await expect.poll(() => row.textContent()).toContain('learning_rate 1e-4 → 2e-4');
    expect(await row.textContent()).toMatch(/8 \/ 8 steps/);
    expect(await page.locator('[data-testid=run-item][data-run="lr_1e-4"]').textContent()).toContain('reference');

    // One by keyboard, one by pointer: both are labelled checkboxes.
    await page.getByRole('checkbox', { name: 'lr_1e-4', exact: true }).focus();
    await page.keyboard.press('Space');
    await page.getByRole('checkbox', { name: 'lr_2e-4', exact: true }).check();
    await expect.poll(() => legend().textContent(), { timeout: 30_000 }).toContain('lr_2e-4 (learning_rate 2e-4)');
    expect(await legend().textContent()).toContain('lr_1e-4 (learning_rate 1e-4)');

    // What is plotted, via the CSV download, is exactly what each run reported while training.
    const rows = parseCsv(await download('CSV'));
    for (const [name, run] of Object.entries(trained)) {
      const trainRows = rows.filter((r) => r['run'] === name && r['tag'] === 'train/loss');
      const steps = stepEvents(run);
      expect(steps).toHaveLength(STEPS);
      expect(trainRows.map((r) => Number(r['step']))).toEqual(steps.map((e) => e.step));
      expect(trainRows.map((r) => Number(r['value']))).toEqual(steps.map((e) => e.loss));
      expect(trainRows.every((r) => r['label'] === `${name} (learning_rate ${name.slice(3)})`)).toBe(true);
      // The last eval at a step wins, as the stored row keeps it.
      const evals = new Map(run.events.flatMap((e) => (e.kind === 'eval' ? [[e.step, e.loss] as const] : [])));
      const evalRows = rows.filter((r) => r['run'] === name && r['tag'] === 'eval/loss');
      expect(evalRows.length).toBeGreaterThan(0);
      expect(evalRows.map((r) => [Number(r['step']), Number(r['value'])])).toEqual([...evals]);
    }
    // The JSON download holds the same curves, grouped by run, with the chart's settings.
    const json = JSON.parse(await download('JSON')) as { smoothing: number; reference: string; runs: { run: string; curves: { tag: string; values: number[] }[] }[] };
    expect(json.reference).toBe('lr_1e-4');
    expect(json.runs.map((r) => r.run).sort()).toEqual(['lr_1e-4', 'lr_2e-4']);
    for (const r of json.runs) expect(r.curves.find((c) => c.tag === 'train/loss')!.values).toEqual(losses(trained[r.run]!));

    // The run's folder as a zip, as before.
    const [zip] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Download lr_1e-4 as a zip' }).click()]);
    expect(zip.suggestedFilename()).toBe('lr_1e-4.zip');
    expect(readFileSync((await zip.path())!).subarray(0, 2).toString()).toBe('PK');
    // The run bundle, streamed by the page: the model card, its plot and the LLaMA-Factory hand-off beside the adapter.
    const zipped = unzipSync(new Uint8Array(readFileSync((await zip.path())!)));
    for (const f of ['adapter_model.safetensors', 'metrics.csv', 'README.md', 'loss_curves.png', 'llamafactory/train.yaml', 'llamafactory/dataset_info.json', 'llamafactory/train.jsonl']) {
      expect(zipped[`lr_1e-4/${f}`], f).toBeDefined();
    }
    expect(new TextDecoder().decode(zipped['lr_1e-4/README.md'])).toContain('![Training and eval loss by step](loss_curves.png)');

    // The two runs really differ (or the overlay would be a test of nothing).
    const last = (name: string) => Number(rows.filter((r) => r['run'] === name && r['tag'] === 'train/loss').at(-1)!['value']);
    expect(last('lr_1e-4')).not.toBe(last('lr_2e-4'));

    // Both run colours are painted on the chart's canvas (read from the screenshot's own pixels).
    const colors = await legend().locator('[data-color]').evaluateAll((els) => els.map((e) => e.getAttribute('data-color')!));
    expect(colors).toHaveLength(2);
    expect(colors[0]).not.toBe(colors[1]);
    const png = await page.getByTestId('compare-plot').locator('canvas').screenshot();
    const counts = await pixelsNear(png, colors);
    for (const n of counts) expect(n).toBeGreaterThan(40);
  });

  test('TensorBoard logs from elsewhere: imported through the picker, overlaid and exported; a damaged file is named and nothing is added', async () => {
    await page.getByTestId('log-folder-input').setInputFiles(`${TFEVENTS}good/scalars`);
    const imported = page.locator('[data-testid=run-item][data-run="scalars"]');
    await imported.waitFor({ timeout: 30_000 });
    expect(await imported.textContent()).toContain('imported');
    // Just imported means just wanted: it is overlaid at once.
    expect(await page.getByRole('checkbox', { name: 'scalars', exact: true }).isChecked()).toBe(true);
    await expect.poll(() => legend().textContent()).toContain('scalars');

    const expected = JSON.parse(readFileSync(`${TFEVENTS}good/EXPECTED.json`, 'utf8')) as { runs: Record<string, { scalars: Record<string, [number, number][]> }> };
    const rows = parseCsv(await download('CSV'));
    const loss = rows.filter((r) => r['run'] === 'scalars' && r['tag'] === 'train/loss').map((r) => [Number(r['step']), Number(r['value'])]);
    expect(loss).toEqual(expected.runs['scalars']!.scalars['train/loss']);

    // Any tag can be plotted: the picker offers the log's train/lr.
    await page.getByTestId('compare-tag').selectOption('train/lr');
    const lrRows = parseCsv(await download('CSV')).filter((r) => r['run'] === 'scalars');
    expect(lrRows.map((r) => [Number(r['step']), Number(r['value'])])).toEqual(expected.runs['scalars']!.scalars['train/lr']);
    await page.getByTestId('compare-tag').selectOption('train/loss');

    // A damaged copy of the same file: the error names it and says what is wrong; the list is unchanged.
    const before = await runItems().count();
    const bad = `${TFEVENTS}bad/bad_data_crc/`;
    expect(readdirSync(bad)).toContain(EVENT_FILE);
    await page.getByTestId('log-files-input').setInputFiles(`${bad}${EVENT_FILE}`);
    const error = page.getByTestId('log-import-error');
    await error.waitFor({ timeout: 30_000 });
    const message = (await error.textContent())!;
    expect(message).toContain(EVENT_FILE);
    expect(message).toMatch(/bad data CRC/);
    expect(message).toMatch(/Nothing was imported/);
    expect(await runItems().count()).toBe(before);

    // Everything survives a reload: runs, the import, and the comparison as it was set up.
    await page.reload();
    await expect.poll(() => runItems().count(), { timeout: 30_000 }).toBe(before);
    await expect.poll(() => legend().textContent(), { timeout: 30_000 }).toContain('scalars');
    expect(await legend().textContent()).toContain('lr_2e-4 (learning_rate 2e-4)');
    await page.locator('[data-testid=backend] .badge[data-backend=wasm]').waitFor({ timeout: 60_000 });
    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/runs.png', fullPage: true });
    expect(browser.errors).toEqual([]);
  });

  test('100k points per run: imported, overlaid, and the smoothing slider redraws within a frame budget', async () => {
    // Two long runs written by our own writer (a 100k-step run logging every step).
    const N = 100_000;
    const files = ['a', 'b'].map((run, k) => {
      const writer = new EventFileWriter();
      writer.writeFileVersion(1_700_000_000);
      for (let step = 1; step <= N; step++) writer.addScalar('train/loss', 3 / (1 + step / 5000) + 0.2 * Math.sin(step / 50) + k * 0.3, step, 1_700_000_000 + step);
      return { name: `events.out.tfevents.1700000000.long_${run}.0`, mimeType: 'application/octet-stream', buffer: Buffer.from(writer.takePending()) };
    });
    await page.getByTestId('log-files-input').setInputFiles(files);
    for (const f of files) await expect.poll(() => legend().textContent(), { timeout: 60_000 }).toContain(f.name);
    // Smoothing re-draws both 100k-point curves (how fast is the bench's business, not this test's).
    await page.getByRole('slider', { name: /Smoothing/ }).fill('0.9');
    for (const f of files) expect(await legend().textContent()).toContain(f.name);

    // Deleting asks first; the keyboard lands on the confirmation. The run leaves the list and the chart.
    const doomed = files[1]!.name;
    await page.getByRole('button', { name: `Delete ${doomed}` }).click();
    await page.keyboard.press('Enter');
    await expect.poll(() => page.locator(`[data-testid=run-item][data-run="${doomed}"]`).count()).toBe(0);
    expect(await legend().textContent()).not.toContain(doomed);
    expect(await legend().textContent()).toContain(files[0]!.name);
    expect(browser.errors).toEqual([]);
  });
});
