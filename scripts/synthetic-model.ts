// Random-weight checkpoints at the widths of the models people fine-tune, for the benchmarks and the
// real-size tests (nothing is downloaded). A shape is a Hugging Face config.json; writeSyntheticModel
// writes a model folder (config.json, model.safetensors in the model's published dtype, tokenizer files
// when given) that the app imports like any other.
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { parseModelConfig } from '../src/core/models/config';
import { expectedTensors } from '../src/core/models/manifest';

type HfConfig = Record<string, unknown>;

const LLAMA_COMMON = { model_type: 'llama', hidden_act: 'silu', rms_norm_eps: 1e-5, bos_token_id: 1, eos_token_id: 2 };

/** config.json of each shape, as published (layer counts may be cut with `layers`). */
export const SHAPES = {
  gpt2: {
    model_type: 'gpt2', vocab_size: 50257, n_embd: 768, n_layer: 12, n_head: 12, n_positions: 1024,
    activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, bos_token_id: 50256, eos_token_id: 50256, torch_dtype: 'float32',
  },
  'smollm2-135m': {
    ...LLAMA_COMMON, vocab_size: 49152, hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3,
    intermediate_size: 1536, max_position_embeddings: 8192, rope_theta: 100000, tie_word_embeddings: true, torch_dtype: 'bfloat16',
    bos_token_id: 0, eos_token_id: 0,
  },
  'qwen2.5-0.5b-layer': {
    model_type: 'qwen2', hidden_act: 'silu', rms_norm_eps: 1e-6, vocab_size: 151936, hidden_size: 896, num_hidden_layers: 1,
    num_attention_heads: 14, num_key_value_heads: 2, intermediate_size: 4864, max_position_embeddings: 32768, rope_theta: 1000000,
    tie_word_embeddings: true, torch_dtype: 'bfloat16', bos_token_id: 151643, eos_token_id: 151643,
  },
  'llama3.2-1b-layer': {
    ...LLAMA_COMMON, vocab_size: 128256, hidden_size: 2048, num_hidden_layers: 1, num_attention_heads: 32, num_key_value_heads: 8,
    head_dim: 64, intermediate_size: 8192, max_position_embeddings: 131072, rope_theta: 500000, tie_word_embeddings: true,
    rope_scaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    torch_dtype: 'bfloat16', bos_token_id: 128000, eos_token_id: 128001,
  },
  'tinyllama-1.1b': {
    ...LLAMA_COMMON, vocab_size: 32000, hidden_size: 2048, num_hidden_layers: 22, num_attention_heads: 32, num_key_value_heads: 4,
    intermediate_size: 5632, max_position_embeddings: 2048, rope_theta: 10000, tie_word_embeddings: false, torch_dtype: 'bfloat16',
  },
} satisfies Record<string, HfConfig>;

export type ShapeName = keyof typeof SHAPES;

export function shapeConfig(name: ShapeName, layers?: number): HfConfig {
  const cfg: HfConfig = { ...SHAPES[name] };
  if (layers !== undefined) cfg[cfg.model_type === 'gpt2' ? 'n_layer' : 'num_hidden_layers'] = layers;
  return cfg;
}

/** xorshift32: fast and seeded, which is all random weights need. */
function nextState(s: number): number {
  s ^= s << 13;
  s ^= s >>> 17;
  s ^= s << 5;
  return s >>> 0;
}

/**
 * Bit patterns of 16-bit (bf16 or f16) values of both signs with magnitudes spread over [2⁻⁹, 2⁻⁵):
 * about the spread of a trained model's weights, so that activations stay finite through many layers.
 */
function randomHalves(count: number, seed: number, bf16: boolean): Uint16Array {
  const out = new Uint16Array(count);
  // A pool of random values (a prime length, so rows do not line up), tiled over a large tensor:
  // generating every element of a 2 GB checkpoint one by one would take a minute.
  const pool = Math.min(count, 1_048_573);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < pool; i++) {
    s = nextState(s);
    const sign = (s & 1) << 15;
    const exponentStep = (s >>> 1) & 3; // 0..3
    out[i] = bf16
      ? sign | ((118 + exponentStep) << 7) | ((s >>> 3) & 0x7f)
      : sign | ((6 + exponentStep) << 10) | ((s >>> 3) & 0x3ff);
  }
  for (let filled = pool; filled < count; filled += pool) out.copyWithin(filled, 0, Math.min(pool, count - filled));
  return out;
}

function tensorBytes(name: string, shape: readonly number[], dtype: 'F32' | 'BF16', seed: number): Uint8Array {
  const count = shape.reduce((a, b) => a * b, 1);
  const isNormWeight = shape.length === 1 && !name.endsWith('.bias');
  if (dtype === 'BF16') {
    const halves = isNormWeight ? new Uint16Array(count).fill(0x3f80) : shape.length === 1 ? new Uint16Array(count) : randomHalves(count, seed, true);
    return new Uint8Array(halves.buffer);
  }
  const values = new Float32Array(count);
  if (isNormWeight) values.fill(1);
  else if (shape.length === 2) {
    const bf16 = randomHalves(count, seed, true);
    const bits = new Uint32Array(values.buffer);
    for (let i = 0; i < count; i++) bits[i] = bf16[i]! << 16;
  }
  return new Uint8Array(values.buffer);
}

export interface SyntheticModel {
  readonly dir: string;
  /** Bytes of model.safetensors' tensor data. */
  readonly weightBytes: number;
  readonly parameters: number;
}

/**
 * Writes the model folder `dir`: config.json, model.safetensors (streamed tensor by tensor, so a 2 GB
 * checkpoint never sits in memory whole) and, when given, tokenizer.json / tokenizer_config.json.
 */
export function writeSyntheticModel(
  dir: string,
  config: HfConfig,
  tokenizer?: { json: string; configJson?: string },
): SyntheticModel {
  mkdirSync(dir, { recursive: true });
  const cfg = parseModelConfig(config);
  const dtype = config.torch_dtype === 'float32' ? 'F32' : 'BF16';
  const width = dtype === 'F32' ? 4 : 2;
  const tensors = [...expectedTensors(cfg)].map(([name, shape]) => ({ name, shape }));
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  for (const t of tensors) {
    const size = t.shape.reduce((a, b) => a * b, 1) * width;
    header[t.name] = { dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const fd = openSync(join(dir, 'model.safetensors'), 'w');
  try {
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, length);
    writeSync(fd, Buffer.from(json, 'utf8'));
    tensors.forEach((t, i) => writeSync(fd, tensorBytes(t.name, t.shape, dtype, 0x9e3779b9 ^ (i * 2654435761))));
  } finally {
    closeSync(fd);
  }
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  if (tokenizer) {
    writeFileSync(join(dir, 'tokenizer.json'), tokenizer.json);
    if (tokenizer.configJson) writeFileSync(join(dir, 'tokenizer_config.json'), tokenizer.configJson);
  }
  return { dir, weightBytes: offset, parameters: offset / width };
}
