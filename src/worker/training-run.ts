import * as tf from '@tensorflow/tfjs';
import { loraSettingsOf, parseRunConfigYaml, trainerOptionsOf, runConfigToYaml, runName, unwrapRunConfig, type RunConfig } from '../core/config';
import { evalWindows, packStream, splitValidation, trainWindows, type TokenizedDoc } from '../core/data/packing';
import { diagnosisCallbacks } from '../core/diagnose/callbacks';
import type { Finding } from '../core/diagnose';
import { UserError } from '../core/errors';
import { exportPeftAdapter } from '../core/export';
import { diagnosisJson, metricsCsv } from '../core/export/run-files';
import { EventFileWriter } from '../core/logging';
import { tensorBoardCallbacks } from '../core/logging/tensorboard-callbacks';
import { LoraAdapter } from '../core/lora';
import { generate } from '../core/models/generate';
import { composeCallbacks, customMetricCallbacks, loraEvalLossFn, loraLossFn, PERPLEXITY, Trainer, type CustomMetric, type TrainerCallbacks } from '../core/train';
import type { LoraLabDb, StoredModel, StoredRun } from '../storage/db';
import { getModel } from '../storage/models';
import { appendLog, putArtifact, putMetric, putRun, readArtifacts, readLog, readMetrics, getRun, updateRun } from '../storage/runs';
import { readRunData, type DatasetRef } from './datasets';
import { useModel } from './loaded-model';
import type { ExportedFile, Progress, RunControl, RunEvent } from './protocol';

export interface RunContext {
  readonly signal: AbortSignal;
  progress(p: Progress): void;
  event(e: RunEvent): void;
  /** Registers the handler of pause/resume/stop messages for this request. */
  onControl(handler: (action: RunControl) => void): void;
}

export interface TrainRequest {
  readonly modelId: string;
  readonly configYaml: string;
  readonly trainData: DatasetRef;
  readonly valData: DatasetRef | null;
}

/** Host name in event file names, as TensorBoard shows it in its run list. */
const LOG_HOST = 'lora-lab';

/**
 * One LoRA training run, start to finish, in the worker: reads the config and the data, builds the
 * adapter, trains with the built-in callbacks (curves into IndexedDB, TensorBoard log, diagnosis,
 * checkpoints), and stores the run's output folder.
 */
export async function trainLora(db: LoraLabDb, request: TrainRequest, ctx: RunContext) {
  const { config } = unwrapRunConfig(parseRunConfigYaml(request.configYaml, 'config.yaml'));
  if (config.backend !== 'auto' && config.backend !== tf.getBackend()) {
    throw new UserError('backend', `is ${config.backend} in the config, but the engine runs on ${tf.getBackend()}.`, `Switch the Backend setting to ${config.backend}, or set backend: auto.`);
  }
  const stored = await getModel(db, request.modelId);
  if (!stored) throw new UserError('base_model', 'is not in the model library any more.', 'Import the model again.');
  const { model, tokenizer } = await useModel(db, request.modelId, (done, total) => ctx.progress({ phase: 'Loading weights', done, total, unit: 'bytes' }));

  // Checked before the data is read: tokenizing a large file first would waste the person's time.
  if (config.seq_len > model.config.maxPositions) {
    throw new UserError('seq_len', `is ${config.seq_len}, but this model handles at most ${model.config.maxPositions} positions.`, `Set seq_len to ${model.config.maxPositions} or less.`);
  }

  // Stored datasets and picked files are read the same way the Data panel's check and preview read them.
  const read = async (ref: DatasetRef) => (await readRunData(db, ref, stored, tokenizer, ctx)).docs;
  let trainDocs: TokenizedDoc[] = await read(request.trainData);
  let valDocs: TokenizedDoc[] = request.valData ? await read(request.valData) : [];
  if (!request.valData && config.val_split > 0) {
    ({ train: trainDocs, validation: valDocs } = splitValidation(trainDocs, config.val_split, config.seed));
  }
  const train = trainWindows(packStream(trainDocs, tokenizer.eosId), config.seq_len);
  const evalSet = evalWindows(packStream(valDocs, tokenizer.eosId), config.seq_len);

  const adapter = LoraAdapter.create(model, loraSettingsOf(config, model.config.arch), config.seed);
  try {
    return await runTrainer(db, { config, stored, model, tokenizer, adapter, train, evalSet }, ctx);
  } finally {
    adapter.dispose();
  }
}

type Prepared = {
  config: RunConfig;
  stored: StoredModel;
  model: Awaited<ReturnType<typeof useModel>>['model'];
  tokenizer: Awaited<ReturnType<typeof useModel>>['tokenizer'];
  adapter: LoraAdapter;
  train: ReturnType<typeof trainWindows>;
  evalSet: ReturnType<typeof evalWindows>;
};

async function runTrainer(db: LoraLabDb, p: Prepared, ctx: RunContext) {
  const { config, stored, model, tokenizer, adapter } = p;
  const runId = crypto.randomUUID();
  const hasEval = p.evalSet.count > 0;

  // Callbacks that need the trainer's plan are built after it; the trainer reads them late.
  let callbacks: TrainerCallbacks = {};
  const trainer = new Trainer({
    variables: adapter.variables(),
    lossFn: loraLossFn(model, adapter, config.seed),
    train: p.train,
    eval: hasEval ? { windows: p.evalSet, lossFn: loraEvalLossFn(model, adapter) } : null,
    options: trainerOptionsOf(config),
    callbacks: {
      onStepEnd: (m) => callbacks.onStepEnd?.(m),
      onLog: (m) => callbacks.onLog?.(m),
      onEval: (e) => callbacks.onEval?.(e),
      onSave: (s) => callbacks.onSave?.(s),
      onTrainEnd: (r) => callbacks.onTrainEnd?.(r),
    },
  });

  const logFile = config.log_steps > 0 ? EventFileWriter.fileName(Math.floor(Date.now() / 1000), LOG_HOST, 0) : null;
  const run: StoredRun = {
    id: runId,
    name: runName(config),
    modelId: stored.id,
    modelName: stored.name,
    config,
    status: 'running',
    createdAt: Date.now(),
    updatedAt: Date.now(),
    backend: tf.getBackend(),
    step: 0,
    totalSteps: trainer.totalSteps,
    bestEvalLoss: null,
    findings: [],
    logFile,
    error: null,
  };
  await putRun(db, run);
  ctx.event({
    kind: 'started',
    runId,
    totalSteps: trainer.totalSteps,
    trainTokens: p.train.count * config.seq_len,
    evalTokens: p.evalSet.count * config.seq_len,
    trainableParameters: adapter.parameterCount(),
  });

  // Built-in callbacks, each one concern; a custom metric would be one more set in this list.
  const sets: TrainerCallbacks[] = [];
  let bestEvalLoss: number | null = null;
  let evalsWithoutImprovement = 0;

  sets.push({
    async onStepEnd(m) {
      ctx.event({ kind: 'step', ...m });
      await putMetric(db, { runId, step: m.step, epoch: m.epoch, loss: m.loss, learningRate: m.learningRate, gradNorm: m.gradNorm, tokensPerSecond: m.tokensPerSecond, evalLoss: null, custom: {} });
      if (m.step % 10 === 0 || m.step === trainer.totalSteps) await updateRun(db, runId, { step: m.step });
    },
    async onEval(e) {
      ctx.event({ kind: 'eval', step: e.step, loss: e.loss });
      await putMetric(db, { runId, step: e.step, epoch: null, loss: null, learningRate: null, gradNorm: null, tokensPerSecond: null, evalLoss: e.loss, custom: {} });
      const improved = bestEvalLoss === null || e.loss < bestEvalLoss;
      if (improved) bestEvalLoss = e.loss;
      evalsWithoutImprovement = improved ? 0 : evalsWithoutImprovement + 1;
      await updateRun(db, runId, { bestEvalLoss });
      if (config.early_stopping_patience > 0 && evalsWithoutImprovement >= config.early_stopping_patience) return { stop: 'early_stopped' };
    },
  });

  let logger: ReturnType<typeof tensorBoardCallbacks> | null = null;
  if (logFile) {
    const writer = new EventFileWriter();
    const wallTime = Date.now() / 1000;
    writer.writeFileVersion(wallTime);
    writer.addText('config', runConfigToYaml(config), 0, wallTime);
    await appendLog(db, runId, writer.takePending());
    logger = tensorBoardCallbacks({ writer, flush: (bytes) => appendLog(db, runId, bytes), adapter: { matrices: () => adapterMatrices(adapter) } });
    sets.push(logger);
  }

  // Custom metrics: computed at each log step, plotted live, stored with the curves, logged to TensorBoard.
  const customMetrics: readonly CustomMetric[] = [PERPLEXITY];
  sets.push(
    customMetricCallbacks(customMetrics, async ({ step, name, value }) => {
      ctx.event({ kind: 'metric', step, name, value });
      await putMetric(db, { runId, step, epoch: null, loss: null, learningRate: null, gradNorm: null, tokensPerSecond: null, evalLoss: null, custom: { [name]: value } });
      await logger?.addScalar(name, value, step);
    }),
  );

  const diagnosis = diagnosisCallbacks({
    totalSteps: trainer.totalSteps,
    logEveryStep: config.log_steps === 0,
    async onFindings(findings) {
      ctx.event({ kind: 'diagnosis', findings });
      await updateRun(db, runId, { findings });
      const last = diagnosis.history().trainLoss.at(-1)?.step ?? 0;
      await logger?.addText('diagnosis', findingsText(findings), last);
    },
  });
  sets.push(diagnosis);

  if (config.sample_steps > 0 && config.sample_prompts.length > 0 && logger) {
    const samples = logger;
    sets.push({
      async onStepEnd(m) {
        if (m.step % config.sample_steps !== 0) return;
        for (const [i, prompt] of config.sample_prompts.entries()) {
          const ids = tokenizer.encode(prompt);
          const out = await generate(model, ids, { maxNewTokens: 48, temperature: 0, seed: config.seed, forward: { linear: adapter.apply({ training: false }) } });
          await samples.addText(`samples/${i}`, prompt + tokenizer.decode(out), m.step);
        }
      },
    });
  }

  if (config.save_steps > 0) {
    sets.push({
      async onSave({ step }) {
        const files = await exportPeftAdapter(model, adapter, stored.name);
        for (const [name, bytes] of Object.entries(files)) await putArtifact(db, runId, `checkpoint-${step}/${name}`, bytes);
      },
    });
  }
  callbacks = composeCallbacks(...sets);

  ctx.onControl((action) => {
    if (action === 'pause') {
      trainer.pause();
      ctx.event({ kind: 'paused' });
      void updateRun(db, runId, { status: 'paused' });
    } else if (action === 'resume') {
      trainer.resume();
      ctx.event({ kind: 'resumed' });
      void updateRun(db, runId, { status: 'running' });
    } else trainer.stop('stopped');
  });
  ctx.signal.addEventListener('abort', () => trainer.stop('stopped'), { once: true });

  let end;
  try {
    end = await trainer.run();
  } catch (e) {
    await updateRun(db, runId, { status: 'failed', error: (e as Error).message });
    throw e;
  }

  // The run's output folder. A diverged run keeps the last good adapter (the bad update was never applied).
  const adapterFiles = await exportPeftAdapter(model, adapter, stored.name);
  for (const [name, bytes] of Object.entries(adapterFiles)) await putArtifact(db, runId, name, bytes);
  await putArtifact(db, runId, 'config.yaml', runConfigToYaml(config));
  const findings: Finding[] = diagnosis.findings();
  await putArtifact(db, runId, 'diagnosis.json', diagnosisJson(findings));
  await updateRun(db, runId, {
    status: end.reason === 'completed' || end.reason === 'early_stopped' ? 'completed' : end.reason,
    step: end.step,
    findings,
  });
  return { runId, reason: end.reason, steps: end.step };
}

/** Every file of a run's output folder, as the headless runner writes it and the UI zips it. */
export async function exportRunFiles(db: LoraLabDb, runId: string): Promise<ExportedFile[]> {
  const run = await getRun(db, runId);
  if (!run) throw new UserError('run', 'is not stored any more.');
  const files: ExportedFile[] = (await readArtifacts(db, runId)).map((a) => ({ path: a.path, bytes: new Uint8Array(a.bytes) }));
  const rows = await readMetrics(db, runId);
  files.push({ path: 'metrics.csv', bytes: new TextEncoder().encode(metricsCsv(rows)) });
  if (run.logFile) files.push({ path: `logs/${run.logFile}`, bytes: await readLog(db, runId) });
  return files;
}

async function adapterMatrices(adapter: LoraAdapter) {
  return Promise.all(
    adapter.modules.map(async (m) => ({ path: m.path, A: (await m.A.data()) as Float32Array, B: (await m.B.data()) as Float32Array })),
  );
}

function findingsText(findings: readonly Finding[]): string {
  return findings.map((f) => `**${f.code}** (${f.severity}, step ${f.step}): ${f.message} ${f.suggestion}`).join('\n\n');
}
