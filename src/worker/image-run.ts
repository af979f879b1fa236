import * as tf from '@tensorflow/tfjs';
import { imageTrainingOf, parseRunConfigYaml, runName, unwrapRunConfig, type RunConfig } from '../core/config';
import { tagFrequency, type ImageDecoder, type ImageEntry } from '../core/data/images/index';
import { UserError } from '../core/errors';
import { runSummaryJson, type RunSummary } from '../core/export/run-summary';
import { imageConfigWithInitAdapter, trainImageLora, type ImageInitAdapter, type ImageRunResume } from '../core/image-run/run';
import { writtenConfigKeys } from '../core/lora/adapter-check';
import type { DiffusersFolder } from '../core/models/diffusion/component';
import { readComponentConfig } from '../core/models/diffusion/component';
import { parseNoiseSchedule } from '../core/models/diffusion/noise';
import { loadSamplingPipeline, type SamplingPipeline } from '../core/models/diffusion/sample';
import { placementFor } from '../core/weights/hold';
import type { CachedImageSet, ImageBatch } from '../core/train/image-examples';
import type { Trainer } from '../core/train/trainer';
import { EventFileWriter } from '../core/logging/writer';
import { latestCheckpoint, saveCheckpoint, type LatestCheckpoint } from '../storage/checkpoints';
import type { Interruption, LoraLabDb, StoredRun } from '../storage/db';
import { lockName, type Locks } from '../storage/locks';
import { rewindRun } from '../storage/resume';
import { appendLog, getRun, putArtifact, putMetric, putRun, readMetrics, updateRun } from '../storage/runs';
import { haltingAfter } from './halt';
import { decodeWithImageBitmap } from './image-decoder';
import { imageInitAdapterOf } from './image-adapters';
import { imageSetOf, openImageModel, readImageData, type ImageDataRef, type ImageModelRef } from './image-library';
import { diagnosisHistoryOf, imageMetricRowsOf, imageResumeInputsOf } from './resume';
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
  /** Automation only (the headless runner's --crash-at-step): stop the worker dead right after this step. */
  readonly haltAfterStep?: number;
}

/** Host name in event file names, as TensorBoard shows it in its run list. */
const LOG_HOST = 'lora-lab';

/** How a run reads its images; the browser's decoder unless given (Node tests decode PNGs themselves). */
export interface ImageRunOptions {
  readonly decode?: ImageDecoder;
}

/**
 * An image LoRA run in the worker: the model loaded and the images decoded, cropped and encoded to latents once, then
 * trainImageLora with the run's curves, log, files and checkpoints going into IndexedDB as a language-model run's
 * do, so the Runs panel, the zip and the headless runner read it the same way. The model and the images come from
 * the library (latents cached per model, dataset, resolution and flip) or from folders picked for the run; only a
 * run on the library's can be resumed (resumeImageRun).
 */
export async function trainImageRun(db: LoraLabDb, request: ImageTrainRequest, ctx: RunContext, locks: Locks, options: ImageRunOptions = {}): Promise<TrainResult> {
  const { config } = unwrapRunConfig(parseRunConfigYaml(request.configYaml, 'config.yaml'));
  return prepareAndRun(db, { config, configYaml: request.configYaml, model: request.model, train: request.train, val: request.val, resumeOf: null, haltAfterStep: request.haltAfterStep }, ctx, locks, options);
}

/**
 * Continues an interrupted image run (same record) from its latest checkpoint, or from step 0 when it has none, on
 * the library model and image folders it started from: it ends with the files an uninterrupted run leaves. A run
 * started from picked folders is refused (they were not stored), as is one that is not interrupted.
 */
export async function resumeImageRun(db: LoraLabDb, runId: string, ctx: RunContext, locks: Locks, options: ImageRunOptions = {}): Promise<TrainResult> {
  const run = await getRun(db, runId);
  if (!run) throw new UserError('run', 'is not stored any more.');
  const inputs = imageResumeInputsOf(run);
  // The config as stored: already resolved (init_adapter's shape in it), so it is not resolved again.
  return prepareAndRun(db, { config: run.config, configYaml: null, model: inputs.model, train: inputs.train, val: inputs.val, resumeOf: run }, ctx, locks, options);
}

interface RunRequest {
  readonly config: RunConfig;
  /** The config as written, for init_adapter's agreement check; null for a resumed run's stored config. */
  readonly configYaml: string | null;
  readonly model: ImageModelRef;
  readonly train: ImageDataRef;
  readonly val: ImageDataRef | null;
  /** The interrupted run to continue; null for a new run. */
  readonly resumeOf: StoredRun | null;
  readonly haltAfterStep?: number;
}

async function prepareAndRun(db: LoraLabDb, request: RunRequest, ctx: RunContext, locks: Locks, options: ImageRunOptions): Promise<TrainResult> {
  const { config } = request;
  if (config.backend !== 'auto' && config.backend !== tf.getBackend()) {
    throw new UserError('backend', `is ${config.backend} in the config, but the engine runs on ${tf.getBackend()}.`, `Switch the Backend setting to ${config.backend}, or set backend: auto.`);
  }
  const decode = options.decode ?? decodeWithImageBitmap;
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
    const runConfig = initAdapter && request.configYaml !== null ? imageConfigWithInitAdapter(config, writtenConfigKeys(request.configYaml), initAdapter, pipeline.unet) : config;
    const schedule = parseNoiseSchedule(await readComponentConfig(folder, 'scheduler'));
    const trainData = await readImageData(db, request.train, config);
    const valData = request.val ? await readImageData(db, request.val, config) : null;
    const trainTextEncoder = imageTrainingOf(config).textEncoderLearningRate !== null;
    const encode = (flip: boolean, phase: string) => ({ resolution: config.resolution, flip, phase, decode, trainTextEncoder });
    const train = await imageSetOf(db, pipeline, model.modelId, trainData, encode(config.flip_aug, 'Encoding training images'), ctx);
    const val = valData ? await imageSetOf(db, pipeline, model.modelId, valData, encode(false, 'Encoding validation images'), ctx) : null;
    const runId = request.resumeOf?.id ?? crypto.randomUUID();
    const imageData = { train: trainData.datasetId, val: valData?.datasetId ?? null, valPicked: valData !== null && valData.datasetId === null };
    // Held from before the run is stored as running until its final status is written (or the tab dies).
    return await locks.hold(lockName.run(runId), () =>
      runImages(
        db,
        runId,
        { config: runConfig, pipeline, schedule, train, val, entries: trainData.entries, modelId: model.modelId, modelName: model.name, imageData, baseBytes, initAdapter, resumeOf: request.resumeOf, haltAfterStep: request.haltAfterStep },
        ctx,
      ),
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
  /** The interrupted run to continue from its latest checkpoint (from step 0 when it has none); null for a new run. */
  readonly resumeOf: StoredRun | null;
  readonly haltAfterStep: number | undefined;
}

async function runImages(db: LoraLabDb, runId: string, p: Prepared, ctx: RunContext): Promise<TrainResult> {
  const { config } = p;
  const resuming = p.resumeOf !== null;
  const resumed = resuming ? await latestCheckpoint(db, runId) : null;
  const from = resumed?.checkpoint ?? null;
  // Read before the rewind, which deletes nothing up to the checkpoint: the rows and curves the run goes on from.
  const resume = resumed ? await resumePointOf(db, runId, resumed) : null;
  const run: StoredRun = p.resumeOf ?? {
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
  if (!resuming) await putRun(db, run);
  // Stored as running (a new run, or a resumed one once rewound): from then on a failure marks it failed.
  let live = !resuming;
  let interruptions: readonly Interruption[] = [];
  // A resumed run goes on from what was measured up to its checkpoint, so run_summary.json counts each step once.
  const measure = measureRun(p.baseBytes, resumed?.record.measured ? { measured: resumed.record.measured, fromStep: resumed.record.step } : null);
  try {
    const storage = pauseOnFullStorage({
      paused(message) {
        ctx.event({ kind: 'paused', reason: message });
        void updateRun(db, runId, { status: 'paused', error: message }).catch(() => undefined);
      },
    });
    const kept = storage.write;
    let trainer: Trainer<unknown> | null = null;
    // As of the checkpoint: the evaluations after it are being undone.
    let bestEvalLoss: number | null = from?.bestEval?.loss ?? null;
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
        startedAt: run.createdAt / 1000,
        resume,
        measureLoss: (inner) => haltingAfter(p.haltAfterStep, (e) => ctx.event(e), measure.lossFn(inner, (batch: ImageBatch) => batch.latents.shape[0])),
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
        async onTrainer({ trainer: t, trainableParameters }) {
          trainer = t;
          if (resuming) {
            // The checkpoint fits (trainImageLora checked it): the rows and log after it go, the record runs again.
            const point = { step: from?.step ?? 0, logChunks: resumed?.record.logChunks ?? 0, bestEvalLoss: from?.bestEval?.loss ?? null };
            interruptions = (await rewindRun(db, runId, point)).interruptions ?? [];
          }
          live = true;
          await kept('record', () => updateRun(db, runId, { totalSteps: t.totalSteps }));
          ctx.event({
            kind: 'started',
            runId,
            totalSteps: t.totalSteps,
            trainTokens: 0,
            evalTokens: 0,
            images: { train: p.train.examples.length, eval: p.val?.examples.length ?? 0 },
            trainableParameters,
            fromStep: from?.step ?? 0,
          });
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
        // The run's state for a resume: every save_steps, and when it pauses or is stopped, as a text run's.
        checkpoint: (ck) => kept(`checkpoint at step ${ck.step}`, () => saveCheckpoint(db, runId, ck, { measured: measure.soFar(ck.step) })).then(() => undefined),
      },
    );
    measure.stop();
    // The interruptions the run survived ride along with the measurements, as a text run's.
    const summary: RunSummary & { readonly interruptions: readonly Interruption[] } = { ...measure.summary(), interruptions };
    await kept('file run_summary.json', () => putArtifact(db, runId, 'run_summary.json', runSummaryJson(summary)));
    await updateRun(db, runId, {
      status: result.reason === 'completed' || result.reason === 'early_stopped' ? 'completed' : result.reason,
      step: result.steps,
      findings: result.findings,
    });
    return { runId, reason: result.reason, steps: result.steps };
  } catch (e) {
    measure.stop();
    // A resume refused before its record was rewound leaves the run interrupted, to be resumed another time.
    if (live) await updateRun(db, runId, { status: 'failed', error: e instanceof Error ? e.message : String(e) }).catch(() => undefined);
    throw e;
  }
}

/** What trainImageLora continues from besides the checkpoint: the stored rows up to it, the diagnosis's curves, the log. */
async function resumePointOf(db: LoraLabDb, runId: string, resumed: LatestCheckpoint): Promise<ImageRunResume> {
  const stored = await readMetrics(db, runId);
  const step = resumed.checkpoint.step;
  return {
    checkpoint: resumed.checkpoint,
    rows: imageMetricRowsOf(stored, step),
    history: diagnosisHistoryOf(stored, step),
    continuesLog: resumed.record.logChunks > 0,
  };
}
