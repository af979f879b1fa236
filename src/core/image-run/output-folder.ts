import { runConfigToYaml, runName, type RunConfig } from '../config/index.js';
import type { Finding } from '../diagnose/types.js';
import type { KohyaDatasetDir, TagFrequency } from '../export/kohya-lora.js';
import { diagnosisJson, metricsCsv, type MetricsCsvRow } from '../export/run-files.js';
import type { LoraAdapter } from '../lora/adapter.js';
import type { LoraSettings } from '../lora/settings.js';
import type { SamplingPipeline } from '../models/diffusion/sample.js';
import { exportModulesOf, imageAdapterFiles } from './adapter-files.js';

/** One trained LoRA of an image run and the settings it was built with (its target list goes into the PEFT config). */
export interface TrainedLora {
  readonly adapter: LoraAdapter;
  readonly settings: LoraSettings;
}

/** What an image run's output folder says, besides its adapters: where it trained, how far, what it measured. */
export interface FinishedImageRun {
  readonly config: RunConfig;
  /** The base model's name as the person knows it, for the adapter's notes. */
  readonly baseModelName: string;
  readonly dataset: { readonly dirs: readonly KohyaDatasetDir[]; readonly tagFrequency: TagFrequency };
  readonly totalSteps: number;
  readonly stepsPerEpoch: number;
  /** Steps done when the run ended. */
  readonly steps: number;
  /** Seconds since the Unix epoch: when the run began (its first segment, for a resumed run) and when it ended. */
  readonly startedAt: number;
  readonly finishedAt: number;
  /** Every step's training row and every evaluation's row, each once, as metrics.csv holds them. */
  readonly rows: readonly MetricsCsvRow[];
  readonly findings: readonly Finding[];
}

/**
 * The output folder of a finished image run, each file through `write`: `<run name>.safetensors` (kohya, both
 * networks, with sd-scripts' ss_* notes), the PEFT folder files (the text encoder's under text_encoder/),
 * config.yaml, metrics.csv and diagnosis.json. The adapters are read back from the device here.
 */
export async function writeImageRunFolder(
  run: FinishedImageRun,
  pipeline: Pick<SamplingPipeline, 'unet' | 'textEncoder'>,
  trained: { readonly unet: TrainedLora; readonly textEncoder: TrainedLora | null },
  write: (path: string, bytes: Uint8Array | string) => void | Promise<void>,
): Promise<void> {
  const { config } = run;
  const name = runName(config);
  const targetsOf = (s: LoraSettings, all: { readonly linears: readonly { readonly path: string }[] }): readonly string[] =>
    s.targetModules === 'all-linear' ? all.linears.map((l) => l.path) : s.targetModules;
  const text = trained.textEncoder;
  const networks = {
    unet: { modules: await exportModulesOf(trained.unet.adapter, 'unet'), targetModules: targetsOf(trained.unet.settings, pipeline.unet) },
    textEncoder: text ? { modules: await exportModulesOf(text.adapter, 'text_encoder'), targetModules: targetsOf(text.settings, pipeline.textEncoder) } : null,
  };
  const files = await imageAdapterFiles(networks, {
    runName: name,
    unet: pipeline.unet,
    baseModelName: run.baseModelName,
    notes: {
      networkDim: trained.unet.settings.rank,
      networkAlpha: trained.unet.settings.alpha,
      resolution: { width: config.resolution, height: config.resolution },
      datasetDirs: run.dataset.dirs,
      tagFrequency: run.dataset.tagFrequency,
      learningRate: config.learning_rate,
      unetLr: config.unet_lr,
      // As sd-scripts notes args.text_encoder_lr: the key as given ("None": learning_rate), null when not trained.
      textEncoderLr: text ? config.text_encoder_lr : null,
      maxTrainSteps: run.totalSteps,
      steps: run.steps,
      epoch: Math.ceil(run.steps / run.stepsPerEpoch),
      numEpochs: Math.ceil(run.totalSteps / run.stepsPerEpoch),
      seed: config.seed,
      outputName: name,
      trainingStartedAtMs: run.startedAt * 1000,
      trainingFinishedAtMs: run.finishedAt * 1000,
      sdModelName: run.baseModelName,
      clipSkip: null,
      noiseOffset: config.noise_offset > 0 ? config.noise_offset : null,
      minSnrGamma: config.min_snr_gamma > 0 ? config.min_snr_gamma : null,
      trainingComment: 'trained with LoRA Lab',
    },
  });
  for (const [path, bytes] of Object.entries(files)) await write(path, bytes);
  await write('config.yaml', runConfigToYaml(config));
  await write('metrics.csv', metricsCsv(run.rows));
  await write('diagnosis.json', diagnosisJson(run.findings));
}
