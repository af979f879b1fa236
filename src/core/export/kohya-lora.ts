import { kohyaModuleName, type KohyaPrefix } from '../models/diffusion/unet-lora-names.js';
import { fromFloat32, safetensorsLayout, type Dtype } from '../safetensors/index.js';

/**
 * A Stable Diffusion 1.x image LoRA as kohya's sd-scripts (networks/lora.py, train_network.py) saves it, the format
 * AUTOMATIC1111, ComfyUI, Forge and the LoRA sites load: one `.safetensors` with per module
 * `<lora_unet|lora_te>_<module path, dots as underscores>.lora_down.weight` (A), `.lora_up.weight` (B) and `.alpha`
 * (a 0-d tensor), and the `ss_*` training notes plus the `sshs_*` hashes in `__metadata__`.
 */

/** The networks of an SD 1.x pipeline a LoRA may adapt. */
export type LoraNetwork = 'unet' | 'text_encoder';

/** One trained LoRA module to export, under its diffusers (UNet) or transformers (CLIP) module path. */
export interface ExportLoraModule {
  readonly network: LoraNetwork;
  /** e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`, `text_model.encoder.layers.0.self_attn.q_proj`. */
  readonly path: string;
  readonly rank: number;
  /** [rank, in] row-major (PEFT's lora_A, kohya's lora_down). */
  readonly A: Float32Array;
  /** [out, rank] row-major (PEFT's lora_B, kohya's lora_up). */
  readonly B: Float32Array;
  /** The module adds (alpha / rank) · B·A·x. */
  readonly alpha: number;
}

/** What the exporters must know of the UNet that the modules alone do not say: which projections are 1×1 convolutions. */
export interface UnetProjectionKind {
  /** The UNet config's `use_linear_projection` (false in SD 1.x): when false, Transformer2DModel's proj_in/proj_out are Conv2d 1×1. */
  readonly unetUseLinearProjection: boolean;
}

const TRANSFORMER_PROJECTION = /(^|\.)attentions\.\d+\.proj_(in|out)$/;

/**
 * Whether a module is a 1×1 Conv2d in PyTorch. Our UNet runs those as Linears over channels (unet-blocks.ts), but
 * sd-scripts and PEFT build their LoRA factors as 1×1 convolutions for them, so the files hold [r, in, 1, 1] and
 * [out, r, 1, 1]; AUTOMATIC1111's loader builds the factor module from the target module's type and copies the
 * stored weight into it, so a 2-D factor for a Conv2d target would not load there.
 */
export function isConv1x1Module(module: Pick<ExportLoraModule, 'network' | 'path'>, kind: UnetProjectionKind): boolean {
  return module.network === 'unet' && !kind.unetUseLinearProjection && TRANSFORMER_PROJECTION.test(module.path);
}

/** The stored shapes of a module's A and B, after checking its arrays fit its rank (a mismatch is a bug in the caller). */
export function loraFactorShapes(module: ExportLoraModule, kind: UnetProjectionKind): { A: number[]; B: number[] } {
  const { rank, A, B, path } = module;
  if (!Number.isInteger(rank) || rank < 1) throw new Error(`LoRA export: module ${path} has rank ${rank}`);
  if (A.length === 0 || A.length % rank !== 0 || B.length === 0 || B.length % rank !== 0) {
    throw new Error(`LoRA export: module ${path} has ${A.length} A and ${B.length} B values, which do not fit rank ${rank}`);
  }
  if (!(module.alpha > 0) || !Number.isFinite(module.alpha)) throw new Error(`LoRA export: module ${path} has alpha ${module.alpha}`);
  const a = [rank, A.length / rank];
  const b = [B.length / rank, rank];
  return isConv1x1Module(module, kind) ? { A: [...a, 1, 1], B: [...b, 1, 1] } : { A: a, B: b };
}

const KOHYA_PREFIX: Record<LoraNetwork, KohyaPrefix> = { unet: 'lora_unet', text_encoder: 'lora_te' };

/** sd-scripts' `save_precision`: float (F32) or fp16; every tensor, alpha included, is stored in it. */
export type KohyaSavePrecision = 'float' | 'fp16';

export interface KohyaFileOptions extends UnetProjectionKind {
  /** F32 when absent. */
  readonly savePrecision?: KohyaSavePrecision;
}

/** The `__metadata__` of a kohya file: string values only, as safetensors stores them. */
export type KohyaMetadata = Readonly<Record<string, string>>;

interface TensorBytes {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

/**
 * The kohya `.safetensors` of `modules`, with `metadata` (usually kohyaMetadata's) plus `sshs_model_hash` and
 * `sshs_legacy_hash`, computed as sd-scripts does before saving so that image UIs need not hash the file.
 */
export async function kohyaLoraFile(
  modules: readonly ExportLoraModule[],
  metadata: KohyaMetadata | null,
  options: KohyaFileOptions,
): Promise<Uint8Array<ArrayBuffer>> {
  const dtype: Dtype = options.savePrecision === 'fp16' ? 'F16' : 'F32';
  const tensors: TensorBytes[] = [];
  const seen = new Set<string>();
  for (const m of modules) {
    const name = kohyaModuleName(KOHYA_PREFIX[m.network], m.path);
    if (seen.has(name)) throw new Error(`LoRA export: two modules are named ${name}`);
    seen.add(name);
    const shapes = loraFactorShapes(m, options);
    tensors.push(
      { name: `${name}.lora_down.weight`, dtype, shape: shapes.A, bytes: fromFloat32(dtype, m.A) },
      { name: `${name}.lora_up.weight`, dtype, shape: shapes.B, bytes: fromFloat32(dtype, m.B) },
      // sd-scripts registers alpha as a 0-d float32 buffer and casts the whole state dict to the save dtype.
      { name: `${name}.alpha`, dtype, shape: [], bytes: fromFloat32(dtype, new Float32Array([m.alpha])) },
    );
  }
  if (tensors.length === 0) throw new Error('LoRA export: no modules to save');

  const notes = { ...(metadata ?? {}) };
  const data = dataSection(tensors);
  // sd-scripts hashes the file as it would be with only the ss_* notes (so user-added keys do not change the hash).
  const trainingOnly = Object.fromEntries(Object.entries(notes).filter(([k]) => k.startsWith('ss_')));
  const hashedHeader = safetensorsLayout(tensors, trainingOnly).header;
  notes['sshs_model_hash'] = await sha256Hex(data);
  notes['sshs_legacy_hash'] = (await sha256Hex(fileWindow(hashedHeader, data, LEGACY_HASH_OFFSET, LEGACY_HASH_LENGTH))).slice(0, 8);

  const layout = safetensorsLayout(tensors, notes);
  const file = new Uint8Array(layout.fileBytes);
  file.set(layout.header, 0);
  file.set(data, layout.header.length);
  return file;
}

/** The tensors' bytes in file order: by name, as safetensors lays out tensors of one dtype. */
function dataSection(tensors: readonly TensorBytes[]): Uint8Array<ArrayBuffer> {
  const layout = safetensorsLayout(tensors);
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const data = new Uint8Array(layout.fileBytes - layout.header.length);
  for (const entry of layout.tensors) data.set(byName.get(entry.name)!.bytes, entry.begin);
  return data;
}

/**
 * sd-webui-additional-networks' "legacy" hash, which sd-scripts stores as sshs_legacy_hash: the first 8 hex digits
 * of the SHA-256 of the 64 KiB at 1 MiB into the file (header included); a file shorter than that hashes fewer bytes,
 * none at all below 1 MiB.
 */
const LEGACY_HASH_OFFSET = 0x100000;
const LEGACY_HASH_LENGTH = 0x10000;

/** Bytes [offset, offset + length) of the file header + data, clipped to its end, without joining the two. */
function fileWindow(header: Uint8Array, data: Uint8Array, offset: number, length: number): Uint8Array<ArrayBuffer> {
  const total = header.length + data.length;
  const begin = Math.min(offset, total);
  const end = Math.min(offset + length, total);
  const out = new Uint8Array(end - begin);
  for (let i = begin; i < end; ) {
    if (i < header.length) {
      const n = Math.min(end, header.length) - i;
      out.set(header.subarray(i, i + n), i - begin);
      i += n;
    } else {
      out.set(data.subarray(i - header.length, end - header.length), i - begin);
      i = end;
    }
  }
  return out;
}

async function sha256Hex(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

// ---- training notes (`ss_*`) ----

/** Tag counts per dataset folder, `{ folder: { tag: count } }`, in the order the captions were read. */
export type TagFrequency =
  | ReadonlyMap<string, ReadonlyMap<string, number>>
  | Readonly<Record<string, Readonly<Record<string, number>>>>;

/** One training image folder as sd-scripts records it: its name (not its path), repeats and image count. */
export interface KohyaDatasetDir {
  readonly name: string;
  readonly repeats: number;
  readonly imageCount: number;
}

/**
 * What sd-scripts' train_network.py notes about a LoRA training run, in LoRA Lab's terms. Learning rates,
 * alpha and the like are floats in sd-scripts and written as Python prints them (`0.0001`, `5e-05`, `4.0`).
 */
export interface KohyaTrainingNotes {
  readonly networkDim: number;
  readonly networkAlpha: number;
  /** Training image size, written as `(width, height)`. */
  readonly resolution: { readonly width: number; readonly height: number };
  /** The image folders; ss_num_train_images is Σ repeats × images, as sd-scripts counts it. */
  readonly datasetDirs: readonly KohyaDatasetDir[];
  readonly tagFrequency: TagFrequency;
  readonly learningRate: number;
  /** null: the UNet trains at learningRate (sd-scripts writes "None"). */
  readonly unetLr: number | null;
  /** null: the text encoder trains at learningRate, or is not trained. */
  readonly textEncoderLr: number | null;
  readonly maxTrainSteps: number;
  /** Steps done when this file was saved. */
  readonly steps: number;
  /** Epochs done when this file was saved (ss_epoch), and the planned number (ss_num_epochs). */
  readonly epoch: number;
  readonly numEpochs: number;
  readonly seed: number;
  /** The output file's name without extension. */
  readonly outputName: string;
  /** Milliseconds since the Unix epoch (Date.now()); written as seconds, as Python's time.time(). */
  readonly trainingStartedAtMs: number;
  readonly trainingFinishedAtMs: number;
  /** The base model's name (sd-scripts writes the checkpoint's file name or the hub id). */
  readonly sdModelName: string;
  /** null: the last CLIP layer (sd-scripts' default, written "None"). */
  readonly clipSkip: number | null;
  readonly noiseOffset: number | null;
  readonly minSnrGamma: number | null;
  readonly trainingComment?: string;
}

/**
 * The `ss_*` metadata sd-scripts' train_network.py writes for a networks.lora run on SD 1.x (one dataset, no
 * regularisation images), each value as Python's str() gives it: ints `4`, floats `4.0` / `5e-05`, None `None`,
 * booleans `False`, and the folder maps as Python's json.dumps writes them.
 */
export function kohyaMetadata(notes: KohyaTrainingNotes): KohyaMetadata {
  const int = (field: string, v: number): string => {
    if (!Number.isSafeInteger(v)) throw new Error(`kohyaMetadata: ${field} must be a whole number, not ${v}`);
    return String(v);
  };
  const float = pythonFloat;
  const optionalFloat = (v: number | null): string => (v === null ? 'None' : pythonFloat(v));
  const dirs = datasetDirsJson(notes.datasetDirs);
  return {
    ss_training_started_at: pythonFloat(notes.trainingStartedAtMs / 1000),
    ss_output_name: notes.outputName,
    ss_learning_rate: float(notes.learningRate),
    ss_text_encoder_lr: optionalFloat(notes.textEncoderLr),
    ss_unet_lr: optionalFloat(notes.unetLr),
    ss_num_train_images: int('num train images', notes.datasetDirs.reduce((n, d) => n + d.repeats * d.imageCount, 0)),
    ss_num_reg_images: '0',
    ss_num_epochs: int('numEpochs', notes.numEpochs),
    ss_max_train_steps: int('maxTrainSteps', notes.maxTrainSteps),
    ss_network_module: 'networks.lora',
    ss_network_dim: int('networkDim', notes.networkDim),
    ss_network_alpha: float(notes.networkAlpha),
    ss_v2: 'False',
    ss_base_model_version: 'sd_v1',
    ss_clip_skip: notes.clipSkip === null ? 'None' : int('clipSkip', notes.clipSkip),
    ss_seed: int('seed', notes.seed),
    ss_noise_offset: optionalFloat(notes.noiseOffset),
    ss_min_snr_gamma: optionalFloat(notes.minSnrGamma),
    ss_training_comment: notes.trainingComment ?? 'None',
    ss_resolution: `(${int('resolution width', notes.resolution.width)}, ${int('resolution height', notes.resolution.height)})`,
    ss_dataset_dirs: pythonJson(dirs),
    ss_reg_dataset_dirs: '{}',
    ss_tag_frequency: pythonJson(notes.tagFrequency),
    ss_sd_model_name: notes.sdModelName,
    ss_training_finished_at: pythonFloat(notes.trainingFinishedAtMs / 1000),
    ss_steps: int('steps', notes.steps),
    ss_epoch: int('epoch', notes.epoch),
  };
}

/** `{ name: { n_repeats, img_count } }`; a folder name met twice gets " (2)", " (3)" as sd-scripts' dataset merge does. */
function datasetDirsJson(dirs: readonly KohyaDatasetDir[]): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  for (const d of dirs) {
    let name = d.name;
    for (let i = 2; out.has(name); i++) name = `${d.name} (${i})`;
    out.set(
      name,
      new Map([
        ['n_repeats', d.repeats],
        ['img_count', d.imageCount],
      ]),
    );
  }
  return out;
}

/**
 * Python's repr of a float (what str() prints): the shortest digits that round-trip (as JS's), but in exponent
 * form `1e-05` / `1.5e+16` below 1e-4 or from 1e16 on, and with `.0` on whole numbers.
 */
export function pythonFloat(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, expText] = x.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  const sign = x < 0 ? '-' : '';
  const digits = mantissa.replace('-', '').replace('.', '');
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const whole = exp + 1;
  if (digits.length <= whole) return `${sign}${digits.padEnd(whole, '0')}.0`;
  return `${sign}${digits.slice(0, whole)}.${digits.slice(whole)}`;
}

type PythonJson = string | number | ReadonlyMap<string, PythonJson> | { readonly [key: string]: PythonJson };

/**
 * Python's json.dumps with its defaults: `", "` and `": "` separators, keys in insertion order, everything outside
 * printable ASCII escaped as \uXXXX (ensure_ascii), whole numbers as ints. (A plain object lists integer-like keys
 * first, whatever order they were added in; pass a Map where that matters.)
 */
function pythonJson(value: PythonJson): string {
  if (typeof value === 'string') return pythonJsonString(value);
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : pythonFloat(value);
  const entries = value instanceof Map ? [...(value as ReadonlyMap<string, PythonJson>)] : Object.entries(value);
  return `{${entries.map(([k, v]) => `${pythonJsonString(k)}: ${pythonJson(v)}`).join(', ')}}`;
}

const SHORT_ESCAPES: Readonly<Record<number, string>> = { 0x22: '\\"', 0x5c: '\\\\', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x08: '\\b', 0x0c: '\\f' };

function pythonJsonString(s: string): string {
  let out = '"';
  // UTF-16 units, so a character beyond the BMP becomes its two surrogate escapes, as Python writes it.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const short = SHORT_ESCAPES[c];
    if (short !== undefined) out += short;
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += s[i];
  }
  return `${out}"`;
}
