import { imageTrainingOf, loraSettingsOf, runConfigToYaml, trainerOptionsOf, type ImageTrainingSettings, type RunConfig } from '../config/index.js';
import { diagnosisCallbacks } from '../diagnose/callbacks.js';
import type { Finding, RunHistory } from '../diagnose/types.js';
import type { KohyaDatasetDir, TagFrequency } from '../export/kohya-lora.js';
import type { MetricsCsvRow } from '../export/run-files.js';
import { sessionStartEvent } from '../logging/session-log.js';
import { EventFileWriter } from '../logging/writer.js';
import { tensorBoardCallbacks } from '../logging/tensorboard-callbacks.js';
import { UserError } from '../errors.js';
import { LoraAdapter, type LoraModuleTensors } from '../lora/adapter.js';
import { resolveTargets, type LoraSettings, type ProjectionShape } from '../lora/settings.js';
import type { RunConfigKey } from '../config/schema.js';
import { loraTargetsOf } from '../models/diffusion/lora-targets.js';
import type { NoiseSchedule } from '../models/diffusion/noise.js';
import type { SamplingPipeline } from '../models/diffusion/sample.js';
import type { LinearApply } from '../models/linear.js';
import { composeCallbacks, lateCallbacks } from '../train/callbacks.js';
import type { LossFn } from '../train/batch.js';
import { trainingImages, validationImages, type CachedImageSet, type ImageBatch } from '../train/image-examples.js';
import { imageLoraEvalLossFn, imageLoraLossFn, textEncoderLoraSeed } from '../train/image-loss-fns.js';
import { checkResumable, type TrainerCheckpoint } from '../train/checkpoint.js';
import { Trainer, type CheckpointReason, type EndReason, type TrainerCallbacks } from '../train/trainer.js';
import { writeImageRunFolder } from './output-folder.js';
import { sampler, samplePath, sampleTag, type RunSample } from './samples.js';

/** kohya's and diffusers' default LoRA targets on the SD UNet: the attention projections. */
export const DEFAULT_UNET_TARGETS: readonly string[] = ['to_q', 'to_k', 'to_v', 'to_out.0'];

/** What a finished image run hands the place that keeps it (IndexedDB in the app, memory in tests). */
export interface ImageRunSink {
  /** A training row (every step) or an evaluation row, as metrics.csv holds them. */
  metric(row: MetricsCsvRow): void | Promise<void>;
  /** Event-file bytes written since the last call (the TensorBoard log grows as the run goes). */
  log(bytes: Uint8Array): void | Promise<void>;
  /** A file of the run's output folder, e.g. `samples/10_0.png` or `adapter_model.safetensors`. */
  file(path: string, bytes: Uint8Array | string): void | Promise<void>;
  /** Findings whenever the diagnosis changes its mind. */
  findings?(findings: readonly Finding[]): void | Promise<void>;
  /** A sample image as it is made, for a live gallery. */
  sample?(sample: RunSample): void | Promise<void>;
  /**
   * The run's whole state at a step boundary (the Trainer's onCheckpoint: every save_steps, before a pause, on a
   * stop), after every row, log byte and file of the steps up to it went to the other calls: what `resume` takes.
   */
  checkpoint?(ck: TrainerCheckpoint, reason: CheckpointReason): void | Promise<void>;
}

/**
 * Where an interrupted image run picks up: a checkpoint it reported and what its callbacks had by then, so the
 * resumed run ends with the adapter files, metrics.csv, diagnosis, samples and event file of a run never stopped.
 * A run with no checkpoint yet is not resumed but trained again from step 0 (no ImageRunResume).
 */
export interface ImageRunResume {
  readonly checkpoint: TrainerCheckpoint;
  /** The metric rows of steps 0 … checkpoint.step, as `metric` was given them, each once. */
  readonly rows: readonly MetricsCsvRow[];
  /** The curves the diagnosis had seen by the checkpoint (the worker's diagnosisHistoryOf of the stored rows). */
  readonly history: Omit<RunHistory, 'totalSteps' | 'loss'>;
  /**
   * True when the event file written so far is kept, cut back to the checkpoint: the run then appends to it (a
   * session_log START at the next step, TensorBoard's mark of a restart) instead of beginning a new file.
   */
  readonly continuesLog: boolean;
}

export interface ImageRunInput {
  readonly config: RunConfig;
  readonly pipeline: SamplingPipeline;
  readonly schedule: NoiseSchedule;
  /**
   * The cached images. With train_text_encoder (imageTrainingOf's textEncoderLearningRate non-null) the captions must
   * be token ids (cacheImageSet's trainTextEncoder: true), else text states; a mismatch throws before training.
   */
  readonly train: CachedImageSet;
  readonly val: CachedImageSet | null;
  /** The base model's name as the person knows it (the folder name), for the adapter's notes. */
  readonly baseModelName: string;
  /** The image folders and their tags, for the kohya file's ss_* notes. */
  readonly dataset: { readonly dirs: readonly KohyaDatasetDir[]; readonly tagFrequency: TagFrequency };
  /** More callbacks (live events, measurement), run before the run's own. */
  readonly callbacks?: readonly TrainerCallbacks[];
  /** Wall-clock seconds; injectable so tests get the same bytes twice. */
  readonly clock?: () => number;
  /**
   * When the run began, in seconds since the Unix epoch (the kohya file's ss_training_started_at, the event file's
   * first record); default the clock's reading now. A resumed run passes its first segment's start.
   */
  readonly startedAt?: number;
  /** Continue an interrupted run from one of its checkpoints (see ImageRunResume); absent: from step 0. */
  readonly resume?: ImageRunResume | null;
  /**
   * Reached (and awaited) when the run is built and a resume's checkpoint found to fit it, before anything goes to
   * the sink: the caller's handle for pause, resume and stop, and its moment to store the run as running.
   */
  readonly onTrainer?: (run: { readonly trainer: Trainer<unknown>; readonly trainableParameters: number }) => void | Promise<void>;
  /** Wraps the training loss, e.g. to time each step (the worker's run_summary.json). */
  readonly measureLoss?: (inner: LossFn<ImageBatch>) => LossFn<ImageBatch>;
  /**
   * `init_adapter`: the stored image LoRA the run starts from. Its rank, alpha, rsLoRA and modules are the run's LoRA
   * shape (imageConfigWithInitAdapter puts them into the config the run is stored with), its A and B the start.
   */
  readonly initAdapter?: ImageInitAdapter | null;
}

/** A stored image LoRA as a run starts from it: its LoRA shape and its tensors per network, by module path. */
export interface ImageInitAdapter {
  /** As init_adapter names it, for messages. */
  readonly name: string;
  readonly rank: number;
  readonly alpha: number;
  readonly useRslora: boolean;
  readonly unet: ReadonlyMap<string, LoraModuleTensors>;
  /** null: the adapter leaves the text encoder alone. */
  readonly textEncoder: ReadonlyMap<string, LoraModuleTensors> | null;
}

export interface ImageRunResult {
  readonly reason: EndReason;
  readonly steps: number;
  readonly findings: readonly Finding[];
  readonly trainableParameters: number;
}

/** LoRA settings of an image run: the UNet's attention projections unless target_modules says otherwise. */
export function imageLoraSettings(config: RunConfig): LoraSettings {
  const targets = config.target_modules ?? DEFAULT_UNET_TARGETS;
  return { rank: config.lora_rank, alpha: config.lora_alpha, dropout: config.lora_dropout, targetModules: targets === 'all-linear' ? targets : [...targets], useRslora: config.use_rslora };
}

/**
 * The learning rates of an image run as one schedule and a factor per network, as kohya's param groups (unet_lr,
 * text_encoder_lr) follow one scheduler: the trainer's base rate is the UNet's (the text encoder's when the UNet's
 * is 0), each network's rate that base times its scale.
 */
export function imageLearningRates(training: ImageTrainingSettings): { readonly base: number; readonly unetScale: number; readonly textEncoderScale: number | null } {
  const unet = training.unetLearningRate;
  const text = training.textEncoderLearningRate;
  const base = unet > 0 || text === null ? unet : text;
  if (base === 0) return { base, unetScale: 1, textEncoderScale: text === null ? null : 1 };
  return { base, unetScale: unet / base, textEncoderScale: text === null ? null : text / base };
}

/**
 * An image LoRA run start to finish on cached latents: a UNet LoRA (and with train_text_encoder a CLIP text-encoder
 * LoRA on kohya's targets, at its own rate) trained on the denoising loss (kohya's noise draws, noise offset and
 * min-SNR weighting), the fixed-noise validation loss every eval_steps, the curves diagnosed live, a TensorBoard log
 * with scalars and sample images every sample_steps (and at the end), checkpoints for a resume (sink.checkpoint),
 * and the output folder (output-folder.ts, plus samples/). Every random draw is keyed by the run's seed and the step
 * (image-loss-fns.ts), so a run resumed from a checkpoint (`resume`) takes exactly the steps it would have taken.
 * DOM-free; the worker and the tests give it their own sink.
 */
export async function trainImageLora(input: ImageRunInput, sink: ImageRunSink): Promise<ImageRunResult> {
  const { config, pipeline, schedule } = input;
  const now = input.clock ?? (() => Date.now() / 1000);
  const started = input.startedAt ?? now();
  const resume = input.resume ?? null;
  const from = resume?.checkpoint ?? null;
  const configSettings = imageLoraSettings(config);
  const training = imageTrainingOf(config);
  const rates = imageLearningRates(training);
  checkCaptionKind(input, rates.textEncoderScale !== null);
  const init = input.initAdapter ?? null;
  if (init) checkInitTextEncoder(init, rates.textEncoderScale !== null);
  // Started from an adapter: its shape, whatever the config says (imageConfigWithInitAdapter refused disagreements).
  const settings = init ? { ...configSettings, ...initShape(init), targetModules: [...init.unet.keys()] } : configSettings;
  const configTextSettings = loraSettingsOf(config, 'sd-text-encoder');
  const textSettings = init?.textEncoder ? { ...configTextSettings, ...initShape(init), targetModules: [...init.textEncoder.keys()] } : configTextSettings;
  const unetTargets = loraTargetsOf(pipeline.unet, 'sd-unet');
  const adapter = init ? LoraAdapter.fromTensors(unetTargets, settings, init.unet) : LoraAdapter.create(unetTargets, settings, config.seed);
  let textAdapter: LoraAdapter | null = null;
  try {
    const textTargets = loraTargetsOf(pipeline.textEncoder, 'sd-text-encoder');
    textAdapter =
      rates.textEncoderScale === null
        ? null
        : init?.textEncoder
          ? LoraAdapter.fromTensors(textTargets, textSettings, init.textEncoder)
          : LoraAdapter.create(textTargets, textSettings, textEncoderLoraSeed(config.seed));
    const textEncoder = textAdapter ? { model: pipeline.textEncoder, adapter: textAdapter } : null;
    const parts = { unet: pipeline.unet, schedule, unetAdapter: adapter, textEncoder };
    const unetVariables = adapter.variables();
    const textVariables = textAdapter?.variables() ?? [];
    const trainableParameters = adapter.parameterCount() + (textAdapter?.parameterCount() ?? 0);
    const samples = config.sample_prompts.length > 0 ? sampler(pipeline, config) : null;
    const measured = input.measureLoss ?? ((inner: LossFn<ImageBatch>) => inner);
    // The callbacks need the trainer's step count; they are built after it and read late.
    let callbacks: TrainerCallbacks = {};
    const trainer = new Trainer({
      variables: [...unetVariables, ...textVariables],
      learningRateScales: [...unetVariables.map(() => rates.unetScale), ...textVariables.map(() => rates.textEncoderScale ?? 0)],
      lossFn: measured(imageLoraLossFn(parts, { seed: config.seed, noiseOffset: config.noise_offset, minSnrGamma: config.min_snr_gamma, gradientCheckpointing: config.gradient_checkpointing })),
      train: trainingImages(input.train),
      eval: input.val && input.val.examples.length > 0 ? { examples: validationImages(input.val, config.seed, schedule.numTrainTimesteps), lossFn: imageLoraEvalLossFn(parts) } : null,
      options: { ...trainerOptionsOf(config), learningRate: rates.base },
      resumeFrom: from,
      callbacks: lateCallbacks(() => callbacks),
    });
    // Refused here, before the caller undoes anything of the stored run, when the checkpoint is not this run's.
    if (from) checkResumable(from, trainer.plan, [...unetVariables, ...textVariables]);
    await input.onTrainer?.({ trainer: trainer as Trainer<unknown>, trainableParameters });

    // A resumed run's rows up to its checkpoint, then this segment's: metrics.csv holds every step once.
    const rows: MetricsCsvRow[] = [...(resume?.rows ?? [])];
    const keep = async (row: MetricsCsvRow) => {
      rows.push(row);
      await sink.metric(row);
    };
    const writer = config.log_steps > 0 ? new EventFileWriter() : null;
    const sets: TrainerCallbacks[] = [...(input.callbacks ?? [])];
    sets.push({
      onStepEnd: (m) =>
        keep({ step: m.step, epoch: m.epoch, loss: m.loss, learningRate: m.learningRate, gradNorm: m.gradNorm, evalLoss: null, tokensPerSecond: m.tokensPerSecond, skippedSteps: m.skippedSteps }),
      onEval: (e) => keep({ step: e.step, epoch: null, loss: null, learningRate: null, gradNorm: null, evalLoss: e.loss, tokensPerSecond: null }),
    });
    let logger: ReturnType<typeof tensorBoardCallbacks> | null = null;
    if (writer) {
      if (from && resume?.continuesLog) {
        // The stored file already begins with its version record: this writer's own is made and dropped.
        const resumedAt = now();
        writer.writeFileVersion(resumedAt);
        writer.takePending();
        writer.addEvent(sessionStartEvent(from.step + 1, resumedAt));
      } else {
        writer.writeFileVersion(started);
        writer.addText('config', runConfigToYaml(config), 0, started);
      }
      await sink.log(writer.takePending());
      logger = tensorBoardCallbacks({ writer, flush: async (bytes) => sink.log(bytes), clock: now });
      sets.push(logger);
    }
    // The denoising rules: a noisier loss, judged mostly by the fixed-noise validation curve (diagnose/README.md).
    // A resumed run's diagnosis goes on from the curves up to its checkpoint, reporting nothing they already showed.
    const diagnosis = diagnosisCallbacks({ totalSteps: trainer.totalSteps, loss: 'denoising', initial: resume?.history, onFindings: (f) => sink.findings?.(f) });
    sets.push(diagnosis);

    const takeSamples = async (step: number): Promise<void> => {
      if (!samples) return;
      for (const s of await samples.sample(step, evalLinear(adapter, textAdapter))) {
        await sink.file(samplePath(s.step, s.index), s.png);
        await sink.sample?.(s);
        if (writer) {
          writer.addEvent({ kind: 'summary', wallTime: now(), step: s.step, values: [{ tag: sampleTag(s.index), kind: 'image', image: { width: s.width, height: s.height, colorspace: 3, encoded: s.png } }] });
          await sink.log(writer.takePending());
        }
      }
    };
    // A checkpoint is taken after its step's samples: a run resumed from it does not make them again.
    let sampledAt = from && config.sample_steps > 0 && from.step % config.sample_steps === 0 ? from.step : -1;
    if (samples && config.sample_steps > 0) {
      sets.push({
        async onStepEnd(m) {
          if (m.step % config.sample_steps !== 0) return;
          sampledAt = m.step;
          await takeSamples(m.step);
        },
      });
    }
    // Last: a checkpoint comes after everything of its step has reached the sink (rows, log, samples).
    const checkpoint = sink.checkpoint?.bind(sink);
    if (checkpoint) sets.push({ onCheckpoint: (ck, reason) => checkpoint(ck, reason) });
    callbacks = composeCallbacks(...sets);

    const end = await trainer.run();
    // The samples of the finished adapter, unless the last step already made them.
    if (end.step !== sampledAt) await takeSamples(end.step);

    const findings = diagnosis.findings();
    await writeImageRunFolder(
      {
        config,
        baseModelName: input.baseModelName,
        dataset: input.dataset,
        totalSteps: trainer.totalSteps,
        stepsPerEpoch: trainer.stepsPerEpoch,
        steps: end.step,
        startedAt: started,
        finishedAt: now(),
        rows,
        findings,
      },
      pipeline,
      { unet: { adapter, settings }, textEncoder: textAdapter ? { adapter: textAdapter, settings: textSettings } : null },
      (path, bytes) => sink.file(path, bytes),
    );
    return { reason: end.reason, steps: end.step, findings, trainableParameters };
  } finally {
    adapter.dispose();
    textAdapter?.dispose();
  }
}

/**
 * One projection hook for the whole pipeline, without dropout (sampling): the text encoder's LoRA on its projections,
 * the UNet's on the rest. The two never share a module path (transformers' `text_model.…` against diffusers' block
 * paths), so dispatching by the text adapter's paths is exact; the UNet's hook runs the plain projection where it has
 * no module.
 */
function evalLinear(unet: LoraAdapter, text: LoraAdapter | null): LinearApply {
  const unetApply = unet.apply({ training: false });
  if (!text) return unetApply;
  const textApply = text.apply({ training: false });
  const textPaths = new Set(text.modules.map((m) => m.path));
  return (linear, x) => (textPaths.has(linear.path) ? textApply : unetApply)(linear, x);
}

/** The cached captions must be what the run feeds: token ids through a trained text encoder, else its cached states. */
function checkCaptionKind(input: ImageRunInput, trainsTextEncoder: boolean): void {
  const want = trainsTextEncoder ? 'ids' : 'states';
  for (const [name, set] of [
    ['training', input.train],
    ['validation', input.val],
  ] as const) {
    if (set && set.examples.length > 0 && set.captions.kind !== want) {
      throw new Error(
        `trainImageLora: the ${name} captions are cached as ${set.captions.kind}, but a run ${trainsTextEncoder ? 'that trains' : 'with a frozen'} text encoder needs ${want} (cacheImageSet's trainTextEncoder: ${trainsTextEncoder})`,
      );
    }
  }
}

const initShape = (init: ImageInitAdapter) => ({ rank: init.rank, alpha: init.alpha, useRslora: init.useRslora });

/** An adapter with text-encoder modules needs a run that trains the text encoder, or half of it would be dropped. */
function checkInitTextEncoder(init: ImageInitAdapter, trainsTextEncoder: boolean): void {
  if (init.textEncoder && !trainsTextEncoder) {
    throw new UserError(
      'init_adapter',
      `the adapter "${init.name}" adapts the text encoder too (${init.textEncoder.size} modules), but this run does not train the text encoder.`,
      'Set train_text_encoder: true (and a text_encoder_lr above 0), or start from an adapter of the UNet only.',
    );
  }
}

/**
 * `init_adapter` for an image run, as configWithInitAdapter does it for text: the run config with the adapter's LoRA
 * shape (lora_rank, lora_alpha, use_rslora, target_modules = the UNet modules it adapts), so the stored run and
 * config.yaml say what was trained. Keys the config text writes (`written`, writtenConfigKeys) must agree with the
 * adapter, or the config was written for another adapter and is refused naming both values; target_modules agrees
 * when it selects the same UNet projections.
 */
export function imageConfigWithInitAdapter(config: RunConfig, written: ReadonlySet<RunConfigKey>, init: ImageInitAdapter, unet: { readonly linears: readonly ProjectionShape[] }): RunConfig {
  const refuse = (what: string, key: RunConfigKey, mine: string, theirs: string): never => {
    throw new UserError('init_adapter', `the adapter "${init.name}" has ${what} = ${theirs}, but ${key} is ${mine}.`, `Remove ${key} or set it to ${theirs}.`);
  };
  if (init.unet.size === 0) {
    throw new UserError('init_adapter', `the adapter "${init.name}" adapts no UNet module.`, 'Start from a LoRA that adapts the UNet.');
  }
  checkInitTextEncoder(init, imageTrainingOf(config).textEncoderLearningRate !== null);
  if (written.has('lora_rank') && config.lora_rank !== init.rank) refuse('rank', 'lora_rank', String(config.lora_rank), String(init.rank));
  if (written.has('lora_alpha') && config.lora_alpha !== init.alpha) refuse('alpha', 'lora_alpha', String(config.lora_alpha), String(init.alpha));
  if (written.has('use_rslora') && config.use_rslora !== init.useRslora) refuse('use_rslora', 'use_rslora', String(config.use_rslora), String(init.useRslora));
  const adapted = [...init.unet.keys()];
  if (written.has('target_modules') && config.target_modules !== null) {
    const selected = resolveTargets({ config: { modelType: 'sd-unet', tiedEmbeddings: false }, linears: unet.linears }, imageLoraSettings(config).targetModules);
    const same = !('problem' in selected) && selected.linears.length === adapted.length && selected.linears.every((l) => init.unet.has(l.path));
    if (!same) {
      const mine = config.target_modules === 'all-linear' ? 'all-linear' : `[${config.target_modules.join(', ')}]`;
      refuse('modules', 'target_modules', mine, `its ${adapted.length} UNet projections`);
    }
  }
  return { ...config, lora_rank: init.rank, lora_alpha: init.alpha, use_rslora: init.useRslora, target_modules: adapted };
}
