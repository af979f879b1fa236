import { UserError } from '../errors.js';
import { LoraAdapter, type LoraModuleTensors } from '../lora/adapter.js';
import {
  defaultTargetModules,
  moduleMatches,
  resolveTargets,
  selectTargets,
  type LoraSettings,
  type ModelShape,
  type ProjectionShape,
} from '../lora/settings.js';
import type { CausalLM } from '../models/model.js';
import { readHeader, readTensorBytes, toFloat32, writeSafetensors, type ByteSource, type TensorEntry } from '../safetensors/index.js';

/**
 * Hugging Face PEFT adapter files: what `PeftModel.save_pretrained` writes for a LoRA adapter and what
 * `PeftModel.from_pretrained` reads, so adapters move freely between LoRA Lab and Python.
 */

export const PEFT_CONFIG_FILE = 'adapter_config.json';
export const PEFT_WEIGHTS_FILE = 'adapter_model.safetensors';

/**
 * PeftModel wraps LoraModel, which wraps the transformers model, so every saved key starts with
 * `base_model.model.` followed by the transformers module path (GPT2LMHeadModel's `transformer.h.0...`,
 * LlamaForCausalLM's `model.layers.0...`); get_peft_model_state_dict drops the adapter name.
 */
const KEY_PREFIX = 'base_model.model.';

export function peftTensorName(modulePath: string, matrix: 'A' | 'B'): string {
  return `${KEY_PREFIX}${modulePath}.lora_${matrix}.weight`;
}

const leafName = (path: string): string => path.slice(path.lastIndexOf('.') + 1);

/**
 * adapter_config.json as PEFT saves it for LoRA on a causal LM: the LoraConfig fields, with the values
 * PEFT would hold after training, so that PEFT (and tools built on it, e.g. vLLM or llama.cpp's converter)
 * load it without surprises.
 *
 * target_modules: PEFT keeps the names in a set and saves it as a list, in no particular order; we sort
 * them. PEFT never saves "all-linear": it expands it into the matching module names first, so we save
 * the distinct names of the projections it selected, which select the same modules on load.
 */
export function peftAdapterConfig(model: CausalLM, settings: LoraSettings, baseModelName: string): Record<string, unknown> {
  const targets = selectTargets(model, settings.targetModules);
  const names =
    settings.targetModules === 'all-linear' ? targets.map((l) => leafName(l.path)) : [...settings.targetModules];
  const config: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModelName,
    bias: 'none',
    // PEFT switches fan_in_fan_out on when it wraps a transformers Conv1D (GPT-2's projections), which
    // stores its weight [in, out]; it only changes how B·A is transposed when merging.
    fan_in_fan_out: targets.some((l) => l.layout === 'in_out'),
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: settings.alpha,
    lora_dropout: settings.dropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: settings.rank,
    rank_pattern: {},
    revision: null,
    target_modules: [...new Set(names)].sort(),
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: settings.useRslora,
  };
  return config;
}

/**
 * The two files of a PEFT LoRA adapter. The safetensors file is laid out as the Python library writes it
 * (with PEFT's `{"format": "pt"}` metadata), and the JSON as PEFT's to_json_file writes it (sorted keys,
 * two-space indent).
 */
export async function exportPeftAdapter(
  model: CausalLM,
  adapter: LoraAdapter,
  baseModelName: string,
): Promise<{ 'adapter_model.safetensors': Uint8Array<ArrayBuffer>; 'adapter_config.json': string }> {
  const config = peftAdapterConfig(model, adapter.settings, baseModelName);
  const tensors = await Promise.all(
    adapter.modules.flatMap((m) =>
      (['A', 'B'] as const).map(async (which) => {
        const v = m[which];
        return { name: peftTensorName(m.path, which), shape: v.shape, data: (await v.data()) as Float32Array };
      }),
    ),
  );
  return {
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
    'adapter_config.json': `${JSON.stringify(sortKeys(config), null, 2)}\n`,
  };
}

function sortKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.keys(o).sort().map((k) => [k, o[k]]));
}

export interface PeftAdapterConfig {
  readonly settings: LoraSettings;
  /** `base_model_name_or_path`, for messages; null when absent. */
  readonly baseModelName: string | null;
}

type Json = Record<string, unknown>;

/**
 * Reads a PEFT adapter_config.json into LoraSettings for `model`. Fields whose non-default values change
 * what the adapter computes in ways LoRA Lab does not implement (DoRA, per-module ranks, trained biases,
 * extra saved modules, ...) are refused with a UserError rather than silently ignored.
 */
export function parsePeftAdapterConfig(model: ModelShape, configJson: string, file = PEFT_CONFIG_FILE): PeftAdapterConfig {
  const fail = (problem: string, fix?: string): never => {
    throw new UserError(file, problem, fix);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(configJson);
  } catch (e) {
    const detail = e instanceof Error ? ` (${e.message})` : '';
    return fail(`is not valid JSON${detail}.`, 'Use the adapter_config.json that came with the adapter.');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail('must be a JSON object.');
  const json = raw as Json;
  const present = (k: string): boolean => json[k] !== undefined && json[k] !== null;

  const peftType = json['peft_type'];
  if (peftType !== 'LORA') {
    fail(
      peftType === undefined ? 'has no "peft_type"; it is not a PEFT adapter config.' : `is for a ${JSON.stringify(peftType)} adapter.`,
      'LoRA Lab loads LoRA adapters (peft_type "LORA").',
    );
  }
  const r = json['r'];
  if (typeof r !== 'number' || !Number.isInteger(r) || r < 1) fail(`"r" must be a whole number of at least 1, but it is ${JSON.stringify(r)}.`);
  // LoraConfig's defaults for fields an older or hand-written config leaves out.
  const alpha = present('lora_alpha') ? json['lora_alpha'] : 8;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0) fail(`"lora_alpha" must be a positive number, but it is ${JSON.stringify(alpha)}.`);
  const dropout = present('lora_dropout') ? json['lora_dropout'] : 0;
  if (typeof dropout !== 'number' || !(dropout >= 0 && dropout < 1)) fail(`"lora_dropout" must be at least 0 and below 1, but it is ${JSON.stringify(dropout)}.`);
  const useRslora = present('use_rslora') ? json['use_rslora'] : false;
  if (typeof useRslora !== 'boolean') fail(`"use_rslora" must be true or false, but it is ${JSON.stringify(useRslora)}.`);

  const unsupported = (field: string, what: string): void => {
    fail(`uses ${what} ("${field}": ${JSON.stringify(json[field])}), which LoRA Lab does not support.`, 'Train the adapter without it.');
  };
  if (present('bias') && json['bias'] !== 'none') unsupported('bias', 'trained biases');
  if (json['use_dora'] === true) unsupported('use_dora', 'DoRA');
  if (json['lora_bias'] === true) unsupported('lora_bias', 'a bias on lora_B');
  if (nonEmpty(json['rank_pattern'])) unsupported('rank_pattern', 'per-module ranks');
  if (nonEmpty(json['alpha_pattern'])) unsupported('alpha_pattern', 'per-module alphas');
  if (present('layers_to_transform')) unsupported('layers_to_transform', 'LoRA on selected layers only');
  if (present('layer_replication')) unsupported('layer_replication', 'layer replication');
  if (nonEmpty(json['modules_to_save'])) unsupported('modules_to_save', 'fully trained extra modules');
  if (nonEmpty(json['trainable_token_indices'])) unsupported('trainable_token_indices', 'trained token embeddings');
  if (nonEmpty(json['target_parameters'])) unsupported('target_parameters', 'LoRA on raw parameters');
  if (nonEmpty(json['exclude_modules'])) unsupported('exclude_modules', 'excluded modules');

  const targetModules = parseTargets(model, json['target_modules'], fail);
  const base = json['base_model_name_or_path'];
  return {
    settings: { rank: r as number, alpha: alpha as number, dropout: dropout as number, targetModules, useRslora: useRslora as boolean },
    baseModelName: typeof base === 'string' ? base : null,
  };
}

function nonEmpty(v: unknown): boolean {
  if (v === undefined || v === null) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}

/**
 * target_modules as PEFT reads it: null means the architecture's default; a list means suffix matching;
 * a string is "all-linear" or a regular expression matched against the whole module path. A regex is
 * turned into a list that selects the same modules: their distinct names when those select nothing else,
 * otherwise their full paths.
 */
function parseTargets(model: ModelShape, raw: unknown, fail: (p: string, f?: string) => never): LoraSettings['targetModules'] {
  if (raw === undefined || raw === null) return defaultTargetModules(model.config.arch);
  if (Array.isArray(raw)) {
    if (!raw.every((t): t is string => typeof t === 'string')) fail('"target_modules" must be a list of module names.');
    return [...new Set(raw as string[])].sort();
  }
  if (typeof raw !== 'string') return fail(`"target_modules" must be a list of module names or a string, but it is ${JSON.stringify(raw)}.`);
  if (raw.toLowerCase() === 'all-linear') return 'all-linear';
  let re: RegExp;
  try {
    re = new RegExp(`^(?:${raw})$`);
  } catch {
    return fail(`"target_modules" is the regular expression ${JSON.stringify(raw)}, which LoRA Lab cannot read.`, 'Save the adapter with a list of module names.');
  }
  const matched = model.linears.filter((l) => re.test(l.path));
  if (matched.length === 0) {
    fail(`"target_modules" ${JSON.stringify(raw)} matches no module of this ${model.config.modelType} model.`, 'Check that the adapter belongs to this model.');
  }
  const names = [...new Set(matched.map((l) => leafName(l.path)))];
  const byName = model.linears.filter((l) => names.some((n) => moduleMatches(l.path, n)));
  return (byName.length === matched.length ? names : matched.map((l) => l.path)).sort();
}

const LORA_KEY = /^(.+)\.lora_([AB])\.weight$/;

/** Finds the projection a saved module path names, accepting paths saved from the bare GPT2Model / LlamaModel. */
function findLinear<L extends ProjectionShape>(model: ModelShape<L>, path: string): L | undefined {
  const exact = model.linears.find((l) => l.path === path);
  if (exact) return exact;
  const wrapped = `${model.config.arch === 'gpt2' ? 'transformer' : 'model'}.${path}`;
  return model.linears.find((l) => l.path === wrapped);
}

/** What a tensor that is not lora_A/lora_B is, for the error message. */
function describeForeign(name: string): string {
  if (name.includes('lora_magnitude_vector')) return 'a DoRA magnitude vector';
  if (name.includes('lora_embedding_')) return 'LoRA on an embedding';
  if (name.includes('modules_to_save')) return 'a fully trained extra module';
  if (/\.lora_B\.bias$/.test(name)) return 'a bias on lora_B';
  if (name.endsWith('.bias')) return 'a trained bias';
  return 'not a LoRA weight';
}

/** One adapted projection of a checked adapter: where its two matrices lie in the file. */
export interface CheckedPeftModule {
  /** The model's module path (canonical, whatever prefix the file used). */
  readonly path: string;
  readonly A: TensorEntry;
  readonly B: TensorEntry;
}

/** A PEFT adapter whose config and tensor list fit a model; no tensor data has been read yet. */
export interface CheckedPeftAdapter extends PeftAdapterConfig {
  /** Every targeted projection, in module order. */
  readonly modules: readonly CheckedPeftModule[];
  /** Trainable values: r·(in + out) per module. */
  readonly parameterCount: number;
}

/**
 * Checks a PEFT LoRA adapter against a model's shape before any tensor data is read: the config, that every
 * tensor is a lora_A/lora_B of a projection this model has and the config targets, that every targeted
 * projection has both, and their shapes ([r, in] and [out, r]), so an adapter trained for another model (or
 * another size of it) fails with a message naming the tensor. Only the model's config and projection sizes are
 * read, so a stored model is checked without loading its weights.
 */
export async function checkPeftAdapter(model: ModelShape, configJson: string, safetensors: ByteSource): Promise<CheckedPeftAdapter> {
  const { settings, baseModelName } = parsePeftAdapterConfig(model, configJson);
  const file = safetensors.name;
  const trainedFor = baseModelName ? ` It was trained for ${baseModelName}.` : '';
  const otherModel = `Check that the adapter belongs to this model.${trainedFor}`;

  const resolved = resolveTargets(model, settings.targetModules);
  if ('problem' in resolved) throw new UserError(PEFT_CONFIG_FILE, `"target_modules": ${resolved.problem}`, otherModel);
  const targets = new Set(resolved.linears);

  const header = await readHeader(safetensors);
  const found = new Map<ProjectionShape, { A?: TensorEntry; B?: TensorEntry }>();
  for (const entry of header.tensors) {
    const m = LORA_KEY.exec(entry.name.startsWith(KEY_PREFIX) ? entry.name.slice(KEY_PREFIX.length) : entry.name);
    if (!m) {
      throw new UserError(file, `contains tensor "${entry.name}", which is ${describeForeign(entry.name)}; LoRA Lab cannot use it.`, 'Load an adapter with only lora_A and lora_B weights.');
    }
    const [, path, which] = m as unknown as [string, string, 'A' | 'B'];
    const linear = findLinear(model, path);
    if (!linear) {
      throw new UserError(file, `tensor "${entry.name}" belongs to module ${path}, which this ${model.config.modelType} model does not have.`, otherModel);
    }
    if (!targets.has(linear)) {
      throw new UserError(file, `tensor "${entry.name}" adapts module ${linear.path}, which target_modules in ${PEFT_CONFIG_FILE} does not select.`, 'Use the adapter_config.json that came with these weights.');
    }
    const slot = found.get(linear) ?? {};
    if (slot[which]) throw new UserError(file, `has two lora_${which} tensors for module ${linear.path}.`);
    slot[which] = entry;
    found.set(linear, slot);
    const want = which === 'A' ? [settings.rank, linear.inFeatures] : [linear.outFeatures, settings.rank];
    if (entry.shape.length !== 2 || entry.shape[0] !== want[0] || entry.shape[1] !== want[1]) {
      // A tool that kept GPT-2's Conv1D orientation ([in, out]) for the LoRA matrices too writes them transposed;
      // PEFT itself always saves lora_A [r, in] and lora_B [out, r], whatever fan_in_fan_out says.
      const transposed = entry.shape.length === 2 && want[0] !== want[1] && entry.shape[0] === want[1] && entry.shape[1] === want[0];
      throw new UserError(
        file,
        `tensor "${entry.name}" has shape [${entry.shape.join(', ')}], but rank ${settings.rank} on this model's ` +
          `${linear.inFeatures} → ${linear.outFeatures} projection ${linear.path} needs [${want.join(', ')}]` +
          (transposed ? ` (it is stored transposed, in Conv1D's [in, out] orientation).` : '.'),
        transposed
          ? 'Save lora_A as [r, in] and lora_B as [out, r], as PEFT does whatever fan_in_fan_out says.'
          : otherModel,
      );
    }
  }
  const modules: CheckedPeftModule[] = [];
  for (const linear of resolved.linears) {
    const slot = found.get(linear);
    for (const which of ['A', 'B'] as const) {
      if (!slot?.[which]) {
        throw new UserError(file, `has no lora_${which} weight for module ${linear.path}, which target_modules selects.`, 'Use the adapter_config.json that came with these weights.');
      }
    }
    modules.push({ path: linear.path, A: slot!.A!, B: slot!.B! });
  }
  const parameterCount = resolved.linears.reduce((n, l) => n + settings.rank * (l.inFeatures + l.outFeatures), 0);
  return { settings, baseModelName, modules, parameterCount };
}

/**
 * The values of a checked adapter, keyed by module path, as float32. A NaN or infinite value is refused naming
 * the tensor: such an adapter would poison every output and every further training step.
 */
export async function readPeftAdapterTensors(checked: CheckedPeftAdapter, safetensors: ByteSource): Promise<Map<string, LoraModuleTensors>> {
  const read = async (e: TensorEntry): Promise<Float32Array> => {
    const values = toFloat32(e.dtype, await readTensorBytes(safetensors, e));
    const bad = values.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0) {
      throw new UserError(
        safetensors.name,
        `holds a NaN or infinite value in tensor ${e.name} (element ${bad} of ${e.shape.join('×')}).`,
        'The adapter was saved from a diverged run; use an earlier checkpoint of it.',
      );
    }
    return values;
  };
  const tensors = new Map<string, LoraModuleTensors>();
  for (const m of checked.modules) tensors.set(m.path, { A: await read(m.A), B: await read(m.B) });
  return tensors;
}

/** Loads a PEFT LoRA adapter for `model`: checkPeftAdapter, then its values (see both). */
export async function importPeftAdapter(model: CausalLM, configJson: string, safetensors: ByteSource): Promise<LoraAdapter> {
  const checked = await checkPeftAdapter(model, configJson, safetensors);
  return LoraAdapter.fromTensors(model, checked.settings, await readPeftAdapterTensors(checked, safetensors));
}
