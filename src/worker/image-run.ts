import * as tf from '@tensorflow/tfjs';
import { imageTrainingOf, parseRunConfigYaml, runName, unwrapRunConfig, type RunConfig } from '../core/config';
import { tagFrequency, type ImageEntry } from '../core/data/images/index';
import { UserError } from '../core/errors';
import { runSummaryJson } from '../core/export/run-summary';
import { imageConfigWithInitAdapter, trainImageLora, type ImageInitAdapter } from '../core/image-run/run';
import { writtenConfigKeys } from '../core/lora/adapter-check';
import type { DiffusersFolder } from '../core/models/diffusion/component';
import { readComponentConfig } from '../core/models/diffusion/component';
import { parseNoiseSchedule } from '../core/models/diffusion/noise';
import { loadSamplingPipeline, type SamplingPipeline } from '../core/models/diffusion/sample';
import { placementFor } from '../core/weights/hold';
import type { CachedImageSet, ImageBatch } from '../core/train/image-examples';
import type { Trainer } from '../core/train/trainer';
import { EventFileWriter } from '../core/logging/writer';
import type { LoraLabDb, StoredRun } from '../storage/db';
import { lockName, type Locks } from '../storage/locks';
import { appendLog, putArtifact, putMetric, putRun, updateRun } from '../storage/runs';
import { decodeWithImageBitmap } from './image-decoder';
import { imageInitAdapterOf } from './image-adapters';
import { imageSetOf, openImageModel, readImageData, type ImageDataRef, type ImageModelRef } from './image-library';
import type { RunContext } from './training-run';
import type { TrainResult } from './protocol';
import { measureRun } from './run-measure';
import { pauseOnFullStorage } from './storage-full';

export type { PickedFolder } from './image-library';

export interface ImageTrainRequest {
  /**
   * A Stable Diffusion 1.x model of the library (importDiffusionModel), or a folder in diffusers layout picked for
   * this run (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/).
   */
  readonly model: ImageModelRef;
  /**
   * Images with captions (metadata.csv or a caption file beside each image; kohya `n_name` repeat folders): a stored
   * image folder (importImageDataset), whose latents are cached with a library model, or a folder picked for the run.
   */
  readonly train: ImageDataRef;
  /** Validation images: the fixed-noise eval loss is measured on them. */
  readonly val: ImageDataRef | null;
  readonly configYaml: string;
}

/** Host name in event file names, as TensorBoard shows it in its run list. */
const LOG_HOST = 'lora-lab';

/**
 * An image LoRA run in the worker: the model loaded and the images decoded, cropped and encoded to latents once, then
 * trainImageLora with the run's curves, log and files going into IndexedDB as a language-model run's do, so the Runs
 * panel, the zip and the headless runner read it the same way. The model and the images come from the library
 * (latents cached per model, dataset, resolution and flip) or from folders picked for the run. Not yet resumable.
 */
export async function trainImageRun(db: LoraLabDb, request: ImageTrainRequest, ctx: RunContext, locks: Locks): Promise<TrainResult> {
  const { config } = unwrapRunConfig(parseRunConfigYaml(request.configYaml, 'config.yaml'));
  if (config.backend !== 'auto' && config.backend !== tf.getBackend()) {
    throw new UserError('backend', `is ${config.backend} in the config, but the engine runs on ${tf.getBackend()}.`, `Switch the Backend setting to ${config.backend}, or set backend: auto.`);
  }
  const model = await openImageModel(db, request.model);
  const folder: DiffusersFolder = model.folder;
  // init_adapter: read and checked against the model's headers before its weights are loaded.
  const initAdapter = await imageInitAdapterOf(db, config.init_adapter, model);
  ctx.progress({ phase: 'Loading weights', done: 0, total: 1, unit: 'steps' });
  const before = tf.memory().numBytes;
  const pipeline = await loadSamplingPipeline(folder, { unetPlacement: placementFor(config.base_quantization) });
  // What loading the pipeline added: the UNet's, VAE's and text encoder's weights as the device holds them.
  const baseBytes = tf.memory().numBytes - before;
  try {
    // The run takes init_adapter's LoRA shape; a config that disagrees is refused before any image is encoded.
    const runConfig = initAdapter ? imageConfigWithInitAdapter(config, writtenConfigKeys(request.configYaml), initAdapter, pipeline.unet) : config;
    const schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
    const trainData = await readImageData(db, request.train, config);
    const valData = request.val ? await readImageData(db, request.val, config) : null;
    const trainTextEncoder = imageTrainingOf(config).textEncoderLearningRate !== null;
    const encode = (flip: boolean, phase: string) => ({ resolution: config.resolution, flip, phase, decode: decodeWithImageBitmap, trainTextEncoder });
    const train = await imageSetOf(db, pipeline, model.modelId, trainData, encode(config.flip_aug, 'Encoding training images'), ctx);
    const val = valData ? await imageSetOf(db, pipeline, model.modelId, valData, encode(false, 'Encoding validation images'), ctx) : null;
    const runId = crypto.randomUUID();
    const imageData = { train: trainData.datasetId, val: valData?.datasetId ?? null };
    return await locks.hold(lockName.run(runId), () =>
      runImages(db, runId, { config: runConfig, pipeline, schedule, train, val, entries: trainData.entries, modelId: model.modelId, modelName: model.name, imageData, baseBytes, initAdapter }, ctx),
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
  /** The library model's id; null for a picked folder. */
  readonly modelId: string | null;
  readonly modelName: string;
  readonly imageData: NonNullable<StoredRun['imageData']>;
  readonly baseBytes: number;
  /** init_adapter's tensors; null for a fresh LoRA. */
  readonly initAdapter: ImageInitAdapter | null;
}

async function runImages(db: LoraLabDb, runId: string, p: Prepared, ctx: RunContext): Promise<TrainResult> {
  const { config } = p;
  const run: StoredRun = {
    id: runId,
    name: runName(config),
    modelId: p.modelId ?? '',
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
    imageData: p.imageData,
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
        initAdapter: p.initAdapter,
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
        sample: (s) => ctx.event({ kind: 'sample', step: s.step, index: s.index, prompt: s.prompt, png: s.png }),
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
