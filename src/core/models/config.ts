import { UserError } from '../errors.js';

/**
 * Normalized view of a Hugging Face `config.json`.
 *
 * The two families name the same quantities differently (`n_embd` vs `hidden_size`), so everything
 * downstream (manifest, forward passes, LoRA, UI) reads these fields and never the raw JSON.
 */
interface CommonConfig {
  /** `model_type` exactly as written in config.json (`gpt2`, `llama`, `mistral`, `qwen2`). */
  readonly modelType: string;
  readonly vocabSize: number;
  readonly hiddenSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  /** Key/value heads; equal to numHeads unless the model uses grouped-query attention. */
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly intermediateSize: number;
  readonly maxPositions: number;
  /** Layer-norm epsilon (GPT-2) or RMSNorm epsilon (Llama family). */
  readonly eps: number;
  /** The output head reuses the token embedding matrix; no separate `lm_head.weight` is stored. */
  readonly tiedEmbeddings: boolean;
  /** The q/k/v projections carry a bias. */
  readonly attentionBias: boolean;
  readonly bosTokenId: number | null;
  /** `eos_token_id` may be a single id or a list in config.json; always a list here. */
  readonly eosTokenIds: readonly number[];
  /** Storage dtype declared by the checkpoint (`torch_dtype`), informational only. */
  readonly torchDtype: string | null;
}

export type Gpt2Activation = 'gelu_new' | 'gelu' | 'relu' | 'silu';

export interface Gpt2Config extends CommonConfig {
  readonly arch: 'gpt2';
  readonly activation: Gpt2Activation;
  /** Divide attention scores by sqrt(headDim) (`scale_attn_weights`, default true). */
  readonly scaleAttnWeights: boolean;
  /** Additionally divide scores of layer i by i + 1 (`scale_attn_by_inverse_layer_idx`). */
  readonly scaleAttnByInverseLayerIdx: boolean;
}

export type RopeScaling =
  | { readonly type: 'linear'; readonly factor: number }
  | {
      readonly type: 'llama3';
      readonly factor: number;
      readonly lowFreqFactor: number;
      readonly highFreqFactor: number;
      readonly originalMaxPositions: number;
    };

export interface LlamaConfig extends CommonConfig {
  readonly arch: 'llama';
  readonly ropeTheta: number;
  readonly ropeScaling: RopeScaling | null;
  /** o_proj carries a bias (Llama's `attention_bias` covers it; Qwen2 biases only q/k/v). */
  readonly attentionOutputBias: boolean;
  readonly mlpBias: boolean;
  /** Mistral-style local attention: a query sees at most this many most recent keys (itself included). */
  readonly slidingWindow: number | null;
}

export type ModelConfig = Gpt2Config | LlamaConfig;
export type ModelArch = ModelConfig['arch'];

/** model_type values we can run, mapped to the forward pass that runs them. */
const SUPPORTED_TYPES: Readonly<Record<string, ModelArch>> = {
  gpt2: 'gpt2',
  llama: 'llama',
  mistral: 'llama',
  qwen2: 'llama',
};

export const SUPPORTED_MODEL_TYPES: readonly string[] = Object.keys(SUPPORTED_TYPES);

type Json = Record<string, unknown>;

/** Field readers that report problems as UserErrors naming the file and the field. */
class Reader {
  constructor(
    readonly file: string,
    readonly json: Json,
  ) {}

  fail(problem: string, fix?: string): never {
    throw new UserError(this.file, problem, fix);
  }

  has(field: string): boolean {
    return this.json[field] !== undefined && this.json[field] !== null;
  }

  /** The first of `names` that is present; aliases exist because HF renamed fields over time. */
  private pick(names: readonly string[]): [string, unknown] | null {
    for (const n of names) if (this.has(n)) return [n, this.json[n]];
    return null;
  }

  positiveInt(names: readonly string[], fallback?: number): number {
    const found = this.pick(names);
    if (!found) {
      if (fallback !== undefined) return fallback;
      this.fail(`required field "${names[0]}" is missing.`, 'Use the config.json that came with the model.');
    }
    const [name, v] = found;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      this.fail(`"${name}" must be a positive integer, but it is ${JSON.stringify(v)}.`);
    }
    return v;
  }

  positiveNumber(names: readonly string[], fallback: number): number {
    const found = this.pick(names);
    if (!found) return fallback;
    const [name, v] = found;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      this.fail(`"${name}" must be a positive number, but it is ${JSON.stringify(v)}.`);
    }
    return v;
  }

  bool(name: string, fallback: boolean): boolean {
    if (!this.has(name)) return fallback;
    const v = this.json[name];
    if (typeof v !== 'boolean') this.fail(`"${name}" must be true or false, but it is ${JSON.stringify(v)}.`);
    return v;
  }

  string(name: string, fallback: string): string {
    if (!this.has(name)) return fallback;
    const v = this.json[name];
    if (typeof v !== 'string') this.fail(`"${name}" must be a string, but it is ${JSON.stringify(v)}.`);
    return v;
  }

  optionalTokenId(name: string): number | null {
    const v = this.json[name];
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return v;
    // Some configs store a list here; the first entry is the conventional choice.
    if (Array.isArray(v) && typeof v[0] === 'number') return v[0];
    return null;
  }

  tokenIdList(name: string): number[] {
    const v = this.json[name];
    if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return [v];
    if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 0);
    return [];
  }

  dtype(): string | null {
    // transformers v5 renamed torch_dtype to dtype.
    for (const n of ['torch_dtype', 'dtype']) {
      const v = this.json[n];
      if (typeof v === 'string') return v;
    }
    return null;
  }
}

/** Parses config.json text; non-JSON is the user's problem, not ours. */
export function parseModelConfigText(text: string, file = 'config.json'): ModelConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const detail = e instanceof Error ? ` (${e.message})` : '';
    throw new UserError(file, `is not valid JSON${detail}.`, 'Use the config.json that came with the model.');
  }
  return parseModelConfig(json, file);
}

export function parseModelConfig(json: unknown, file = 'config.json'): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new UserError(file, 'must be a JSON object with the model settings.');
  }
  const r: Reader = new Reader(file, json as Json);
  if (!r.has('model_type')) {
    r.fail(
      'required field "model_type" is missing.',
      `LoRA Lab supports model_type ${SUPPORTED_MODEL_TYPES.map((t) => `"${t}"`).join(', ')}.`,
    );
  }
  const modelType = r.json['model_type'];
  const arch = typeof modelType === 'string' ? SUPPORTED_TYPES[modelType] : undefined;
  if (typeof modelType !== 'string' || arch === undefined) {
    r.fail(
      `model_type ${JSON.stringify(modelType)} is not supported.`,
      `LoRA Lab supports model_type ${SUPPORTED_MODEL_TYPES.map((t) => `"${t}"`).join(', ')}.`,
    );
  }
  return arch === 'gpt2' ? parseGpt2(r, modelType) : parseLlama(r, modelType);
}

function common(r: Reader) {
  return {
    bosTokenId: r.optionalTokenId('bos_token_id'),
    eosTokenIds: r.tokenIdList('eos_token_id'),
    torchDtype: r.dtype(),
  };
}

function parseGpt2(r: Reader, modelType: string): Gpt2Config {
  // GPT2Config's attribute_map lets the generic names stand in for the n_* ones.
  const hiddenSize = r.positiveInt(['n_embd', 'hidden_size']);
  const numHeads = r.positiveInt(['n_head', 'num_attention_heads']);
  if (hiddenSize % numHeads !== 0) {
    r.fail(`"n_embd" (${hiddenSize}) must be divisible by "n_head" (${numHeads}).`);
  }
  const act = r.string('activation_function', 'gelu_new');
  const activation = GPT2_ACTIVATIONS[act];
  if (!activation) {
    r.fail(
      `activation_function "${act}" is not supported.`,
      `LoRA Lab supports ${Object.keys(GPT2_ACTIVATIONS).map((a) => `"${a}"`).join(', ')}.`,
    );
  }
  if (r.bool('add_cross_attention', false)) {
    r.fail('"add_cross_attention" is true; encoder-decoder GPT-2 variants are not supported.');
  }
  return {
    arch: 'gpt2',
    modelType,
    vocabSize: r.positiveInt(['vocab_size']),
    hiddenSize,
    numLayers: r.positiveInt(['n_layer', 'num_hidden_layers']),
    numHeads,
    numKvHeads: numHeads,
    headDim: hiddenSize / numHeads,
    // n_inner: null is HF's way of saying "the usual 4x".
    intermediateSize: r.positiveInt(['n_inner'], 4 * hiddenSize),
    maxPositions: r.positiveInt(['n_positions', 'max_position_embeddings', 'n_ctx']),
    eps: r.positiveNumber(['layer_norm_epsilon'], 1e-5),
    tiedEmbeddings: r.bool('tie_word_embeddings', true),
    attentionBias: true,
    activation,
    scaleAttnWeights: r.bool('scale_attn_weights', true),
    scaleAttnByInverseLayerIdx: r.bool('scale_attn_by_inverse_layer_idx', false),
    ...common(r),
  };
}

/** HF activation names, mapped to the function they compute (several names are the same tanh GELU). */
const GPT2_ACTIVATIONS: Readonly<Record<string, Gpt2Activation>> = {
  gelu_new: 'gelu_new',
  gelu_pytorch_tanh: 'gelu_new',
  gelu_fast: 'gelu_new',
  gelu: 'gelu',
  relu: 'relu',
  silu: 'silu',
  swish: 'silu',
};

function parseLlama(r: Reader, modelType: string): LlamaConfig {
  const hiddenSize = r.positiveInt(['hidden_size']);
  const numHeads = r.positiveInt(['num_attention_heads']);
  const numKvHeads = r.positiveInt(['num_key_value_heads'], numHeads);
  if (numHeads % numKvHeads !== 0) {
    r.fail(
      `"num_attention_heads" (${numHeads}) must be a multiple of "num_key_value_heads" (${numKvHeads}).`,
    );
  }
  if (!r.has('head_dim') && hiddenSize % numHeads !== 0) {
    r.fail(`"hidden_size" (${hiddenSize}) must be divisible by "num_attention_heads" (${numHeads}), or set "head_dim".`);
  }
  const headDim = r.positiveInt(['head_dim'], hiddenSize / numHeads);
  if (headDim % 2 !== 0) r.fail(`"head_dim" (${headDim}) must be even for rotary position embeddings.`);

  const act = r.string('hidden_act', 'silu');
  if (act !== 'silu' && act !== 'swish') {
    r.fail(`hidden_act "${act}" is not supported.`, 'LoRA Lab supports "silu" for this model family.');
  }

  // transformers v5 moves rope_theta/rope_scaling into rope_parameters; accept both spellings.
  const ropeParams = r.json['rope_parameters'];
  const ropeObj =
    typeof ropeParams === 'object' && ropeParams !== null && !Array.isArray(ropeParams)
      ? (ropeParams as Json)
      : null;
  const ropeTheta =
    ropeObj && typeof ropeObj['rope_theta'] === 'number'
      ? new Reader(r.file, ropeObj).positiveNumber(['rope_theta'], 10000)
      : r.positiveNumber(['rope_theta'], 10000);
  const ropeScaling = parseRopeScaling(r, ropeObj ?? r.json['rope_scaling']);

  const isQwen2 = modelType === 'qwen2';
  let slidingWindow: number | null = null;
  if (modelType === 'mistral' && r.has('sliding_window')) {
    slidingWindow = r.positiveInt(['sliding_window']);
  }
  if (isQwen2 && r.bool('use_sliding_window', false)) {
    r.fail('"use_sliding_window" is true; per-layer sliding-window attention is not supported.');
  }
  const attentionBias = isQwen2 ? true : r.bool('attention_bias', false);

  return {
    arch: 'llama',
    modelType,
    vocabSize: r.positiveInt(['vocab_size']),
    hiddenSize,
    numLayers: r.positiveInt(['num_hidden_layers']),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: r.positiveInt(['intermediate_size']),
    maxPositions: r.positiveInt(['max_position_embeddings']),
    eps: r.positiveNumber(['rms_norm_eps'], 1e-6),
    tiedEmbeddings: r.bool('tie_word_embeddings', false),
    attentionBias,
    attentionOutputBias: isQwen2 ? false : attentionBias,
    mlpBias: isQwen2 ? false : r.bool('mlp_bias', false),
    ropeTheta,
    ropeScaling,
    slidingWindow,
    ...common(r),
  };
}

function parseRopeScaling(r: Reader, raw: unknown): RopeScaling | null {
  if (raw === undefined || raw === null) return null;
  if (typeof raw !== 'object' || Array.isArray(raw)) r.fail('"rope_scaling" must be an object or null.');
  const s = new Reader(r.file, raw as Json);
  const type = s.json['rope_type'] ?? s.json['type'] ?? 'default';
  if (type === 'default') return null;
  if (type === 'linear') return { type: 'linear', factor: s.positiveNumber(['factor'], 1) };
  if (type === 'llama3') {
    const need = (name: string): number => {
      if (!s.has(name)) r.fail(`"rope_scaling.${name}" is missing; llama3 rope scaling needs it.`);
      return s.positiveNumber([name], 1);
    };
    const lowFreqFactor = need('low_freq_factor');
    const highFreqFactor = need('high_freq_factor');
    if (highFreqFactor <= lowFreqFactor) {
      r.fail('"rope_scaling.high_freq_factor" must be larger than "low_freq_factor".');
    }
    return {
      type: 'llama3',
      factor: need('factor'),
      lowFreqFactor,
      highFreqFactor,
      originalMaxPositions: need('original_max_position_embeddings'),
    };
  }
  return r.fail(
    `rope_scaling type ${JSON.stringify(type)} is not supported.`,
    'LoRA Lab supports no scaling, "linear" and "llama3".',
  );
}
