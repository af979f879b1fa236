import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { isUserError, type UserError } from '../../src/core/errors';
import {
  crc32c,
  DEFAULT_BUCKET_LIMITS,
  decodeEvent,
  encodeEvent,
  EventFileWriter,
  frameRecord,
  histogramFromValues,
  maskCrc,
  maskedCrc32c,
  readEventFile,
  readRecords,
  scalarSeries,
  type Histogram,
  type ImageColorspace,
  type SummaryValue,
  type TfEvent,
} from '../../src/core/logging';
import { ProtoWriter } from '../../src/core/logging/protobuf';

const FIXTURES = new URL('../../../shared/fixtures/tfevents/', import.meta.url);
const TB_WRITER = 'tensorboard.summary.writer.event_file_writer';

// ---------------------------------------------------------------- fixture plumbing

interface ManifestValue {
  tag: string;
  simple_value?: number;
  histo?: { min?: number; max?: number; num?: number; sum?: number; sum_squares?: number; bucket_limit?: number[]; bucket?: number[] };
  tensor?: { dtype: string; tensor_shape: object; float_val?: number[]; string_val?: string[] };
  metadata?: { plugin_data: { plugin_name: string } };
  image?: { height: number; width: number; colorspace: number; encoded_image_string: string };
}
interface ManifestEvent {
  wall_time?: number;
  step?: string;
  file_version?: string;
  source_metadata?: { writer: string };
  summary?: { value: ManifestValue[] };
}
interface ManifestRecord {
  offset: number;
  length: number;
  length_masked_crc32c: string;
  data_masked_crc32c: string;
  event_hex: string;
  event: ManifestEvent;
}
interface ManifestFile {
  path: string;
  size: number;
  sha256: string;
  num_records: number;
  records: ManifestRecord[];
}

const readJson = <T>(path: string): T => JSON.parse(readFileSync(new URL(path, FIXTURES), 'utf8')) as T;
const manifest = readJson<{ files: Record<string, ManifestFile> }>('good/MANIFEST.json');
const expected = readJson<{ expected: Record<string, Record<string, unknown>> }>('good/MANIFEST.json').expected;
const fixtureBytes = (path: string) => new Uint8Array(readFileSync(new URL(path, FIXTURES)));
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const fileNameOf = (path: string) => path.slice(path.lastIndexOf('/') + 1);

/** The event a MANIFEST entry describes, in our model, built from the MANIFEST's JSON alone. */
function fromManifest(ev: ManifestEvent): TfEvent {
  const base = { wallTime: ev.wall_time ?? 0, step: Number(ev.step ?? 0) };
  if (ev.file_version !== undefined) {
    return { ...base, kind: 'file_version', fileVersion: ev.file_version, sourceWriter: ev.source_metadata?.writer };
  }
  const values = ev.summary!.value.map((v): SummaryValue => {
    if (v.simple_value !== undefined) {
      return { tag: v.tag, kind: 'scalar', value: Math.fround(v.simple_value), encoding: 'simple_value' };
    }
    if (v.histo) return { tag: v.tag, kind: 'histogram', histogram: histogramFromManifest(v.histo) };
    const plugin = v.metadata?.plugin_data.plugin_name;
    if (v.tensor && plugin === 'scalars' && v.tensor.dtype === 'DT_FLOAT') {
      return { tag: v.tag, kind: 'scalar', value: Math.fround(v.tensor.float_val![0]!), encoding: 'tensor_float' };
    }
    if (v.tensor && plugin === 'text' && v.tensor.dtype === 'DT_STRING') {
      return { tag: v.tag, kind: 'text', text: Buffer.from(v.tensor.string_val![0]!, 'base64').toString('utf8') };
    }
    if (v.image) {
      const { height, width, colorspace, encoded_image_string } = v.image;
      const encoded = new Uint8Array(Buffer.from(encoded_image_string, 'base64'));
      return { tag: v.tag, kind: 'image', image: { height, width, colorspace: colorspace as ImageColorspace, encoded } };
    }
    throw new Error(`test does not know this MANIFEST value: ${JSON.stringify(v)}`);
  });
  return { ...base, kind: 'summary', values };
}

function histogramFromManifest(h: NonNullable<ManifestValue['histo']>): Histogram {
  return {
    min: h.min ?? 0,
    max: h.max ?? 0,
    num: h.num ?? 0,
    sum: h.sum ?? 0,
    sumSquares: h.sum_squares ?? 0,
    bucketLimits: h.bucket_limit ?? [],
    buckets: h.bucket ?? [],
  };
}

/** Replays a MANIFEST file through the writer's public methods, using only the MANIFEST's values. */
function rewrite(file: ManifestFile, readBack: TfEvent[]): Uint8Array {
  const w = new EventFileWriter({ sourceWriter: TB_WRITER });
  file.records.forEach((rec, i) => {
    const e = fromManifest(rec.event);
    if (e.kind === 'file_version') return w.writeFileVersion(e.wallTime);
    if (e.kind !== 'summary' || e.values.length !== 1) throw new Error('fixture events hold one value each');
    const v = e.values[0]!;
    const m = rec.event.summary!.value[0]!;
    if (v.kind === 'scalar' && v.encoding === 'simple_value') w.addScalar(v.tag, m.simple_value!, e.step, e.wallTime);
    else if (v.kind === 'scalar') w.addEvent({ ...e, values: [{ ...v, value: m.tensor!.float_val![0]! }] });
    else if (v.kind === 'text') w.addText(v.tag, v.text, e.step, e.wallTime);
    else if (v.kind === 'histogram' || v.kind === 'image') w.addEvent(e);
    // Anything else is not something we write; pass through what the reader kept, to prove it is lossless.
    else w.addEvent(readBack[i]!);
  });
  return w.takePending();
}

// ---------------------------------------------------------------- crc32c

describe('crc32c', () => {
  const ascii = (s: string) => new TextEncoder().encode(s);

  test.each([
    ['"123456789"', ascii('123456789'), 0xe3069283],
    ['empty', new Uint8Array(0), 0],
    // RFC 3720 (iSCSI) appendix B.4 vectors
    ['32 zero bytes', new Uint8Array(32), 0x8a9136aa],
    ['32 0xFF bytes', new Uint8Array(32).fill(0xff), 0x62a8ab43],
    ['bytes 0..31', Uint8Array.from({ length: 32 }, (_, i) => i), 0x46dd794e],
  ])('%s', (_, bytes, crc) => {
    expect(crc32c(bytes)).toBe(crc);
  });

  test('masking rotates right by 15 and adds 0xa282ead8 modulo 2^32', () => {
    expect(maskCrc(0)).toBe(0xa282ead8);
    expect(maskCrc(0x8000)).toBe((1 + 0xa282ead8) >>> 0);
    // Overflow wraps: 0xffffffff rotated is 0xffffffff; plus the constant wraps to 0xa282ead7.
    expect(maskCrc(0xffffffff)).toBe(0xa282ead7);
    expect(maskedCrc32c(ascii('123456789'))).toBe(maskCrc(0xe3069283));
  });
});

// ---------------------------------------------------------------- good fixtures

describe.each(Object.entries(manifest.files))('good fixture %s', (_run, file) => {
  const bytes = fixtureBytes(`good/${file.path}`);
  const name = fileNameOf(file.path);

  test('is the file the MANIFEST describes', () => {
    expect(bytes.length).toBe(file.size);
    expect(createHash('sha256').update(bytes).digest('hex')).toBe(file.sha256);
  });

  test('every record has the MANIFEST offset, length, CRCs and bytes', () => {
    const records = readRecords(name, bytes);
    expect(records.length).toBe(file.num_records);
    records.forEach((r, i) => {
      const m = file.records[i]!;
      expect(r.offset).toBe(m.offset);
      expect(r.data.length).toBe(m.length);
      expect(maskedCrc32c(bytes.subarray(r.offset, r.offset + 8))).toBe(Number(m.length_masked_crc32c));
      expect(maskedCrc32c(r.data)).toBe(Number(m.data_masked_crc32c));
      expect(hex(r.data)).toBe(m.event_hex);
      expect(hex(frameRecord(r.data))).toBe(hex(bytes.subarray(r.offset, r.offset + 16 + r.data.length)));
    });
  });

  test('every event decodes to what the MANIFEST says, and encodes back to the same bytes', () => {
    const events = readEventFile(name, bytes);
    expect(events.length).toBe(file.num_records);
    events.forEach((e, i) => {
      const m = file.records[i]!;
      expect(e).toEqual(fromManifest(m.event));
      expect(hex(encodeEvent(e))).toBe(m.event_hex);
    });
    expect(events[0]).toMatchObject({ kind: 'file_version', fileVersion: 'brain.Event:2' });
  });

  test('our writer, given the same events and wall times, writes the identical file', () => {
    const ours = rewrite(file, readEventFile(name, bytes));
    expect(ours.length).toBe(bytes.length);
    expect(hex(ours)).toBe(hex(bytes));
  });
});

describe('good fixtures against what TensorBoard itself read (EXPECTED)', () => {
  const events = (run: string) => {
    const file = manifest.files[run]!;
    return readEventFile(fileNameOf(file.path), fixtureBytes(`good/${file.path}`));
  };
  type Row = [number, number, number, number];

  test.each(['scalars', 'scalars_v2'])('%s: scalarSeries gives TensorBoard’s steps, wall times and float32 values', (run) => {
    const series = scalarSeries(events(run));
    const want = Object.entries(expected[run]!).filter(([k]) => k.includes('/')) as [string, Row[]][];
    expect([...series.keys()].sort()).toEqual(want.map(([tag]) => tag).sort());
    for (const [tag, rows] of want) {
      expect(series.get(tag)).toEqual(rows.map(([step, wallTime, , value]) => ({ step, wallTime, value })));
    }
  });

  test('text: UTF-8 markdown comes back exactly', () => {
    const rows = expected.text!['notes/text'] as [number, number, string][];
    const texts = events('text').flatMap((e) =>
      e.kind === 'summary' ? e.values.map((v) => [e.step, e.wallTime, v.kind === 'text' ? v.text : null]) : [],
    );
    expect(texts).toEqual(rows);
  });

  test('histogram: bucketing the raw data over the fixture’s limits gives the fixture’s histogram', () => {
    const rows = expected.histogram!['weights/w1'] as { data: number[]; histo: ManifestValue['histo'] }[];
    for (const { data, histo } of rows) {
      const want = histogramFromManifest(histo!);
      expect(histogramFromValues(data, want.bucketLimits)).toEqual(want);
    }
  });
});

// ---------------------------------------------------------------- bad fixtures

describe('bad fixtures are rejected with a UserError that says what is wrong', () => {
  const cases = readJson<{ cases: Record<string, string> }>('bad/README.json').cases;
  // What our message says for each kind of damage the README names (its quotes are TensorFlow's wording).
  const problems: [RegExp, RegExp][] = [
    [/failed event crc32 check/, /bad data CRC/],
    [/failed header crc32 check/, /bad length CRC/],
    [/truncated record in data/, /truncated record in data/],
    [/DecodeError/, /bad protobuf/],
  ];
  const dirs = readdirSync(new URL('bad/', FIXTURES), { withFileTypes: true }).filter((d) => d.isDirectory());

  test('README.json describes every case directory', () => {
    expect(dirs.map((d) => d.name).sort()).toEqual(Object.keys(cases).sort());
  });

  test.each(dirs.map((d) => d.name))('%s', (dir) => {
    const description = cases[dir]!;
    const [fileName] = readdirSync(new URL(`bad/${dir}/`, FIXTURES)).filter((f) => f.includes('tfevents'));
    const bytes = fixtureBytes(`bad/${dir}/${fileName}`);

    let error: unknown;
    try {
      readEventFile(fileName!, bytes);
    } catch (e) {
      error = e;
    }
    expect(isUserError(error)).toBe(true);
    const u = error as UserError;
    expect(u.subject).toBe(fileName);

    const problem = problems.find(([readme]) => readme.test(description));
    expect(problem, `no expectation for: ${description}`).toBeDefined();
    expect(u.problem).toMatch(problem![1]);

    const recordNo = /record #(\d+)/.exec(description)?.[1];
    if (recordNo !== undefined) {
      const offset = manifest.files.scalars!.records[Number(recordNo)]?.offset ?? manifest.files.scalars!.size;
      expect(u.problem).toContain(`record #${recordNo} at byte ${offset}:`);
    } else {
      // The truncated copy loses the end of the last record.
      expect(u.problem).toContain(`record #${manifest.files.scalars!.num_records - 1} at byte`);
    }
    if (/unmasked|mask forgotten/.test(description)) expect(u.problem).toMatch(/forgot to mask/);
    expect(u.fix).toBeTruthy();
  });

  test('a header cut short and a length that runs past the end are "truncated record"', () => {
    const good = fixtureBytes(`good/${manifest.files.scalars!.path}`);
    expect(() => readEventFile('a', good.subarray(0, 95))).toThrow(/record #1 at byte 88: truncated record: the file ends 7 bytes/);
    expect(() => readEventFile('b', good.subarray(0, 88 + 12))).toThrow(/record #1 at byte 88: truncated record in data/);
  });

  test('a CRC-valid record whose histogram arrays disagree is rejected, not drawn wrong', () => {
    const h = new ProtoWriter();
    h.packedDoubles(6, [1, 2]);
    h.packedDoubles(7, [1]);
    const value = new ProtoWriter();
    value.string(1, 'w');
    value.bytes(5, h.finish());
    const summary = new ProtoWriter();
    summary.bytes(1, value.finish());
    const ev = new ProtoWriter();
    ev.bytes(5, summary.finish());
    expect(() => readEventFile('h', frameRecord(ev.finish()))).toThrow(/record #0 at byte 0: bad protobuf.*2 bucket limits but 1 buckets/);
  });
});

// ---------------------------------------------------------------- writer

describe('EventFileWriter', () => {
  const T0 = 1_700_000_000;

  function writeRun(w: EventFileWriter, takeEvery: number): Uint8Array[] {
    const chunks: Uint8Array[] = [];
    w.writeFileVersion(T0);
    for (let step = 0; step < 40; step++) {
      const t = T0 + step * 0.75;
      w.addScalar('train/loss', 3 / (step + 1), step, t);
      w.addScalar('train/lr', 1e-4, step, t);
      if (step % 10 === 0) {
        w.addHistogram('lora/A', Float32Array.from({ length: 257 }, (_, i) => Math.sin(i * (step + 1)) * 0.01), step, t);
        w.addText('samples', `step **${step}**: héllo ✓`, step, t);
      }
      if (step % takeEvery === 0) chunks.push(w.takePending());
    }
    chunks.push(w.takePending());
    return chunks;
  }

  const concat = (chunks: Uint8Array[]) => Uint8Array.from(chunks.flatMap((c) => [...c]));

  test('takePending chunks, concatenated, are the whole file; each chunk is whole records', () => {
    const once = new EventFileWriter();
    const whole = concat(writeRun(once, 1000));
    const incremental = new EventFileWriter();
    const chunks = writeRun(incremental, 3);
    expect(chunks.length).toBeGreaterThan(5);
    expect(hex(concat(chunks))).toBe(hex(whole));
    expect(incremental.bytesWritten).toBe(whole.length);
    for (const c of chunks) expect(() => readRecords('chunk', c)).not.toThrow();
    expect(incremental.takePending().length).toBe(0);
  });

  test('reading back what it wrote gives the same events', () => {
    const w = new EventFileWriter();
    const bytes = concat(writeRun(w, 7));
    const events = readEventFile(EventFileWriter.fileName(T0, 'host', 0), bytes);
    expect(events[0]).toEqual({ wallTime: T0, step: 0, kind: 'file_version', fileVersion: 'brain.Event:2', sourceWriter: 'lora-lab' });

    const loss = scalarSeries(events).get('train/loss')!;
    expect(loss.length).toBe(40);
    loss.forEach((p, step) => expect(p).toEqual({ step, wallTime: T0 + step * 0.75, value: Math.fround(3 / (step + 1)) }));
    expect(scalarSeries(events).get('train/lr')![0]!.value).toBe(Math.fround(1e-4));

    const texts = events.flatMap((e) => (e.kind === 'summary' ? e.values.filter((v) => v.kind === 'text') : []));
    expect(texts.map((v) => (v.kind === 'text' ? v.text : ''))).toEqual([0, 10, 20, 30].map((s) => `step **${s}**: héllo ✓`));

    const hist = events.find((e) => e.kind === 'summary' && e.step === 20 && e.values[0]!.kind === 'histogram');
    const data = Float32Array.from({ length: 257 }, (_, i) => Math.sin(i * 21) * 0.01);
    expect(hist).toEqual({ wallTime: T0 + 15, step: 20, kind: 'summary', values: [{ tag: 'lora/A', kind: 'histogram', histogram: histogramFromValues(data) }] });

    // Re-encoding what was read reproduces the file exactly.
    expect(hex(concat(events.map((e) => frameRecord(encodeEvent(e)))))).toBe(hex(bytes));
  });

  test('steps beyond 32 bits and negative steps round-trip; -0 and 0 wall times differ on the wire', () => {
    for (const step of [1, 127, 128, 2 ** 31, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER, -1, -(2 ** 40)]) {
      const e: TfEvent = { wallTime: 1.5, step, kind: 'summary', values: [{ tag: 't', kind: 'scalar', value: 1, encoding: 'simple_value' }] };
      expect(decodeEvent(encodeEvent(e))).toEqual(e);
    }
    // int64 -1 is ten bytes on the wire, as every protobuf runtime writes it.
    expect(hex(encodeEvent({ wallTime: 0, step: -1, kind: 'summary', values: [] }))).toBe('10ffffffffffffffffff012a00');
    expect(hex(encodeEvent({ wallTime: -0, step: 0, kind: 'summary', values: [] }))).toBe('0900000000000000802a00');
    expect(() => encodeEvent({ wallTime: 0, step: 1.5, kind: 'summary', values: [] })).toThrow(RangeError);
  });

  test('writes nothing before the file_version event, and only one of them', () => {
    const w = new EventFileWriter();
    expect(() => w.addScalar('x', 1, 0, T0)).toThrow(/writeFileVersion/);
    w.writeFileVersion(T0);
    expect(() => w.writeFileVersion(T0)).toThrow();
  });

  test('fileName', () => {
    expect(EventFileWriter.fileName(1_700_000_000.9, 'golden', 3)).toBe('events.out.tfevents.1700000000.golden.3');
    expect(EventFileWriter.fileName(12, 'my host/x', 0)).toBe('events.out.tfevents.0000000012.my_host_x.0');
  });
});

// ---------------------------------------------------------------- histograms

describe('default histogram buckets', () => {
  const L = DEFAULT_BUCKET_LIMITS;

  test('are TensorFlow’s: 0, ±1e-12·1.1^k below 1e20, ±DBL_MAX, strictly increasing and mirrored', () => {
    const mid = (L.length - 1) / 2;
    expect(L[mid]).toBe(0);
    expect(L[mid + 1]).toBe(1e-12);
    expect(L[mid + 2]).toBe(1e-12 * 1.1);
    expect(L[L.length - 1]).toBe(Number.MAX_VALUE);
    expect(L[0]).toBe(-Number.MAX_VALUE);
    const largest = L[L.length - 2]!;
    expect(largest).toBeLessThan(1e20);
    expect(largest * 1.1).toBeGreaterThanOrEqual(1e20);
    for (let i = 1; i < L.length; i++) expect(L[i]!).toBeGreaterThan(L[i - 1]!);
    for (let i = 0; i < L.length; i++) expect(L[i]).toBe(-L[L.length - 1 - i]! || 0);
    // 774 positive steps, each side plus ±DBL_MAX, plus zero
    expect(L.length).toBe(2 * 775 + 1);
  });

  test('each value lands in the bucket [previous limit, limit); empty runs collapse to one zero bucket', () => {
    const data = [-1, -0.5, 0, 0, 0.25, 0.5, 1, 2, 1e-13, -3e7, Number.MAX_VALUE];
    const h = histogramFromValues(data);
    expect(h).toMatchObject({ min: -3e7, max: Number.MAX_VALUE, num: data.length });
    expect(h.buckets.reduce((a, b) => a + b, 0)).toBe(data.length);
    for (let i = 1; i < h.buckets.length; i++) expect(h.buckets[i - 1]! > 0 || h.buckets[i]! > 0).toBe(true);
    for (const v of data) {
      const i = h.bucketLimits.findIndex((limit) => v < limit);
      const b = i === -1 ? h.bucketLimits.length - 1 : i;
      expect(h.buckets[b], `bucket of ${v}`).toBeGreaterThan(0);
      expect(v).toBeGreaterThanOrEqual(b === 0 ? -Infinity : h.bucketLimits[b - 1]!);
    }
    // Zeros fall in [0, 1e-12) together with 1e-13.
    expect(h.buckets[h.bucketLimits.indexOf(1e-12)]).toBe(3);
    expect(h.bucketLimits.length).toBeLessThan(30);
  });

  test('an empty histogram is what TensorFlow writes for one', () => {
    expect(histogramFromValues([])).toEqual({
      min: Number.MAX_VALUE, max: -Number.MAX_VALUE, num: 0, sum: 0, sumSquares: 0,
      bucketLimits: [Number.MAX_VALUE], buckets: [0],
    });
  });

  test('NaN and infinities are refused, not dropped', () => {
    expect(() => histogramFromValues([1, NaN])).toThrow(/value 1 is NaN/);
    expect(() => histogramFromValues([Infinity])).toThrow(RangeError);
  });
});

// ---------------------------------------------------------------- reading other writers' files

describe('reading files from other writers', () => {
  const tensor = (dtype: number, dims: number[], fill: (t: ProtoWriter) => void) => {
    const t = new ProtoWriter();
    t.uint(1, dtype);
    const shape = new ProtoWriter();
    for (const size of dims) {
      const d = new ProtoWriter();
      d.int64(1, size);
      shape.bytes(2, d.finish());
    }
    t.bytes(2, shape.finish());
    fill(t);
    return t.finish();
  };
  const plugin = (name: string) => {
    const pd = new ProtoWriter();
    pd.string(1, name);
    const md = new ProtoWriter();
    md.bytes(1, pd.finish());
    return md.finish();
  };
  const event = (step: number, value: (v: ProtoWriter) => void, extra?: (e: ProtoWriter) => void) => {
    const v = new ProtoWriter();
    value(v);
    const s = new ProtoWriter();
    s.bytes(1, v.finish());
    const e = new ProtoWriter();
    e.double(1, 100 + step);
    e.int64(2, step);
    e.bytes(5, s.finish());
    extra?.(e);
    return frameRecord(e.finish());
  };
  const file = (...records: Uint8Array[]) => Uint8Array.from(records.flatMap((r) => [...r]));
  const values = (bytes: Uint8Array) =>
    readEventFile('f', bytes).flatMap((e) => (e.kind === 'summary' ? e.values.map((v) => ({ step: e.step, ...v })) : []));

  test('plugin metadata given only on a tag’s first value applies to its later values', () => {
    const text = (s: string) => (t: ProtoWriter) => t.string(8, s);
    const bytes = file(
      event(1, (v) => { v.string(1, 'notes'); v.bytes(8, tensor(7, [], text('first'))); v.bytes(9, plugin('text')); }),
      event(2, (v) => { v.string(1, 'notes'); v.bytes(8, tensor(7, [], text('second'))); }),
      event(3, (v) => { v.string(1, 'loss'); v.bytes(8, tensor(1, [], (t) => t.packedFloats(5, [0.5]))); v.bytes(9, plugin('scalars')); }),
      event(4, (v) => { v.string(1, 'loss'); v.bytes(8, tensor(1, [], (t) => t.packedFloats(5, [0.25]))); }),
    );
    expect(values(bytes)).toEqual([
      { step: 1, tag: 'notes', kind: 'text', text: 'first' },
      { step: 2, tag: 'notes', kind: 'text', text: 'second' },
      { step: 3, tag: 'loss', kind: 'scalar', value: 0.5, encoding: 'tensor_float' },
      { step: 4, tag: 'loss', kind: 'scalar', value: 0.25, encoding: 'tensor_float' },
    ]);
  });

  test('PyTorch-style text (shape [1]), double and tensor_content scalars, unpacked histogram arrays', () => {
    const bytes = file(
      event(1, (v) => { v.string(1, 'md'); v.bytes(8, tensor(7, [1], (t) => t.string(8, '# hi'))); v.bytes(9, plugin('text')); }),
      event(2, (v) => { v.string(1, 'd'); v.bytes(8, tensor(2, [], (t) => t.packedDoubles(6, [0.1]))); v.bytes(9, plugin('scalars')); }),
      event(3, (v) => {
        v.string(1, 'c');
        v.bytes(8, tensor(1, [], (t) => t.bytes(4, new Uint8Array(new Float32Array([1.5]).buffer))));
        v.bytes(9, plugin('scalars'));
      }),
      event(4, (v) => {
        const h = new ProtoWriter();
        h.double(3, 2);
        h.double(6, 1);
        h.double(6, Number.MAX_VALUE);
        h.double(7, 1);
        h.double(7, 1);
        v.string(1, 'h');
        v.bytes(5, h.finish());
      }),
    );
    expect(values(bytes)).toEqual([
      { step: 1, tag: 'md', kind: 'text', text: '# hi' },
      { step: 2, tag: 'd', kind: 'scalar', value: 0.1, encoding: 'tensor_double' },
      { step: 3, tag: 'c', kind: 'scalar', value: 1.5, encoding: 'tensor_float' },
      {
        step: 4, tag: 'h', kind: 'histogram',
        histogram: { min: 0, max: 0, num: 2, sum: 0, sumSquares: 0, bucketLimits: [1, Number.MAX_VALUE], buckets: [1, 1] },
      },
    ]);
  });

  test('what it does not model is kept as "other" (never guessed), and unknown fields are skipped', () => {
    const bytes = file(
      event(1, (v) => { v.string(1, 'vec'); v.bytes(8, tensor(1, [3], (t) => t.packedFloats(5, [1, 2, 3]))); v.bytes(9, plugin('scalars')); }),
      event(2, (v) => { v.string(1, 'bin'); v.bytes(8, tensor(7, [], (t) => t.bytes(8, Uint8Array.of(0xff, 0xfe)))); v.bytes(9, plugin('text')); }),
      event(3, (v) => { v.string(1, 'pr'); v.bytes(8, tensor(1, [], (t) => t.packedFloats(5, [1]))); v.bytes(9, plugin('pr_curves')); }),
      event(4, (v) => { v.string(1, 'ok'); v.float(2, 7); v.uint(77, 5); }, (e) => { e.string(99, 'future field'); }),
    );
    const got = values(bytes);
    expect(got.map((v) => [v.tag, v.kind, v.kind === 'other' ? v.what : ''])).toEqual([
      ['vec', 'other', 'scalars-plugin tensor that is not a single float or double'],
      ['bin', 'other', 'text-plugin tensor that is not a single UTF-8 string'],
      ['pr', 'other', 'tensor for the "pr_curves" plugin'],
      ['ok', 'scalar', ''],
    ]);
    expect(got[3]).toMatchObject({ value: 7 });
    const session = new ProtoWriter();
    session.double(1, 5);
    session.bytes(7, Uint8Array.of(0x08, 0x01));
    const [e] = readEventFile('s', frameRecord(session.finish()));
    expect(e).toMatchObject({ kind: 'other', what: 'session_log', wallTime: 5, step: 0 });
    expect(hex(encodeEvent(e!))).toBe(hex(session.finish()));
  });

  test('an empty file has no events', () => {
    expect(readEventFile('empty', new Uint8Array(0))).toEqual([]);
  });
});
