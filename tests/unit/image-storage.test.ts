// Gives Node the IndexedDB globals (indexedDB, IDBKeyRange) the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
// The wasm backend runs the tiny UNet and VAE several times faster than cpu (as the other SD tests use it).
import '@tensorflow/tfjs-backend-wasm';
import { deleteDB } from 'idb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { decodeImageEntry, prepareImage, readImageFolder } from '../../src/core/data/images/index';
import { isUserError } from '../../src/core/errors';
import { encodePng } from '../../src/core/image/png';
import { loadClipTokenizerFromFolder } from '../../src/core/models/diffusion/clip-tokenizer';
import { readComponentConfig } from '../../src/core/models/diffusion/component';
import type { PreparedImage } from '../../src/core/models/diffusion/latent-cache';
import { loadSamplingPipeline, type SamplingPipeline } from '../../src/core/models/diffusion/sample';
import type { SingleFileConfigs } from '../../src/core/models/diffusion/single-file';
import { bytesSource, type ByteSource } from '../../src/core/safetensors/index';
import { closeDatabase, DB_NAME, DB_VERSION, openDatabase, type LoraLabDb, type StoredRun } from '../../src/storage/db';
import {
  deleteDiffusionModel,
  importDiffusionModel,
  listDiffusionModels,
  storedDiffusersFolder,
  sweepUnfinishedDiffusionModels,
  type StoredDiffusionModel,
} from '../../src/storage/diffusion-models';
import { deleteImageDataset, importImageDataset, previewImageDataset, readStoredImageFolder, THUMBNAIL_SIZE, type StoredImageDataset } from '../../src/storage/image-datasets';
import { cachedImageSet, type CacheableImage } from '../../src/storage/latent-cache';
import { lockName, localLocks } from '../../src/storage/locks';
import { deleteUnusedImageDataset } from '../../src/storage/prune';
import { putRun } from '../../src/storage/runs';
import { storageUsage } from '../../src/storage/usage';
import type { FileToStore } from '../../src/storage/stored-files';
import { imageSetOf, readImageData } from '../../src/worker/image-library';
import { diffusersFolderFromDisk, readSdFixtureJson, SD_FIXTURES, TINY_SD } from './support/diffusers-folder';
import { decodePngRgba } from './support/png';
import { freshDbAtVersion } from './support/old-database';
import { ldmSingleFile } from './support/ldm-single-file';
import { filesOnDisk } from './support/disk-files';

/** The reference outputs of an independent PyTorch implementation (tiny-sd's README). */
interface UnetForwardFixture {
  tolerance: number;
  inputs: { latents: number[][][][]; timesteps: number[]; input_ids: number[][] };
  outputs: { unet_sample: number[][][][] };
}
/** Reference latents of data-stripes (mean × 0.18215, no flip), [40][4][8][8], in path order. */
interface LossFixture {
  latents: number[][][][];
}

const decode = async (bytes: Uint8Array) => decodePngRgba(bytes);

/** The files of tiny-sd the pipeline reads (tokenizer.json is a copy of vocab + merges, which are read). */
const NEEDED = [
  'model_index.json',
  'scheduler/scheduler_config.json',
  'text_encoder/config.json',
  'text_encoder/model.safetensors',
  'tokenizer/merges.txt',
  'tokenizer/special_tokens_map.json',
  'tokenizer/tokenizer_config.json',
  'tokenizer/vocab.json',
  'unet/config.json',
  'unet/diffusion_pytorch_model.safetensors',
  'vae/config.json',
  'vae/diffusion_pytorch_model.safetensors',
];

async function readAll(source: ByteSource): Promise<Uint8Array> {
  return source.read(0, source.size);
}

async function storesAreEmpty(db: LoraLabDb): Promise<void> {
  expect(await db.count('diffusionModels')).toBe(0);
  expect(await db.count('diffusionFiles')).toBe(0);
}

function caught(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

/** The UNet's noise prediction for the fixture's inputs, with the pipeline's own text encoder. */
function predictNoise(pipeline: SamplingPipeline, fixture: UnetForwardFixture): tf.Tensor4D {
  const text = pipeline.textEncoder.forward(fixture.inputs.input_ids);
  text.pooled.dispose();
  const sample = tf.tensor4d(fixture.inputs.latents.flat(3), [2, 4, 8, 8]);
  const out = pipeline.unet.forward(sample, fixture.inputs.timesteps, text.lastHiddenState as tf.Tensor3D);
  tf.dispose([sample, text.lastHiddenState]);
  return out;
}

let db: LoraLabDb;

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
});

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
});

afterAll(() => closeDatabase());

describe('diffusion models in IndexedDB', () => {
  it('stores tiny-sd byte for byte (only the files the pipeline reads), with progress in bytes up to the total', async () => {
    const files = filesOnDisk(TINY_SD);
    const progress: [number, number][] = [];
    // 64 KiB slices: the UNet's weights span many, so reads cross slice boundaries.
    const model = await importDiffusionModel(db, files, { name: 'tiny-sd', chunkBytes: 65536, locks: localLocks(), onProgress: (d, t) => progress.push([d, t]) });
    expect(model.status).toBe('ready');
    expect(model.format).toEqual({ kind: 'diffusers' });
    expect(model.files.map((f) => f.path).sort()).toEqual(NEEDED);
    const onDisk = new Map(files.map((f) => [f.path, f.source]));
    const total = NEEDED.reduce((n, p) => n + onDisk.get(p)!.size, 0);
    expect(model.sizeBytes).toBe(total);
    expect(progress.at(-1)).toEqual([total, total]);
    expect(progress.every(([d], i) => i === 0 || d >= progress[i - 1]![0])).toBe(true);

    const folder = await storedDiffusersFolder(db, (await listDiffusionModels(db))[0]!);
    expect([...folder.keys()].sort()).toEqual(NEEDED);
    for (const path of NEEDED) {
      const stored = await readAll(folder.get(path)!);
      expect(Buffer.from(stored).equals(readFileSync(join(TINY_SD, path))), path).toBe(true);
    }
    // A range across a slice boundary reads the same bytes as the file has there.
    const unet = folder.get('unet/diffusion_pytorch_model.safetensors')!;
    const disk = readFileSync(join(TINY_SD, 'unet/diffusion_pytorch_model.safetensors'));
    expect(Buffer.from(await unet.read(65536 - 7, 65536 * 2 + 5)).equals(disk.subarray(65536 - 7, 65536 * 2 + 5))).toBe(true);
  });

  it('refuses a folder without unet/config.json, naming it, and stores nothing', async () => {
    const files = filesOnDisk(TINY_SD).filter((f) => f.path !== 'unet/config.json');
    const e = await caught(importDiffusionModel(db, files, { name: 'tiny-sd', locks: localLocks() }));
    expect(isUserError(e) && e.subject).toBe('unet/config.json');
    await storesAreEmpty(db);
  });

  it('refuses a truncated safetensors file, naming it, and stores nothing', async () => {
    const files = filesOnDisk(TINY_SD).map((f) =>
      f.path === 'vae/diffusion_pytorch_model.safetensors'
        ? { path: f.path, source: bytesSource(f.path, new Uint8Array(readFileSync(join(TINY_SD, f.path))).subarray(0, f.source.size - 100)) }
        : f,
    );
    const e = await caught(importDiffusionModel(db, files, { name: 'tiny-sd', locks: localLocks() }));
    expect(isUserError(e) && e.subject).toBe('vae/diffusion_pytorch_model.safetensors');
    expect((e as Error).message).toMatch(/file|bytes/);
    await storesAreEmpty(db);
  });

  it('a cancel half-way through the weights removes every slice written so far', async () => {
    const controller = new AbortController();
    const e = await caught(
      importDiffusionModel(db, filesOnDisk(TINY_SD), {
        name: 'tiny-sd',
        chunkBytes: 65536,
        locks: localLocks(),
        signal: controller.signal,
        onProgress: (done) => {
          if (done > 200_000) controller.abort(new DOMException('Cancelled', 'AbortError'));
        },
      }),
    );
    expect((e as DOMException).name).toBe('AbortError');
    await storesAreEmpty(db);
  });

  it('the pipeline loaded from IndexedDB predicts the reference noise, exactly as the one loaded from disk', async () => {
    const model = await importDiffusionModel(db, filesOnDisk(TINY_SD), { name: 'tiny-sd', chunkBytes: 65536, locks: localLocks() });
    const fixture = readSdFixtureJson<UnetForwardFixture>('expected/unet_forward_seed0.json');
    const fromDb = await loadSamplingPipeline(await storedDiffusersFolder(db, model));
    const fromDisk = await loadSamplingPipeline(diffusersFolderFromDisk());
    const stored = predictNoise(fromDb, fixture);
    const disk = predictNoise(fromDisk, fixture);
    const reference = tf.tensor4d(fixture.outputs.unet_sample.flat(3), [2, 4, 8, 8]);
    expect(tf.max(tf.abs(tf.sub(stored, reference))).dataSync()[0]).toBeLessThan(fixture.tolerance);
    expect([...stored.dataSync()]).toEqual([...disk.dataSync()]);
    tf.dispose([stored, disk, reference]);
    fromDb.dispose();
    fromDisk.dispose();
  });

  it('a single-file checkpoint needs the tokenizer files, and says so', async () => {
    const checkpoint = readFileSync(join(TINY_SD, 'unet/diffusion_pytorch_model.safetensors'));
    const e = await caught(importDiffusionModel(db, [{ path: 'tiny.safetensors', source: bytesSource('tiny.safetensors', new Uint8Array(checkpoint)) }], { name: 'tiny', locks: localLocks() }));
    expect(isUserError(e) && e.subject).toBe('tiny.safetensors');
    expect((e as Error).message).toMatch(/vocab\.json and merges\.txt/);
    await storesAreEmpty(db);
  });

  it('stores a single-file LDM checkpoint as it came, and its folder view loads the reference UNet', async () => {
    const fixture = readSdFixtureJson<UnetForwardFixture>('expected/unet_forward_seed0.json');
    const ldm = ldmSingleFile();
    const tokenizer = ['vocab.json', 'merges.txt'].map((name) => ({ path: `tok/${name}`, source: bytesSource(name, new Uint8Array(readFileSync(join(TINY_SD, 'tokenizer', name)))) }));
    const model = await importDiffusionModel(db, [{ path: 'tiny-ldm.safetensors', source: bytesSource('tiny-ldm.safetensors', ldm) }, ...tokenizer], {
      name: 'tiny-ldm',
      chunkBytes: 65536,
      singleFileConfigs: await tinyConfigs(),
      locks: localLocks(),
    });
    expect(model.format.kind).toBe('single-file');
    expect(model.files.map((f) => f.path).sort()).toEqual(['checkpoint/tiny-ldm.safetensors', 'tokenizer/merges.txt', 'tokenizer/vocab.json']);
    const folder = await storedDiffusersFolder(db, model);
    expect(Buffer.from(await readAll(folder.get('tokenizer/vocab.json')!)).equals(readFileSync(join(TINY_SD, 'tokenizer/vocab.json')))).toBe(true);
    const pipeline = await loadSamplingPipeline(folder);
    const noise = predictNoise(pipeline, fixture);
    const reference = tf.tensor4d(fixture.outputs.unet_sample.flat(3), [2, 4, 8, 8]);
    expect(tf.max(tf.abs(tf.sub(noise, reference))).dataSync()[0]).toBeLessThan(fixture.tolerance);
    tf.dispose([noise, reference]);
    pipeline.dispose();
  });
});

describe('library housekeeping', () => {
  it('the migrations from an older database add the image stores without touching its data', async () => {
    await closeDatabase();
    await deleteDB(DB_NAME);
    const v5 = await freshDbAtVersion(5);
    await v5.put('models', { id: 'old-model', status: 'ready', name: 'old' });
    v5.close();
    db = await openDatabase();
    expect(db.version).toBe(DB_VERSION);
    expect(await db.get('models', 'old-model')).toEqual({ id: 'old-model', status: 'ready', name: 'old' });
    expect(await listDiffusionModels(db)).toEqual([]);
    expect(await db.count('latents')).toBe(0);
  });

  it("the start-up sweep removes a crashed import's record and slices, and leaves one a live tab still writes", async () => {
    const locks = localLocks();
    const record = (id: string) => ({ id, name: id, status: 'importing', format: { kind: 'diffusers' }, files: [], sizeBytes: 3, importedAt: 1 }) as StoredDiffusionModel;
    for (const id of ['crashed', 'live']) {
      await db.put('diffusionModels', record(id));
      await db.put('diffusionFiles', { ownerId: id, path: 'unet/config.json', index: 0, bytes: new ArrayBuffer(3) });
    }
    let release!: () => void;
    const holding = locks.hold(lockName.modelImport('live'), () => new Promise<void>((r) => (release = r)));
    expect(await sweepUnfinishedDiffusionModels(db, locks)).toBe(1);
    expect((await db.getAll('diffusionModels')).map((m) => m.id)).toEqual(['live']);
    expect((await db.getAll('diffusionFiles')).map((c) => c.ownerId)).toEqual(['live']);
    release();
    await holding;
  });
});

// ─── Image datasets ─────────────────────────────────────────────────────────────────────────────────────────────

const DATA_BASE = join(SD_FIXTURES, 'data-base');

/** An RGB PNG of one colour, or of a pattern from `pixel`. */
function png(width: number, height: number, pixel: (x: number, y: number) => [number, number, number]): Uint8Array {
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) rgb.set(pixel(x, y), (y * width + x) * 3);
  return encodePng(width, height, rgb);
}

const text = (path: string, s: string): FileToStore => ({ path, source: bytesSource(path, new TextEncoder().encode(s)) });
const image = (path: string, bytes: Uint8Array): FileToStore => ({ path, source: bytesSource(path, bytes) });

describe('image datasets in IndexedDB', () => {
  it('stores data-base (images, captions, metadata.csv) and reads back the same entries, with thumbnails of the centre crop', async () => {
    const files = filesOnDisk(DATA_BASE);
    const dataset = await importImageDataset(db, files, { name: 'data-base', decode, chunkBytes: 1000, locks: localLocks() });
    const direct = await readImageFolder(files, { folderName: 'data-base' });
    const stored = await readStoredImageFolder(db, dataset);
    expect(stored.entries.map(({ path, caption, captionOrigin, repeats, folder }) => ({ path, caption, captionOrigin, repeats, folder }))).toEqual(
      direct.entries.map(({ path, caption, captionOrigin, repeats, folder }) => ({ path, caption, captionOrigin, repeats, folder })),
    );
    expect(stored.entries).toHaveLength(40);
    expect(stored.notes).toEqual(direct.notes);
    for (const f of files) {
      const back = await stored.entries.find((e) => e.path === f.path)?.source.read(0, f.source.size);
      if (back) expect(Buffer.from(back).equals(Buffer.from(await f.source.read(0, f.source.size)))).toBe(true);
    }

    const preview = await previewImageDataset(db, dataset, { tokenizer: null, resolution: 32 });
    expect(preview.rows).toHaveLength(40);
    expect(preview.tokenCounts).toBe(false);
    expect(preview.rows.every((r) => r.width === 32 && r.height === 32 && r.tokenCount === 0)).toBe(true);
    expect(preview.imagesPerEpoch).toBe(40);
    // The thumbnail, read with the independent decoder, is the image prepared at THUMBNAIL_SIZE.
    const first = direct.entries[0]!;
    const thumb = decodePngRgba(preview.thumbnails[0]!.png);
    expect([thumb.width, thumb.height]).toEqual([THUMBNAIL_SIZE, THUMBNAIL_SIZE]);
    const want = prepareImage(await decodeImageEntry(first, decode), { resolution: THUMBNAIL_SIZE, flip: false });
    expect([...thumb.rgba].filter((_, i) => i % 4 !== 3)).toEqual([...want]);
  });

  it("previews a crafted folder's warnings, with token counts from the stored model's tokenizer", async () => {
    const red = png(40, 40, () => [200, 0, 0]);
    const long = Array.from({ length: 90 }, (_, i) => `word${i % 7}`).join(' ');
    const files = [
      image('a.png', red),
      text('a.txt', 'a red square'),
      image('b.png', red), // same pixels as a.png
      text('b.txt', long),
      image('c.png', png(12, 12, (x) => [x * 20, 0, 0])), // tiny at resolution 64
      image('d.png', png(120, 40, (x, y) => [x, y, 0])), // 3:1, no caption
      image('.hidden.png', red),
    ];
    const dataset = await importImageDataset(db, files, { name: 'crafted', decode, locks: localLocks() });
    expect(dataset.images.map((i) => i.path)).toEqual(['a.png', 'b.png', 'c.png', 'd.png']);
    const tokenizer = await loadClipTokenizerFromFolder(diffusersFolderFromDisk());
    const preview = await previewImageDataset(db, dataset, { tokenizer, resolution: 64 });
    const kinds = (path: string) => preview.rows.find((r) => r.path === path)!.warnings.map((w) => w.kind).sort();
    expect(kinds('a.png')).toEqual([]);
    expect(kinds('b.png')).toEqual(['duplicate', 'long-caption']);
    expect(kinds('c.png')).toEqual(['missing-caption', 'tiny']);
    expect(kinds('d.png')).toEqual(['missing-caption', 'non-square']);
    expect(preview.rows.find((r) => r.path === 'b.png')!.tokenCount).toBe(tokenizer.encode(long).length);
    expect(preview.rows.find((r) => r.path === 'a.png')!.tokenCount).toBe(tokenizer.encode('a red square').length);
    expect(preview.warnings.map((w) => w.kind).sort()).toEqual(['duplicate', 'long-caption', 'missing-caption', 'non-square', 'tiny']);
    expect(preview.tokenCounts).toBe(true);
  });

  it('refuses a folder with an image the decoder cannot read, and stores nothing', async () => {
    const files = [image('a.png', png(8, 8, () => [1, 2, 3])), image('b.png', new Uint8Array([1, 2, 3, 4]))];
    const e = await caught(importImageDataset(db, files, { name: 'broken', decode, locks: localLocks() }));
    expect(isUserError(e) && e.subject).toBe('b.png');
    expect(await db.count('imageDatasets')).toBe(0);
    expect(await db.count('imageDatasetFiles')).toBe(0);
  });
});

// ─── Latent cache ───────────────────────────────────────────────────────────────────────────────────────────────

describe('latent cache', () => {
  let pipeline: SamplingPipeline & { dispose(): void };
  let model: StoredDiffusionModel;
  let dataset: StoredImageDataset;
  let encodeCalls = 0;

  beforeEach(async () => {
    model = await importDiffusionModel(db, filesOnDisk(TINY_SD), { name: 'tiny-sd', locks: localLocks() });
    dataset = await importImageDataset(db, filesOnDisk(join(SD_FIXTURES, 'data-stripes')), { name: 'data-stripes', decode, locks: localLocks() });
    pipeline ??= await loadSamplingPipeline(await storedDiffusersFolder(db, model));
    const vae = pipeline.vae;
    if (!('counted' in vae)) {
      const encode = vae.encode.bind(vae);
      Object.assign(vae, { counted: true, encode: (x: tf.Tensor4D) => (encodeCalls++, encode(x)) });
    }
    encodeCalls = 0;
  });

  afterAll(() => pipeline?.dispose());

  async function images(prepared: { count: number }, flip: boolean): Promise<CacheableImage[]> {
    const folder = await readStoredImageFolder(db, dataset);
    return folder.entries.map((entry) => ({
      path: entry.path,
      caption: entry.caption,
      repeats: entry.repeats,
      async prepare(): Promise<PreparedImage> {
        prepared.count++;
        const decoded = await decodeImageEntry(entry, decode);
        return { size: 32, rgb: prepareImage(decoded, { resolution: 32, flip: false }), flippedRgb: flip ? prepareImage(decoded, { resolution: 32, flip: true }) : null, caption: entry.caption, repeats: entry.repeats };
      },
    }));
  }

  it('encodes once (the reference latents), then a second run with the same key decodes and encodes nothing and gets the same latents', async () => {
    const key = { modelId: model.id, datasetId: dataset.id, resolution: 32, flip: true };
    const first = { count: 0 };
    const miss = await cachedImageSet(db, key, pipeline, await images(first, true), { trainTextEncoder: false });
    expect(miss.hit).toBe(false);
    expect(first.count).toBe(40);
    expect(encodeCalls).toBeGreaterThan(0);
    const reference = readSdFixtureJson<LossFixture>('expected/loss_stripes_seed0.json');
    miss.set.examples.forEach((e, i) => {
      const want = reference.latents[i]!.flat(2);
      expect(Math.max(...want.map((v, j) => Math.abs(v - e.latents[j]!)))).toBeLessThan(1e-4);
    });
    expect(await db.count('latents')).toBe(40);

    encodeCalls = 0;
    const second = { count: 0 };
    const hit = await cachedImageSet(db, key, pipeline, await images(second, true), { trainTextEncoder: false });
    expect(hit.hit).toBe(true);
    expect([second.count, encodeCalls]).toEqual([0, 0]);
    expect(hit.set.latentShape).toEqual(miss.set.latentShape);
    expect(hit.set.examples).toHaveLength(miss.set.examples.length);
    hit.set.examples.forEach((e, i) => {
      expect(e.latents).toEqual(miss.set.examples[i]!.latents);
      expect(e.flippedLatents).toEqual(miss.set.examples[i]!.flippedLatents);
      expect(e.caption).toBe(miss.set.examples[i]!.caption);
    });
    expect(hit.set.captions).toEqual(miss.set.captions);

    // Another resolution or flip is another key: a miss.
    encodeCalls = 0;
    const other = await cachedImageSet(db, { ...key, flip: false }, pipeline, await images({ count: 0 }, false), { trainTextEncoder: false });
    expect(other.hit).toBe(false);
    expect(encodeCalls).toBeGreaterThan(0);
  });

  it("the worker's imageSetOf uses the cache for library ids, and deleting the dataset or the model drops the latents", async () => {
    const data = await readImageData(db, { datasetId: dataset.id }, { caption_extension: '.txt' });
    const ctx = { signal: new AbortController().signal, progress: () => undefined };
    const opts = { resolution: 32, flip: false, phase: 'Encoding', decode, trainTextEncoder: false };
    const a = await imageSetOf(db, pipeline, model.id, data, opts, ctx);
    encodeCalls = 0;
    const b = await imageSetOf(db, pipeline, model.id, data, opts, ctx);
    expect(encodeCalls).toBe(0);
    expect(b.examples.map((e) => [...e.latents])).toEqual(a.examples.map((e) => [...e.latents]));

    expect(await db.count('latents')).toBe(40);
    await deleteImageDataset(db, dataset.id);
    expect(await db.count('latents')).toBe(0);
    const again = await importImageDataset(db, filesOnDisk(join(SD_FIXTURES, 'data-stripes')), { name: 'data-stripes', decode, locks: localLocks() });
    await imageSetOf(db, pipeline, model.id, await readImageData(db, { datasetId: again.id }, { caption_extension: '.txt' }), opts, ctx);
    expect(await db.count('latents')).toBe(40);
    await deleteDiffusionModel(db, model.id);
    expect(await db.count('latents')).toBe(0);
    expect(await db.count('diffusionFiles')).toBe(0);
  });

  it('the Storage panel counts models with their latents and image datasets; a dataset a live run trains on is not deleted', async () => {
    const key = { modelId: model.id, datasetId: dataset.id, resolution: 32, flip: false };
    await cachedImageSet(db, key, pipeline, await images({ count: 0 }, false), { trainTextEncoder: false });
    const usage = await storageUsage(db);
    const latentBytes = 40 * 4 * 8 * 8 * 4;
    expect(usage.diffusionModels).toEqual([{ id: model.id, name: 'tiny-sd', bytes: model.sizeBytes + latentBytes, latentBytes, adapterBytes: 0 }]);
    const thumbs = dataset.images.reduce((n, i) => n + i.thumbnail.byteLength, 0);
    const onDisk = readdirSync(join(SD_FIXTURES, 'data-stripes')).reduce((n, f) => n + statSync(join(SD_FIXTURES, 'data-stripes', f)).size, 0);
    expect(usage.imageDatasets).toEqual([{ id: dataset.id, name: 'data-stripes', bytes: onDisk + thumbs, neededBy: [] }]);
    expect(usage.totalBytes).toBe(model.sizeBytes + latentBytes + onDisk + thumbs);

    const locks = localLocks();
    const run = { id: 'run-1', name: 'stripes', modelId: model.id, status: 'running', createdAt: 1, imageData: { train: dataset.id, val: null } } as unknown as StoredRun;
    await putRun(db, run);
    expect((await storageUsage(db)).imageDatasets[0]!.neededBy).toEqual(['stripes']);
    let release!: () => void;
    const holding = locks.hold(lockName.run(run.id), () => new Promise<void>((r) => (release = r)));
    const e = await caught(deleteUnusedImageDataset(db, dataset.id, locks));
    expect(isUserError(e) && e.message).toMatch(/training right now/);
    expect(await db.count('imageDatasets')).toBe(1);
    release();
    await holding;
    // The lock is free (the run's tab is gone) and the record is not interrupted (prune.ts keeps those runs' folders).
    await deleteUnusedImageDataset(db, dataset.id, locks);
    expect(await db.count('imageDatasets')).toBe(0);
    expect(await db.count('latents')).toBe(0);
  });
});

// ─── A single-file checkpoint made from tiny-sd (the test's own diffusers → LDM table, as sd-single-file.test.ts) ──

async function tinyConfigs(): Promise<SingleFileConfigs> {
  const folder = diffusersFolderFromDisk();
  return {
    unet: await readComponentConfig(folder, 'unet'),
    vae: await readComponentConfig(folder, 'vae'),
    text_encoder: await readComponentConfig(folder, 'text_encoder'),
    scheduler: await readComponentConfig(folder, 'scheduler'),
  };
}
