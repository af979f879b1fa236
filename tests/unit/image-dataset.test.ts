import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { encodePng } from '../../src/core/image/png';
import { loadClipTokenizer, type ClipTokenizer } from '../../src/core/models/diffusion/clip-tokenizer';
import {
  decodeImageEntry,
  imagePreview,
  measureImages,
  parseRepeatFolder,
  prepareImage,
  readImageFolder,
  tagFrequency,
  type DecodedImage,
  type ImageDecoder,
} from '../../src/core/data/images/index';
import { bytesSource } from '../../src/core/safetensors/index';
import { SD_FIXTURES, TINY_SD } from './support/diffusers-folder';
import { decodePng, decodePngRgba } from './support/png';
import { filesOnDisk } from './support/disk-files';

const STRIPES = join(SD_FIXTURES, 'data-stripes');

const pngDecoder: ImageDecoder = (bytes) => Promise.resolve(decodePngRgba(bytes));

const tokenizerFile = (name: string) => readFileSync(join(TINY_SD, 'tokenizer', name), 'utf8');
const clip: ClipTokenizer = loadClipTokenizer({
  vocabJson: tokenizerFile('vocab.json'),
  mergesTxt: tokenizerFile('merges.txt'),
  tokenizerConfigJson: tokenizerFile('tokenizer_config.json'),
  specialTokensMapJson: tokenizerFile('special_tokens_map.json'),
});
/** The independent count: the tokenizers library reading the fixture's tokenizer.json. */
const library = new Tokenizer(JSON.parse(tokenizerFile('tokenizer.json')), JSON.parse(tokenizerFile('tokenizer_config.json')));
const libraryTokenCount = (text: string) => library.encode(text, { add_special_tokens: false }).ids.length;

/** An RGBA image from a function of (x, y) → [r, g, b, a]. */
function image(width: number, height: number, pixel: (x: number, y: number) => number[]): DecodedImage {
  const rgba = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) rgba.set(pixel(x, y), (y * width + x) * 4);
  return { width, height, rgba };
}

/** Pixel (x, y) of HWC RGB bytes. */
const rgbAt = (bytes: Uint8Array, res: number, x: number, y: number) => [...bytes.subarray((y * res + x) * 3, (y * res + x) * 3 + 3)];

/** An RGB PNG from a function of (x, y) → [r, g, b], written by the project's encoder. */
function png(width: number, height: number, pixel: (x: number, y: number) => number[]): Uint8Array {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) rgb.set(pixel(x, y), (y * width + x) * 3);
  return encodePng(width, height, rgb);
}

describe('the data-stripes fixture (metadata.csv and .txt captions side by side)', () => {
  const txtCaption = (image: string) => readFileSync(join(STRIPES, image.replace(/\.png$/, '.txt')), 'utf8').trim();

  it('reads 40 images once each, captioned by metadata.csv, equal to the .txt files, and says metadata.csv wins', async () => {
    const { entries, notes } = await readImageFolder(filesOnDisk(STRIPES), { folderName: 'data-stripes' });
    const pngs = readdirSync(STRIPES).filter((f) => f.endsWith('.png')).sort();
    expect(pngs).toHaveLength(40);
    expect(entries.map((e) => e.path)).toEqual(pngs);
    for (const e of entries) {
      expect(e.caption).toBe(txtCaption(e.path));
      expect(e.captionOrigin).toBe('metadata.csv');
      expect(e.repeats).toBe(1);
      expect(e.folder).toBe('data-stripes');
    }
    expect(notes).toContainEqual(expect.stringMatching(/^metadata\.csv and \.txt caption files both caption 40 images: metadata\.csv wins \(they agree\)\.$/));
  });

  it('falls back to the .txt files without metadata.csv, and a changed metadata.csv row wins over its .txt', async () => {
    const files = filesOnDisk(STRIPES);
    const withoutCsv = await readImageFolder(files.filter((f) => f.path !== 'metadata.csv'), { folderName: 'data-stripes' });
    expect(withoutCsv.entries.every((e) => e.captionOrigin === 'caption file' && e.caption === txtCaption(e.path))).toBe(true);
    expect(withoutCsv.notes).toEqual([]);

    const csv = 'file_name,text\r\n./img_0003.png,"a ""quoted"" caption, with a comma"\r\nimg_9999.png,nothing\r\n';
    const changed = files.map((f) => (f.path === 'metadata.csv' ? { path: f.path, source: bytesSource(f.path, new TextEncoder().encode(csv)) } : f));
    const { entries, notes } = await readImageFolder(changed, { folderName: 'data-stripes' });
    expect(entries[3]).toMatchObject({ path: 'img_0003.png', caption: 'a "quoted" caption, with a comma', captionOrigin: 'metadata.csv' });
    expect(entries[4]).toMatchObject({ caption: txtCaption('img_0004.png'), captionOrigin: 'caption file' });
    expect(notes).toContainEqual(expect.stringMatching(/both caption 1 image: metadata\.csv wins \(they differ for 1 of them\)/));
    expect(notes).toContainEqual(expect.stringMatching(/names 1 image that the folder does not have \(e\.g\. metadata\.csv line 3: img_9999\.png\)/));
  });

  it('decodes to 32×32; at resolution 32 the prepared bytes are the PNG pixels, at 16 the 2×2 block means', async () => {
    const { entries } = await readImageFolder(filesOnDisk(STRIPES), { folderName: 'data-stripes' });
    const infos = await measureImages(entries, pngDecoder);
    expect([...infos.values()].every((i) => i.width === 32 && i.height === 32)).toBe(true);
    for (const entry of entries.slice(0, 3)) {
      const decoded = await decodeImageEntry(entry, pngDecoder);
      const reference = decodePng(readFileSync(join(STRIPES, entry.path)));
      const full = prepareImage(decoded, { resolution: 32, flip: false });
      const half = prepareImage(decoded, { resolution: 16, flip: false });
      for (let y = 0; y < 32; y++) for (let x = 0; x < 32; x++) expect(rgbAt(full, 32, x, y)).toEqual(reference.pixel(x, y));
      for (let y = 0; y < 16; y++) {
        for (let x = 0; x < 16; x++) {
          const block = [reference.pixel(2 * x, 2 * y), reference.pixel(2 * x + 1, 2 * y), reference.pixel(2 * x, 2 * y + 1), reference.pixel(2 * x + 1, 2 * y + 1)];
          expect(rgbAt(half, 16, x, y)).toEqual([0, 1, 2].map((c) => Math.round(block.reduce((s, p) => s + p[c]!, 0) / 4)));
        }
      }
    }
  });

  it('previews without warnings, counts tokens as the tokenizers library does, and counts tags as kohya', async () => {
    const { entries } = await readImageFolder(filesOnDisk(STRIPES), { folderName: 'data-stripes' });
    const preview = imagePreview(entries, await measureImages(entries, pngDecoder), clip, { resolution: 32 });
    expect(preview.warnings).toEqual([]);
    expect(preview.imagesPerEpoch).toBe(40);
    for (const row of preview.rows) {
      expect(row.warnings).toEqual([]);
      expect(row.tokenCount).toBe(libraryTokenCount(txtCaption(row.path)));
    }
    // Counted from the .txt files with awk: every caption is "<scene>, stripes style" (one comma), and three scenes
    // occur twice, e.g. "a small white square on a orange background".
    const counts = preview.tagFrequency['data-stripes']!;
    expect(Object.keys(preview.tagFrequency)).toEqual(['data-stripes']);
    expect(counts['stripes style']).toBe(40);
    expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(80);
    expect(counts['a small white square on a orange background']).toBe(2);
  });
});

describe('a kohya folder with repeats, caption gaps, a duplicate and odd sizes', () => {
  let dir: string;
  const pattern = (x: number, y: number) => [x * 30, y * 30, (x + y) % 2 ? 255 : 0];
  const longCaption = Array.from({ length: 90 }, () => 'red').join(' ');

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'image-dataset-'));
    const write = (path: string, data: Uint8Array | string) => {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), data);
    };
    write('3_style/a.png', png(8, 8, pattern));
    write('3_style/a.txt', 'Red, Blue,  red ,stripes\nsecond line is ignored\n');
    write('3_style/b.png', png(8, 8, (x, y) => [x, y, 9])); // no caption: the folder name stands in
    write('3_style/c.png', png(8, 8, (x, y) => [y, x, 9]));
    write('3_style/c.txt', '');
    write('3_style/d.png', png(8, 8, pattern)); // the same pixels as a.png
    write('3_style/d.caption', 'dup');
    write('wide.png', png(40, 10, (x) => [x * 6, 0, 0]));
    write('wide.txt', 'wide, red');
    write('tiny.png', png(4, 4, (x, y) => [x * 60, y * 60, 0])); // no caption at all
    write('long.png', png(16, 16, (x, y) => [x * 15, y * 15, 200]));
    write('long.txt', longCaption);
    write('0_skip/e.png', png(8, 8, () => [1, 2, 3]));
    write('notes.md', '# my dataset');
    write('orphan.txt', 'no image');
    write('.DS_Store', 'mac');
    write('__MACOSX/3_style/._a.png', 'AppleDouble');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads repeats, captions, their origins and folders in sorted order, with notes', async () => {
    const { entries, notes } = await readImageFolder(filesOnDisk(dir), { folderName: 'my-set' });
    expect(entries.map(({ path, caption, captionOrigin, repeats, folder }) => ({ path, caption, captionOrigin, repeats, folder }))).toEqual([
      { path: '3_style/a.png', caption: 'Red, Blue,  red ,stripes', captionOrigin: 'caption file', repeats: 3, folder: '3_style' },
      { path: '3_style/b.png', caption: 'style', captionOrigin: 'folder name', repeats: 3, folder: '3_style' },
      { path: '3_style/c.png', caption: '', captionOrigin: 'caption file', repeats: 3, folder: '3_style' },
      { path: '3_style/d.png', caption: 'dup', captionOrigin: 'caption file', repeats: 3, folder: '3_style' },
      { path: 'long.png', caption: longCaption, captionOrigin: 'caption file', repeats: 1, folder: 'my-set' },
      { path: 'tiny.png', caption: '', captionOrigin: 'none', repeats: 1, folder: 'my-set' },
      { path: 'wide.png', caption: 'wide, red', captionOrigin: 'caption file', repeats: 1, folder: 'my-set' },
    ]);
    expect(notes).toEqual([
      '1 caption file has more than one line: only the first line is used, as kohya does.',
      'The folder 0_skip repeats its images 0 times, so they are left out.',
      "Images outside kohya repeat folders (my-set) are trained once per epoch; kohya's sd-scripts would skip them.",
      `Images without a caption take their repeat folder's name as the caption, as in kohya (1 image, e.g. 3_style/b.png: "style").`,
      'Caption files without an image of the same name are not used (1 file, e.g. orphan.txt).',
      '1 file that is neither images nor captions is ignored (e.g. notes.md).',
    ]);
  });

  it('counts tags per folder as kohya: split on commas, trimmed, lower-cased, once per image whatever its repeats', async () => {
    const { entries } = await readImageFolder(filesOnDisk(dir), { folderName: 'my-set' });
    expect(tagFrequency(entries)).toEqual({
      '3_style': { red: 2, blue: 1, stripes: 1, style: 1, dup: 1 },
      'my-set': { [longCaption]: 1, wide: 1, red: 1 },
    });
    // Tags that are Object.prototype names stay plain keys (as JSON, the form ss_tag_frequency is written in).
    expect(JSON.stringify(tagFrequency([{ folder: 'f', caption: '__proto__, constructor' }]))).toBe('{"f":{"__proto__":1,"constructor":1}}');
  });

  it('warns per image and over the folder: captions missing, empty, too long; tiny; non-square; duplicate', async () => {
    const { entries } = await readImageFolder(filesOnDisk(dir), { folderName: 'my-set' });
    const preview = imagePreview(entries, await measureImages(entries, pngDecoder), clip, { resolution: 16 });
    const kinds = Object.fromEntries(preview.rows.map((r) => [r.path, r.warnings.map((w) => w.kind)]));
    expect(kinds).toEqual({
      '3_style/a.png': [],
      '3_style/b.png': ['missing-caption'],
      '3_style/c.png': ['empty-caption'],
      '3_style/d.png': ['duplicate'],
      'long.png': ['long-caption'],
      'tiny.png': ['missing-caption', 'tiny'],
      'wide.png': ['non-square'],
    });
    const row = (path: string) => preview.rows.find((r) => r.path === path)!;
    expect(row('3_style/d.png').warnings[0]).toMatchObject({ of: '3_style/a.png' });
    expect(libraryTokenCount(longCaption)).toBeGreaterThan(75);
    expect(row('long.png').tokenCount).toBe(libraryTokenCount(longCaption));
    expect(row('long.png').warnings[0]).toMatchObject({ tokens: libraryTokenCount(longCaption), limit: 75 });
    expect(row('long.png').warnings[0]!.message).toMatch(/only the first 75, so the rest is cut/);
    expect(row('tiny.png').warnings[1]).toMatchObject({ shortSide: 4, resolution: 16 });
    expect(row('wide.png').warnings[0]).toMatchObject({ aspect: 4 });
    expect(row('wide.png')).toMatchObject({ width: 40, height: 10, repeats: 1 });
    expect(preview.warnings.map((w) => [w.kind, w.paths])).toEqual([
      ['missing-caption', ['3_style/b.png', 'tiny.png']],
      ['empty-caption', ['3_style/c.png']],
      ['long-caption', ['long.png']],
      ['tiny', ['tiny.png']],
      ['non-square', ['wide.png']],
      ['duplicate', ['3_style/d.png']],
    ]);
    expect(preview.imagesPerEpoch).toBe(4 * 3 + 3);
  });
});

describe('repeat folder names, nested metadata.csv, caption_extension', () => {
  const file = (path: string, bytes: Uint8Array | string) => ({
    path,
    source: bytesSource(path, typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes),
  });
  const onePixel = png(1, 1, () => [0, 0, 0]);

  it('reads n and the class tokens as kohya splits the name on its first "_"', () => {
    expect(parseRepeatFolder('10_sks dog')).toEqual({ repeats: 10, classTokens: 'sks dog' });
    expect(parseRepeatFolder('1_0_x')).toEqual({ repeats: 1, classTokens: '0_x' });
    expect(parseRepeatFolder('5')).toEqual({ repeats: 5, classTokens: '' });
    expect(parseRepeatFolder('stripes')).toBeNull();
    expect(parseRepeatFolder('x_10')).toBeNull();
  });

  it('takes metadata.csv file names relative to its own folder, prefers the chosen caption extension, and flags year-like repeats', async () => {
    const { entries, notes } = await readImageFolder(
      [
        file('10_cats/metadata.csv', 'File_Name , Text\nx.png,  a cat  \n'),
        file('10_cats/x.png', onePixel),
        file('2023_trip/y.png', onePixel),
        file('2023_trip/y.txt', 'from txt'),
        file('2023_trip/y.caption', 'from caption'),
      ],
      { folderName: 'root', captionExtension: 'caption' },
    );
    expect(entries.map(({ path, caption, captionOrigin, repeats }) => [path, caption, captionOrigin, repeats])).toEqual([
      ['10_cats/x.png', 'a cat', 'metadata.csv', 10],
      ['2023_trip/y.png', 'from caption', 'caption file', 2023],
    ]);
    expect(notes).toEqual([
      '1 image has both .caption and .txt caption files: the .caption file is used.',
      'The folder 2023_trip repeats its images 2023 times per epoch, because kohya reads the number before the first "_" as the repeat count. Rename the folder if that is not meant (e.g. 10_trip).',
    ]);
  });

  it('notes a picked folder that is itself named like a repeat folder', async () => {
    const { entries, notes } = await readImageFolder([file('a.png', onePixel)], { folderName: '10_stripes' });
    expect(entries[0]).toMatchObject({ repeats: 1, folder: '10_stripes', captionOrigin: 'none' });
    expect(notes).toEqual([expect.stringMatching(/^The picked folder 10_stripes is named like a kohya repeat folder, but .* Pick the folder above it/)]);
  });
});

describe('prepareImage (resize the short side, centre crop, flip, alpha on white)', () => {
  const opaque = (r: number, g: number, b: number) => [r, g, b, 255];

  it('shrinks 2× by averaging each 2×2 block', () => {
    const src = image(4, 4, (x, y) => opaque(x * 50 + y * 7, (x * y * 13) % 256, 255 - x * 20));
    const out = prepareImage(src, { resolution: 2, flip: false });
    for (let y = 0; y < 2; y++) {
      for (let x = 0; x < 2; x++) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (const [dx, dy] of [[0, 0], [1, 0], [0, 1], [1, 1]] as const) sum += src.rgba[((2 * y + dy) * 4 + 2 * x + dx) * 4 + c]!;
          expect(out[(y * 2 + x) * 3 + c]).toBe(Math.round(sum / 4));
        }
      }
    }
  });

  it('averages fractional areas when the scale is not whole (3 → 2: weights 1 and ½ over 1.5 pixels)', () => {
    const out = prepareImage(image(3, 3, (x) => opaque(x * 90, 0, 0)), { resolution: 2, flip: false });
    expect([rgbAt(out, 2, 0, 0)[0], rgbAt(out, 2, 1, 0)[0], rgbAt(out, 2, 0, 1)[0], rgbAt(out, 2, 1, 1)[0]]).toEqual([
      Math.round((0 * 1 + 90 * 0.5) / 1.5),
      Math.round((90 * 0.5 + 180 * 1) / 1.5),
      30,
      150,
    ]);
  });

  it('crops the centre of a non-square image after scaling its short side', () => {
    // 8×4 → 4×2, crop 2 columns starting at floor((4 − 2) / 2) = 1: source columns 2–3 and 4–5.
    const wide = image(8, 4, (x, y) => opaque(x * 30, y * 60, 0));
    const out = prepareImage(wide, { resolution: 2, flip: false });
    expect(rgbAt(out, 2, 0, 0)).toEqual([(60 + 90) / 2, (0 + 60) / 2, 0].map(Math.round));
    expect(rgbAt(out, 2, 1, 1)).toEqual([(120 + 150) / 2, (120 + 180) / 2, 0].map(Math.round));
    // 3×6 at resolution 3: no scaling; the crop starts floor((6 − 3) / 2) = 1 row down, so rows 1–3 are kept exactly.
    const tall = image(3, 6, (x, y) => opaque(x * 40, y * 40, 5));
    const cut = prepareImage(tall, { resolution: 3, flip: false });
    for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) expect(rgbAt(cut, 3, x, y)).toEqual([x * 40, (y + 1) * 40, 5]);
  });

  it('enlarges bilinearly with pixel centres aligned and edges clamped (2 → 4: weights ¾ and ¼)', () => {
    const p = [
      [0, 160],
      [64, 224],
    ]; // p[y][x], multiples of 16 so every expected value is whole
    const out = prepareImage(image(2, 2, (x, y) => opaque(p[y]![x]!, 0, 0)), { resolution: 4, flip: false });
    const taps = [[[0, 1]], [[0, 0.75], [1, 0.25]], [[0, 0.25], [1, 0.75]], [[1, 1]]]; // output i → (source, weight)
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 4; x++) {
        let v = 0;
        for (const [sy, wy] of taps[y]!) for (const [sx, wx] of taps[x]!) v += wy! * wx! * p[sy!]![sx!]!;
        expect(rgbAt(out, 4, x, y)[0]).toBe(v);
      }
    }
  });

  it('flips left–right: pixel (x, y) becomes (res − 1 − x, y)', () => {
    const gradient = image(6, 6, (x, y) => opaque(x * 40, y * 40, 7));
    const flipped = prepareImage(gradient, { resolution: 6, flip: true });
    for (let y = 0; y < 6; y++) for (let x = 0; x < 6; x++) expect(rgbAt(flipped, 6, x, y)).toEqual([(5 - x) * 40, y * 40, 7]);
  });

  it('composites alpha on white, so what hides under transparent pixels never shows', () => {
    const out = prepareImage(image(3, 3, (x) => [[200, 100, 0, 64], [0, 0, 0, 0], [9, 8, 7, 255]][x]!), { resolution: 1, flip: false });
    expect(out).toHaveLength(3);
    // 3×3 → 1×1 averages the nine composited pixels; the rows are equal, so it is the mean of the three columns.
    const onWhite = (c: number, a: number) => (c * a) / 255 + 255 * (1 - a / 255);
    const expected = [0, 1, 2].map((c) => Math.round((onWhite([200, 100, 0][c]!, 64) + 255 + [9, 8, 7][c]!) / 3));
    expect([...out]).toEqual(expected);
    const single = prepareImage(image(1, 1, () => [200, 100, 0, 64]), { resolution: 1, flip: false });
    expect([...single]).toEqual([onWhite(200, 64), onWhite(100, 64), onWhite(0, 64)].map(Math.round));
    expect([...prepareImage(image(1, 1, () => [10, 20, 30, 0]), { resolution: 1, flip: false })]).toEqual([255, 255, 255]);
  });
});

describe('errors', () => {
  it('names an image that does not decode', async () => {
    const entry = { path: '3_style/broken.png', source: bytesSource('broken.png', new Uint8Array([1, 2, 3])) };
    const error = await decodeImageEntry(entry, pngDecoder).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect(error).toMatchObject({ subject: '3_style/broken.png' });
    expect((error as Error).message).toMatch(/could not be decoded as an image \(not a PNG/);
    const empty = await decodeImageEntry(entry, () => Promise.resolve({ width: 0, height: 0, rgba: new Uint8Array(0) })).catch((e: unknown) => e);
    expect(empty).toMatchObject({ name: 'UserError', subject: '3_style/broken.png' });
  });

  it('refuses a folder without images, and a metadata.csv without file_name', async () => {
    const text = (path: string, s: string) => ({ path, source: bytesSource(path, new TextEncoder().encode(s)) });
    await expect(readImageFolder([text('a.txt', 'x')], { folderName: 'empty' })).rejects.toThrow(/^empty: has no images \(LoRA Lab reads png, jpg, jpeg, webp, bmp\)/);
    const files = [{ path: 'a.png', source: bytesSource('a.png', png(1, 1, () => [0, 0, 0])) }, text('metadata.csv', 'name,text\na.png,hi\n')];
    await expect(readImageFolder(files, { folderName: 'x' })).rejects.toThrow(/^metadata\.csv: needs a "file_name" column/);
  });
});
