import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors.js';
import { loraLinear } from '../../kernels/lora_linear.js';
import { moduleMatches, type ProjectionShape } from '../../lora/settings.js';
import { readHeader, readTensorBytes, toFloat32, type ByteSource, type TensorEntry } from '../../safetensors/index.js';
import { isRowBlocks } from '../../weights/row-blocks.js';
import { applyLinear, type LinearApply } from '../linear.js';
import { kohyaNameIndex, OTHER_KOHYA_PREFIXES, type KohyaPrefix } from './unet-lora-names.js';

/**
 * Stable Diffusion LoRA files as image UIs and trainers exchange them, read into the values LoRA applies:
 * kohya's single `.safetensors` (sd-scripts' networks.lora: `lora_unet_…` / `lora_te_…` modules with
 * `lora_down.weight` = A, `lora_up.weight` = B and an optional `alpha`), and a PEFT folder (`adapter_config.json` +
 * `adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` / `lora_B.weight`). Either way each
 * module adds `scaling · B·(A·x)` to its projection, found by diffusers module path as the language models' LoRA is.
 */

/** One adapted projection: A [rank, in], B [out, rank] row-major, and the factor on B·A. */
export interface LoraModuleWeights {
  readonly path: string;
  readonly rank: number;
  readonly A: Float32Array;
  readonly B: Float32Array;
  /** alpha / rank (kohya; PEFT without rsLoRA), or alpha / √rank (PEFT's use_rslora). */
  readonly scaling: number;
}

export interface LoadedLora {
  readonly format: 'kohya' | 'peft';
  /** The adapted projections by module path, in the model's module order. */
  readonly modules: ReadonlyMap<string, LoraModuleWeights>;
  /**
   * kohya modules of networks the caller did not pass (a text-encoder part when only the UNet was given), by kohya
   * name. They are not applied: the caller must say so rather than pretend the whole file is in effect.
   */
  readonly skippedModules: readonly string[];
  /** The safetensors `__metadata__` (kohya's `ss_*` training notes), as stored. */
  readonly metadata: Readonly<Record<string, string>>;
}

/** A network a kohya file may adapt: its kohya prefix and its projections (a built model's `linears`). */
export interface KohyaNetwork {
  readonly prefix: KohyaPrefix;
  readonly linears: readonly ProjectionShape[];
}

const KOHYA_PARTS = ['lora_down.weight', 'lora_up.weight', 'alpha'] as const;
type KohyaPart = (typeof KOHYA_PARTS)[number];

/** Names what a tensor of another kind of network is, so the message says why it is refused. */
function describeForeignKohya(name: string): string {
  if (name.endsWith('.dora_scale')) return 'a DoRA magnitude';
  if (/\.hada_/.test(name)) return 'part of a LoHa (LyCORIS) network';
  if (/\.lokr_/.test(name)) return 'part of a LoKr (LyCORIS) network';
  if (name.endsWith('.lora_mid.weight')) return 'the middle factor of a LoCon/Tucker network';
  return 'not a LoRA weight';
}

/** Reads a tensor as float32, refusing NaN or infinity (such an adapter would poison every prediction). */
async function readFinite(source: ByteSource, entry: TensorEntry): Promise<Float32Array> {
  const values = toFloat32(entry.dtype, await readTensorBytes(source, entry));
  const bad = values.findIndex((v) => !Number.isFinite(v));
  if (bad >= 0) {
    throw new UserError(source.name, `holds a NaN or infinite value in tensor ${entry.name} (element ${bad}).`, 'The LoRA was saved from a diverged run; use an earlier save of it.');
  }
  return values;
}

/**
 * Checks a LoRA matrix's shape: [rows, cols], or [rows, cols, 1, 1] as kohya and PEFT store the factors of a 1×1
 * convolution (SD 1.x's proj_in/proj_out), which is the same matrix.
 */
function checkMatrix(file: string, entry: TensorEntry, rows: number | null, cols: number | null, module: ProjectionShape): [number, number] {
  const s = entry.shape;
  const ok = (s.length === 2 || (s.length === 4 && s[2] === 1 && s[3] === 1)) && (rows === null || s[0] === rows) && (cols === null || s[1] === cols);
  if (!ok) {
    const want = `[${rows ?? 'r'}, ${cols ?? 'r'}]`;
    throw new UserError(
      file,
      `tensor "${entry.name}" has shape [${s.join(', ')}], but module ${module.path} (${module.inFeatures} → ${module.outFeatures}) needs ${want}.`,
      'Check that the LoRA was trained for this model (an SD 1.x LoRA does not fit SD 2.x or SDXL).',
    );
  }
  return [s[0]!, s[1]!];
}

/**
 * Reads a kohya-format LoRA for the given networks. Every module name is matched against the networks' actual
 * module paths (kohya's underscores cannot be turned back into dots by rule); a name under a given prefix that
 * matches no module, a module with only one of its two matrices, a rank that differs between them, or a shape that
 * does not fit is a UserError naming the tensor. Modules under kohya prefixes not given are listed as skipped.
 */
export async function readKohyaLora(source: ByteSource, networks: readonly KohyaNetwork[]): Promise<LoadedLora> {
  const file = source.name;
  const header = await readHeader(source);
  const indexes = networks.map((n) => ({ prefix: `${n.prefix}_`, byName: kohyaNameIndex(n.prefix, n.linears.map((l) => l.path)), linears: n.linears }));
  const skippedPrefixes = [...(['lora_unet', 'lora_te'] as const).filter((p) => !networks.some((n) => n.prefix === p)), ...OTHER_KOHYA_PREFIXES].map((p) => `${p}_`);

  type Found = { module: ProjectionShape } & Partial<Record<KohyaPart, TensorEntry>>;
  const found = new Map<string, Found>();
  const skipped = new Set<string>();
  for (const entry of header.tensors) {
    const part = KOHYA_PARTS.find((p) => entry.name.endsWith(`.${p}`));
    if (!part) {
      throw new UserError(file, `contains tensor "${entry.name}", which is ${describeForeignKohya(entry.name)}; LoRA Lab reads LoRA networks only.`, 'Use a LoRA (networks.lora) file.');
    }
    const name = entry.name.slice(0, -(part.length + 1));
    const network = indexes.find((n) => name.startsWith(n.prefix));
    if (!network) {
      if (skippedPrefixes.some((p) => name.startsWith(p))) {
        skipped.add(name);
        continue;
      }
      throw new UserError(file, `contains tensor "${entry.name}", whose module ${name} is not under a kohya prefix (lora_unet_, lora_te_).`, 'Use a kohya-format LoRA file.');
    }
    const path = network.byName.get(name);
    const module = path === undefined ? undefined : network.linears.find((l) => l.path === path);
    if (!module) {
      throw new UserError(file, `tensor "${entry.name}" adapts module ${name}, which this model does not have.`, 'Check that the LoRA was trained for this model (SD 1.x LoRAs do not fit SD 2.x or SDXL).');
    }
    const slot = found.get(module.path) ?? { module };
    if (slot[part]) throw new UserError(file, `has two "${part}" tensors for module ${name}.`);
    slot[part] = entry;
    found.set(module.path, slot);
  }

  const modules = new Map<string, LoraModuleWeights>();
  // Module order of the networks, so applying and exporting walk the model in one order.
  for (const network of indexes) {
    for (const linear of network.linears) {
      const slot = found.get(linear.path);
      if (!slot) continue;
      const down = slot['lora_down.weight'];
      const up = slot['lora_up.weight'];
      const alphaEntry = slot.alpha;
      if (!down || !up) {
        throw new UserError(file, `module ${linear.path} has ${down ? 'lora_down' : 'lora_up'} but no ${down ? 'lora_up' : 'lora_down'} weight.`, 'The file is incomplete; save the LoRA again.');
      }
      const [rank] = checkMatrix(file, down, null, linear.inFeatures, linear);
      checkMatrix(file, up, linear.outFeatures, rank, linear);
      let alpha = rank; // sd-scripts: a missing alpha means alpha = rank (scale 1).
      if (alphaEntry) {
        if (alphaEntry.shape.reduce((n, d) => n * d, 1) !== 1) {
          throw new UserError(file, `tensor "${alphaEntry.name}" has shape [${alphaEntry.shape.join(', ')}]; alpha must be one number.`);
        }
        alpha = (await readFinite(source, alphaEntry))[0]!;
      }
      modules.set(linear.path, { path: linear.path, rank, A: await readFinite(source, down), B: await readFinite(source, up), scaling: alpha / rank });
    }
  }
  if (modules.size === 0) {
    throw new UserError(file, `adapts no module of ${networks.map((n) => n.prefix).join(' or ')}${skipped.size ? ` (only ${skipped.size} modules of other networks)` : ''}.`, 'Check that this is a LoRA for this model.');
  }
  return { format: 'kohya', modules, skippedModules: [...skipped], metadata: header.metadata };
}

const PEFT_PREFIX = 'base_model.model.';
const PEFT_KEY = /^(.+)\.lora_([AB])\.weight$/;

/**
 * Reads a PEFT LoRA folder (adapter_config.json + adapter_model.safetensors) for a model's projections: r, lora_alpha
 * and use_rslora give the scaling; options that change what the adapter computes and that LoRA Lab does not
 * implement (DoRA, per-module ranks or alphas, trained biases) are refused by name; every module target_modules
 * selects must have both matrices and nothing else may be in the file.
 */
export async function readPeftLora(configJson: string, weights: ByteSource, linears: readonly ProjectionShape[]): Promise<LoadedLora> {
  const configFile = 'adapter_config.json';
  let raw: unknown;
  try {
    raw = JSON.parse(configJson);
  } catch (e) {
    throw new UserError(configFile, `is not valid JSON (${(e as Error).message}).`, 'Use the adapter_config.json that came with the adapter.');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError(configFile, 'must be a JSON object.');
  const json = raw as Record<string, unknown>;
  if (json['peft_type'] !== 'LORA') throw new UserError(configFile, `is for a ${JSON.stringify(json['peft_type'] ?? 'non-PEFT')} adapter.`, 'LoRA Lab loads LoRA adapters (peft_type "LORA").');
  const r = json['r'];
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) throw new UserError(configFile, `"r" must be a whole number of at least 1, but it is ${JSON.stringify(r)}.`);
  const alpha = json['lora_alpha'] ?? 8;
  if (typeof alpha !== 'number' || !(alpha > 0)) throw new UserError(configFile, `"lora_alpha" must be a positive number, but it is ${JSON.stringify(alpha)}.`);
  const unsupported = (key: string, what: string, present: boolean) => {
    if (present) throw new UserError(configFile, `uses ${what} ("${key}": ${JSON.stringify(json[key])}), which LoRA Lab does not support.`, 'Train the adapter without it.');
  };
  const nonEmpty = (v: unknown) => v !== undefined && v !== null && (typeof v !== 'object' || Object.keys(v).length > 0);
  unsupported('use_dora', 'DoRA', json['use_dora'] === true);
  unsupported('rank_pattern', 'per-module ranks', nonEmpty(json['rank_pattern']));
  unsupported('alpha_pattern', 'per-module alphas', nonEmpty(json['alpha_pattern']));
  unsupported('bias', 'trained biases', json['bias'] !== undefined && json['bias'] !== 'none');
  unsupported('modules_to_save', 'fully trained extra modules', nonEmpty(json['modules_to_save']));
  const scaling = json['use_rslora'] === true ? alpha / Math.sqrt(r) : alpha / r;

  const targets = json['target_modules'];
  let selected: readonly ProjectionShape[];
  if (Array.isArray(targets) && targets.every((t) => typeof t === 'string')) {
    selected = linears.filter((l) => targets.some((t) => moduleMatches(l.path, t)));
  } else if (typeof targets === 'string') {
    let re: RegExp;
    try {
      re = new RegExp(`^(?:${targets})$`);
    } catch {
      throw new UserError(configFile, `"target_modules" is the regular expression ${JSON.stringify(targets)}, which LoRA Lab cannot read.`);
    }
    selected = linears.filter((l) => re.test(l.path));
  } else {
    throw new UserError(configFile, `"target_modules" must be a list of module names, but it is ${JSON.stringify(targets)}.`);
  }
  if (selected.length === 0) throw new UserError(configFile, `"target_modules" ${JSON.stringify(targets)} selects no module of this model.`, 'Check that the adapter belongs to this model.');

  const file = weights.name;
  const header = await readHeader(weights);
  const found = new Map<string, { A?: TensorEntry; B?: TensorEntry }>();
  for (const entry of header.tensors) {
    const m = PEFT_KEY.exec(entry.name.startsWith(PEFT_PREFIX) ? entry.name.slice(PEFT_PREFIX.length) : entry.name);
    if (!m) throw new UserError(file, `contains tensor "${entry.name}", which is not a lora_A or lora_B weight.`, 'Load an adapter with only lora_A and lora_B weights.');
    const [, path, which] = m as unknown as [string, string, 'A' | 'B'];
    const linear = selected.find((l) => l.path === path);
    if (!linear) {
      const exists = linears.some((l) => l.path === path);
      throw new UserError(
        file,
        exists ? `tensor "${entry.name}" adapts module ${path}, which target_modules does not select.` : `tensor "${entry.name}" adapts module ${path}, which this model does not have.`,
        exists ? 'Use the adapter_config.json that came with these weights.' : 'Check that the adapter belongs to this model.',
      );
    }
    const slot = found.get(path) ?? {};
    if (slot[which]) throw new UserError(file, `has two lora_${which} tensors for module ${path}.`);
    slot[which] = entry;
    found.set(path, slot);
  }
  const modules = new Map<string, LoraModuleWeights>();
  for (const linear of selected) {
    const slot = found.get(linear.path);
    if (!slot?.A || !slot.B) {
      throw new UserError(file, `has no lora_${slot?.A ? 'B' : 'A'} weight for module ${linear.path}, which target_modules selects.`, 'Use the adapter_config.json that came with these weights.');
    }
    checkMatrix(file, slot.A, r, linear.inFeatures, linear);
    checkMatrix(file, slot.B, linear.outFeatures, r, linear);
    modules.set(linear.path, { path: linear.path, rank: r, A: await readFinite(weights, slot.A), B: await readFinite(weights, slot.B), scaling });
  }
  return { format: 'peft', modules, skippedModules: [], metadata: header.metadata };
}

/** A loaded LoRA on the device: the LinearApply that runs it, and its tensors to release. */
export interface AppliedLora {
  readonly linear: LinearApply;
  dispose(): void;
}

/**
 * Puts a loaded LoRA's matrices on the device and returns the projection hook that applies them (frozen, no
 * dropout: inference, validation, the loss of a finished adapter): targeted projections run the LoRA linear kernel
 * (fused on webgpu), every other one the plain projection.
 */
export function applyLoadedLora(lora: LoadedLora): AppliedLora {
  const device = new Map<string, { A: tf.Tensor2D; B: tf.Tensor2D; scaling: number }>();
  for (const m of lora.modules.values()) {
    device.set(m.path, { A: tf.tensor2d(m.A, [m.rank, m.A.length / m.rank]), B: tf.tensor2d(m.B, [m.B.length / m.rank, m.rank]), scaling: m.scaling });
  }
  let disposed = false;
  return {
    linear: (linear, x) => {
      if (disposed) throw new Error('LoRA applied after dispose()');
      const hit = device.get(linear.path);
      if (!hit) return applyLinear(linear, x);
      if (isRowBlocks(linear.weight)) throw new Error(`LoRA on ${linear.path}: its weight is split into row blocks, which the LoRA kernels do not take`);
      if (hit.A.shape[1] !== linear.inFeatures || hit.B.shape[0] !== linear.outFeatures) {
        throw new Error(`LoRA on ${linear.path}: A [${hit.A.shape}] and B [${hit.B.shape}] do not fit ${linear.inFeatures} → ${linear.outFeatures}`);
      }
      return loraLinear({ x, weight: linear.weight, layout: linear.layout, bias: linear.bias, loraA: hit.A, loraB: hit.B, scaling: hit.scaling, dropoutMask: null });
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      for (const t of device.values()) tf.dispose([t.A, t.B]);
    },
  };
}
