import * as tf from '@tensorflow/tfjs';
import type { LlamaConfig } from './config.js';
import { runBlock, type BlockFn } from './checkpointing.js';
import { makeLinear, type Linear } from './linear.js';
import type { ModelParts } from './model.js';
import { causalAttention } from '../kernels/attention.js';
import type { HeldWeight } from '../weights/hold.js';
import { embed, requireMatrix, requireWeight, rmsNorm, silu } from './ops.js';

interface LlamaBlock {
  readonly inputNorm: tf.Tensor;
  readonly postAttnNorm: tf.Tensor;
  readonly q: Linear;
  readonly k: Linear;
  readonly v: Linear;
  readonly o: Linear;
  readonly gate: Linear;
  readonly up: Linear;
  readonly down: Linear;
}

/**
 * RoPE inverse frequencies, rounded to float32 at each step as HF computes them (in float32), so
 * rotation angles at long positions agree with PyTorch rather than drifting by float64 precision.
 */
export function ropeInverseFrequencies(cfg: LlamaConfig): Float32Array {
  const half = cfg.headDim / 2;
  const inv = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    const exponent = Math.fround(Math.fround(2 * i) / cfg.headDim);
    inv[i] = 1 / Math.fround(Math.pow(cfg.ropeTheta, exponent));
  }
  const s = cfg.ropeScaling;
  if (s?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / s.factor;
  } else if (s?.type === 'llama3') {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
    const lowFreqWavelen = s.originalMaxPositions / s.lowFreqFactor;
    const highFreqWavelen = s.originalMaxPositions / s.highFreqFactor;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen > lowFreqWavelen) {
        inv[i] = f / s.factor;
      } else if (wavelen >= highFreqWavelen) {
        const smooth = (s.originalMaxPositions / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (f / s.factor) + smooth * f;
      }
    }
  }
  return inv;
}

/** cos and sin tables [seq, 1, headDim] in HF's layout: the frequencies repeated for both halves. */
function ropeTables(inv: Float32Array, seq: number): [tf.Tensor3D, tf.Tensor3D] {
  const half = inv.length;
  const dim = 2 * half;
  const cos = new Float32Array(seq * dim);
  const sin = new Float32Array(seq * dim);
  for (let p = 0; p < seq; p++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(p * inv[i]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[p * dim + i] = c;
      cos[p * dim + half + i] = c;
      sin[p * dim + i] = s;
      sin[p * dim + half + i] = s;
    }
  }
  return [tf.tensor3d(cos, [seq, 1, dim]), tf.tensor3d(sin, [seq, 1, dim])];
}

/**
 * x·cos + rotate_half(x)·sin, with rotate_half(x) = [-x₂, x₁] over the two halves of headDim, on the
 * token-major projection x [batch·seq, heads·headDim]; cos and sin are [seq, 1, headDim] for the broadcast.
 */
function applyRope(x: tf.Tensor2D, batch: number, seq: number, headDim: number, cos: tf.Tensor3D, sin: tf.Tensor3D): tf.Tensor2D {
  const heads = x.shape[1] / headDim;
  const byHead = x.reshape([batch, seq, heads, headDim]);
  const [x1, x2] = tf.split(byHead, 2, -1);
  const rotated = tf.concat([tf.neg(x2!), x1!], -1);
  return tf.add(tf.mul(byHead, cos), tf.mul(rotated, sin)).reshape(x.shape);
}

export function buildLlama(cfg: LlamaConfig, weights: ReadonlyMap<string, HeldWeight>): ModelParts {
  const w = (name: string): tf.Tensor => requireWeight(weights, name);
  const linear = (path: string, hasBias: boolean): Linear =>
    makeLinear(path, requireMatrix(weights, `${path}.weight`), 'out_in', hasBias ? w(`${path}.bias`) : null);
  const embedTokens = requireMatrix(weights, 'model.embed_tokens.weight');
  const blocks: LlamaBlock[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    blocks.push({
      inputNorm: w(`${p}.input_layernorm.weight`),
      postAttnNorm: w(`${p}.post_attention_layernorm.weight`),
      q: linear(`${p}.self_attn.q_proj`, cfg.attentionBias),
      k: linear(`${p}.self_attn.k_proj`, cfg.attentionBias),
      v: linear(`${p}.self_attn.v_proj`, cfg.attentionBias),
      o: linear(`${p}.self_attn.o_proj`, cfg.attentionOutputBias),
      gate: linear(`${p}.mlp.gate_proj`, cfg.mlpBias),
      up: linear(`${p}.mlp.up_proj`, cfg.mlpBias),
      down: linear(`${p}.mlp.down_proj`, cfg.mlpBias),
    });
  }
  const finalNorm = w('model.norm.weight');
  const lmHead = makeLinear('lm_head', cfg.tiedEmbeddings ? embedTokens : requireMatrix(weights, 'lm_head.weight'), 'out_in', null);
  const linears = [...blocks.flatMap((b) => [b.q, b.k, b.v, b.o, b.gate, b.up, b.down]), lmHead];
  const invFreq = ropeInverseFrequencies(cfg);
  const { numHeads, numKvHeads, headDim, eps } = cfg;
  const attentionShape = { heads: numHeads, kvHeads: numKvHeads, headDim, scale: 1 / Math.sqrt(headDim), slidingWindow: cfg.slidingWindow };

  return {
    linears,
    lmHead,
    hidden(ids, apply, checkpointing) {
      const [batch, seq] = ids.shape;
      let h = embed(embedTokens, ids.reshape([batch * seq]));
      // The tables go to each block as context: a checkpointed block's recompute runs after this
      // forward pass has freed them, and reads the copies its checkpoint kept.
      const rope = ropeTables(invFreq, seq);
      for (const b of blocks) {
        const block: BlockFn = (h0, apply, context) => {
          const [cos, sin] = context as [tf.Tensor3D, tf.Tensor3D];
          const x = rmsNorm(h0, b.inputNorm, eps);
          const q = applyRope(apply(b.q, x), batch, seq, headDim, cos, sin);
          const k = applyRope(apply(b.k, x), batch, seq, headDim, cos, sin);
          const qkv = tf.concat([q, k, apply(b.v, x)], 1) as tf.Tensor2D;
          const attn = causalAttention(qkv, { ...attentionShape, batch, seq });
          const h1 = tf.add(h0, apply(b.o, attn)) as tf.Tensor2D;
          const y = rmsNorm(h1, b.postAttnNorm, eps);
          const gated = tf.mul(silu(apply(b.gate, y)), apply(b.up, y)) as tf.Tensor2D;
          return tf.add(h1, apply(b.down, gated));
        };
        h = runBlock(block, h, { apply, linears: [b.q, b.k, b.v, b.o, b.gate, b.up, b.down], context: rope, checkpointing });
      }
      return rmsNorm(h, finalNorm, eps);
    },
  };
}
