import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors';
import { applyLinear, makeLinear, type Linear, type LinearApply } from '../linear';
import { geluErf, layerNorm } from '../ops';
import { componentWeight, configNumber, type DiffusersComponent } from './component';

/**
 * transformers' CLIPTextModel (the SD 1.x text encoder) in tfjs ops: token + position embeddings, pre-LN encoder
 * layers with a causal mask, `final_layer_norm`. Every width, head and layer count comes from
 * `text_encoder/config.json`; the weights are read by transformers' tensor names.
 *
 * Every projection (q/k/v/out_proj of each layer's self-attention, fc1/fc2 of its MLP) is a `Linear` run through
 * the caller's `LinearApply` under its transformers module path, e.g. `text_model.encoder.layers.0.self_attn.q_proj`:
 * the hook a text-encoder LoRA substitutes, as the UNet's (unet-blocks.ts) and the language models' are.
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
  /**
   * Every projection LoRA may target, in module order, under its transformers module path: per layer i,
   * `text_model.encoder.layers.<i>.self_attn.{q_proj,k_proj,v_proj,out_proj}` and `….mlp.{fc1,fc2}`.
   */
  readonly linears: readonly Linear[];
  /**
   * `inputIds` [batch][tokens] as the tokenizer's encodeForModel returns them. Every projection goes through
   * `opts.linear` (a LoRA's apply; the plain projection by default). Nothing is read back from the device, so it
   * runs under tf.variableGrads; intermediates are released, the caller disposes the output.
   */
  forward(inputIds: readonly (readonly number[])[], opts?: { readonly linear?: LinearApply }): ClipTextOutput;
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
 * them): each projection weight is re-laid out to [in, out] here and its PyTorch-layout original released at once.
 * A tensor missing, of the wrong shape for config.json, or not part of a CLIPTextModel is a UserError naming it;
 * the re-laid-out weights are then released, and the component (some of whose originals are gone) is the caller's
 * to dispose.
 */
export function buildClipTextModel(component: DiffusersComponent): ClipTextModel {
  const config = clipTextConfig(component);
  const { hiddenSize: h, intermediateSize: m, heads, positions } = config;
  const readNames = new Set<string>();
  const w = (name: string, shape: readonly number[]) => {
    readNames.add(name);
    return componentWeight(component, name, shape);
  };
  const linears: Linear[] = [];
  /** Projection weights re-laid out here, [in, out]: the model owns them (dispose, or a failed build, releases them). */
  const derived: tf.Tensor[] = [];
  /**
   * An nn.Linear [out, in] at `path`, held transposed ([in, out], layout `in_out`) with the PyTorch-layout original
   * released, as the UNet holds its projections: tfjs's wasm and cpu matMul run x·W faster than x·Wᵀ, and a real
   * text encoder never holds its weights twice.
   */
  const projection = (path: string, inFeatures: number, outFeatures: number): Linear => {
    const torchWeight = w(`${path}.weight`, [outFeatures, inFeatures]);
    const bias = w(`${path}.bias`, [outFeatures]);
    const weight = tf.tidy(() => tf.transpose(torchWeight)) as tf.Tensor2D;
    derived.push(weight);
    torchWeight.dispose();
    const linear = makeLinear(path, weight, 'in_out', bias);
    linears.push(linear);
    return linear;
  };
  const readWeights = () => {
    const tokenEmbedding = w('text_model.embeddings.token_embedding.weight', [config.vocabSize, h]);
    const positionEmbedding = w('text_model.embeddings.position_embedding.weight', [positions, h]);
    const layers = Array.from({ length: config.layers }, (_, i) => {
      const p = `text_model.encoder.layers.${i}.`;
      const norm = (name: string) => ({ weight: w(`${p}${name}.weight`, [h]), bias: w(`${p}${name}.bias`, [h]) });
      return {
        norm1: norm('layer_norm1'),
        q: projection(`${p}self_attn.q_proj`, h, h),
        k: projection(`${p}self_attn.k_proj`, h, h),
        v: projection(`${p}self_attn.v_proj`, h, h),
        out: projection(`${p}self_attn.out_proj`, h, h),
        norm2: norm('layer_norm2'),
        fc1: projection(`${p}mlp.fc1`, h, m),
        fc2: projection(`${p}mlp.fc2`, m, h),
      };
    });
    const finalNorm = { weight: w('text_model.final_layer_norm.weight', [h]), bias: w('text_model.final_layer_norm.bias', [h]) };
    return { tokenEmbedding, positionEmbedding, layers, finalNorm };
  };
  let built: ReturnType<typeof readWeights>;
  try {
    built = readWeights();
    // Older transformers saved the position_ids buffer (0..76) with the weights; it is derivable, so ignored.
    const unused = [...component.weights.keys()].filter((name) => !readNames.has(name) && name !== 'text_model.embeddings.position_ids');
    if (unused.length > 0) {
      throw new UserError(
        'text_encoder/ weights',
        `${unused.length} tensor(s) are not part of the CLIPTextModel that config.json describes (first: "${unused[0]}").`,
        'Use an SD 1.x text encoder (CLIPTextModel) with the config.json that came with it.',
      );
    }
  } catch (e) {
    // The re-laid-out weights are ours to release; the component (some of whose originals are gone) is the caller's.
    tf.dispose(derived);
    throw e;
  }
  const { tokenEmbedding, positionEmbedding, layers, finalNorm } = built;
  const headDim = h / heads;
  const act = config.activation === 'quick_gelu' ? quickGelu : geluErf;

  let disposed = false;

  function forward(inputIds: readonly (readonly number[])[], opts?: { readonly linear?: LinearApply }): ClipTextOutput {
    if (disposed) throw new Error('ClipTextModel.forward() called after dispose()');
    const linear = opts?.linear ?? applyLinear;
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
        // transformers scales the query after its projection (bias included): q_proj(x) · head_dim^-0.5.
        const q = splitHeads(tf.mul(linear(layer.q, normed), 1 / Math.sqrt(headDim)) as tf.Tensor2D);
        const k = splitHeads(linear(layer.k, normed));
        const v = splitHeads(linear(layer.v, normed));
        const scores = tf.add(tf.matMul(q, k, false, true), maskBias);
        const attended = tf.matMul(tf.softmax(scores), v).transpose([0, 2, 1, 3]).reshape([batch * tokens, h]) as tf.Tensor2D;
        x = tf.add(x, linear(layer.out, attended));
        const normed2 = layerNorm(x, layer.norm2.weight, layer.norm2.bias, config.layerNormEps);
        const hidden = act(linear(layer.fc1, normed2)) as tf.Tensor2D;
        x = tf.add(x, linear(layer.fc2, hidden));
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
    linears,
    forward,
    dispose() {
      if (disposed) return;
      disposed = true;
      tf.dispose(derived);
      for (const t of component.weights.values()) if (!t.isDisposed) t.dispose();
    },
  };
}
