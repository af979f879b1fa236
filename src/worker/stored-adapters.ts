import { evalWindows, packStream } from '../core/data/packing';
import { UserError } from '../core/errors';
import { checkPeftAdapter, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE, readPeftAdapterTensors } from '../core/export/peft';
import { LoraAdapter, type LoraModuleTensors } from '../core/lora/adapter';
import type { LoraSettings, ModelShape } from '../core/lora/settings';
import { parseModelConfigText } from '../core/models/config';
import type { CausalLM } from '../core/models/model';
import { blobSource } from '../core/safetensors/source';
import { evaluate } from '../core/train/evaluate';
import { windowExamples } from '../core/train/examples';
import { loraEvalLossFn, modelLossFn } from '../core/train/loss-fns';
import { adapterInfo, getAdapter, listAdapters, storeAdapter, type AdapterInfo, type StoredAdapter } from '../storage/adapters';
import type { LoraLabDb, StoredModel } from '../storage/db';
import { getModel } from '../storage/models';
import { projectionsOf, readRunData, type DatasetContext, type DatasetRef } from './datasets';
import type { LoadedModel } from './loaded-model';

/**
 * The worker's side of stored adapters: checking an adapter folder against a stored model and storing it, reading
 * one back for a run (`init_adapter`), the Playground, or an evaluation.
 */

/** A stored model's shape from its config.json alone: adapters are checked without loading gigabytes of weights. */
export function storedModelShape(stored: StoredModel): ModelShape {
  const config = parseModelConfigText(stored.files.config);
  return { config, linears: projectionsOf(config) };
}

const baseName = (f: File): string => {
  const path = f.webkitRelativePath || f.name;
  return path.slice(path.lastIndexOf('/') + 1);
};

/**
 * Checks a PEFT adapter folder's two files against the stored model `modelId` (every tensor, its shape and its
 * values) and stores it under `name`. Other files of the folder (README.md, training_args.bin, …) are ignored.
 * Nothing is stored unless every check passes.
 */
export async function importAdapterFiles(db: LoraLabDb, request: { modelId: string; name: string; files: readonly File[] }, ctx: DatasetContext): Promise<AdapterInfo> {
  const name = request.name.trim();
  if (name === '') throw new UserError('adapter name', 'is empty.', 'Give the adapter a name.');
  const stored = await getModel(db, request.modelId);
  if (!stored) throw new UserError('model', 'is not in the library any more (it was deleted).', 'Pick or import a model.');
  const pick = (file: string): File => {
    const found = request.files.filter((f) => baseName(f) === file);
    if (found.length === 0) {
      throw new UserError(`adapter ${name}`, `has no ${file}.`, `A PEFT adapter folder holds ${PEFT_CONFIG_FILE} and ${PEFT_WEIGHTS_FILE}; pick the folder that has both.`);
    }
    if (found.length > 1) throw new UserError(`adapter ${name}`, `has ${found.length} files named ${file}.`, 'Pick one adapter folder at a time.');
    return found[0]!;
  };
  const configFile = pick(PEFT_CONFIG_FILE);
  const weightsFile = pick(PEFT_WEIGHTS_FILE);
  ctx.progress({ phase: 'Checking the adapter', done: 0, total: weightsFile.size, unit: 'bytes' });
  const configText = await utf8(configFile);
  const source = blobSource(weightsFile, PEFT_WEIGHTS_FILE);
  const checked = await checkPeftAdapter(storedModelShape(stored), configText, source);
  // Every value is read once: a file cut short or holding NaN is refused now, not when a run starts from it.
  await readPeftAdapterTensors(checked, source);
  ctx.signal.throwIfAborted();
  const record: StoredAdapter = {
    modelId: stored.id,
    name,
    importedAt: Date.now(),
    settings: checked.settings,
    baseModelName: checked.baseModelName,
    parameterCount: checked.parameterCount,
    moduleCount: checked.modules.length,
    // A copy with its own type, so the stored Blob is not tied to the picked File (which the person may change).
    files: { config: configText, weights: new Blob([await weightsFile.arrayBuffer()], { type: 'application/octet-stream' }) },
  };
  await storeAdapter(db, record);
  ctx.progress({ phase: 'Checking the adapter', done: weightsFile.size, total: weightsFile.size, unit: 'bytes' });
  return adapterInfo(record);
}

async function utf8(file: File): Promise<string> {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(await file.arrayBuffer());
  } catch {
    throw new UserError(PEFT_CONFIG_FILE, 'is not UTF-8 text.', 'Use the adapter_config.json that came with the adapter.');
  }
}

/** A stored adapter's settings and values, checked again against the model (the files are re-read as stored). */
export interface StoredAdapterValues {
  readonly record: StoredAdapter;
  readonly settings: LoraSettings;
  readonly tensors: ReadonlyMap<string, LoraModuleTensors>;
}

/**
 * Reads the adapter `name` stored with `stored`. `subject` names what asked for it in the message when there is no
 * such adapter (`init_adapter` for a run config).
 */
export async function readStoredAdapter(db: LoraLabDb, stored: StoredModel, name: string, subject = 'adapter'): Promise<StoredAdapterValues> {
  const record = await getAdapter(db, stored.id, name);
  if (!record) {
    const names = (await listAdapters(db, stored.id)).map((a) => `"${a.name}"`);
    const have = names.length === 0 ? `${stored.name} has no stored adapters.` : `Its adapters are: ${names.join(', ')}.`;
    throw new UserError(subject, `no adapter named "${name}" is stored with the model ${stored.name}. ${have}`, 'Import the adapter folder onto the model in the Models panel, or pick a stored one.');
  }
  const source = blobSource(record.files.weights, PEFT_WEIGHTS_FILE);
  const checked = await checkPeftAdapter(storedModelShape(stored), record.files.config, source);
  return { record, settings: checked.settings, tensors: await readPeftAdapterTensors(checked, source) };
}

/** The stored adapter as a runnable LoraAdapter on the loaded model (the caller disposes it). */
export async function loadStoredAdapter(db: LoraLabDb, stored: StoredModel, model: CausalLM, name: string): Promise<LoraAdapter> {
  const { settings, tensors } = await readStoredAdapter(db, stored, name);
  return LoraAdapter.fromTensors(model, settings, tensors);
}

export interface AdapterEvalRequest {
  readonly modelId: string;
  /** A stored adapter's name, or null for the base model alone. */
  readonly adapter: string | null;
  readonly data: DatasetRef;
  readonly seqLen: number;
  readonly batchSize: number;
}

export interface AdapterEvalResult {
  /** Token-weighted mean cross-entropy, as a run's eval/loss. */
  readonly loss: number;
  readonly windows: number;
  readonly targetTokens: number;
}

/**
 * The eval loss of the base model with a stored adapter (or without one) on a dataset, exactly as a run's eval/loss
 * is computed: the data packed into windows of seq_len (evalWindows), the token-weighted mean over their targets.
 */
export async function evaluateStoredAdapter(db: LoraLabDb, request: AdapterEvalRequest, loaded: LoadedModel, ctx: DatasetContext): Promise<AdapterEvalResult> {
  const stored = await getModel(db, request.modelId);
  if (!stored) throw new UserError('model', 'is not in the library any more (it was deleted).', 'Pick or import a model.');
  const { model, tokenizer } = loaded;
  if (!Number.isInteger(request.seqLen) || request.seqLen < 2 || request.seqLen > model.config.maxPositions) {
    throw new UserError('seq_len', `is ${request.seqLen}, but this model takes 2 to ${model.config.maxPositions} positions.`, `Set seq_len to ${Math.min(256, model.config.maxPositions)} or less.`);
  }
  const docs = (await readRunData(db, request.data, stored, tokenizer, ctx)).docs;
  const windows = evalWindows(packStream(docs, tokenizer.eosId), request.seqLen);
  if (windows.count === 0) {
    throw new UserError('dataset', `holds fewer than ${request.seqLen + 1} tokens, so there is not one window of seq_len ${request.seqLen} to evaluate.`, 'Pick a larger dataset or a smaller seq_len.');
  }
  const adapter = request.adapter === null ? null : await loadStoredAdapter(db, stored, model, request.adapter);
  try {
    const result = await evaluate(windowExamples(windows), adapter ? loraEvalLossFn(model, adapter) : modelLossFn(model), Math.max(1, request.batchSize));
    return { loss: result.loss, windows: result.examples, targetTokens: result.weight };
  } finally {
    adapter?.dispose();
  }
}

