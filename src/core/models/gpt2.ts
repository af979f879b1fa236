import * as tf from '@tensorflow/tfjs';
import type { Gpt2Config } from './config.js';
import { runBlock, type BlockFn } from './checkpointing.js';
import { makeLinear, type Linear } from './linear.js';
import type { ModelParts } from './model.js';
import { causalAttention } from '../kernels/attention.js';
import type { HeldWeight } from '../weights/hold.js';
import { embed, geluErf, geluTanh, layerNorm, requireMatrix, requireWeight, silu } from './ops.js';

interface Gpt2Block {
  readonly ln1: readonly [tf.Tensor, tf.Tensor];
  readonly ln2: readonly [tf.Tensor, tf.Tensor];
  readonly cAttn: Linear;
  readonly attnProj: Linear;
  readonly cFc: Linear;
  readonly mlpProj: Linear;
}

const ACTIVATIONS: Record<Gpt2Config['activation'], (x: tf.Tensor) => tf.Tensor> = {
  gelu_new: geluTanh,
  gelu: geluErf,
  relu: (x) => tf.relu(x),
  silu,
};

export function buildGpt2(cfg: Gpt2Config, weights: ReadonlyMap<string, HeldWeight>): ModelParts {
  const w = (name: string): tf.Tensor => requireWeight(weights, name);
  const conv1d = (path: string): Linear => makeLinear(path, requireMatrix(weights, `${path}.weight`), 'in_out', w(`${path}.bias`));
  const wte = requireMatrix(weights, 'transformer.wte.weight');
  const wpe = requireMatrix(weights, 'transformer.wpe.weight');
  const blocks: Gpt2Block[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `transformer.h.${i}`;
    blocks.push({
      ln1: [w(`${p}.ln_1.weight`), w(`${p}.ln_1.bias`)],
      ln2: [w(`${p}.ln_2.weight`), w(`${p}.ln_2.bias`)],
      cAttn: conv1d(`${p}.attn.c_attn`),
      attnProj: conv1d(`${p}.attn.c_proj`),
      cFc: conv1d(`${p}.mlp.c_fc`),
      mlpProj: conv1d(`${p}.mlp.c_proj`),
    });
  }
  const lnF = [w('transformer.ln_f.weight'), w('transformer.ln_f.bias')] as const;
  // The head is [vocab, embd] either way, i.e. nn.Linear layout, whether tied to wte or not.
  const lmHead = makeLinear('lm_head', cfg.tiedEmbeddings ? wte : requireMatrix(weights, 'lm_head.weight'), 'out_in', null);
  const linears = [...blocks.flatMap((b) => [b.cAttn, b.attnProj, b.cFc, b.mlpProj]), lmHead];
  const act = ACTIVATIONS[cfg.activation];
  const { hiddenSize, numHeads, headDim } = cfg;

  return {
    linears,
    lmHead,
    hidden(ids, apply, checkpointing) {
      const [batch, seq] = ids.shape;
      const tokens = embed(wte, ids.reshape([batch * seq]));
      const positions = embed(wpe, tf.range(0, seq, 1, 'int32'));
      let h = tf.add(tokens.reshape([batch, seq, hiddenSize]), positions).reshape([batch * seq, hiddenSize]) as tf.Tensor2D;
      for (let i = 0; i < blocks.length; i++) {
        const b = blocks[i]!;
        let scale = cfg.scaleAttnWeights ? 1 / Math.sqrt(headDim) : 1;
        if (cfg.scaleAttnByInverseLayerIdx) scale /= i + 1;
        const block: BlockFn = (h0, apply) => {
          const qkv = apply(b.cAttn, layerNorm(h0, b.ln1[0], b.ln1[1], cfg.eps));
          const attn = causalAttention(qkv, { batch, seq, heads: numHeads, kvHeads: numHeads, headDim, scale, slidingWindow: null });
          const h1 = tf.add(h0, apply(b.attnProj, attn)) as tf.Tensor2D;
          const x = layerNorm(h1, b.ln2[0], b.ln2[1], cfg.eps);
          return tf.add(h1, apply(b.mlpProj, act(apply(b.cFc, x)) as tf.Tensor2D));
        };
        h = runBlock(block, h, { apply, linears: [b.cAttn, b.attnProj, b.cFc, b.mlpProj], checkpointing });
      }
      return layerNorm(h, lnF[0], lnF[1], cfg.eps);
    },
  };
}
