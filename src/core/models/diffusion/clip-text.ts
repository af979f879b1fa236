import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors';
import { geluErf, layerNorm } from '../ops';
import { componentWeight, configNumber, type DiffusersComponent } from './component';

/**
 * transformers' CLIPTextModel (the SD 1.x text encoder) in tfjs ops: token + position embeddings, pre-LN encoder
 * layers with a causal mask, `final_layer_norm`. Every width, head and layer count comes from
 * `text_encoder/config.json`; the weights are read by transformers' tensor names.
 */

export type ClipActivation = 'quick_gelu' | 'gelu';

export interface ClipTextConfig {
  readonly hiddenSize: number;
  readonly intermediateSize: number;
  readonly layers: number;
  readonly heads: number;
  readonly positions: number;
  readonly vocabSize: number;
  readonly layerNormEps: number;
  readonly activation: ClipActivation;
  readonly eosTokenId: number;
}

export interface ClipTextOutput {
  /** `final_layer_norm` output [batch, tokens, hidden]: what the UNet cross-attends to. */
  readonly lastHiddenState: tf.Tensor3D;
  /** The last hidden state at each sequence's end-of-text token [batch, hidden]. */
  readonly pooled: tf.Tensor2D;
}

export interface ClipTextModel {
  readonly config: ClipTextConfig;
  /** `inputIds` [batch][tokens] as the tokenizer's encodeForModel returns them. The caller disposes the output. */
  forward(inputIds: readonly (readonly number[])[]): ClipTextOutput;
  /** Releases the weights (the component's tensors: buildClipTextModel took them over, as buildUnet does). */
  dispose(): void;
}

export function clipTextConfig(component: DiffusersComponent): ClipTextConfig {
  const hiddenSize = configNumber(component, 'hidden_size');
  const heads = configNumber(component, 'num_attention_heads');
  if (!Number.isInteger(hiddenSize / heads)) {
    throw new UserError('text_encoder/config.json', `"hidden_size" ${hiddenSize} is not a multiple of "num_attention_heads" ${heads}.`);
  }
  const act = component.config.hidden_act ?? 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') {
    throw new UserError('text_encoder/config.json', `"hidden_act" ${JSON.stringify(act)} is not supported; CLIP text encoders use "quick_gelu" or "gelu".`);
  }
  return {
    hiddenSize,
    intermediateSize: configNumber(component, 'intermediate_size'),
    layers: configNumber(component, 'num_hidden_layers'),
    heads,
    positions: configNumber(component, 'max_position_embeddings', 77),
    vocabSize: configNumber(component, 'vocab_size'),
    layerNormEps: configNumber(component, 'layer_norm_eps', 1e-5),
    activation: act,
    eosTokenId: configNumber(component, 'eos_token_id', 2),
  };
}

/** torch.nn.Linear on the last axis of a 2-D input: x Wᵀ + b. */
function linear(x: tf.Tensor2D, weight: tf.Tensor, bias: tf.Tensor): tf.Tensor2D {
  return tf.add(tf.matMul(x, weight as tf.Tensor2D, false, true), bias);
}

/** transformers' quick_gelu: x·σ(1.702x) (what OpenAI's CLIP was trained with). */
function quickGelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
}

/**
 * Where the pooled output is read, as transformers does: with the legacy eos id 2 (configs saved before the
 * fix) the highest id in the row, else the first `eos_token_id`.
 */
export function eosPositions(inputIds: readonly (readonly number[])[], eosTokenId: number): number[] {
  return inputIds.map((row) => {
    if (eosTokenId === 2) return row.reduce((best, id, i) => (id > row[best]! ? i : best), 0);
    const at = row.indexOf(eosTokenId);
    return at < 0 ? 0 : at;
  });
}

/**
 * Builds the text encoder from a loaded `text_encoder/` component and takes over its tensors (dispose() releases
 * them). A tensor missing, of the wrong shape for config.json, or not part of a CLIPTextModel is a UserError
 * naming it.
 */
export function buildClipTextModel(component: DiffusersComponent): ClipTextModel {
  const config = clipTextConfig(component);
  const { hiddenSize: h, intermediateSize: m, heads, positions } = config;
  const readNames = new Set<string>();
  const w = (name: string, shape: readonly number[]) => {
    readNames.add(`text_model.${name}`);
    return componentWeight(component, `text_model.${name}`, shape);
  };
  const tokenEmbedding = w('embeddings.token_embedding.weight', [config.vocabSize, h]);
  const positionEmbedding = w('embeddings.position_embedding.weight', [positions, h]);
  const layers = Array.from({ length: config.layers }, (_, i) => {
    const p = `encoder.layers.${i}.`;
    const proj = (name: string) => ({ weight: w(`${p}self_attn.${name}.weight`, [h, h]), bias: w(`${p}self_attn.${name}.bias`, [h]) });
    return {
      norm1: { weight: w(`${p}layer_norm1.weight`, [h]), bias: w(`${p}layer_norm1.bias`, [h]) },
      q: proj('q_proj'),
      k: proj('k_proj'),
      v: proj('v_proj'),
      out: proj('out_proj'),
      norm2: { weight: w(`${p}layer_norm2.weight`, [h]), bias: w(`${p}layer_norm2.bias`, [h]) },
      fc1: { weight: w(`${p}mlp.fc1.weight`, [m, h]), bias: w(`${p}mlp.fc1.bias`, [m]) },
      fc2: { weight: w(`${p}mlp.fc2.weight`, [h, m]), bias: w(`${p}mlp.fc2.bias`, [h]) },
    };
  });
  const finalNorm = { weight: w('final_layer_norm.weight', [h]), bias: w('final_layer_norm.bias', [h]) };
  // Older transformers saved the position_ids buffer (0..76) with the weights; it is derivable, so ignored.
  const unused = [...component.weights.keys()].filter((name) => !readNames.has(name) && name !== 'text_model.embeddings.position_ids');
  if (unused.length > 0) {
    throw new UserError(
      'text_encoder/ weights',
      `${unused.length} tensor(s) are not part of the CLIPTextModel that config.json describes (first: "${unused[0]}").`,
      'Use an SD 1.x text encoder (CLIPTextModel) with the config.json that came with it.',
    );
  }
  const headDim = h / heads;
  const act = config.activation === 'quick_gelu' ? quickGelu : geluErf;

  function forward(inputIds: readonly (readonly number[])[]): ClipTextOutput {
    const batch = inputIds.length;
    const tokens = inputIds[0]?.length ?? 0;
    if (batch === 0 || tokens === 0 || inputIds.some((row) => row.length !== tokens)) {
      throw new RangeError('CLIP text forward: inputIds must be a non-empty batch of equally long rows');
    }
    if (tokens > positions) throw new RangeError(`CLIP text forward: ${tokens} tokens, but the model has ${positions} positions`);
    for (const row of inputIds) {
      for (const id of row) if (!Number.isInteger(id) || id < 0 || id >= config.vocabSize) throw new RangeError(`CLIP text forward: token id ${id} is outside the vocabulary`);
    }
    return tf.tidy(() => {
      const ids = tf.tensor1d(inputIds.flat(), 'int32');
      const tokenVectors = tf.gather(tokenEmbedding, ids).reshape([batch, tokens, h]);
      const positionVectors = positionEmbedding.slice([0, 0], [tokens, h]);
      let x = tf.add(tokenVectors, positionVectors).reshape([batch * tokens, h]) as tf.Tensor2D;
      // Additive causal mask: a token attends to itself and the tokens before it.
      const mask = tf.linalg.bandPart(tf.ones([tokens, tokens]), -1, 0);
      const maskBias = tf.mul(tf.sub(1, mask), -1e9);
      const splitHeads = (t: tf.Tensor2D) => t.reshape([batch, tokens, heads, headDim]).transpose([0, 2, 1, 3]) as tf.Tensor4D;
      for (const layer of layers) {
        const normed = layerNorm(x, layer.norm1.weight, layer.norm1.bias, config.layerNormEps);
        const q = splitHeads(tf.mul(linear(normed, layer.q.weight, layer.q.bias), 1 / Math.sqrt(headDim)) as tf.Tensor2D);
        const k = splitHeads(linear(normed, layer.k.weight, layer.k.bias));
        const v = splitHeads(linear(normed, layer.v.weight, layer.v.bias));
        const scores = tf.add(tf.matMul(q, k, false, true), maskBias);
        const attended = tf.matMul(tf.softmax(scores), v).transpose([0, 2, 1, 3]).reshape([batch * tokens, h]) as tf.Tensor2D;
        x = tf.add(x, linear(attended, layer.out.weight, layer.out.bias));
        const normed2 = layerNorm(x, layer.norm2.weight, layer.norm2.bias, config.layerNormEps);
        const hidden = act(linear(normed2, layer.fc1.weight, layer.fc1.bias)) as tf.Tensor2D;
        x = tf.add(x, linear(hidden, layer.fc2.weight, layer.fc2.bias));
      }
      const out = layerNorm(x, finalNorm.weight, finalNorm.bias, config.layerNormEps);
      const lastHiddenState = out.reshape([batch, tokens, h]) as tf.Tensor3D;
      const rows = eosPositions(inputIds, config.eosTokenId).map((at, b) => b * tokens + at);
      const pooled = tf.gather(out, tf.tensor1d(rows, 'int32')) as tf.Tensor2D;
      return { lastHiddenState, pooled };
    });
  }

  return {
    config,
    forward,
    dispose() {
      for (const t of component.weights.values()) if (!t.isDisposed) t.dispose();
    },
  };
}
