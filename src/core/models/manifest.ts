import { UserError } from '../errors.js';
import type { Gpt2Config, LlamaConfig, ModelConfig } from './config.js';

/**
 * The tensors a checkpoint must contain, under canonical names: the module paths of HF's
 * `GPT2LMHeadModel` / `*ForCausalLM`. PEFT adapters name modules the same way, so LoRA can match
 * adapter tensors to base tensors without any translation table.
 */
export function expectedTensors(cfg: ModelConfig): Map<string, number[]> {
  return cfg.arch === 'gpt2' ? gpt2Manifest(cfg) : llamaManifest(cfg);
}

function gpt2Manifest(cfg: Gpt2Config): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const e = cfg.hiddenSize;
  const inner = cfg.intermediateSize;
  m.set('transformer.wte.weight', [cfg.vocabSize, e]);
  m.set('transformer.wpe.weight', [cfg.maxPositions, e]);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `transformer.h.${i}`;
    m.set(`${p}.ln_1.weight`, [e]);
    m.set(`${p}.ln_1.bias`, [e]);
    // Conv1D stores weights [in, out], the transpose of nn.Linear.
    m.set(`${p}.attn.c_attn.weight`, [e, 3 * e]);
    m.set(`${p}.attn.c_attn.bias`, [3 * e]);
    m.set(`${p}.attn.c_proj.weight`, [e, e]);
    m.set(`${p}.attn.c_proj.bias`, [e]);
    m.set(`${p}.ln_2.weight`, [e]);
    m.set(`${p}.ln_2.bias`, [e]);
    m.set(`${p}.mlp.c_fc.weight`, [e, inner]);
    m.set(`${p}.mlp.c_fc.bias`, [inner]);
    m.set(`${p}.mlp.c_proj.weight`, [inner, e]);
    m.set(`${p}.mlp.c_proj.bias`, [e]);
  }
  m.set('transformer.ln_f.weight', [e]);
  m.set('transformer.ln_f.bias', [e]);
  if (!cfg.tiedEmbeddings) m.set('lm_head.weight', [cfg.vocabSize, e]);
  return m;
}

function llamaManifest(cfg: LlamaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const h = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const inner = cfg.intermediateSize;
  const linear = (path: string, out: number, inp: number, bias: boolean): void => {
    m.set(`${path}.weight`, [out, inp]);
    if (bias) m.set(`${path}.bias`, [out]);
  };
  m.set('model.embed_tokens.weight', [cfg.vocabSize, h]);
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    m.set(`${p}.input_layernorm.weight`, [h]);
    linear(`${p}.self_attn.q_proj`, qDim, h, cfg.attentionBias);
    linear(`${p}.self_attn.k_proj`, kvDim, h, cfg.attentionBias);
    linear(`${p}.self_attn.v_proj`, kvDim, h, cfg.attentionBias);
    linear(`${p}.self_attn.o_proj`, h, qDim, cfg.attentionOutputBias);
    m.set(`${p}.post_attention_layernorm.weight`, [h]);
    linear(`${p}.mlp.gate_proj`, inner, h, cfg.mlpBias);
    linear(`${p}.mlp.up_proj`, inner, h, cfg.mlpBias);
    linear(`${p}.mlp.down_proj`, h, inner, cfg.mlpBias);
  }
  m.set('model.norm.weight', [h]);
  if (!cfg.tiedEmbeddings) m.set('lm_head.weight', [cfg.vocabSize, h]);
  return m;
}

const GPT2_BUFFER = /\.attn\.(bias|masked_bias)$/;
const ROPE_BUFFER = /\.rotary_emb\.inv_freq$/;

/**
 * Maps a tensor name found in a checkpoint to its canonical name, or null for tensors that carry
 * no trainable state and are rebuilt at load time (causal-mask buffers, RoPE frequency tables,
 * and a duplicate `lm_head.weight` in tied checkpoints, which HF also discards by re-tying).
 */
export function canonicalTensorName(cfg: ModelConfig, nameInFile: string): string | null {
  if (nameInFile === 'lm_head.weight') return cfg.tiedEmbeddings ? null : nameInFile;
  if (cfg.arch === 'gpt2') {
    if (GPT2_BUFFER.test(nameInFile)) return null;
    // Checkpoints saved from GPT2Model (including OpenAI's originals) lack the LM-head wrapper prefix.
    return nameInFile.startsWith('transformer.') ? nameInFile : `transformer.${nameInFile}`;
  }
  if (ROPE_BUFFER.test(nameInFile)) return null;
  // Same story for checkpoints saved from LlamaModel rather than LlamaForCausalLM.
  return nameInFile.startsWith('model.') ? nameInFile : `model.${nameInFile}`;
}

export interface TensorEntryLike {
  readonly name: string;
  readonly shape: readonly number[];
  /** The file this tensor came from, for error messages; defaults to the whole file set. */
  readonly file?: string;
}

function describeFiles(files: readonly string[]): string {
  return files.length === 0 ? 'the weights' : files.join(', ');
}

const fmtShape = (s: readonly number[]): string => `[${s.join(', ')}]`;

/**
 * Verifies that a checkpoint (possibly sharded across `files`) holds exactly the tensors
 * config.json calls for, with the shapes it implies. Errors name the offending tensor, because
 * "model does not load" is useless to someone holding a 5 GB download.
 */
export function checkTensors(
  cfg: ModelConfig,
  entries: readonly TensorEntryLike[],
  files: readonly string[] = ['model.safetensors'],
): void {
  const expected = expectedTensors(cfg);
  const fileSet = describeFiles(files);
  const seen = new Map<string, string>();
  for (const entry of entries) {
    const where = entry.file ?? fileSet;
    const name = canonicalTensorName(cfg, entry.name);
    if (name === null) continue;
    const want = expected.get(name);
    if (!want) {
      throw new UserError(
        where,
        `contains tensor "${entry.name}", which a ${cfg.modelType} model with this config.json does not have.`,
        'Check that config.json belongs to these weights.',
      );
    }
    const previous = seen.get(name);
    if (previous !== undefined) {
      throw new UserError(where, `contains tensor "${name}" twice (also as "${previous}").`);
    }
    seen.set(name, entry.name);
    if (want.length !== entry.shape.length || want.some((d, i) => d !== entry.shape[i])) {
      throw new UserError(
        where,
        `tensor "${entry.name}" has shape ${fmtShape(entry.shape)}, but config.json implies ${fmtShape(want)}.`,
        'Check that config.json belongs to these weights.',
      );
    }
  }
  for (const name of expected.keys()) {
    if (!seen.has(name)) {
      throw new UserError(
        fileSet,
        `tensor "${name}" is missing.`,
        files.length > 1
          ? 'Add every shard of the checkpoint, and check that config.json belongs to these weights.'
          : 'If the checkpoint is split into several files, add all of them; otherwise check that config.json belongs to these weights.',
      );
    }
  }
}

/** Number of distinct parameters (a tied head is counted once, as HF's num_parameters does). */
export function parameterCount(cfg: ModelConfig): number {
  let total = 0;
  for (const shape of expectedTensors(cfg).values()) total += shape.reduce((a, b) => a * b, 1);
  return total;
}
