/// <reference lib="webworker" />
import { baseWeightBytes } from '../core/train/device-memory';
import * as tf from '@tensorflow/tfjs';
import { isUserError, UserError } from '../core/errors';
import { generate, nextTokenDistribution } from '../core/models/generate';
import { blobSource } from '../core/safetensors';
import { sweepUnfinishedDatasets } from '../storage/datasets';
import { openDatabase } from '../storage/db';
import { importModel } from '../storage/import-model';
import { platformLocks } from '../storage/locks';
import { deleteModel, getModel, sweepUnfinishedImports } from '../storage/models';
import { getRun, liveRunOnModel, markInterruptedRuns } from '../storage/runs';
import { selectBackend } from './backend';
import { estimateStoredRun, importDatasetFile, previewStoredDataset } from './datasets';
import { ModelSlot } from './loaded-model';
import { evaluateStoredAdapter, importAdapterFiles } from './stored-adapters';
import { importImageAdapter, listStoredImageAdapters } from './image-adapters';
import { deleteImageAdapter } from '../storage/image-adapters';
import { asTheOneTrainer } from './one-trainer';
import type { ErrorDetail, Request, RequestName, Requests, Response, RunControl, ToWorker } from './protocol';
import { resumeRequestOf } from './resume';
import { runOutputFiles } from './run-files';
import { trainLora, type RunContext } from './training-run';
import { resumeImageRun, trainImageRun } from './image-run';
import { decodeWithImageBitmap } from './image-decoder';
import {
  deleteStoredDiffusionModel,
  deleteStoredImageDataset,
  importDiffusionFolder,
  importImageFolder,
  listImageLibrary,
  previewStoredImageDataset,
} from './image-library';
import { sweepUnfinishedDiffusionModels } from '../storage/diffusion-models';
import { sweepUnfinishedImageDatasets } from '../storage/image-datasets';
import { mergeFinishedRun } from './merged-export';
import { adaptedLogits, compareSideBySide } from './playground';

declare const self: DedicatedWorkerGlobalScope;

type Context = RunContext;

/** Origin-wide Web Locks: what tells this tab's start-up sweep which records another live tab is still writing. */
const locks = platformLocks();
/** The one model on the backend; a training run pins it (see ModelSlot). */
const models = new ModelSlot();
/** What an image run pins the language-model slot under: no stored model has this id. */
const IMAGE_RUN_SLOT = 'image-run';

type Handler<K extends RequestName> = (payload: Requests[K]['payload'], ctx: Context) => Promise<Requests[K]['result']>;

const handlers: { [K in RequestName]: Handler<K> } = {
  async init({ backend }) {
    const info = await selectBackend(backend);
    // What a closed, reloaded or crashed tab left behind; records a live tab still writes hold a lock and are skipped.
    const db = await openDatabase();
    await sweepUnfinishedImports(db, locks);
    await sweepUnfinishedDatasets(db, locks);
    await sweepUnfinishedDiffusionModels(db, locks);
    await sweepUnfinishedImageDatasets(db, locks);
    await markInterruptedRuns(db, locks);
    return info;
  },

  async importModel({ name, files }, ctx) {
    const db = await openDatabase();
    const estimate = await navigator.storage?.estimate?.();
    const freeBytes = estimate?.quota !== undefined ? estimate.quota - (estimate.usage ?? 0) : undefined;
    const model = await importModel(db, files.map((f) => blobSource(f, f.webkitRelativePath || f.name)), {
      name,
      freeBytes,
      locks,
      signal: ctx.signal,
      onProgress: ({ doneBytes, totalBytes }) => ctx.progress({ phase: 'Storing weights', done: doneBytes, total: totalBytes, unit: 'bytes' }),
    });
    return { modelId: model.id };
  },

  async predict({ modelId, prompt, topK, maxNewTokens, temperature, seed }, ctx) {
    const { model, tokenizer } = await loadModel(modelId, ctx);
    const ids = tokenizer.encode(prompt);
    if (ids.length === 0 && tokenizer.eosId !== null) ids.push(tokenizer.eosId);
    if (ids.length === 0) throw new Error('Type a prompt first.');
    const next = (await nextTokenDistribution(model, ids, topK)).map(({ id, prob }) => ({ id, prob, text: tokenizer.tokenText(id) }));
    const continuation = tokenizer.decode(await generate(model, ids, { maxNewTokens, temperature, seed }));
    return { promptTokens: ids.length, next, continuation };
  },

  async logits({ modelId, tokens, adapter }, ctx) {
    const { model } = await loadModel(modelId, ctx);
    if (adapter) {
      const values = await adaptedLogits(await openDatabase(), await storedModelOf(modelId), model, tokens, adapter.source, adapter.scale);
      return { logits: values, vocabSize: model.config.vocabSize, weightBytes: baseWeightBytes(model) };
    }
    const logits = tf.tidy(() => model.forward(tf.tensor2d(tokens, [1, tokens.length], 'int32')));
    const values = (await logits.data()) as Float32Array;
    logits.dispose();
    return { logits: values, vocabSize: model.config.vocabSize, weightBytes: baseWeightBytes(model) };
  },

  async compare(payload, ctx) {
    const loaded = await loadModel(payload.modelId, ctx);
    return compareSideBySide(await openDatabase(), await storedModelOf(payload.modelId), loaded, payload);
  },

  async train(payload, ctx) {
    // Before the first await: of two train messages, the second finds the slot pinned and is refused.
    const pin = models.pin(payload.modelId);
    try {
      // Another tab's worker may be training: refused too (one run per origin, see one-trainer.ts).
      return await asTheOneTrainer(locks, async () => trainLora(await openDatabase(), payload, ctx, { pin, locks }));
    } finally {
      pin.release();
    }
  },

  async resumeRun({ runId, modelId }, ctx) {
    // Pinned before the first await, as for train: a second run is refused, not raced.
    const pin = models.pin(modelId);
    try {
      const db = await openDatabase();
      const run = await getRun(db, runId);
      if (!run) throw new UserError('run', 'is not stored any more.');
      if (run.modelId !== modelId) throw new Error(`resumeRun: run ${runId} trains model ${run.modelId}, not ${modelId}`);
      return await asTheOneTrainer(locks, () => trainLora(db, resumeRequestOf(run), ctx, { pin, locks }, run));
    } finally {
      pin.release();
    }
  },

  async trainImages(payload, ctx) {
    // The language-model slot is pinned (no predict or train meanwhile) and emptied: the image run needs the memory.
    const pin = models.pin(IMAGE_RUN_SLOT);
    try {
      return await asTheOneTrainer(locks, async () => {
        await models.unloadFor(pin);
        return trainImageRun(await openDatabase(), payload, ctx, locks);
      });
    } finally {
      pin.release();
    }
  },

  async resumeImageRun({ runId }, ctx) {
    // As trainImages: the slot pinned before the first await, then emptied for the image run.
    const pin = models.pin(IMAGE_RUN_SLOT);
    try {
      return await asTheOneTrainer(locks, async () => {
        await models.unloadFor(pin);
        return resumeImageRun(await openDatabase(), runId, ctx, locks);
      });
    } finally {
      pin.release();
    }
  },

  async deleteModel({ modelId }) {
    await models.evict(modelId);
    const db = await openDatabase();
    // A run in another tab holds its run's lock; this tab's own run was refused by evict() with a plainer message.
    const live = await liveRunOnModel(db, modelId, locks);
    if (live) {
      throw new UserError('model', `cannot be deleted while the run "${live.name}" trains on it in another tab.`, 'Stop that run, or wait for it to end, then delete the model.');
    }
    await deleteModel(db, modelId);
    return { modelId };
  },

  async exportRun({ runId }) {
    return { files: await runOutputFiles(await openDatabase(), runId) };
  },

  async mergeRun({ runId }, ctx) {
    return mergeFinishedRun(await openDatabase(), runId, (p) => ctx.progress(p), ctx.signal);
  },

  async importDataset(payload, ctx) {
    return importDatasetFile(await openDatabase(), payload, ctx);
  },

  async previewDataset(payload, ctx) {
    return previewStoredDataset(await openDatabase(), payload, ctx);
  },

  async estimateRun(payload, ctx) {
    return estimateStoredRun(await openDatabase(), payload, ctx);
  },

  async importAdapter(payload, ctx) {
    return { adapter: await importAdapterFiles(await openDatabase(), payload, ctx) };
  },

  async importDiffusionModel(payload, ctx) {
    return { model: await importDiffusionFolder(await openDatabase(), payload, ctx, locks) };
  },

  async importImageAdapter(payload, ctx) {
    return { adapter: await importImageAdapter(await openDatabase(), payload, ctx) };
  },

  async listImageAdapters({ modelId }) {
    return { adapters: await listStoredImageAdapters(await openDatabase(), modelId) };
  },

  async deleteImageAdapter({ modelId, name }) {
    await deleteImageAdapter(await openDatabase(), modelId, name);
    return { name };
  },

  async listImageLibrary() {
    return listImageLibrary(await openDatabase());
  },

  async deleteDiffusionModel({ modelId }) {
    await deleteStoredDiffusionModel(await openDatabase(), modelId, locks);
    return { modelId };
  },

  async importImageDataset(payload, ctx) {
    return { dataset: await importImageFolder(await openDatabase(), payload, ctx, locks, decodeWithImageBitmap) };
  },

  async deleteImageDataset({ datasetId }) {
    await deleteStoredImageDataset(await openDatabase(), datasetId, locks);
    return { datasetId };
  },

  async previewImageDataset(payload) {
    return previewStoredImageDataset(await openDatabase(), payload);
  },

  async evaluateAdapter(payload, ctx) {
    const loaded = await loadModel(payload.modelId, ctx);
    return evaluateStoredAdapter(await openDatabase(), payload, loaded, ctx);
  },
};

async function storedModelOf(modelId: string) {
  const stored = await getModel(await openDatabase(), modelId);
  if (!stored) throw new UserError('model', 'is not in the library any more.', 'Import it again.');
  return stored;
}

function loadModel(modelId: string, ctx: Context) {
  return openDatabase().then((db) =>
    models.use(db, modelId, (done, total) => ctx.progress({ phase: 'Loading weights', done, total, unit: 'bytes' })),
  );
}

const running = new Map<number, AbortController>();
const controls = new Map<number, (action: RunControl) => void>();

self.onmessage = async (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  if (message.type === 'cancel') {
    running.get(message.id)?.abort(new DOMException('Cancelled', 'AbortError'));
    return;
  }
  if (message.type === 'control') {
    controls.get(message.id)?.(message.action);
    return;
  }
  await serve(message);
};

async function serve(request: Request): Promise<void> {
  const controller = new AbortController();
  running.set(request.id, controller);
  const ctx: Context = {
    signal: controller.signal,
    progress: (progress) => post({ id: request.id, type: 'progress', progress }),
    event: (event) => post({ id: request.id, type: 'event', event }),
    onControl: (handler) => controls.set(request.id, handler),
  };
  try {
    const handler = handlers[request.type] as Handler<typeof request.type>;
    const result = await handler(request.payload as never, ctx);
    post({ id: request.id, type: 'result', result }, transferablesOf(result));
  } catch (e) {
    post({ id: request.id, type: 'error', error: describe(e) });
  } finally {
    running.delete(request.id);
    controls.delete(request.id);
  }
}

function post(message: Response, transfer: Transferable[] = []): void {
  self.postMessage(message, transfer);
}

function transferablesOf(result: unknown): Transferable[] {
  if (typeof result !== 'object' || result === null) return [];
  return Object.values(result).flatMap((v) => (ArrayBuffer.isView(v) ? [v.buffer as ArrayBuffer] : []));
}

function describe(e: unknown): ErrorDetail {
  if (isUserError(e)) return { message: e.message, subject: e.subject, fix: e.fix, userError: true };
  if (e instanceof DOMException && e.name === 'AbortError') return { message: 'Cancelled.', userError: true };
  const error = e instanceof Error ? e : new Error(String(e));
  return { message: error.message, userError: false };
}
