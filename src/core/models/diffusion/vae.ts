import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors';
import { silu as siluAny } from '../ops';
import { componentWeight, configNumber, configNumbers, type DiffusersComponent } from './component';

/**
 * diffusers' AutoencoderKL (the SD 1.x VAE) in tfjs ops: the encoder to the latent distribution's mean and
 * log-variance, and the decoder from latents to pixels. Block counts, widths, layers and groups come from
 * `vae/config.json`; weights are read by diffusers' tensor names.
 *
 * Layouts: pixels are NHWC [batch, height, width, 3] in [-1, 1], as image bytes are laid out (`pixelsFromBytes`);
 * latents are NCHW [batch, latent_channels, height/8, width/8] for SD, as diffusers and our UNet (unet.ts) take
 * them. Inside, everything runs NHWC, tfjs' native convolution layout.
 */

export interface VaeConfig {
  readonly blockOutChannels: readonly number[];
  readonly layersPerBlock: number;
  readonly latentChannels: number;
  readonly groups: number;
  /** Latents the UNet sees are `mean × scalingFactor`; decode divides by it first. */
  readonly scalingFactor: number;
  readonly useQuantConv: boolean;
  readonly usePostQuantConv: boolean;
  readonly midBlockAttention: boolean;
}

export interface LatentDistribution {
  /** NCHW [batch, latent_channels, h/f, w/f], before `scalingFactor`. */
  readonly mean: tf.Tensor4D;
  /** NCHW like `mean`; clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution does. */
  readonly logvar: tf.Tensor4D;
}

export interface Vae {
  readonly config: VaeConfig;
  /** How many times smaller the latents are than the image per side (8 for SD). */
  readonly downscale: number;
  /** `pixels` [batch, height, width, 3] in [-1, 1]. The caller disposes the result. */
  encode(pixels: tf.Tensor4D): LatentDistribution;
  /**
   * Raw NCHW latents (NOT multiplied by the scaling factor: divide the UNet's latents by it first) → NHWC pixels,
   * about [-1, 1]. The caller disposes the result.
   */
  decode(latents: tf.Tensor4D): tf.Tensor4D;
  /** Releases the weights, the component's tensors included (buildVae took them over). */
  dispose(): void;
}

/** diffusers normalises pixels as `img / 127.5 − 1`: bytes [batch, h, w, 3] (0..255) → [-1, 1]. */
export function pixelsFromBytes(bytes: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.sub(tf.div(tf.cast(bytes, 'float32'), 127.5), 1) as tf.Tensor4D);
}

/** The inverse for showing samples: [-1, 1] → 0..255 bytes, clamped and rounded. */
export function bytesFromPixels(pixels: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => tf.cast(tf.round(tf.clipByValue(tf.mul(tf.add(pixels, 1), 127.5), 0, 255)), 'int32') as tf.Tensor4D);
}

const VAE_EPS = 1e-6;

export function vaeConfig(component: DiffusersComponent): VaeConfig {
  const blockOutChannels = configNumbers(component, 'block_out_channels');
  const groups = configNumber(component, 'norm_num_groups', 32);
  for (const c of blockOutChannels) {
    if (c % groups !== 0) {
      throw new UserError('vae/config.json', `block width ${c} is not a multiple of "norm_num_groups" ${groups}.`);
    }
  }
  const flag = (key: string): boolean => component.config[key] !== false;
  return {
    blockOutChannels,
    layersPerBlock: configNumber(component, 'layers_per_block', 1),
    latentChannels: configNumber(component, 'latent_channels', 4),
    groups,
    scalingFactor: configNumber(component, 'scaling_factor', 0.18215),
    useQuantConv: flag('use_quant_conv'),
    usePostQuantConv: flag('use_post_quant_conv'),
    midBlockAttention: flag('mid_block_add_attention'),
  };
}

/** torch.nn.GroupNorm on NHWC: statistics per sample over (H, W, channels of the group), biased variance. */
export function groupNorm(x: tf.Tensor4D, weight: tf.Tensor, bias: tf.Tensor, groups: number, eps: number): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    const grouped = x.reshape([b, h * w, groups, c / groups]);
    const { mean, variance } = tf.moments(grouped, [1, 3], true);
    const normed = tf.mul(tf.sub(grouped, mean), tf.rsqrt(tf.add(variance, eps))).reshape([b, h, w, c]);
    return tf.add(tf.mul(normed, weight), bias) as tf.Tensor4D;
  });
}

/** Nearest-neighbour ×2 upsampling (torch's F.interpolate(scale_factor=2, mode="nearest")) on NHWC. */
export function upsampleNearest2x(x: tf.Tensor4D): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w, c] = x.shape;
    return x
      .reshape([b, h, 1, w, 1, c])
      .tile([1, 1, 2, 1, 2, 1])
      .reshape([b, h * 2, w * 2, c]) as tf.Tensor4D;
  });
}

interface Conv {
  /** tfjs layout [kh, kw, in, out], re-laid out from torch's [out, in, kh, kw]. */
  readonly kernel: tf.Tensor4D;
  readonly bias: tf.Tensor1D;
}
interface Norm {
  readonly weight: tf.Tensor;
  readonly bias: tf.Tensor;
}
interface Resnet {
  readonly norm1: Norm;
  readonly conv1: Conv;
  readonly norm2: Norm;
  readonly conv2: Conv;
  readonly shortcut: Conv | null;
}
/** A torch.nn.Linear: weight [out, in], bias [out]. */
interface Projection {
  readonly weight: tf.Tensor;
  readonly bias: tf.Tensor;
}
interface Attention {
  readonly norm: Norm;
  readonly q: Projection;
  readonly k: Projection;
  readonly v: Projection;
  readonly out: Projection;
}
interface MidBlock {
  readonly resnets: readonly [Resnet, Resnet];
  readonly attention: Attention | null;
}

/**
 * Builds the VAE from a loaded `vae/` component, taking over its tensors as buildUnet does: each conv kernel is
 * re-laid out for tf.conv2d and its PyTorch-layout original released at once, and dispose() releases the rest.
 * A tensor missing, of the wrong shape for config.json, or not part of the VAE it describes is a UserError naming
 * it; the tensors made here are then released, and the component (some of whose kernels are gone) is the
 * caller's to dispose.
 */
export function buildVae(component: DiffusersComponent): Vae {
  const config = vaeConfig(component);
  const { blockOutChannels: widths, groups, layersPerBlock, latentChannels } = config;
  /** Tensors made here (re-laid-out kernels), released on dispose or when building fails. */
  const owned: tf.Tensor[] = [];
  /** Every component tensor read, to find ones the model does not use (another architecture). */
  const readNames = new Set<string>();
  const has = (name: string) => component.weights.has(name);
  const read = (name: string, shape: readonly number[]): tf.Tensor => {
    readNames.add(name);
    return componentWeight(component, name, shape);
  };

  const conv = (name: string, inC: number, outC: number, k: number): Conv => {
    const torchKernel = read(`${name}.weight`, [outC, inC, k, k]);
    const kernel = tf.transpose(torchKernel, [2, 3, 1, 0]) as tf.Tensor4D;
    owned.push(kernel);
    // Released at once, so a real SD VAE never holds its kernels twice.
    torchKernel.dispose();
    return { kernel, bias: read(`${name}.bias`, [outC]) as tf.Tensor1D };
  };
  const norm = (name: string, c: number): Norm => ({ weight: read(`${name}.weight`, [c]), bias: read(`${name}.bias`, [c]) });
  /**
   * A [c, c] attention projection. VAE files saved before diffusers 0.14 (the SD 1.5 release among them) name
   * them query/key/value/proj_attn, which diffusers still reads; some store them as 1×1 convs [c, c, 1, 1],
   * which are the same matrix.
   */
  const projection = (block: string, name: string, legacyName: string, c: number): Projection => {
    const path = has(`${block}.${name}.weight`) || !has(`${block}.${legacyName}.weight`) ? `${block}.${name}` : `${block}.${legacyName}`;
    const raw = component.weights.get(`${path}.weight`);
    if (raw && raw.rank === 4 && raw.shape[2] === 1 && raw.shape[3] === 1) {
      const matrix = read(`${path}.weight`, [c, c, 1, 1]).reshape([c, c]);
      owned.push(matrix);
      return { weight: matrix, bias: read(`${path}.bias`, [c]) };
    }
    return { weight: read(`${path}.weight`, [c, c]), bias: read(`${path}.bias`, [c]) };
  };
  const resnet = (name: string, inC: number, outC: number): Resnet => ({
    norm1: norm(`${name}.norm1`, inC),
    conv1: conv(`${name}.conv1`, inC, outC, 3),
    norm2: norm(`${name}.norm2`, outC),
    conv2: conv(`${name}.conv2`, outC, outC, 3),
    shortcut: inC !== outC || has(`${name}.conv_shortcut.weight`) ? conv(`${name}.conv_shortcut`, inC, outC, 1) : null,
  });
  const midBlock = (name: string, c: number): MidBlock => ({
    resnets: [resnet(`${name}.resnets.0`, c, c), resnet(`${name}.resnets.1`, c, c)],
    attention: config.midBlockAttention
      ? {
          norm: norm(`${name}.attentions.0.group_norm`, c),
          q: projection(`${name}.attentions.0`, 'to_q', 'query', c),
          k: projection(`${name}.attentions.0`, 'to_k', 'key', c),
          v: projection(`${name}.attentions.0`, 'to_v', 'value', c),
          out: projection(`${name}.attentions.0`, 'to_out.0', 'proj_attn', c),
        }
      : null,
  });

  let encoder: {
    convIn: Conv;
    mid: MidBlock;
    normOut: Norm;
    convOut: Conv;
    quant: Conv | null;
  };
  let decoder: {
    postQuant: Conv | null;
    convIn: Conv;
    mid: MidBlock;
    normOut: Norm;
    convOut: Conv;
  };
  let encoderBlocks: { resnets: Resnet[]; downsample: Conv | null }[];
  let decoderBlocks: { resnets: Resnet[]; upsample: Conv | null }[];
  const last = widths[widths.length - 1]!;
  // A missing or misshapen tensor throws part-way: free the kernels re-laid out so far.
  try {
    encoderBlocks = widths.map((outC, i) => {
      const inC = i === 0 ? widths[0]! : widths[i - 1]!;
      return {
        resnets: Array.from({ length: layersPerBlock }, (_, j) => resnet(`encoder.down_blocks.${i}.resnets.${j}`, j === 0 ? inC : outC, outC)),
        downsample: i < widths.length - 1 ? conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, outC, outC, 3) : null,
      };
    });
    const reversed = [...widths].reverse();
    decoderBlocks = reversed.map((outC, i) => {
      const inC = i === 0 ? reversed[0]! : reversed[i - 1]!;
      return {
        resnets: Array.from({ length: layersPerBlock + 1 }, (_, j) => resnet(`decoder.up_blocks.${i}.resnets.${j}`, j === 0 ? inC : outC, outC)),
        upsample: i < reversed.length - 1 ? conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, outC, outC, 3) : null,
      };
    });
    encoder = {
      convIn: conv('encoder.conv_in', 3, widths[0]!, 3),
      mid: midBlock('encoder.mid_block', last),
      normOut: norm('encoder.conv_norm_out', last),
      convOut: conv('encoder.conv_out', last, 2 * latentChannels, 3),
      quant: config.useQuantConv ? conv('quant_conv', 2 * latentChannels, 2 * latentChannels, 1) : null,
    };
    decoder = {
      postQuant: config.usePostQuantConv ? conv('post_quant_conv', latentChannels, latentChannels, 1) : null,
      convIn: conv('decoder.conv_in', latentChannels, last, 3),
      mid: midBlock('decoder.mid_block', last),
      normOut: norm('decoder.conv_norm_out', widths[0]!),
      convOut: conv('decoder.conv_out', widths[0]!, 3, 3),
    };
    const unused = [...component.weights.keys()].filter((name) => !readNames.has(name));
    if (unused.length > 0) {
      throw new UserError(
        'vae/ weights',
        `${unused.length} tensor(s) are not part of the AutoencoderKL that config.json describes (first: "${unused[0]}").`,
        'Use the config.json that came with these weights (an SD 1.x VAE in diffusers layout).',
      );
    }
  } catch (e) {
    tf.dispose(owned);
    throw e;
  }

  const applyConv = (x: tf.Tensor4D, c: Conv, stride: 1 | 2 = 1, pad: number | 'valid' = c.kernel.shape[0] === 3 ? 1 : 0): tf.Tensor4D =>
    tf.add(tf.conv2d(x, c.kernel, stride, pad), c.bias);
  // ops' SiLU: fused on webgpu.
  const silu = (x: tf.Tensor4D): tf.Tensor4D => siluAny(x) as tf.Tensor4D;

  const runResnet = (x: tf.Tensor4D, r: Resnet): tf.Tensor4D => {
    let h = applyConv(silu(groupNorm(x, r.norm1.weight, r.norm1.bias, groups, VAE_EPS)), r.conv1);
    h = applyConv(silu(groupNorm(h, r.norm2.weight, r.norm2.bias, groups, VAE_EPS)), r.conv2);
    return tf.add(r.shortcut ? applyConv(x, r.shortcut) : x, h);
  };
  /** Single-head self-attention over all positions (diffusers' VAE: heads = channels / attention_head_dim = 1). */
  const runAttention = (x: tf.Tensor4D, a: Attention): tf.Tensor4D => {
    const [b, h, w, c] = x.shape;
    const seq = groupNorm(x, a.norm.weight, a.norm.bias, groups, VAE_EPS).reshape([b * h * w, c]) as tf.Tensor2D;
    const project = (t: tf.Tensor2D, p: Projection) => tf.add(tf.matMul(t, p.weight as tf.Tensor2D, false, true), p.bias) as tf.Tensor2D;
    const q = project(seq, a.q).reshape([b, h * w, c]);
    const k = project(seq, a.k).reshape([b, h * w, c]);
    const v = project(seq, a.v).reshape([b, h * w, c]);
    const weights = tf.softmax(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(c)));
    const attended = tf.matMul(weights, v).reshape([b * h * w, c]) as tf.Tensor2D;
    return tf.add(x, project(attended, a.out).reshape([b, h, w, c])) as tf.Tensor4D;
  };
  const runMid = (x: tf.Tensor4D, m: MidBlock): tf.Tensor4D => {
    let h = runResnet(x, m.resnets[0]);
    if (m.attention) h = runAttention(h, m.attention);
    return runResnet(h, m.resnets[1]);
  };

  function encode(pixels: tf.Tensor4D): LatentDistribution {
    if (pixels.rank !== 4 || pixels.shape[3] !== 3) throw new RangeError(`VAE encode: pixels must be [batch, h, w, 3], got [${pixels.shape.join(', ')}]`);
    return tf.tidy(() => {
      let x = applyConv(pixels, encoder.convIn);
      for (const block of encoderBlocks) {
        for (const r of block.resnets) x = runResnet(x, r);
        // diffusers' VAE downsampler: pad right and bottom by one, then a 3×3 stride-2 conv without padding.
        if (block.downsample) x = applyConv(tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]]), block.downsample, 2, 'valid');
      }
      x = runMid(x, encoder.mid);
      x = applyConv(silu(groupNorm(x, encoder.normOut.weight, encoder.normOut.bias, groups, VAE_EPS)), encoder.convOut);
      if (encoder.quant) x = applyConv(x, encoder.quant);
      const [mean, logvar] = tf.split(tf.transpose(x, [0, 3, 1, 2]), 2, 1) as [tf.Tensor4D, tf.Tensor4D];
      return { mean, logvar: tf.clipByValue(logvar, -30, 20) as tf.Tensor4D };
    });
  }

  function decode(latents: tf.Tensor4D): tf.Tensor4D {
    if (latents.rank !== 4 || latents.shape[1] !== latentChannels) {
      throw new RangeError(`VAE decode: latents must be NCHW [batch, ${latentChannels}, h, w], got [${latents.shape.join(', ')}]`);
    }
    return tf.tidy(() => {
      const nhwc = tf.transpose(latents, [0, 2, 3, 1]) as tf.Tensor4D;
      let x = decoder.postQuant ? applyConv(nhwc, decoder.postQuant) : nhwc;
      x = applyConv(x, decoder.convIn);
      x = runMid(x, decoder.mid);
      for (const block of decoderBlocks) {
        for (const r of block.resnets) x = runResnet(x, r);
        if (block.upsample) x = applyConv(upsampleNearest2x(x), block.upsample);
      }
      x = silu(groupNorm(x, decoder.normOut.weight, decoder.normOut.bias, groups, VAE_EPS));
      return applyConv(x, decoder.convOut);
    });
  }

  return {
    config,
    downscale: 2 ** (widths.length - 1),
    encode,
    decode,
    dispose() {
      tf.dispose(owned);
      for (const t of component.weights.values()) if (!t.isDisposed) t.dispose();
    },
  };
}
