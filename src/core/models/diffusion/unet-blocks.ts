import * as tf from '@tensorflow/tfjs';
import { makeLinear, type Linear, type LinearApply } from '../linear.js';
import { geluErf, layerNorm, silu } from '../ops.js';
import { quantizeInt8, quantizeNf4, unpackHost, packHalves } from '../../weights/host.js';
import { FLOAT32_PLACEMENT, type WeightPlacement } from '../../weights/holding.js';
import { tensorsOf, uploadPacked, type FrozenMatrix, type HostPackedMatrix } from '../../weights/packed.js';
import { componentWeight, type DiffusersComponent } from './component.js';

/**
 * The building blocks of diffusers' UNet2DConditionModel (ResnetBlock2D, Transformer2DModel with its
 * BasicTransformerBlocks, Downsample2D, Upsample2D), in tfjs ops on NHWC activations ([batch, height, width,
 * channels]: tf.conv2d's layout on every backend). Each builder reads its weights by diffusers' tensor names and
 * returns the block's forward function.
 *
 * Every nn.Linear (and every 1×1 convolution that acts as one: Transformer2DModel's proj_in/proj_out) is a
 * `Linear` run through the caller's `LinearApply`, under its diffusers module path, e.g.
 * `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`. That is the one hook LoRA uses, exactly as in the
 * language models (see ../linear.ts and lora/adapter.ts): an adapter substitutes its own LinearApply and finds its
 * targets by module path.
 */

/** What every block's forward reads besides its input. */
export interface BlockInputs {
  readonly linear: LinearApply;
  /** The time embedding [batch, timeEmbedDim], before the SiLU each ResNet applies. */
  readonly temb: tf.Tensor2D;
  /** The text encoder's hidden states [batch, tokens, crossAttentionDim]. */
  readonly context: tf.Tensor3D;
}

export type Block = (x: tf.Tensor4D, inputs: BlockInputs) => tf.Tensor4D;

/** A 2-D convolution with its kernel already in tf.conv2d's [kh, kw, in, out] layout. */
interface Conv {
  readonly filter: tf.Tensor4D;
  readonly bias: tf.Tensor1D;
  readonly stride: number;
  readonly pad: number;
}

/**
 * Reads weights by name and checks their shapes, and records what the UNet will own: every Linear in module order,
 * and the weights it re-lays out once at build time (conv kernels [out, in, kh, kw] → [kh, kw, in, out], projection
 * weights [out, in] → [in, out]).
 */
export class UnetWeights {
  readonly linears: Linear[] = [];
  /** Tensors created here (re-laid-out conv kernels and projection weights) that the UNet must dispose. */
  readonly derived: tf.Tensor[] = [];
  /** Every tensor name read, to find the component's tensors the model does not use. */
  readonly readNames = new Set<string>();

  /**
   * `placement`: how the projection weights are held (weights/hold.ts placementFor): packed words on webgpu,
   * quantized (int8, nf4) when asked; convolution kernels, norms and biases stay float32 whatever it says.
   */
  constructor(
    private readonly component: DiffusersComponent,
    private readonly placement: WeightPlacement = FLOAT32_PLACEMENT,
  ) {}

  tensor(name: string, shape: readonly number[]): tf.Tensor {
    this.readNames.add(name);
    return componentWeight(this.component, name, shape);
  }

  vector(name: string, length: number): tf.Tensor1D {
    return this.tensor(name, [length]) as tf.Tensor1D;
  }

  /**
   * An nn.Linear [out, in], or a 1×1 nn.Conv2d [out, in, 1, 1] used as one, at module path `path`. The weight is held
   * transposed, [in, out] (layout `in_out`), and the PyTorch-layout original released: tfjs's wasm and cpu matMul run
   * x·W several times faster than x·Wᵀ, and the webgpu kernels take either layout. Held as the placement says
   * (see holdProjection).
   */
  linear(path: string, inFeatures: number, outFeatures: number, opts: { bias: boolean; conv1x1?: boolean }): Linear {
    const torchWeight = this.tensor(`${path}.weight`, opts.conv1x1 ? [outFeatures, inFeatures, 1, 1] : [outFeatures, inFeatures]);
    const weight =
      this.placement.packed || this.placement.quantization !== 'none'
        ? holdProjection(torchWeight.dataSync() as Float32Array, inFeatures, outFeatures, this.placement)
        : (tf.tidy(() => tf.transpose(tf.reshape(torchWeight, [outFeatures, inFeatures]))) as tf.Tensor2D);
    this.derived.push(...tensorsOf(weight));
    torchWeight.dispose();
    const bias = opts.bias ? this.vector(`${path}.bias`, outFeatures) : null;
    const linear = makeLinear(path, weight, 'in_out', bias);
    this.linears.push(linear);
    return linear;
  }

  conv(path: string, inChannels: number, outChannels: number, kernel: number, stride: number, pad: number): Conv {
    const torchKernel = this.tensor(`${path}.weight`, [outChannels, inChannels, kernel, kernel]);
    const filter = tf.transpose(torchKernel, [2, 3, 1, 0]) as tf.Tensor4D;
    this.derived.push(filter);
    torchKernel.dispose();
    return { filter, bias: this.vector(`${path}.bias`, outChannels), stride, pad };
  }

  groupNorm(path: string, channels: number, groups: number, eps: number): GroupNorm {
    return { weight: this.vector(`${path}.weight`, channels), bias: this.vector(`${path}.bias`, channels), groups, eps };
  }

  layerNorm(path: string, channels: number, eps: number): LayerNormParams {
    return { weight: this.vector(`${path}.weight`, channels), bias: this.vector(`${path}.bias`, channels), eps };
  }
}

/**
 * A projection weight, given as PyTorch stores it ([out, in] row-major float32), held [in, out] as `placement` says,
 * the way weights/hold.ts holds a language model's block projections: int8 (one scale per output channel, the
 * columns here) or NF4 when quantization asks; otherwise, on a packed placement, as F16 or BF16 words when every
 * value is exactly one (the file stored halves, which the loader widened: packing them back loses nothing), else
 * float32. Unpacked (wasm, cpu), a quantized weight is float32 of the quantized values, so every backend computes
 * with the same weights. No UNet projection comes near a binding limit (SD's largest, 1280 → 10240, is 52 MB in
 * float32; WebGPU guarantees 128 MiB), so none is split into row blocks.
 */
function holdProjection(torchValues: Float32Array, inFeatures: number, outFeatures: number, placement: WeightPlacement): FrozenMatrix {
  const shape = [inFeatures, outFeatures] as const;
  // Transposed on the host: the values are there already (read back once at build time on webgpu).
  const values = new Float32Array(inFeatures * outFeatures);
  for (let o = 0; o < outFeatures; o++) {
    for (let i = 0; i < inFeatures; i++) values[i * outFeatures + o] = torchValues[o * inFeatures + i]!;
  }
  let host: HostPackedMatrix | null;
  switch (placement.quantization) {
    case 'int8':
      host = quantizeInt8(values, shape, 1);
      break;
    case 'nf4':
      host = quantizeNf4(values, shape);
      break;
    case 'none':
      host = placement.packed ? exactHalves(values, shape) : null;
      break;
  }
  if (host === null) return tf.tensor2d(values, [...shape], 'float32');
  return placement.packed ? uploadPacked(host) : tf.tensor2d(unpackHost(host), [...shape], 'float32');
}

/** The values as F16 (or else BF16) halves if every one of them is exactly such a half; null if not. */
function exactHalves(values: Float32Array, shape: readonly [number, number]): HostPackedMatrix | null {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const f16 = new Uint16Array(values.length);
  let isF16 = true;
  for (let i = 0; i < bits.length && isF16; i++) {
    const h = exactF16Bits(bits[i]!);
    if (h === null) isF16 = false;
    else f16[i] = h;
  }
  if (isF16) return packHalves('f16', shape, new Uint8Array(f16.buffer));
  // BF16 is the upper half of a float32: exact when the lower half is zero.
  if (!bits.every((b) => (b & 0xffff) === 0)) return null;
  return packHalves('bf16', shape, new Uint8Array(Uint16Array.from(bits, (b) => b >>> 16).buffer));
}

/** The IEEE half with exactly the value of the float32 with these bits, or null if there is none (or it is a NaN). */
function exactF16Bits(f32: number): number | null {
  const sign = (f32 >>> 16) & 0x8000;
  const exponent = (f32 >>> 23) & 0xff;
  const mantissa = f32 & 0x7fffff;
  if (exponent === 0 && mantissa === 0) return sign;
  if (exponent === 0xff) return mantissa === 0 ? sign | 0x7c00 : null;
  const e = exponent - 127;
  if (e >= -14 && e <= 15) return (mantissa & 0x1fff) === 0 ? sign | ((e + 15) << 10) | (mantissa >>> 13) : null;
  if (e < -24 || e > 15) return null;
  // A half subnormal: m·2⁻²⁴ with m < 1024; the float32 is (2²³ + mantissa)·2^(e − 23), so m = (2²³ + mantissa)·2^(e + 1).
  const full = 0x800000 | mantissa;
  const shift = -(e + 1);
  return (full & ((1 << shift) - 1)) === 0 ? sign | (full >>> shift) : null;
}

interface GroupNorm {
  readonly weight: tf.Tensor1D;
  readonly bias: tf.Tensor1D;
  readonly groups: number;
  readonly eps: number;
}

interface LayerNormParams {
  readonly weight: tf.Tensor1D;
  readonly bias: tf.Tensor1D;
  readonly eps: number;
}

function conv2d(x: tf.Tensor4D, c: Conv): tf.Tensor4D {
  return tf.add(tf.conv2d(x, c.filter, c.stride, c.pad, 'NHWC'), c.bias);
}

/** torch.nn.GroupNorm on NHWC: mean and biased variance over each group's channels and all positions. */
export function groupNorm(x: tf.Tensor4D, n: GroupNorm): tf.Tensor4D {
  const [b, h, w, c] = x.shape;
  const grouped = tf.reshape(x, [b, h * w, n.groups, c / n.groups]);
  const { mean, variance } = tf.moments(grouped, [1, 3], true);
  const normed = tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, n.eps)));
  return tf.add(tf.mul(tf.reshape(normed, [b, h, w, c]), n.weight), n.bias);
}

/** A Linear over the channels of every position: [b, h, w, in] → [b, h, w, out]. */
function linearNhwc(apply: LinearApply, l: Linear, x: tf.Tensor4D): tf.Tensor4D {
  const [b, h, w] = x.shape;
  return tf.reshape(apply(l, tf.reshape(x, [b * h * w, l.inFeatures])), [b, h, w, l.outFeatures]);
}

/** ResnetBlock2D (resnet_time_scale_shift "default"): GroupNorm, SiLU, conv, + time projection, GroupNorm, SiLU, conv, + shortcut. */
export function resnetBlock(
  w: UnetWeights,
  path: string,
  spec: { inChannels: number; outChannels: number; timeEmbedDim: number; groups: number; eps: number; outputScale: number },
): Block {
  const { inChannels, outChannels, groups, eps, outputScale } = spec;
  const norm1 = w.groupNorm(`${path}.norm1`, inChannels, groups, eps);
  const conv1 = w.conv(`${path}.conv1`, inChannels, outChannels, 3, 1, 1);
  const timeProj = w.linear(`${path}.time_emb_proj`, spec.timeEmbedDim, outChannels, { bias: true });
  const norm2 = w.groupNorm(`${path}.norm2`, outChannels, groups, eps);
  const conv2 = w.conv(`${path}.conv2`, outChannels, outChannels, 3, 1, 1);
  const shortcut = inChannels !== outChannels ? w.conv(`${path}.conv_shortcut`, inChannels, outChannels, 1, 1, 0) : null;
  return (x, { linear, temb }) => {
    let h = conv2d(silu(groupNorm(x, norm1)) as tf.Tensor4D, conv1);
    const t = linear(timeProj, silu(temb) as tf.Tensor2D);
    h = tf.add(h, tf.reshape(t, [t.shape[0], 1, 1, outChannels]));
    h = conv2d(silu(groupNorm(h, norm2)) as tf.Tensor4D, conv2);
    const skip = shortcut ? conv2d(x, shortcut) : x;
    const sum = tf.add(skip, h) as tf.Tensor4D;
    return outputScale === 1 ? sum : (tf.div(sum, outputScale) as tf.Tensor4D);
  };
}

/**
 * diffusers' Attention with the default processor: softmax(q·kᵀ/√d)·v per head, no mask; to_q/k/v without bias,
 * to_out.0 with bias. `x` [batch, n, dim]; keys and values from `context` (cross-attention) or from `x` itself.
 */
function attention(w: UnetWeights, path: string, dim: number, contextDim: number, heads: number) {
  const toQ = w.linear(`${path}.to_q`, dim, dim, { bias: false });
  const toK = w.linear(`${path}.to_k`, contextDim, dim, { bias: false });
  const toV = w.linear(`${path}.to_v`, contextDim, dim, { bias: false });
  const toOut = w.linear(`${path}.to_out.0`, dim, dim, { bias: true });
  const headDim = dim / heads;
  const splitHeads = (t: tf.Tensor2D, batch: number, n: number) => tf.transpose(tf.reshape(t, [batch, n, heads, headDim]), [0, 2, 1, 3]);
  return (x: tf.Tensor3D, context: tf.Tensor3D | null, apply: LinearApply): tf.Tensor3D => {
    const [batch, n] = x.shape;
    const kv = context ?? x;
    const m = kv.shape[1];
    const kvFlat = tf.reshape(kv, [batch * m, kv.shape[2]]) as tf.Tensor2D;
    const q = splitHeads(apply(toQ, tf.reshape(x, [batch * n, dim]) as tf.Tensor2D), batch, n);
    const k = splitHeads(apply(toK, kvFlat), batch, m);
    const v = splitHeads(apply(toV, kvFlat), batch, m);
    const scores = tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(headDim));
    const mixed = tf.matMul(tf.softmax(scores, -1), v);
    const merged = tf.reshape(tf.transpose(mixed, [0, 2, 1, 3]), [batch * n, dim]) as tf.Tensor2D;
    return tf.reshape(apply(toOut, merged), [batch, n, dim]);
  };
}

/** BasicTransformerBlock: LayerNorm → self-attention, LayerNorm → cross-attention, LayerNorm → GEGLU feed-forward, each residual. */
function transformerBlock(w: UnetWeights, path: string, dim: number, contextDim: number, heads: number) {
  const ln = (name: string) => w.layerNorm(`${path}.${name}`, dim, 1e-5);
  const norm1 = ln('norm1');
  const attn1 = attention(w, `${path}.attn1`, dim, dim, heads);
  const norm2 = ln('norm2');
  const attn2 = attention(w, `${path}.attn2`, dim, contextDim, heads);
  const norm3 = ln('norm3');
  const inner = dim * 4;
  const ffIn = w.linear(`${path}.ff.net.0.proj`, dim, inner * 2, { bias: true });
  const ffOut = w.linear(`${path}.ff.net.2`, inner, dim, { bias: true });
  const norm = (x: tf.Tensor3D, p: LayerNormParams): tf.Tensor3D => {
    const [b, n] = x.shape;
    return tf.reshape(layerNorm(tf.reshape(x, [b * n, dim]), p.weight, p.bias, p.eps), [b, n, dim]);
  };
  return (x: tf.Tensor3D, context: tf.Tensor3D, apply: LinearApply): tf.Tensor3D => {
    let h = tf.add(x, attn1(norm(x, norm1), null, apply)) as tf.Tensor3D;
    h = tf.add(h, attn2(norm(h, norm2), context, apply));
    const [b, n] = h.shape;
    // GEGLU: the projection's first half is the value, its second half the gate, through exact (erf) GELU.
    const [value, gate] = tf.split(apply(ffIn, tf.reshape(norm(h, norm3), [b * n, dim])), 2, 1);
    const ff = apply(ffOut, tf.mul(value!, geluErf(gate!)) as tf.Tensor2D);
    return tf.add(h, tf.reshape(ff, [b, n, dim]));
  };
}

/** Transformer2DModel: GroupNorm (eps 1e-6) → proj_in → BasicTransformerBlocks over the positions → proj_out → + input. */
export function transformer2d(
  w: UnetWeights,
  path: string,
  spec: { channels: number; heads: number; layers: number; contextDim: number; groups: number; linearProjection: boolean },
): Block {
  const { channels, heads, contextDim, groups } = spec;
  const norm = w.groupNorm(`${path}.norm`, channels, groups, 1e-6);
  // SD 1.x: 1×1 convolutions; SD 2.x (use_linear_projection): nn.Linear. On NHWC both are a Linear over channels.
  const projIn = w.linear(`${path}.proj_in`, channels, channels, { bias: true, conv1x1: !spec.linearProjection });
  const blocks = Array.from({ length: spec.layers }, (_, i) =>
    transformerBlock(w, `${path}.transformer_blocks.${i}`, channels, contextDim, heads),
  );
  const projOut = w.linear(`${path}.proj_out`, channels, channels, { bias: true, conv1x1: !spec.linearProjection });
  return (x, { linear, context }) => {
    const [b, h, wd] = x.shape;
    let tokens = tf.reshape(linearNhwc(linear, projIn, groupNorm(x, norm)), [b, h * wd, channels]) as tf.Tensor3D;
    for (const block of blocks) tokens = block(tokens, context, linear);
    return tf.add(x, linearNhwc(linear, projOut, tf.reshape(tokens, [b, h, wd, channels])));
  };
}

/** Downsample2D: 3×3 conv, stride 2, padding 1 (or, with downsample_padding 0, after padding right and bottom by one). */
export function downsample(w: UnetWeights, path: string, channels: number, padding: number): Block {
  const conv = w.conv(`${path}.conv`, channels, channels, 3, 2, padding);
  return (x) => conv2d(padding === 0 ? tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]) : x, conv);
}

/** Upsample2D: nearest-neighbour to `size` (twice the input unless the skip connection says otherwise), then 3×3 conv. */
export function upsample(w: UnetWeights, path: string, channels: number): (x: tf.Tensor4D, size: readonly [number, number]) => tf.Tensor4D {
  const conv = w.conv(`${path}.conv`, channels, channels, 3, 1, 1);
  // With align_corners and half-pixel centres off, tfjs picks source index floor(dst·in/out), as torch's 'nearest'.
  return (x, size) => conv2d(tf.image.resizeNearestNeighbor(x, [size[0], size[1]]), conv);
}

export { conv2d, type Conv };
