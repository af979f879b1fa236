// IndexedDB globals for the imported-logs round trip at the end.
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync } from 'node:fs';
import { deleteDB } from 'idb';
import { afterEach, describe, expect, test } from 'vitest';
import { configDiff, DEFAULT_CONFIG } from '../../src/core/config';
import { closeDatabase, DB_NAME, openDatabase } from '../../src/storage/db';
import {
  isEventFileName,
  listImportedLogs,
  parseEventFiles,
  putImportedLogs,
  runNameOfLogPath,
  type EventFileInput,
} from '../../src/storage/imported-logs';
import {
  alignToSteps,
  csvField,
  curvesToCsv,
  curvesToJson,
  describeDiff,
  formatConfigValue,
  legendLabel,
  scalarsOfRows,
  uniqueNames,
  unionSteps,
  type CurveRow,
  type PlottedCurve,
} from '../../src/ui/charts/export-data';

const TFEVENTS = new URL('../../../shared/fixtures/tfevents/', import.meta.url);

/** A minimal RFC 4180 reader, written here so the CSV is checked by something other than its writer. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      row.push(field);
      field = '';
    } else if (ch === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += ch;
  }
  if (field !== '' || row.length > 0) rows.push([...row, field]);
  return rows;
}

const curve = (over: Partial<PlottedCurve>): PlottedCurve => ({
  run: 'lr_1e-4',
  label: 'lr_1e-4 (learning_rate 1e-4)',
  tag: 'train/loss',
  steps: [1, 2, 3],
  values: [3, 2, 1],
  smoothed: [3, 2.5, 2],
  ...over,
});

describe('CSV of the plotted curves', () => {
  test('one row per point, long format, with the smoothed value as drawn', () => {
    const csv = curvesToCsv([curve({}), curve({ tag: 'eval/loss', steps: [3], values: [1.5], smoothed: null })]);
    expect(csv).toBe(
      [
        'run,label,tag,step,value,smoothed',
        'lr_1e-4,lr_1e-4 (learning_rate 1e-4),train/loss,1,3,3',
        'lr_1e-4,lr_1e-4 (learning_rate 1e-4),train/loss,2,2,2.5',
        'lr_1e-4,lr_1e-4 (learning_rate 1e-4),train/loss,3,1,2',
        'lr_1e-4,lr_1e-4 (learning_rate 1e-4),eval/loss,3,1.5,',
        '',
      ].join('\n'),
    );
  });

  test('values round-trip exactly, float32 values and awkward doubles included', () => {
    const values = Float64Array.from([Math.fround(2.3141592), 0.1 + 0.2, 1e-30, 123456789.123, Math.fround(1 / 3)]);
    const steps = Float64Array.from([0, 1, 2, 3, 4]);
    const rows = parseCsv(curvesToCsv([curve({ steps, values, smoothed: null })])).slice(1);
    expect(rows.map((r) => Number(r[4]))).toEqual(Array.from(values));
    expect(rows.map((r) => Number(r[3]))).toEqual(Array.from(steps));
  });

  test('names with commas, quotes and line breaks are quoted so the columns stay put', () => {
    const name = 'run "a", take\n2';
    const rows = parseCsv(curvesToCsv([curve({ run: name, label: `${name} (seed 1)`, steps: [5], values: [1], smoothed: null })]));
    expect(rows[1]).toEqual([name, `${name} (seed 1)`, 'train/loss', '5', '1', '']);
    expect(csvField('plain')).toBe('plain');
    expect(csvField('a,b')).toBe('"a,b"');
  });

  test('a diverged run keeps its NaN and Infinity, as pandas reads them', () => {
    const rows = parseCsv(curvesToCsv([curve({ steps: [1, 2, 3], values: [NaN, Infinity, -Infinity], smoothed: null })])).slice(1);
    expect(rows.map((r) => r[4])).toEqual(['NaN', 'Infinity', '-Infinity']);
  });

  test('no curves: the header alone', () => {
    expect(curvesToCsv([])).toBe('run,label,tag,step,value,smoothed\n');
  });
});

describe('JSON of the plotted curves', () => {
  test('grouped by run, then tag, with the chart settings; non-finite values become null (gaps)', () => {
    const json = JSON.parse(
      curvesToJson(
        [
          curve({ values: Float64Array.from([3, NaN, 1]) }),
          curve({ tag: 'eval/loss', steps: [3], values: [1.5], smoothed: null }),
          curve({ run: 'lr_2e-4', label: 'lr_2e-4 (learning_rate 2e-4)', steps: [1], values: [4], smoothed: [4] }),
        ],
        { smoothing: 0.6, logScale: true, reference: 'lr_1e-4' },
      ),
    );
    expect(json).toEqual({
      smoothing: 0.6,
      logScale: true,
      reference: 'lr_1e-4',
      runs: [
        {
          run: 'lr_1e-4',
          label: 'lr_1e-4 (learning_rate 1e-4)',
          curves: [
            { tag: 'train/loss', steps: [1, 2, 3], values: [3, null, 1], smoothed: [3, 2.5, 2] },
            { tag: 'eval/loss', steps: [3], values: [1.5], smoothed: null },
          ],
        },
        { run: 'lr_2e-4', label: 'lr_2e-4 (learning_rate 2e-4)', curves: [{ tag: 'train/loss', steps: [1], values: [4], smoothed: [4] }] },
      ],
    });
  });
});

describe('one step axis for the chart', () => {
  test('runs logged at the same steps share them as they are', () => {
    const a = Float64Array.from([1, 2, 3]);
    expect(Array.from(unionSteps([a, [1, 2, 3]]))).toEqual([1, 2, 3]);
    expect(unionSteps([])).toHaveLength(0);
  });

  test('different steps merge into one sorted list without repeats', () => {
    expect(Array.from(unionSteps([[0, 10, 20], [5, 10, 15, 25], [20]]))).toEqual([0, 5, 10, 15, 20, 25]);
  });

  test('a curve covering every step reaches uPlot without a copy', () => {
    const values = Float64Array.from([3, 2, 1]);
    expect(alignToSteps([1, 2, 3], Float64Array.from([1, 2, 3]), values, false)).toBe(values);
  });

  test('gaps become null where a curve has no point; NaN and, on a log axis, non-positive values too', () => {
    expect(alignToSteps([0, 5, 10, 15], [5, 15], [1, 2], false)).toEqual([null, 1, null, 2]);
    expect(alignToSteps([1, 2, 3], [1, 2, 3], [1, NaN, 3], false)).toEqual([1, null, 3]);
    expect(alignToSteps([1, 2, 3], [1, 2, 3], [1, 0, -1], true)).toEqual([1, null, null]);
    expect(alignToSteps([1, 2, 3], [1, 2, 3], [1, 0, -1], false)).toEqual([1, 0, -1]);
  });

  test('100k points per run align in well under a frame budget per run', () => {
    const n = 100_000;
    const steps = Float64Array.from({ length: n }, (_, i) => i + 1);
    const evens = Float64Array.from({ length: n / 2 }, (_, i) => 2 * (i + 1));
    const t0 = performance.now();
    const x = unionSteps([steps, evens]);
    const aligned = alignToSteps(x, evens, evens, false) as (number | null)[];
    const ms = performance.now() - t0;
    expect(x).toHaveLength(n);
    expect(aligned[0]).toBeNull();
    expect(aligned[1]).toBe(2);
    expect(ms).toBeLessThan(200);
  });
});

describe('legend labels and config differences', () => {
  const a = { ...DEFAULT_CONFIG, output_dir: './output/lr_1e-4', learning_rate: 1e-4 };
  const b = { ...DEFAULT_CONFIG, output_dir: './output/lr_2e-4', learning_rate: 2e-4 };

  test('numbers read as in YAML', () => {
    expect(formatConfigValue(1e-4)).toBe('1e-4');
    expect(formatConfigValue(2e-4)).toBe('2e-4');
    expect(formatConfigValue(0.00015)).toBe('1.5e-4');
    expect(formatConfigValue(0.01)).toBe('0.01');
    expect(formatConfigValue(16)).toBe('16');
    expect(formatConfigValue(2e6)).toBe('2e6');
    expect(formatConfigValue(0)).toBe('0');
    expect(formatConfigValue(['c_attn', 'c_proj'])).toBe('[c_attn, c_proj]');
    expect(formatConfigValue(null)).toBe('null');
    expect(formatConfigValue(true)).toBe('true');
  });

  test('the lr_1e-4 vs lr_2e-4 comparison', () => {
    const diff = configDiff(a, b).filter((d) => d.key !== 'output_dir');
    expect(describeDiff(diff)).toBe('learning_rate 1e-4 → 2e-4');
    expect(legendLabel('lr_2e-4', b, ['learning_rate'])).toBe('lr_2e-4 (learning_rate 2e-4)');
    expect(legendLabel('lr_1e-4', a, ['learning_rate', 'lora_rank'])).toBe(`lr_1e-4 (learning_rate 1e-4, lora_rank ${DEFAULT_CONFIG.lora_rank})`);
    expect(legendLabel('scalars', null, ['learning_rate'])).toBe('scalars');
    expect(legendLabel('lr_1e-4', a, [])).toBe('lr_1e-4');
  });

  test('repeated run names are told apart', () => {
    expect(uniqueNames(['a', 'b', 'a', 'a #2', 'a'])).toEqual(['a', 'b', 'a #2', 'a #2 #2', 'a #3']);
  });
});

describe('stored curve rows as TensorBoard tags', () => {
  test('each column under the tag the event file uses; missing values are skipped, not zero', () => {
    const row = (step: number, over: Partial<CurveRow>): CurveRow => ({
      step,
      epoch: null,
      loss: null,
      learningRate: null,
      gradNorm: null,
      tokensPerSecond: null,
      evalLoss: null,
      custom: {},
      ...over,
    });
    const scalars = scalarsOfRows([
      row(1, { loss: 3, learningRate: 1e-4, gradNorm: 0.5, epoch: 0.1, tokensPerSecond: 100 }),
      row(2, { loss: 2.5, learningRate: 1e-4, gradNorm: 0.4, epoch: 0.2, tokensPerSecond: 110, evalLoss: 2.7, custom: { 'train/perplexity': 12.2 } }),
    ]);
    expect(Object.keys(scalars).sort()).toEqual(['eval/loss', 'train/epoch', 'train/grad_norm', 'train/learning_rate', 'train/loss', 'train/perplexity', 'train/tokens_per_second']);
    expect(Array.from(scalars['train/loss']!.steps)).toEqual([1, 2]);
    expect(Array.from(scalars['train/loss']!.values)).toEqual([3, 2.5]);
    expect(Array.from(scalars['eval/loss']!.steps)).toEqual([2]);
    expect(Array.from(scalars['train/perplexity']!.values)).toEqual([12.2]);
  });
});

describe('imported TensorBoard logs', () => {
  const file = (path: string, from: string): EventFileInput => {
    const dir = new URL(from, TFEVENTS);
    const name = readdirSync(dir).find(isEventFileName)!;
    return { path: `${path}/${name}`, bytes: new Uint8Array(readFileSync(new URL(name, dir))) };
  };
  const expected = JSON.parse(readFileSync(new URL('good/EXPECTED.json', TFEVENTS), 'utf8')) as {
    runs: Record<string, { scalars: Record<string, [number, number][]> }>;
  };

  test('run names come from folders; LoRA Lab exports are named after the run, not "logs"', () => {
    expect(runNameOfLogPath('logs/lr_1e-4/events.out.tfevents.1.h.0.0')).toBe('lr_1e-4');
    expect(runNameOfLogPath('lr_1e-4/logs/events.out.tfevents.1.h.0.0')).toBe('lr_1e-4');
    expect(runNameOfLogPath('logs/events.out.tfevents.1.h.0.0')).toBe('logs');
    expect(runNameOfLogPath('events.out.tfevents.1.h.0.0')).toBe('events.out.tfevents.1.h.0.0');
    expect(isEventFileName('run/adapter_config.json')).toBe(false);
  });

  test("TensorBoard's own files: scalars as TensorBoard reads them, one run per folder", () => {
    const parsed = parseEventFiles([file('logs/scalars', 'good/scalars/'), file('logs/scalars_v2', 'good/scalars_v2/'), file('logs/image', 'good/image/')]);
    expect(parsed.problems).toEqual([]);
    expect(parsed.withoutScalars).toEqual(['image']);
    expect(parsed.logs.map((l) => l.name).sort()).toEqual(['scalars', 'scalars_v2']);
    for (const log of parsed.logs) {
      const want = expected.runs[log.name]!.scalars;
      expect(Object.keys(log.scalars).sort()).toEqual(Object.keys(want).sort());
      for (const [tag, points] of Object.entries(want)) {
        expect(Array.from(log.scalars[tag]!.steps)).toEqual(points.map((p) => p[0]));
        expect(Array.from(log.scalars[tag]!.values)).toEqual(points.map((p) => p[1]));
      }
      expect(log.config).toBeNull();
    }
  });

  test('every damaged file is reported by name, with what is wrong', () => {
    const cases = ['bad_data_crc', 'bad_header_crc', 'truncated', 'unmasked_crc', 'bad_payload'];
    const parsed = parseEventFiles([file('logs/scalars', 'good/scalars/'), ...cases.map((c) => file(c, `bad/${c}/`))]);
    expect(parsed.problems.map((p) => p.file.split('/')[0]).sort()).toEqual([...cases].sort());
    for (const p of parsed.problems) {
      expect(p.bug).toBe(false);
      expect(p.problem).toMatch(/record #\d+ at byte \d+/);
    }
  });

  test('kept in IndexedDB with their typed arrays, newest first', async () => {
    const parsed = parseEventFiles([file('scalars', 'good/scalars/')]);
    const db = await openDatabase();
    await putImportedLogs(db, [{ ...parsed.logs[0]!, id: 'old', importedAt: 1 }]);
    await putImportedLogs(db, [{ ...parsed.logs[0]!, id: 'new', name: 'again', importedAt: 2 }]);
    await closeDatabase();
    const logs = await listImportedLogs(await openDatabase());
    expect(logs.map((l) => l.id)).toEqual(['new', 'old']);
    expect(logs[1]!.scalars['train/loss']!.values).toBeInstanceOf(Float64Array);
    expect(Array.from(logs[1]!.scalars['train/loss']!.values)).toEqual(expected.runs['scalars']!.scalars['train/loss']!.map((p) => p[1]));
  });

  afterEach(async () => {
    await closeDatabase();
    await deleteDB(DB_NAME);
  });
});
