import * as tf from '@tensorflow/tfjs';
import { placementFor } from '../core/weights/hold';
import { loraSettingsOf, parseRunConfigYaml, trainerOptionsOf, runConfigToYaml, runName, unwrapRunConfig, type RunConfig } from '../core/config';
import { evalWindows, packStream, splitValidation, trainWindows, type TokenizedDoc } from '../core/data/packing';
import { diagnosisCallbacks } from '../core/diagnose/callbacks';
import type { Finding } from '../core/diagnose';
import { UserError } from '../core/errors';
import { exportPeftAdapter } from '../core/export';
import { diagnosisJson } from '../core/export/run-files';
import { runSummaryJson, type AdapterOrigin, type RunSummary } from '../core/export/run-summary';
import { EventFileWriter } from '../core/logging';
import { sessionStartEvent } from '../core/logging/session-log';
import { tensorBoardCallbacks } from '../core/logging/tensorboard-callbacks';
import { LoraAdapter } from '../core/lora';
import { configWithInitAdapter, writtenConfigKeys } from '../core/lora/adapter-check';
import { generate } from '../core/models/generate';
import { checkResumable, composeCallbacks, customMetricCallbacks, lateCallbacks, loraEvalLossFn, loraLossFn, PERPLEXITY, Trainer, windowExamples, type CustomMetric, type TrainerCallbacks } from '../core/train';
import { latestCheckpoint, saveCheckpoint } from '../storage/checkpoints';
import type { Interruption, LoraLabDb, StoredModel, StoredRun } from '../storage/db';
import { lockName, type Locks } from '../storage/locks';
import { getModel } from '../storage/models';
import { appendLog, putArtifact, putMetric, putRun, readMetrics, updateRun } from '../storage/runs';
import { rewindRun } from '../storage/resume';
import { bestAdapterKeeper } from './best-adapter';
import { readRunData, type DatasetRef } from './datasets';
import { readStoredAdapter, storedModelShape } from './stored-adapters';
import { dataFileSummaryOf } from './run-files';
import type { LoadedModel, ModelPin } from './loaded-model';
import type { Progress, RunControl, RunEvent } from './protocol';
import { haltingAfter } from './halt';
import { continuingWriter, diagnosisHistoryOf, storedDataOf } from './resume';
import { measureRun } from './run-measure';
import { baseWeightBytes } from '../core/train/device-memory';
import { writeMergedFromAdapterFiles } from './merged-export';
import { checkWasmFits, runFailure } from './wasm-memory';
import { pauseOnFullStorage } from './storage-full';

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
  /** See the `train` request: the headless runner's --crash-at-step. */
  readonly haltAfterStep?: number;
}

/** What makes this worker the run's one owner: the pinned model slot, and the locks other tabs' sweeps respect. */
export interface RunOwner {
  /** The slot pinned to the request's model for the length of the run (see ModelSlot). */
  readonly pin: ModelPin;
  /** The run's lock is held while it trains, so a start-up sweep elsewhere does not mark it interrupted. */
  readonly locks: Locks;
}

/** Host name in event file names, as TensorBoard shows it in its run list. */
const LOG_HOST = 'lora-lab';

/**
 * One LoRA training run, start to finish, in the worker: reads the config and the data, builds the
 * adapter, trains with the built-in callbacks (curves into IndexedDB, TensorBoard log, diagnosis,
 * checkpoints), and stores the run's output folder.
 */
export async function trainLora(db: LoraLabDb, request: TrainRequest, ctx: RunContext, owner: RunOwner, resumeOf?: StoredRun) {
  if (owner.pin.modelId !== request.modelId) throw new Error(`trainLora: the slot is pinned to ${owner.pin.modelId}, not ${request.modelId}`);
  let { config } = unwrapRunConfig(parseRunConfigYaml(request.configYaml, 'config.yaml'));
  if (config.backend !== 'auto' && config.backend !== tf.getBackend()) {
    throw new UserError('backend', `is ${config.backend} in the config, but the engine runs on ${tf.getBackend()}.`, `Switch the Backend setting to ${config.backend}, or set backend: auto.`);
  }
  const stored = await getModel(db, request.modelId);
  if (!stored) throw new UserError('base_model', 'is not in the model library any more.', 'Import the model again.');
  // init_adapter: the run starts from an adapter stored with the model and takes its r, lora_alpha and targets.
  const init = config.init_adapter === null ? null : await readStoredAdapter(db, stored, config.init_adapter, 'init_adapter');
  if (init) config = configWithInitAdapter(config, writtenConfigKeys(request.configYaml), { name: init.record.name, settings: init.settings }, storedModelShape(stored));
  // Before any weight is loaded: past wasm's memory ceiling its module aborts, and the backend with it.
  if (tf.getBackend() === 'wasm') checkWasmFits(stored, config);
  const placement = placementFor(config.base_quantization);
  const { model, tokenizer } = await owner.pin.load(db, placement, (done, total) => ctx.progress({ phase: 'Loading weights', done, total, unit: 'bytes' }));

  // Checked before the data is read: tokenizing a large file first would waste the person's time.
  if (config.seq_len > model.config.maxPositions) {
    throw new UserError('seq_len', `is ${config.seq_len}, but this model handles at most ${model.config.maxPositions} positions.`, `Set seq_len to ${model.config.maxPositions} or less.`);
  }

  // Stored datasets and picked files are read the same way the Data panel's check and preview read them.
  const trainSet = await readRunData(db, request.trainData, stored, tokenizer, ctx);
  const valSet = request.valData ? await readRunData(db, request.valData, stored, tokenizer, ctx) : null;
  let trainDocs: TokenizedDoc[] = trainSet.docs;
  let valDocs: TokenizedDoc[] = valSet?.docs ?? [];
  if (!request.valData && config.val_split > 0) {
    ({ train: trainDocs, validation: valDocs } = splitValidation(trainDocs, config.val_split, config.seed));
  }
  const train = trainWindows(packStream(trainDocs, tokenizer.eosId), config.seq_len);
  const evalSet = evalWindows(packStream(valDocs, tokenizer.eosId), config.seq_len);

  const settings = loraSettingsOf(config, model.config.arch);
  const adapter = init ? LoraAdapter.fromTensors(model, settings, init.tensors) : LoraAdapter.create(model, settings, config.seed);
  try {
    // A resumed run keeps its record (and id); its checkpoint's values replace the adapter's initial ones.
    const runId = resumeOf?.id ?? crypto.randomUUID();
    // The files' counts ride along for the model card (run-files.ts).
    const data = { ...storedDataOf(request.trainData, request.valData), summary: { train: dataFileSummaryOf(trainSet), val: valSet && dataFileSummaryOf(valSet) } };
    // Held from before the run is stored as running until its final status is written (or the tab dies).
    return await owner.locks.hold(lockName.run(runId), () =>
      runTrainer(db, runId, { config, stored, model, tokenizer, adapter, train, evalSet, data, resuming: resumeOf !== undefined, haltAfterStep: request.haltAfterStep }, ctx),
    );
  } finally {
    adapter.dispose();
  }
}

type Prepared = {
  config: RunConfig;
  stored: StoredModel;
  model: LoadedModel['model'];
  tokenizer: LoadedModel['tokenizer'];
  adapter: LoraAdapter;
  train: ReturnType<typeof trainWindows>;
  evalSet: ReturnType<typeof evalWindows>;
  data: NonNullable<StoredRun['data']>;
  /** Continue the stored, interrupted run from its latest checkpoint (or from step 0 when it has none). */
  resuming: boolean;
  haltAfterStep: number | undefined;
};

async function runTrainer(db: LoraLabDb, runId: string, p: Prepared, ctx: RunContext) {
  const { config, stored, model, tokenizer, adapter } = p;
  const hasEval = p.evalSet.count > 0;

  // Memory and step times for run_summary.json, from here (the model loaded) to the end of training.
  const resumed = p.resuming ? await latestCheckpoint(db, runId) : null;
  const from = resumed?.checkpoint ?? null;
  // A resumed run goes on from what was measured up to its checkpoint, so run_summary.json counts each step once.
  const measure = measureRun(baseWeightBytes(model), resumed?.record.measured ? { measured: resumed.record.measured, fromStep: resumed.record.step } : null);
  // Callbacks that need the trainer's plan are built after it; the trainer reads them late.
  let callbacks: TrainerCallbacks = {};
  const trainer = new Trainer({
    variables: adapter.variables(),
    lossFn: haltingAfter(p.haltAfterStep, (e) => ctx.event(e), measure.lossFn(loraLossFn(model, adapter, config.seed, { gradientCheckpointing: config.gradient_checkpointing }), (b) => b.inputs.size)),
    train: windowExamples(p.train),
    eval: hasEval ? { examples: windowExamples(p.evalSet), lossFn: loraEvalLossFn(model, adapter) } : null,
    options: trainerOptionsOf(config),
    resumeFrom: from,
    callbacks: lateCallbacks(() => callbacks),
  });

  const newLogFile = config.log_steps > 0 ? EventFileWriter.fileName(Math.floor(Date.now() / 1000), LOG_HOST, 0) : null;
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
    logFile: newLogFile,
    error: null,
    data: p.data,
  };
  let logFile = newLogFile;
  let interruptions: readonly Interruption[] = [];
  if (p.resuming) {
    // Refused here, before anything is undone, when the checkpoint is not this run's any more (the data changed).
    if (from) checkResumable(from, trainer.plan, adapter.variables());
    const point = { step: from?.step ?? 0, logChunks: resumed?.record.logChunks ?? 0, bestEvalLoss: from?.bestEval?.loss ?? null };
    ({ logFile, interruptions = [] } = await rewindRun(db, runId, point));
  } else await putRun(db, run);
  // From here on the run is stored as running: whatever fails (training, a callback, the export, a storage
  // write on a full disk) marks it failed with the message before the error goes on, never leaving it running.
  try {
    ctx.event({
      kind: 'started',
      runId,
      totalSteps: trainer.totalSteps,
      trainTokens: p.train.count * config.seq_len,
      evalTokens: p.evalSet.count * config.seq_len,
      trainableParameters: adapter.parameterCount(),
      fromStep: from?.step ?? 0,
    });

    // The callbacks' writes go through `kept`: a full disk pauses the run until Resume retries the write (storage-full.ts).
    const storage = pauseOnFullStorage({
      paused(message) {
        ctx.event({ kind: 'paused', reason: message });
        void updateRun(db, runId, { status: 'paused', error: message }).catch(() => undefined); // the disk is full: best effort
      },
    });
    const kept = storage.write;

    // Built-in callbacks, each one concern; a custom metric would be one more set in this list.
    const sets: TrainerCallbacks[] = [measure.callbacks];
    // The adapter of the best evaluation, kept next to the last one; the output holds it (see best-adapter.ts).
    const bestKept = bestAdapterKeeper(db, runId, () => exportPeftAdapter(model, adapter, stored.name), from?.bestEval ?? null, kept);
    sets.push(bestKept.callbacks);
    // Early stopping goes on counting from the checkpoint.
    let bestEvalLoss: number | null = from?.bestEval?.loss ?? null;
    let evalsWithoutImprovement = from?.bestEval?.evalsSince ?? 0;

    sets.push({
      async onStepEnd(m) {
        ctx.event({ kind: 'step', ...m });
        await kept('curves', () => putMetric(db, { runId, step: m.step, epoch: m.epoch, loss: m.loss, learningRate: m.learningRate, gradNorm: m.gradNorm, tokensPerSecond: m.tokensPerSecond, skippedSteps: m.skippedSteps, evalLoss: null, custom: {} }));
        if (m.step % 10 === 0 || m.step === trainer.totalSteps) await kept('record', () => updateRun(db, runId, { step: m.step }));
      },
      // No row for a skipped update (nothing was applied); the UI shows the count, the next row carries it.
      onSkip(s) {
        ctx.event({ kind: 'skipped', step: s.step, skippedSteps: s.skippedSteps, problem: s.problem });
      },
      async onEval(e) {
        ctx.event({ kind: 'eval', step: e.step, loss: e.loss });
        await kept('curves', () => putMetric(db, { runId, step: e.step, epoch: null, loss: null, learningRate: null, gradNorm: null, tokensPerSecond: null, evalLoss: e.loss, custom: {} }));
        const improved = bestEvalLoss === null || e.loss < bestEvalLoss;
        if (improved) bestEvalLoss = e.loss;
        evalsWithoutImprovement = improved ? 0 : evalsWithoutImprovement + 1;
        await kept('record', () => updateRun(db, runId, { bestEvalLoss }));
        if (config.early_stopping_patience > 0 && evalsWithoutImprovement >= config.early_stopping_patience) return { stop: 'early_stopped' };
      },
    });

    let logger: ReturnType<typeof tensorBoardCallbacks> | null = null;
    if (logFile) {
      const wallTime = Date.now() / 1000;
      const continuing = (resumed?.record.logChunks ?? 0) > 0;
      const writer = continuing ? continuingWriter(wallTime) : new EventFileWriter();
      if (continuing) {
        // The stored file was cut back to the checkpoint; TensorBoard's mark of a restart follows (see session-log.ts).
        writer.addEvent(sessionStartEvent((from?.step ?? 0) + 1, wallTime));
      } else {
        writer.writeFileVersion(wallTime);
        writer.addText('config', runConfigToYaml(config), 0, wallTime);
      }
      await appendLog(db, runId, writer.takePending());
      logger = tensorBoardCallbacks({ writer, flush: (bytes) => kept('TensorBoard log', () => appendLog(db, runId, bytes)), adapter: { matrices: () => adapterMatrices(adapter) } });
      sets.push(logger);
    }

    // Custom metrics: computed at each log step, plotted live, stored with the curves, logged to TensorBoard.
    const customMetrics: readonly CustomMetric[] = [PERPLEXITY];
    sets.push(
      customMetricCallbacks(customMetrics, async ({ step, name, value }) => {
        ctx.event({ kind: 'metric', step, name, value });
        await kept('curves', () => putMetric(db, { runId, step, epoch: null, loss: null, learningRate: null, gradNorm: null, tokensPerSecond: null, evalLoss: null, custom: { [name]: value } }));
        await logger?.addScalar(name, value, step);
      }),
    );

    const diagnosis = diagnosisCallbacks({
      totalSteps: trainer.totalSteps,
      initial: from ? diagnosisHistoryOf(await readMetrics(db, runId), from.step) : undefined,
      async onFindings(findings) {
        ctx.event({ kind: 'diagnosis', findings });
        await kept('record', () => updateRun(db, runId, { findings }));
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
          for (const [name, bytes] of Object.entries(files)) await kept(`file checkpoint-${step}/${name}`, () => putArtifact(db, runId, `checkpoint-${step}/${name}`, bytes));
        },
      });
    }
    // The run's state for a resume: every save_steps, and when it pauses or is stopped (see Trainer's onCheckpoint).
    sets.push({
      async onCheckpoint(ck) {
        await kept(`checkpoint at step ${ck.step}`, () => saveCheckpoint(db, runId, ck, { measured: measure.soFar(ck.step) }));
      },
    });
    callbacks = composeCallbacks(...sets);

    ctx.onControl((action) => {
      if (action === 'pause') {
        trainer.pause();
        ctx.event({ kind: 'paused' });
        void updateRun(db, runId, { status: 'paused' }).catch(() => undefined); // a failed status write must not end the run
      } else if (action === 'resume') {
        trainer.resume();
        ctx.event({ kind: 'resumed' });
        void updateRun(db, runId, { status: 'running', error: null }).catch(() => undefined);
        storage.resume(); // after the status write is queued: should the retry fail again, its 'paused' lands after it
      } else {
        trainer.stop('stopped');
        storage.stop();
      }
    });
    ctx.signal.addEventListener(
      'abort',
      () => {
        trainer.stop('stopped');
        storage.stop(); // a write waiting for space must not hold a cancelled run forever
      },
      { once: true },
    );

    const end = await trainer.run().finally(() => measure.stop());

    // The run's output folder. A diverged run keeps the last good adapter (the bad update was never applied).
    // With evaluation the top level holds the best adapter and last/ the last one (see best-adapter.ts).
    const { files: adapterFiles, origin } = await bestKept.outputFiles(await exportPeftAdapter(model, adapter, stored.name), end.step);
    // Through `kept` as during training: a full disk here pauses the finished run until Resume (or Stop) too.
    for (const [name, bytes] of Object.entries(adapterFiles)) await kept(`file ${name}`, () => putArtifact(db, runId, name, bytes));
    if (config.export_merged) await writeMergedFromAdapterFiles(db, runId, stored, adapterFiles, (p) => ctx.progress(p));
    await kept('file config.yaml', () => putArtifact(db, runId, 'config.yaml', runConfigToYaml(config)));
    const findings: Finding[] = diagnosis.findings();
    await kept('file diagnosis.json', () => putArtifact(db, runId, 'diagnosis.json', diagnosisJson(findings)));
    // The interruptions the run survived ride along with the measurements (runSummaryJson writes what it is given).
    const summary: RunSummary & AdapterOrigin & { readonly interruptions: readonly Interruption[] } = { ...measure.summary(), interruptions, ...origin };
    await kept('file run_summary.json', () => putArtifact(db, runId, 'run_summary.json', runSummaryJson(summary)));
    await bestKept.discard();
    await updateRun(db, runId, {
      status: end.reason === 'completed' || end.reason === 'early_stopped' ? 'completed' : end.reason,
      step: end.step,
      findings,
    });
    return { runId, reason: end.reason, steps: end.step };
  } catch (e) {
    measure.stop();
    const failure = runFailure(e); // a wasm abort, said in one line
    await recordFailure(db, runId, failure);
    throw failure;
  }
}

/**
 * Marks a run failed with the error's message. If even that write fails (the disk is still full), the record
 * keeps saying running until this worker drops the run's lock; the next start-up sweep then marks it interrupted.
 */
async function recordFailure(db: LoraLabDb, runId: string, e: unknown): Promise<void> {
  const message = e instanceof Error ? e.message : String(e);
  await updateRun(db, runId, { status: 'failed', error: message }).catch(() => undefined);
}

async function adapterMatrices(adapter: LoraAdapter) {
  return Promise.all(
    adapter.modules.map(async (m) => ({ path: m.path, A: (await m.A.data()) as Float32Array, B: (await m.B.data()) as Float32Array })),
  );
}

function findingsText(findings: readonly Finding[]): string {
  return findings.map((f) => `**${f.code}** (${f.severity}, step ${f.step}): ${f.message} ${f.suggestion}`).join('\n\n');
}
