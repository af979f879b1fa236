import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { encodePng } from '../../src/core/image/png';
import { decodeEvent, encodeEvent, encodeImage, EventFileWriter, readEventFile, readRecords, type SummaryValue } from '../../src/core/logging';
import { ProtoWriter } from '../../src/core/logging/protobuf';
import { decodePng } from './support/png';

/**
 * Image summaries (Summary.Value.image, what TensorBoard's Images tab shows) against the event file TensorBoard
 * 2.20's own writer made with an 8×8 PNG (../shared/fixtures/tfevents/good/image/, described in MANIFEST.json).
 */

const FIXTURES = new URL('../../../shared/fixtures/tfevents/good/image/', import.meta.url);
const EVENT_FILE = 'events.out.tfevents.1700000000.golden.0.0';
const fileBytes = new Uint8Array(readFileSync(new URL(EVENT_FILE, FIXTURES)));
const pngBytes = new Uint8Array(readFileSync(new URL('sample_8x8.png', FIXTURES)));
const TB_WRITER = 'tensorboard.summary.writer.event_file_writer';
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('TensorBoard image summaries', () => {
  test("our writer, given TensorBoard's wall times, tag and the PNG, writes the fixture's file byte for byte", () => {
    const w = new EventFileWriter({ sourceWriter: TB_WRITER });
    w.writeFileVersion(1700000000);
    const image: SummaryValue = { tag: 'samples/image', kind: 'image', image: { height: 8, width: 8, colorspace: 3, encoded: pngBytes } };
    w.addEvent({ wallTime: 1700000030.125, step: 0, kind: 'summary', values: [image] });
    expect(hex(w.takePending())).toBe(hex(fileBytes));
  });

  test("decodeEvent reads the fixture's record as an 8×8 RGB image whose bytes are sample_8x8.png", () => {
    const records = readRecords(EVENT_FILE, fileBytes);
    expect(records).toHaveLength(2);
    const event = decodeEvent(records[1]!.data);
    expect(event).toMatchObject({ kind: 'summary', wallTime: 1700000030.125, step: 0 });
    if (event.kind !== 'summary') throw new Error('not a summary');
    expect(event.values).toHaveLength(1);
    const value = event.values[0]!;
    expect(value.kind).toBe('image');
    if (value.kind !== 'image') throw new Error('not an image');
    expect(value.tag).toBe('samples/image');
    expect([value.image.height, value.image.width, value.image.colorspace]).toEqual([8, 8, 3]);
    expect(hex(value.image.encoded)).toBe(hex(pngBytes));
    // The PNG TensorBoard stored is the picture MANIFEST.json describes: pixel (x, y) = (36x, 36y, 128).
    const png = decodePng(value.image.encoded);
    for (const [x, y] of [[0, 0], [7, 0], [3, 5], [7, 7]] as const) expect(png.pixel(x, y)).toEqual([36 * x, 36 * y, 128]);
    // readEventFile gives the same value.
    expect(readEventFile(EVENT_FILE, fileBytes)[1]).toEqual(event);
  });

  test('a PNG of ours in an image summary reads back as the same pixels', () => {
    const rgb = Uint8Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) % 256);
    const encoded = encodePng(5, 3, rgb);
    const event = { wallTime: 12.5, step: 4, kind: 'summary' as const, values: [{ tag: 'samples/0', kind: 'image' as const, image: { height: 3, width: 5, colorspace: 3 as const, encoded } }] };
    const back = decodeEvent(encodeEvent(event));
    expect(back).toEqual(event);
    if (back.kind !== 'summary' || back.values[0]!.kind !== 'image') throw new Error('not an image summary');
    const png = decodePng(back.values[0]!.image.encoded);
    expect([png.width, png.height]).toEqual([5, 3]);
    for (let y = 0; y < 3; y++) for (let x = 0; x < 5; x++) expect(png.pixel(x, y)).toEqual([...rgb.subarray((y * 5 + x) * 3, (y * 5 + x) * 3 + 3)]);
  });

  test('an image it cannot describe (colorspace 0, the proto3 default) stays "other" and is written back unchanged', () => {
    const img = new ProtoWriter();
    img.uint(1, 8);
    img.uint(2, 8);
    img.bytes(4, pngBytes);
    const value = new ProtoWriter();
    value.string(1, 'odd');
    value.bytes(4, img.finish());
    const summary = new ProtoWriter();
    summary.bytes(1, value.finish());
    const ev = new ProtoWriter();
    ev.double(1, 3);
    ev.bytes(5, summary.finish());
    const bytes = ev.finish();
    const e = decodeEvent(bytes);
    expect(e).toMatchObject({ kind: 'summary', values: [{ tag: 'odd', kind: 'other', what: 'image with an invalid size or colorspace' }] });
    expect(hex(encodeEvent(e))).toBe(hex(bytes));
  });

  test('refuses to write an image without a positive integer size', () => {
    expect(() => encodeImage({ height: 0, width: 8, colorspace: 3, encoded: pngBytes })).toThrow(/image height 0 is not a positive 32-bit integer/);
    expect(() => encodeImage({ height: 8, width: 2.5, colorspace: 3, encoded: pngBytes })).toThrow(/image width 2.5/);
  });
});
