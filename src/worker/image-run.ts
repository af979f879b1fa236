import * as tf from '@tensorflow/tfjs';
import { parseRunConfigYaml, runName, unwrapRunConfig, type RunConfig } from '../core/config';
import { decodeImageEntry, prepareImage, readImageFolder, tagFrequency, type ImageEntry } from '../core/data/images/index';
import { UserError } from '../core/errors';
import { runSummaryJson } from '../core/export/run-summary';
import { trainImageLora } from '../core/image-run/run';
import type { DiffusersFolder } from '../core/models/diffusion/component';
import { readComponentConfig } from '../core/models/diffusion/component';
import { cacheImageSet, type PreparedImage } from '../core/models/diffusion/latent-cache';
import { parseNoiseSchedule } from '../core/models/diffusion/noise';
import { loadSamplingPipeline, type SamplingPipeline } from '../core/models/diffusion/sample';
import { blobSource } from '../core/safetensors/source';
import type { CachedImageSet, ImageBatch } from '../core/train/image-examples';
import type { Trainer } from '../core/train/trainer';
import { EventFileWriter } from '../core/logging/writer';
import type { LoraLabDb, StoredRun } from '../storage/db';
import { lockName, type Locks } from '../storage/locks';
import { appendLog, putArtifact, putMetric, putRun, updateRun } from '../storage/runs';
import { decodeWithImageBitmap } from './image-decoder';
import type { RunContext } from './training-run';
import type { TrainResult } from './protocol';
import { measureRun } from './run-measure';
import { pauseOnFullStorage } from './storage-full';

/** A folder the person picked (or the headless runner handed over): its name and its files by relative path. */
export interface PickedFolder {
  readonly name: string;
  /** `path` is relative to the folder, '/'-separated, without the folder's own name. */
  readonly files: readonly { readonly path: string; readonly file: File }[];
}

export interface ImageTrainRequest {
  /** A Stable Diffusion 1.x folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/). */
  readonly model: PickedFolder;
  /** Images with captions (metadata.csv or a caption file beside each image; kohya `n_name` repeat folders). */
  readonly train: PickedFolder;
  /** Validation images: the fixed-noise eval loss is measured on them. */
  readonly val: PickedFolder | null;
  readonly configYaml: string;
}

/** Host name in event file names, as TensorBoard shows it in its run list. */
const LOG_HOST = 'lora-lab';

/**
 * An image LoRA run in the worker: the diffusers folder loaded from the picked files, the images decoded, cropped
 * and encoded to latents once, then trainImageLora with the run's curves, log and files going into IndexedDB as a
 * language-model run's do, so the Runs panel, the zip and the headless runner read it the same way.
 * Not yet resumable: the model is read from the picked files, not from the library.
 */
export async function trainImageRun(db: LoraLabDb, request: ImageTrainRequest, ctx: RunContext, locks: Locks): Promise<TrainResult> {
  const { config } = unwrapRunConfig(parseRunConfigYaml(request.configYaml, 'config.yaml'));
  if (config.backend !== 'auto' && config.backend !== tf.getBackend()) {
    throw new UserError('backend', `is ${config.backend} in the config, but the engine runs on ${tf.getBackend()}.`, `Switch the Backend setting to ${config.backend}, or set backend: auto.`);
  }
  const folder: DiffusersFolder = new Map(request.model.files.map(({ path, file }) => [path, blobSource(file, path)]));
  if (!folder.has('model_index.json')) {
    throw new UserError('base_model', `${request.model.name} has no model_index.json, so it is not a diffusers folder.`, 'Pick the Stable Diffusion folder in diffusers layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).');
  }
  ctx.progress({ phase: 'Loading weights', done: 0, total: 1, unit: 'steps' });
  const before = tf.memory().numBytes;
  const pipeline = await loadSamplingPipeline(folder);
  // What loading the pipeline added: the UNet's, VAE's and text encoder's weights as the device holds them.
  const baseBytes = tf.memory().numBytes - before;
  try {
    const schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
    const trainFolder = await readPicked(request.train, config);
    const train = await cachePicked(pipeline, trainFolder, config, config.flip_aug, 'Encoding training images', ctx);
    const val = request.val ? await cachePicked(pipeline, await readPicked(request.val, config), config, false, 'Encoding validation images', ctx) : null;
    const runId = crypto.randomUUID();
    return await locks.hold(lockName.run(runId), () =>
      runImages(db, runId, { config, pipeline, schedule, train, val, entries: trainFolder.entries, modelName: request.model.name, baseBytes }, ctx),
    );
  } finally {
    pipeline.dispose();
  }
}

interface Prepared {
  readonly config: RunConfig;
  readonly pipeline: SamplingPipeline;
  readonly schedule: ReturnType<typeof parseNoiseSchedule>;
  readonly train: CachedImageSet;
  readonly val: CachedImageSet | null;
  readonly entries: readonly ImageEntry[];
  readonly modelName: string;
  readonly baseBytes: number;
}

async function runImages(db: LoraLabDb, runId: string, p: Prepared, ctx: RunContext): Promise<TrainResult> {
  const { config } = p;
  const run: StoredRun = {
    id: runId,
    name: runName(config),
    modelId: '',
    modelName: p.modelName,
    config,
    status: 'running',
    createdAt: Date.now(),
    updatedAt: Date.now(),
    backend: tf.getBackend(),
    step: 0,
    totalSteps: 0,
    bestEvalLoss: null,
    findings: [],
    logFile: config.log_steps > 0 ? EventFileWriter.fileName(Math.floor(Date.now() / 1000), LOG_HOST, 0) : null,
    error: null,
  };
  await putRun(db, run);
  const measure = measureRun(p.baseBytes);
  try {
    const storage = pauseOnFullStorage({
      paused(message) {
        ctx.event({ kind: 'paused', reason: message });
        void updateRun(db, runId, { status: 'paused', error: message }).catch(() => undefined);
      },
    });
    const kept = storage.write;
    let trainer: Trainer<unknown> | null = null;
    let bestEvalLoss: number | null = null;
    const dirs = [...new Map(p.entries.map((e) => [e.folder, e])).values()].map((e) => ({
      name: e.folder,
      repeats: e.repeats,
      imageCount: p.entries.filter((x) => x.folder === e.folder).length,
    }));
    const result = await trainImageLora(
      {
        config,
        pipeline: p.pipeline,
        schedule: p.schedule,
        train: p.train,
        val: p.val,
        baseModelName: p.modelName,
        dataset: { dirs, tagFrequency: tagFrequency(p.entries) },
        measureLoss: (inner) => measure.lossFn(inner, (batch: ImageBatch) => batch.latents.shape[0]),
        callbacks: [
          measure.callbacks,
          {
            async onStepEnd(m) {
              ctx.event({ kind: 'step', ...m });
              if (m.step % 10 === 0 || m.step === trainer?.totalSteps) await kept('record', () => updateRun(db, runId, { step: m.step }));
            },
            async onEval(e) {
              ctx.event({ kind: 'eval', step: e.step, loss: e.loss });
              if (bestEvalLoss === null || e.loss < bestEvalLoss) {
                bestEvalLoss = e.loss;
                await kept('record', () => updateRun(db, runId, { bestEvalLoss }));
              }
            },
          },
        ],
        onTrainer({ trainer: t, trainableParameters }) {
          trainer = t;
          void updateRun(db, runId, { totalSteps: t.totalSteps }).catch(() => undefined);
          ctx.event({ kind: 'started', runId, totalSteps: t.totalSteps, trainTokens: 0, evalTokens: 0, images: { train: p.train.examples.length, eval: p.val?.examples.length ?? 0 }, trainableParameters, fromStep: 0 });
          ctx.onControl((action) => {
            if (action === 'pause') {
              t.pause();
              ctx.event({ kind: 'paused' });
              void updateRun(db, runId, { status: 'paused' }).catch(() => undefined);
            } else if (action === 'resume') {
              t.resume();
              ctx.event({ kind: 'resumed' });
              void updateRun(db, runId, { status: 'running', error: null }).catch(() => undefined);
              storage.resume();
            } else {
              t.stop('stopped');
              storage.stop();
            }
          });
          ctx.signal.addEventListener('abort', () => {
            t.stop('stopped');
            storage.stop();
          }, { once: true });
        },
      },
      {
        metric: (row) => kept('curves', () => putMetric(db, { runId, ...row, epoch: row.epoch, custom: {} })),
        log: (bytes) => kept('TensorBoard log', () => appendLog(db, runId, bytes)),
        file: (path, bytes) => kept(`file ${path}`, () => putArtifact(db, runId, path, bytes)),
        async findings(findings) {
          ctx.event({ kind: 'diagnosis', findings: [...findings] });
          await kept('record', () => updateRun(db, runId, { findings }));
        },
      },
    );
    measure.stop();
    await kept('file run_summary.json', () => putArtifact(db, runId, 'run_summary.json', runSummaryJson(measure.summary())));
    await updateRun(db, runId, {
      status: result.reason === 'completed' || result.reason === 'early_stopped' ? 'completed' : result.reason,
      step: result.steps,
      findings: result.findings,
    });
    return { runId, reason: result.reason, steps: result.steps };
  } catch (e) {
    measure.stop();
    await updateRun(db, runId, { status: 'failed', error: e instanceof Error ? e.message : String(e) }).catch(() => undefined);
    throw e;
  }
}

async function readPicked(folder: PickedFolder, config: RunConfig) {
  return readImageFolder(
    folder.files.map(({ path, file }) => ({ path, source: blobSource(file, path) })),
    { folderName: folder.name, captionExtension: config.caption_extension },
  );
}

/** Decodes, crops and (with flip_aug) mirrors each image, then encodes all of them to latents once. */
async function cachePicked(
  pipeline: SamplingPipeline,
  folder: Awaited<ReturnType<typeof readPicked>>,
  config: RunConfig,
  flip: boolean,
  phase: string,
  ctx: RunContext,
): Promise<CachedImageSet> {
  const prepared: PreparedImage[] = [];
  for (const [i, entry] of folder.entries.entries()) {
    ctx.progress({ phase: `${phase}: reading`, done: i, total: folder.entries.length, unit: 'steps' });
    const decoded = await decodeImageEntry(entry, decodeWithImageBitmap);
    prepared.push({
      size: config.resolution,
      rgb: prepareImage(decoded, { resolution: config.resolution, flip: false }),
      flippedRgb: flip ? prepareImage(decoded, { resolution: config.resolution, flip: true }) : null,
      caption: entry.caption,
      repeats: entry.repeats,
    });
  }
  return cacheImageSet(pipeline, prepared, {
    trainTextEncoder: false,
    onProgress: (done, total) => ctx.progress({ phase, done, total, unit: 'steps' }),
  });
}
