import { UserError } from '../errors.js';
import type { ModelConfig } from '../models/config.js';

/**
 * The LoRA hyperparameters, with PEFT's meaning (LoraConfig): `rank` is `r`, `alpha` is `lora_alpha`,
 * `dropout` is `lora_dropout`, `targetModules` is `target_modules`, `useRslora` is `use_rslora`.
 */
export interface LoraSettings {
  readonly rank: number;
  readonly alpha: number;
  /** Dropout probability on the LoRA branch's input, in [0, 1). */
  readonly dropout: number;
  /**
   * Module names matched as PEFT matches a list: a module is targeted when its path equals an entry or
   * ends with "." + the entry (so `c_proj` targets both GPT-2 projections of that name, and
   * `attn.c_proj` only the attention one). `all-linear` is every projection except the output head.
   */
  readonly targetModules: readonly string[] | 'all-linear';
  /** Rank-stabilised LoRA: scale by alpha/√r instead of alpha/r. */
  readonly useRslora: boolean;
}

/** The factor on B·A, as PEFT's LoraLayer.update_layer sets `scaling`. */
export function loraScaling(s: Pick<LoraSettings, 'rank' | 'alpha' | 'useRslora'>): number {
  return s.useRslora ? s.alpha / Math.sqrt(s.rank) : s.alpha / s.rank;
}

/**
 * PEFT's defaults when target_modules is not given (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING):
 * GPT-2's fused qkv projection, and the query and value projections of the Llama family (Mistral and
 * Qwen2 included).
 */
export function defaultTargetModules(arch: 'gpt2' | 'llama'): string[] {
  return arch === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj'];
}

/** Throws a UserError naming the PEFT field at fault when a setting is out of range. */
export function validateLoraSettings(s: LoraSettings): void {
  if (!Number.isInteger(s.rank) || s.rank < 1) {
    throw new UserError('r', `the LoRA rank must be a whole number of at least 1, but it is ${s.rank}.`, 'Typical ranks are 4 to 64.');
  }
  if (!Number.isFinite(s.alpha) || s.alpha <= 0) {
    throw new UserError('lora_alpha', `must be a positive number, but it is ${s.alpha}.`, 'A common choice is twice the rank.');
  }
  if (!(s.dropout >= 0 && s.dropout < 1)) {
    throw new UserError('lora_dropout', `must be at least 0 and below 1, but it is ${s.dropout}.`, 'Typical values are 0 to 0.1.');
  }
  if (s.targetModules !== 'all-linear' && s.targetModules.length === 0) {
    throw new UserError('target_modules', 'names no module.', 'Pick at least one module, or use all-linear.');
  }
}

const leafName = (path: string): string => path.slice(path.lastIndexOf('.') + 1);

/** What target resolution reads of a projection: a loaded model's Linear is one. */
export interface ProjectionShape {
  readonly path: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
}

/**
 * What target resolution reads of a model: its projections in module order, its type for messages, and whether an
 * output head shares the embedding's weight. A loaded CausalLM is one; so is a Stable Diffusion UNet or text encoder
 * (adaptableModel in models/diffusion/lora-targets.ts).
 */
export interface LoraTargetable<L extends ProjectionShape = ProjectionShape> {
  readonly config: Pick<ModelConfig, 'modelType' | 'tiedEmbeddings'>;
  readonly linears: readonly L[];
}

/**
 * What adapter checks read of a language model: its config and its projections in module order. A loaded CausalLM
 * is one; so is a stored model's config with its projections (no weights loaded).
 */
export interface ModelShape<L extends ProjectionShape = ProjectionShape> extends LoraTargetable<L> {
  readonly config: ModelConfig;
}

/** PEFT's test for a list of target names (check_target_module_exists): exact path, or a suffix after a dot. */
export function moduleMatches(path: string, target: string): boolean {
  return path === target || path.endsWith(`.${target}`);
}

/**
 * The projections LoRA may adapt. A tied output head is left out: its weight is the token embedding,
 * so adapting it would also change the embedding lookup in a merged model, which PEFT's LoRA on
 * lm_head does not do.
 */
function adaptableLinears<L extends ProjectionShape>(model: LoraTargetable<L>): readonly L[] {
  return model.config.tiedEmbeddings ? model.linears.filter((l) => l.path !== 'lm_head') : model.linears;
}

/** Distinct last path components in module order, for "its modules are: ..." messages. */
export function moduleNames(linears: readonly ProjectionShape[]): string[] {
  return [...new Set(linears.map((l) => leafName(l.path)))];
}

/**
 * Resolves target names to the model's projections, in module order. Returns a problem sentence
 * instead of throwing so callers can name the right subject (a settings field or an uploaded file).
 */
export function resolveTargets<L extends ProjectionShape>(
  model: LoraTargetable<L>,
  targets: LoraSettings['targetModules'],
): { linears: L[] } | { problem: string; fix: string } {
  if (targets === 'all-linear') {
    // PEFT's all-linear (_maybe_include_all_linear_layers) skips the output embedding of a generative model.
    return { linears: model.linears.filter((l) => l.path !== 'lm_head') };
  }
  if (targets.length === 0) return { problem: 'names no module.', fix: 'Pick at least one module, or use all-linear.' };
  const adaptable = adaptableLinears(model);
  const chosen = new Set<L>();
  const available = moduleNames(adaptable).join(', ');
  for (const target of targets) {
    const matches = model.linears.filter((l) => moduleMatches(l.path, target));
    if (matches.some((l) => !adaptable.includes(l))) {
      return {
        problem: `${target} matches lm_head, which shares its weight with the token embedding in this ${model.config.modelType} model, so LoRA Lab cannot adapt it.`,
        fix: `Pick target modules from: ${available}.`,
      };
    }
    if (matches.length === 0) {
      return {
        problem: `${target} matches no module of this ${model.config.modelType} model; its modules are: ${available}.`,
        fix: 'Pick target modules from that list, or use all-linear.',
      };
    }
    for (const l of matches) chosen.add(l);
  }
  return { linears: model.linears.filter((l) => chosen.has(l)) };
}

/**
 * The projections `targets` selects, in module order (PEFT's suffix matching; `all-linear` is every
 * projection except lm_head). A name that matches nothing is a UserError listing the module names the
 * model has, since a typo would otherwise silently train nothing.
 */
export function selectTargets<L extends ProjectionShape>(model: LoraTargetable<L>, targets: LoraSettings['targetModules']): L[] {
  const r = resolveTargets(model, targets);
  if ('problem' in r) throw new UserError('target_modules', r.problem, r.fix);
  return r.linears;
}
