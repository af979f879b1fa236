import { UserError } from '../core/errors';
import { PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE } from '../core/export/peft';
import type { ImageInitAdapter } from '../core/image-run/run';
import type { LoraModuleTensors } from '../core/lora/adapter';
import type { ProjectionShape } from '../core/lora/settings';
import type { DiffusersFolder } from '../core/models/diffusion/component';
import { diffusionProjectionShapes } from '../core/models/diffusion/projection-shapes';
import { readKohyaLora, readPeftLora, type LoadedLora } from '../core/models/diffusion/unet-lora';
import { blobSource } from '../core/safetensors/source';
import type { LoraLabDb } from '../storage/db';
import { getDiffusionModel, storedDiffusersFolder } from '../storage/diffusion-models';
import { getImageAdapter, imageAdapterInfo, listImageAdapters, storeImageAdapter, type ImageAdapterFiles, type ImageAdapterInfo, type PeftFiles } from '../storage/image-adapters';
import type { DatasetContext } from './datasets';
import type { OpenedImageModel } from './image-library';

/**
 * The worker's side of image LoRAs brought back in: a kohya `.safetensors` or a PEFT folder (its text_encoder/
 * subfolder too) checked against a stored Stable Diffusion model's projections (read from its headers, no weights
 * loaded) and stored under a name; read back for a run's `init_adapter`.
 */

export interface ImageAdapterImportRequest {
  readonly modelId: string;
  readonly name: string;
  /** A kohya `.safetensors`, or a PEFT folder's files (adapter_config.json + adapter_model.safetensors, optionally under text_encoder/ too). */
  readonly files: readonly File[];
}

const pathOf = (f: File): string => (f.webkitRelativePath || f.name).replace(/\\/g, '/');
const baseName = (path: string): string => path.slice(path.lastIndexOf('/') + 1);
/** The folder a file sits in, relative to the picked folder's parent ('' when picked loose). */
const parentName = (path: string): string => {
  const parts = path.split('/');
  return parts.length >= 2 ? parts[parts.length - 2]! : '';
};

/** The adapter's tensors by network and the LoRA shape they share, as read and checked. */
interface CheckedImageAdapter {
  readonly rank: number;
  readonly alpha: number;
  readonly useRslora: boolean;
  readonly unet: LoadedLora['modules'];
  readonly textEncoder: LoadedLora['modules'];
}

/** Reads `files` (as stored) against the model's projections; every failure is a UserError naming the file. */
async function checkFiles(files: ImageAdapterFiles, shapes: { readonly unet: readonly ProjectionShape[]; readonly textEncoder: readonly ProjectionShape[] }): Promise<CheckedImageAdapter> {
  if (files.format === 'kohya') {
    const source = blobSource(files.weights, files.fileName);
    const lora = await readKohyaLora(source, [
      { prefix: 'lora_unet', linears: shapes.unet },
      { prefix: 'lora_te', linears: shapes.textEncoder },
    ]);
    const unetPaths = new Set(shapes.unet.map((l) => l.path));
    const split = (inUnet: boolean) => new Map([...lora.modules].filter(([path]) => unetPaths.has(path) === inUnet));
    const { rank, alpha } = oneShape(files.fileName, lora);
    return { rank, alpha, useRslora: false, unet: split(true), textEncoder: split(false) };
  }
  const read = async (peft: PeftFiles, linears: readonly ProjectionShape[], dir: string) => {
    const lora = await readPeftLora(peft.config, blobSource(peft.weights, `${dir}${PEFT_WEIGHTS_FILE}`), linears);
    const config = JSON.parse(peft.config) as { lora_alpha?: number; use_rslora?: boolean };
    return { lora, rank: oneShape(`${dir}${PEFT_WEIGHTS_FILE}`, lora).rank, alpha: config.lora_alpha ?? 8, useRslora: config.use_rslora === true };
  };
  const unet = await read(files.unet, shapes.unet, '');
  const text = files.textEncoder ? await read(files.textEncoder, shapes.textEncoder, 'text_encoder/') : null;
  if (text && (text.rank !== unet.rank || text.alpha !== unet.alpha || text.useRslora !== unet.useRslora)) {
    throw new UserError(
      `text_encoder/${PEFT_CONFIG_FILE}`,
      `has r ${text.rank}, lora_alpha ${text.alpha}, use_rslora ${text.useRslora}, but the UNet's adapter has r ${unet.rank}, lora_alpha ${unet.alpha}, use_rslora ${unet.useRslora}.`,
      'LoRA Lab trains both networks with one LoRA shape; use an adapter saved with one for both.',
    );
  }
  return { rank: unet.rank, alpha: unet.alpha, useRslora: unet.useRslora, unet: unet.lora.modules, textEncoder: text?.lora.modules ?? new Map() };
}

/** The one rank and alpha every module of `lora` has; a file mixing them cannot seed a LoRA Lab run. */
function oneShape(file: string, lora: LoadedLora): { rank: number; alpha: number } {
  const modules = [...lora.modules.values()];
  const first = modules[0]!;
  for (const m of modules) {
    if (m.rank !== first.rank || Math.abs(m.scaling - first.scaling) > 1e-6 * Math.abs(first.scaling)) {
      throw new UserError(
        file,
        `adapts ${first.path} with rank ${first.rank} and scale ${first.scaling}, but ${m.path} with rank ${m.rank} and scale ${m.scaling}.`,
        'LoRA Lab keeps one rank and alpha for every module; use a LoRA saved with one network_dim and network_alpha.',
      );
    }
  }
  return { rank: first.rank, alpha: first.scaling * first.rank };
}

/** What was picked, as the files to store: one .safetensors (kohya), or PEFT folders (the UNet's and text_encoder/). */
async function pickedFiles(name: string, files: readonly File[]): Promise<ImageAdapterFiles> {
  const byPath = files.map((f) => ({ file: f, path: pathOf(f) }));
  const configs = byPath.filter((f) => baseName(f.path) === PEFT_CONFIG_FILE);
  if (configs.length === 0) {
    const kohya = byPath.filter((f) => f.path.toLowerCase().endsWith('.safetensors'));
    if (kohya.length !== 1) {
      throw new UserError(
        `adapter ${name}`,
        kohya.length === 0 ? 'has no .safetensors file and no adapter_config.json.' : `has ${kohya.length} .safetensors files and no adapter_config.json.`,
        'Pick one kohya LoRA .safetensors file, or a PEFT adapter folder (adapter_config.json + adapter_model.safetensors).',
      );
    }
    const { file, path } = kohya[0]!;
    return { format: 'kohya', fileName: baseName(path), weights: new Blob([await file.arrayBuffer()], { type: 'application/octet-stream' }) };
  }
  const pair = async (textEncoder: boolean): Promise<PeftFiles | null> => {
    const inDir = byPath.filter((f) => (parentName(f.path) === 'text_encoder') === textEncoder);
    const config = inDir.filter((f) => baseName(f.path) === PEFT_CONFIG_FILE);
    const weights = inDir.filter((f) => baseName(f.path) === PEFT_WEIGHTS_FILE);
    const dir = textEncoder ? 'text_encoder/' : '';
    if (textEncoder && config.length === 0 && weights.length === 0) return null;
    if (config.length !== 1 || weights.length !== 1) {
      throw new UserError(
        `adapter ${name}`,
        `has ${config.length} ${dir}${PEFT_CONFIG_FILE} and ${weights.length} ${dir}${PEFT_WEIGHTS_FILE} files.`,
        `A PEFT adapter folder holds one ${PEFT_CONFIG_FILE} and one ${PEFT_WEIGHTS_FILE} (and the text encoder's under text_encoder/); pick one folder.`,
      );
    }
    return { config: await utf8(config[0]!.file, `${dir}${PEFT_CONFIG_FILE}`), weights: new Blob([await weights[0]!.file.arrayBuffer()], { type: 'application/octet-stream' }) };
  };
  const unet = await pair(false);
  return { format: 'peft', unet: unet!, textEncoder: await pair(true) };
}

async function utf8(file: File, name: string): Promise<string> {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(await file.arrayBuffer());
  } catch {
    throw new UserError(name, 'is not UTF-8 text.', 'Use the adapter_config.json that came with the adapter.');
  }
}

async function storedModelFolder(db: LoraLabDb, modelId: string) {
  const model = await getDiffusionModel(db, modelId);
  if (!model) throw new UserError('model', 'is not in the library any more (it was deleted).', 'Pick or import a Stable Diffusion model.');
  return { model, folder: await storedDiffusersFolder(db, model) };
}

/**
 * Checks an image LoRA's files against the stored model `modelId` (every module's path, shapes, rank, alpha and
 * values) and stores it under `name` with the model. Nothing is stored unless every check passes.
 */
export async function importImageAdapter(db: LoraLabDb, request: ImageAdapterImportRequest, ctx: DatasetContext): Promise<ImageAdapterInfo> {
  const name = request.name.trim();
  if (name === '') throw new UserError('adapter name', 'is empty.', 'Give the adapter a name.');
  const { model, folder } = await storedModelFolder(db, request.modelId);
  ctx.progress({ phase: 'Checking the adapter', done: 0, total: 1, unit: 'steps' });
  const files = await pickedFiles(name, request.files);
  const checked = await checkFiles(files, await diffusionProjectionShapes(folder));
  ctx.signal.throwIfAborted();
  const record = await storeImageAdapter(db, {
    modelId: model.id,
    name,
    importedAt: Date.now(),
    rank: checked.rank,
    alpha: checked.alpha,
    useRslora: checked.useRslora,
    unetModules: checked.unet.size,
    textEncoderModules: checked.textEncoder.size,
    files,
  });
  ctx.progress({ phase: 'Checking the adapter', done: 1, total: 1, unit: 'steps' });
  return imageAdapterInfo(record);
}

/** The image adapters stored with a model, newest first, as lists show them. */
export async function listStoredImageAdapters(db: LoraLabDb, modelId: string): Promise<ImageAdapterInfo[]> {
  return (await listImageAdapters(db, modelId)).map(imageAdapterInfo);
}

const tensorsOf = (modules: LoadedLora['modules']): ReadonlyMap<string, LoraModuleTensors> => new Map([...modules].map(([path, m]) => [path, { A: m.A, B: m.B }]));

/**
 * The stored image adapter `name` of model `modelId` as a run starts from it (`init_adapter`), its files read and
 * checked again against the model's folder view. `subject` names what asked for it when there is no such adapter.
 */
export async function readStoredImageAdapter(db: LoraLabDb, modelId: string, folder: DiffusersFolder, name: string, subject = 'init_adapter'): Promise<ImageInitAdapter> {
  const record = await getImageAdapter(db, modelId, name);
  if (!record) {
    const names = (await listImageAdapters(db, modelId)).map((a) => `"${a.name}"`);
    const have = names.length === 0 ? 'The model has no stored image adapters.' : `Its adapters are: ${names.join(', ')}.`;
    throw new UserError(subject, `no image adapter named "${name}" is stored with this model. ${have}`, 'Import the LoRA onto the model in the Images panel, or pick a stored one.');
  }
  const checked = await checkFiles(record.files, await diffusionProjectionShapes(folder));
  return {
    name,
    rank: checked.rank,
    alpha: checked.alpha,
    useRslora: checked.useRslora,
    unet: tensorsOf(checked.unet),
    textEncoder: checked.textEncoder.size > 0 ? tensorsOf(checked.textEncoder) : null,
  };
}

/**
 * The adapter an image run starts from, when its config names one (`init_adapter`): a stored image adapter of the
 * run's library model. A model folder picked for the run (the headless runner's) has no stored adapters.
 */
export async function imageInitAdapterOf(db: LoraLabDb, initAdapter: string | null, model: OpenedImageModel): Promise<ImageInitAdapter | null> {
  if (initAdapter === null) return null;
  if (model.modelId === null) {
    throw new UserError(
      'init_adapter',
      `is "${initAdapter}", but the model ${model.name} was picked as a folder for this run, and only a model of the library has stored adapters.`,
      'Import the model and the LoRA into the library and start the run from there, or remove init_adapter.',
    );
  }
  return readStoredImageAdapter(db, model.modelId, model.folder, initAdapter);
}
