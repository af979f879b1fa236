import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors';
import { readHeader, readTensorBytes, toFloat32, type ByteSource } from '../../safetensors/index';

/**
 * Loading one component (`unet/`, `vae/`, `text_encoder/`) of a Stable Diffusion pipeline in diffusers layout:
 * its `config.json` and its safetensors weights as float32 tf tensors keyed by the diffusers/transformers names.
 * DOM-free: the folder is a map of relative paths to byte sources, so the browser (picked files), the worker
 * (stored bytes) and Node tests (files on disk) all use it the same way.
 */

/** The files of a diffusers folder, keyed by their path relative to the folder root, e.g. `vae/config.json`. */
export type DiffusersFolder = ReadonlyMap<string, ByteSource>;

export type DiffusersComponentName = 'unet' | 'vae' | 'text_encoder';

export interface DiffusersComponent {
  readonly name: DiffusersComponentName;
  /** The parsed `config.json` of the component, as written by diffusers/transformers. */
  readonly config: Readonly<Record<string, unknown>>;
  /** Every tensor of the component's weights file, as float32 (F16/BF16 widened exactly). */
  readonly weights: ReadonlyMap<string, tf.Tensor>;
}

/** Weight file names diffusers and transformers write, in the order they are preferred. */
const WEIGHT_FILES = ['diffusion_pytorch_model.safetensors', 'model.safetensors'];

async function readJson(source: ByteSource): Promise<Record<string, unknown>> {
  const bytes = await source.read(0, source.size);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    const why = e instanceof Error ? ` (${e.message})` : '';
    throw new UserError(source.name, `is not valid JSON${why}.`, 'Use the config.json that came with the model.');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new UserError(source.name, 'must be a JSON object of settings.', 'Use the config.json that came with the model.');
  }
  return json as Record<string, unknown>;
}

/** The `config.json` of a component, without its weights (cheap: to validate a folder before loading it). */
export async function readComponentConfig(
  folder: DiffusersFolder,
  name: DiffusersComponentName | 'scheduler',
): Promise<Record<string, unknown>> {
  const path = name === 'scheduler' ? 'scheduler/scheduler_config.json' : `${name}/config.json`;
  const source = folder.get(path);
  if (!source) {
    throw new UserError(path, 'is missing from the diffusers folder.', `Pick the whole model folder, including ${name}/.`);
  }
  return readJson(source);
}

/** Finds the component's safetensors weights (a diffusers or transformers file name, or the only one there is). */
export function weightsSource(folder: DiffusersFolder, name: DiffusersComponentName): ByteSource {
  for (const file of WEIGHT_FILES) {
    const source = folder.get(`${name}/${file}`);
    if (source) return source;
  }
  const candidates = [...folder.keys()].filter((p) => p.startsWith(`${name}/`) && p.endsWith('.safetensors'));
  if (candidates.length === 1) return folder.get(candidates[0]!)!;
  if (candidates.length > 1) {
    throw new UserError(
      `${name}/`,
      `holds ${candidates.length} safetensors files (${candidates.join(', ')}) and none is named ${WEIGHT_FILES.join(' or ')}.`,
      'Keep only the weights file diffusers wrote.',
    );
  }
  throw new UserError(
    `${name}/${WEIGHT_FILES[name === 'text_encoder' ? 1 : 0]}`,
    'is missing from the diffusers folder (only .safetensors weights are read).',
    'Pick the whole model folder, with safetensors weights.',
  );
}

/**
 * Reads a component's config and all of its tensors. On any error the tensors made so far are disposed, so a
 * failed load leaves nothing behind. The caller owns the returned tensors (`disposeComponent`).
 */
export async function loadDiffusersComponent(folder: DiffusersFolder, name: DiffusersComponentName): Promise<DiffusersComponent> {
  const config = await readComponentConfig(folder, name);
  const source = weightsSource(folder, name);
  // Integer buffers are passed over: SD 1.x text encoders saved by older transformers hold `position_ids` as I64,
  // which no model here reads (positions are 0 … n−1).
  const header = await readHeader(source, { skipIntegerTensors: true });
  const weights = new Map<string, tf.Tensor>();
  try {
    for (const entry of header.tensors) {
      const values = toFloat32(entry.dtype, await readTensorBytes(source, entry));
      weights.set(entry.name, tf.tensor(values, [...entry.shape], 'float32'));
    }
  } catch (e) {
    for (const t of weights.values()) t.dispose();
    throw e;
  }
  return { name, config, weights };
}

export function disposeComponent(component: DiffusersComponent): void {
  for (const t of component.weights.values()) t.dispose();
}

/**
 * A tensor the model code needs by name; a miss means the folder is not the architecture its config says
 * (or a different SD family), which the person can fix by picking the right folder.
 */
export function componentWeight(component: DiffusersComponent, tensorName: string, shape?: readonly number[]): tf.Tensor {
  const file = `${component.name}/ weights`;
  const t = component.weights.get(tensorName);
  if (!t) {
    throw new UserError(file, `tensor "${tensorName}" is missing; this is not a Stable Diffusion 1.x ${component.name}.`, 'Pick an SD 1.x model folder in diffusers layout.');
  }
  if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))) {
    throw new UserError(
      file,
      `tensor "${tensorName}" has shape [${t.shape.join(', ')}] but config.json implies [${shape.join(', ')}].`,
      'Use the config.json that came with these weights.',
    );
  }
  return t;
}

/** A config number the model needs; a missing or wrong one is the person's file to fix. */
export function configNumber(component: { name: string; config: Readonly<Record<string, unknown>> }, key: string, fallback?: number): number {
  const v = component.config[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new UserError(`${component.name}/config.json`, `"${key}" is missing.`, 'Use the config.json that came with the model.');
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new UserError(`${component.name}/config.json`, `"${key}" must be a number, but it is ${JSON.stringify(v)}.`);
  }
  return v;
}

/** A config list of numbers (e.g. `block_out_channels`). */
export function configNumbers(component: { name: string; config: Readonly<Record<string, unknown>> }, key: string): number[] {
  const v = component.config[key];
  if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw new UserError(`${component.name}/config.json`, `"${key}" must be a non-empty list of numbers, but it is ${JSON.stringify(v)}.`);
  }
  return v as number[];
}
