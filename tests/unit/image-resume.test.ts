// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
// The wasm backend runs the tiny UNet several times faster than cpu, and as exactly run after run.
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { deleteDB } from 'idb';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { isUserError } from '../../src/core/errors';
import { readEventFile, scalarSeries } from '../../src/core/logging';
import { applyRestarts, isSessionStart } from '../../src/core/logging/session-log';
import { bytesSource, readHeader } from '../../src/core/safetensors/index';
import { listCheckpoints } from '../../src/storage/checkpoints';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb, type StoredRun } from '../../src/storage/db';
import { importDiffusionModel } from '../../src/storage/diffusion-models';
import { importImageDataset } from '../../src/storage/image-datasets';
import { localLocks } from '../../src/storage/locks';
import { deleteUnusedImageDataset } from '../../src/storage/prune';
import { getRun, markInterruptedRuns, readArtifacts, readMetrics } from '../../src/storage/runs';
import { resumeImageRun, trainImageRun, type PickedFolder } from '../../src/worker/image-run';
import type { ImageDataRef, ImageModelRef } from '../../src/worker/image-library';
import type { ExportedFile, RunEvent } from '../../src/worker/protocol';
import { imageResumeProblem } from '../../src/worker/resume';
import { exportRunFiles } from '../../src/worker/run-files';
import { SD_FIXTURES, TINY_SD } from './support/diffusers-folder';
import { filesOnDisk } from './support/disk-files';
import { decodePngRgba } from './support/png';
import { runContext } from './support/run-context';
import { crashingRun } from './support/dying-tab';

// An image run's resume, end to end in Node (wasm backend, fake-indexeddb), as resume-run.test.ts checks a text
// run's: the tab dies after step 7 (nothing graceful: every storage call from then on never answers), the next
// tab's sweep marks the run interrupted, and resuming it from its step-6 checkpoint (in the second epoch, with
// dropout, flip_aug, noise offset, min-SNR, gradient accumulation and a text-encoder LoRA) must leave what the
// same run never interrupted leaves: the same adapter bytes, curves (each step once), diagnosis, samples and
// TensorBoard events. Killed before its first checkpoint, it trains again from step 0 in the same record, to the
// same files. A run on folders picked for it alone cannot be resumed, and says why.

const CONFIG = [
  'output_dir: ./output/resume-stripes',
  'lora_rank: 4',
  'lora_alpha: 4',
  'lora_dropout: 0.1',
  'resolution: 32',
  'learning_rate: 3e-3',
  'lr_scheduler: cosine',
  'warmup_steps: 2',
  'batch_size: 4',
  'grad_accum_steps: 2',
  'max_steps: 10',
  'flip_aug: true',
  'noise_offset: 0.05',
  'min_snr_gamma: 5',
  'train_text_encoder: true',
  'text_encoder_lr: 1e-3',
  'eval_steps: 2',
  'eval_on_start: true',
  'log_steps: 2',
  'save_steps: 3',
  'sample_steps: 4',
  'sample_prompts:',
  '  - "a small red circle on a blue background, stripes style --s 2"',
  'seed: 5',
].join('\n');

const decode = async (bytes: Uint8Array) => decodePngRgba(bytes);

let db: LoraLabDb;

beforeAll(async () => {
  // The worker's modules point tfjs at the app's wasm URLs (backend.ts); Node reads the binaries from node_modules.
  const dist = fileURLToPath(new URL('../../node_modules/@tensorflow/tfjs-backend-wasm/dist/', import.meta.url));
  setWasmPaths(Object.fromEntries(['tfjs-backend-wasm.wasm', 'tfjs-backend-wasm-simd.wasm', 'tfjs-backend-wasm-threaded-simd.wasm'].map((f) => [f, dist + f])));
  expect(await tf.setBackend('wasm')).toBe(true);
});

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
});

afterAll(() => closeDatabase());

/** tiny-sd and the stripes folders in the library, as the image panel imports them. */
async function library(): Promise<{ model: { modelId: string }; train: { datasetId: string }; val: { datasetId: string } }> {
  const model = await importDiffusionModel(db, filesOnDisk(TINY_SD), { name: 'tiny-sd', locks: localLocks() });
  const folder = (name: string) => importImageDataset(db, filesOnDisk(join(SD_FIXTURES, name)), { name, decode, locks: localLocks() });
  return { model: { modelId: model.id }, train: { datasetId: (await folder('data-stripes')).id }, val: { datasetId: (await folder('data-stripes-heldout')).id } };
}

/** A folder on disk as the person picks it for one run (not stored). */
function picked(dir: string, name: string): PickedFolder {
  return { name, files: filesOnDisk(dir).map((f) => ({ path: f.path, file: new File([readFileSync(join(dir, f.path))], f.path.split('/').at(-1)!) })) };
}

type Inputs = { model: ImageModelRef; train: ImageDataRef; val: ImageDataRef | null };

/** One tab's worker: its own locks (another tab cannot see them once it is gone). */
function train(into: LoraLabDb, inputs: Inputs, onEvent?: (e: RunEvent) => void) {
  return trainImageRun(into, { ...inputs, configYaml: CONFIG }, runContext(onEvent), localLocks(), { decode });
}

/** What the worker's resumeImageRun does, in a new tab. */
function resume(runId: string, onEvent?: (e: RunEvent) => void) {
  return resumeImageRun(db, runId, runContext(onEvent), localLocks(), { decode });
}

const byPath = (files: readonly ExportedFile[]) => new Map(files.map((f) => [f.path, f.bytes]));
const text = (bytes: Uint8Array | string | undefined) => (typeof bytes === 'string' ? bytes : new TextDecoder().decode(bytes));

/** The run's stored artifacts as the core wrote them (metrics.csv among them: the export makes its own from the rows). */
async function artifacts(runId: string): Promise<Map<string, Uint8Array | string>> {
  return new Map((await readArtifacts(db, runId)).map((a) => [a.path, a.bytes instanceof ArrayBuffer ? new Uint8Array(a.bytes) : (a.bytes as unknown as Uint8Array | string)]));
}

/** A metrics.csv without tokens_per_second, which measures this machine's speed rather than the run. */
function curves(csv: string): string[][] {
  const [head, ...rows] = csv.trim().split('\n').map((l) => l.split(','));
  const drop = head!.indexOf('tokens_per_second');
  expect(drop).toBeGreaterThan(0);
  return [head!, ...rows].map((r) => r.filter((_, i) => i !== drop));
}

/** The log's events as data, restarts applied as TensorBoard applies them, wall times and throughput (clock readings) left out. */
function events(files: Map<string, Uint8Array>): unknown[] {
  const [path] = [...files.keys()].filter((p) => p.startsWith('logs/'));
  return applyRestarts(readEventFile(path!, files.get(path!)!))
    .filter((e) => !isSessionStart(e))
    .map(({ wallTime: _, ...rest }) =>
      rest.kind === 'summary' ? { ...rest, values: rest.values.map((v) => (v.tag === 'train/tokens_per_second' ? { ...v, value: 'clock' } : v)) } : rest,
    );
}

/** The kohya file's tensors (bytes) and notes, the two clock readings (when training started and finished) apart. */
async function kohya(bytes: Uint8Array): Promise<{ tensors: Uint8Array; notes: Record<string, string>; started: string; finished: string }> {
  const header = await readHeader(bytesSource('lora.safetensors', bytes));
  const { ss_training_started_at: started, ss_training_finished_at: finished, ...notes } = header.metadata;
  return { tensors: bytes.subarray(header.dataStart), notes, started: started!, finished: finished! };
}

describe('resuming an interrupted image run', () => {
  it('after a crash at step 7, resumes from the step-6 checkpoint and writes what the uninterrupted run writes', { timeout: 600_000 }, async () => {
    const inputs = await library();
    const straight = await train(db, inputs);
    expect(straight).toMatchObject({ reason: 'completed', steps: 10 });
    const expected = byPath(await exportRunFiles(db, straight.runId));
    const expectedArtifacts = await artifacts(straight.runId);

    const runId = await crashingRun(db, (tab, onEvent) => train(tab, inputs, onEvent), 7);
    // The next tab starts: its sweep finds the dead tab's image run as it finds a text run.
    expect(await markInterruptedRuns(db, localLocks())).toBe(1);
    const interrupted = (await getRun(db, runId))!;
    expect(interrupted.status).toBe('interrupted');
    expect(imageResumeProblem(interrupted)).toBeNull();
    // Its image folders are what the resume reads: the Storage panel's delete keeps them, as a text run's dataset.
    const refusal = await deleteUnusedImageDataset(db, inputs.train.datasetId, localLocks()).catch((e: unknown) => e);
    expect(isUserError(refusal) && refusal.message).toMatch(/which can still be resumed/);
    // Checkpoints as a text run keeps them: the newest two (steps 3 and 6), with what run_summary.json counts.
    const stored = await listCheckpoints(db, runId);
    expect(stored.map((c) => c.step)).toEqual([6, 3]);
    expect(stored[0]!.measured!.steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    // Step 7 was stored before the crash: the resume must replace it, not add to it.
    expect((await readMetrics(db, runId)).filter((r) => r.loss !== null).map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6, 7]);

    const started: RunEvent[] = [];
    const steps: number[] = [];
    const samples: number[] = [];
    const result = await resume(runId, (e) => {
      if (e.kind === 'started') started.push(e);
      if (e.kind === 'step') steps.push(e.step);
      if (e.kind === 'sample') samples.push(e.step);
    });
    expect(result).toEqual({ runId, reason: 'completed', steps: 10 });
    expect(started).toMatchObject([{ kind: 'started', runId, fromStep: 6, totalSteps: 10 }]);
    expect(steps).toEqual([7, 8, 9, 10]);
    // Step 8's samples again (the crashed segment made them after the checkpoint), and the finished adapter's.
    expect(samples).toEqual([8, 10]);

    const run = (await getRun(db, runId)) as StoredRun;
    expect(run.status).toBe('completed');
    expect(run.interruptions).toEqual([{ at_step: 7, resumed_from_step: 6 }]);
    expect(run.findings).toEqual((await getRun(db, straight.runId))!.findings);
    const got = byPath(await exportRunFiles(db, runId));
    const summary = JSON.parse(text(got.get('run_summary.json')));
    expect(summary).toMatchObject({ steps: 10, interruptions: [{ at_step: 7, resumed_from_step: 6 }] });
    expect(JSON.parse(text(expected.get('run_summary.json')))).toMatchObject({ steps: 10, interruptions: [] });

    // The same files, byte for byte: the PEFT folders (UNet and text encoder), samples, config and diagnosis.
    // (The event file's name holds its run's start time: compared by its events below.)
    const paths = (m: Map<string, unknown>) => [...m.keys()].filter((p) => p !== 'run_summary.json' && !p.startsWith('logs/')).sort();
    expect(paths(got)).toEqual(paths(expected));
    expect(paths(got)).toEqual(
      expect.arrayContaining(['resume-stripes.safetensors', 'adapter_model.safetensors', 'text_encoder/adapter_model.safetensors', 'samples/8_0.png', 'samples/10_0.png', 'diagnosis.json', 'metrics.csv']),
    );
    for (const path of paths(got).filter((p) => p !== 'resume-stripes.safetensors' && p !== 'metrics.csv')) {
      expect(got.get(path), path).toEqual(expected.get(path));
    }
    // The kohya file: the same tensors and notes; its start is the run's first segment's, not the resume's.
    const [mine, theirs] = [await kohya(got.get('resume-stripes.safetensors')!), await kohya(expected.get('resume-stripes.safetensors')!)];
    expect(mine.tensors).toEqual(theirs.tensors);
    expect(mine.notes).toEqual(theirs.notes);
    expect(Number(mine.started)).toBeCloseTo(interrupted.createdAt / 1000, 3);
    expect(Number(mine.finished)).toBeGreaterThan(Number(mine.started));

    // metrics.csv, both the run's own (training and evaluation rows apart) and the export's (one row a step).
    const mineCsv = text((await artifacts(runId)).get('metrics.csv'));
    expect(curves(mineCsv)).toEqual(curves(text(expectedArtifacts.get('metrics.csv'))));
    expect(curves(mineCsv).slice(1).filter((r) => r[2] !== '').map((r) => Number(r[0]))).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(curves(text(got.get('metrics.csv')))).toEqual(curves(text(expected.get('metrics.csv'))));

    // The event file: the same events (scalars, sample images, config) at the same steps, each once; one restart mark, at step 7.
    const logPath = [...got.keys()].find((p) => p.startsWith('logs/'))!;
    const raw = readEventFile(logPath, got.get(logPath)!);
    expect(raw.filter(isSessionStart).map((e) => e.step)).toEqual([7]);
    expect(events(got)).toEqual(events(expected));
    expect(scalarSeries(raw).get('train/loss')!.map((p) => p.step)).toEqual([2, 4, 6, 8, 10]);
    expect(scalarSeries(raw).get('eval/loss')!.map((p) => p.step)).toEqual([0, 2, 4, 6, 8, 10]);

    // Killed before its first checkpoint (step 3): it trains again from step 0 in the same record, replacing all it had.
    const early = await crashingRun(db, (tab, onEvent) => train(tab, inputs, onEvent), 1);
    expect(await markInterruptedRuns(db, localLocks())).toBe(1);
    expect(await listCheckpoints(db, early)).toEqual([]);
    const again: RunEvent[] = [];
    expect(await resume(early, (e) => e.kind === 'started' && again.push(e))).toEqual({ runId: early, reason: 'completed', steps: 10 });
    expect(again).toMatchObject([{ fromStep: 0 }]);
    expect((await getRun(db, early))!.interruptions).toEqual([{ at_step: 1, resumed_from_step: 0 }]);
    const fresh = byPath(await exportRunFiles(db, early));
    for (const path of ['adapter_model.safetensors', 'text_encoder/adapter_model.safetensors', 'samples/8_0.png', 'diagnosis.json']) expect(fresh.get(path), path).toEqual(expected.get(path));
    expect(curves(text(fresh.get('metrics.csv')))).toEqual(curves(text(expected.get('metrics.csv'))));
    expect(events(fresh)).toEqual(events(expected));
  });

  it('refuses a run on folders picked for it alone, saying they were not stored, and changes nothing', { timeout: 300_000 }, async () => {
    const inputs = { model: picked(TINY_SD, 'tiny-sd'), train: picked(join(SD_FIXTURES, 'data-stripes'), 'data-stripes'), val: picked(join(SD_FIXTURES, 'data-stripes-heldout'), 'heldout') };
    const runId = await crashingRun(db, (tab, onEvent) => train(tab, inputs, onEvent), 1);
    await markInterruptedRuns(db, localLocks());
    const before = (await getRun(db, runId))!;
    expect(before).toMatchObject({ status: 'interrupted', modelId: '', imageData: { train: null, val: null, valPicked: true } });

    const error = await resume(runId).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).toMatch(/picked for it \(the model, the training images and the validation images\), which LoRA Lab does not store/);
    expect(isUserError(error) && error.fix).toMatch(/Import the model and the image folders into the library/);
    expect(await getRun(db, runId)).toEqual(before);
  });

  it('tells a run without validation images from one whose validation folder was picked', () => {
    const run = { id: 'r', status: 'interrupted', modelId: 'm', imageData: { train: 'd', val: null, valPicked: false } } as unknown as StoredRun;
    expect(imageResumeProblem(run)).toBeNull();
    expect(imageResumeProblem({ ...run, imageData: { train: 'd', val: null, valPicked: true } })?.message).toMatch(/\(the validation images\)/);
    // Records from before valPicked existed cannot say which it was.
    expect(imageResumeProblem({ ...run, imageData: { train: 'd', val: null } })?.message).toMatch(/older version/);
    expect(imageResumeProblem({ ...run, status: 'completed' })?.message).toMatch(/is completed, not interrupted/);
  });
});
