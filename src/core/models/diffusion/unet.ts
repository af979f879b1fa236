import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors.js';
import { runMultiInputBlock } from '../checkpointing.js';
import { applyLinear, type Linear, type LinearApply } from '../linear.js';
import { silu } from '../ops.js';
import type { WeightPlacement } from '../../weights/holding.js';
import type { DiffusersComponent } from './component.js';
import { conv2d, downsample, groupNorm, resnetBlock, transformer2d, upsample, UnetWeights, type Block, type BlockInputs } from './unet-blocks.js';
import { parseUnetConfig, type UnetConfig } from './unet-config.js';

/**
 * diffusers' UNet2DConditionModel (the Stable Diffusion 1.x/2.x noise predictor) in tfjs ops, built from a
 * diffusers `unet/` folder: its config.json decides the shape, the weights are read by diffusers' tensor names.
 */
export interface Unet {
  readonly config: UnetConfig;
  /**
   * Every projection LoRA may target, in module order, under its diffusers module path (time embedding,
   * ResNet time projections, and in each Transformer2DModel proj_in, to_q/to_k/to_v/to_out.0 of attn1 and attn2,
   * ff.net.0.proj, ff.net.2, proj_out).
   */
  readonly linears: readonly Linear[];
  /**
   * The predicted noise (or v) [batch, out_channels, h, w] for latents `sample` [batch, in_channels, h, w] (NCHW, as
   * diffusers), integer `timesteps` (one per sample), and the text encoder's last hidden states
   * `context` [batch, tokens, cross_attention_dim]. Every projection goes through `opts.linear` (a LoRA's apply);
   * intermediates are released, only the result needs disposing.
   */
  forward(sample: tf.Tensor4D, timesteps: readonly number[], context: tf.Tensor3D, opts?: UnetForwardOptions): tf.Tensor4D;
  /** The sinusoidal timestep features [batch, block_out_channels[0]] the time embedding starts from (`time_proj`). */
  timeProjection(timesteps: readonly number[]): tf.Tensor2D;
  /** Releases the weights (the component's tensors included: buildUnet took them over). */
  dispose(): void;
}

export interface UnetForwardOptions {
  /** How every projection is computed: a LoRA's apply, or the plain projection (the default). */
  readonly linear?: LinearApply;
  /**
   * Recompute each ResNet and Transformer2D block in the backward pass instead of keeping its activations
   * (diffusers' enable_gradient_checkpointing, kohya's --gradient_checkpointing): the tape then holds each
   * block's inputs only, for about one more forward pass of compute. With a LoRA, `linear` must be the
   * adapter's own apply (a CheckpointableApply, see ../checkpointing.ts), whose dropout draws are replayed.
   */
  readonly gradientCheckpointing?: boolean;
}

/**
 * diffusers' get_timestep_embedding: half = dim/2 frequencies exp(−ln(10000)·i/(half − freq_shift)), features
 * [sin(t·f), cos(t·f)], swapped to [cos, sin] by flip_sin_to_cos, zero-padded for an odd dim. Computed on the host
 * in float32 steps as PyTorch does (Math.fround after each operation), so that even t near 1000 matches its
 * rounding: a float64 t·f differs from torch's float32 one by up to ~6e-5, close to the 1e-4 exactness target.
 */
export function timestepFeatures(timesteps: readonly number[], dim: number, flipSinToCos: boolean, freqShift: number): Float32Array {
  const half = Math.floor(dim / 2);
  const f = Math.fround;
  const freqs = Array.from({ length: half }, (_, i) => f(Math.exp(f(f(-Math.log(10000) * i) / (half - freqShift)))));
  const out = new Float32Array(timesteps.length * dim);
  timesteps.forEach((t, b) => {
    for (let i = 0; i < half; i++) {
      const arg = f(f(t) * freqs[i]!);
      const [first, second] = flipSinToCos ? [Math.cos(arg), Math.sin(arg)] : [Math.sin(arg), Math.cos(arg)];
      out[b * dim + i] = first;
      out[b * dim + half + i] = second;
    }
  });
  return out;
}

/**
 * A ResNet or Transformer2D block as the forward pass runs it, checkpointed or not: its function, every
 * projection it runs (a checkpoint routes their LoRA tensors through its op), and which of the forward's
 * tensors besides the activations it reads (the time embedding or the text states), which a checkpoint keeps
 * and differentiates.
 */
interface UnetBlock {
  readonly run: Block;
  readonly linears: readonly Linear[];
  readonly reads: 'temb' | 'context';
}

interface UpBlock {
  readonly layers: readonly { readonly resnet: UnetBlock; readonly attention: UnetBlock | null }[];
  readonly upsample: ((x: tf.Tensor4D, size: readonly [number, number]) => tf.Tensor4D) | null;
}

interface DownBlock {
  readonly layers: readonly { readonly resnet: UnetBlock; readonly attention: UnetBlock | null }[];
  readonly downsample: Block | null;
}

/**
 * Builds the UNet from a loaded `unet/` component. It takes over the component's tensors (dispose() releases them):
 * each conv kernel ([kh, kw, in, out] for tf.conv2d) and projection weight ([in, out]) is re-laid out here and its
 * PyTorch-layout original released at once, so a real SD UNet never holds its weights twice. A tensor missing, of the wrong shape for config.json, or not part of the
 * UNet it describes is a UserError naming it; the tensors made here are then released, and the component (some of
 * whose kernels are gone) is the caller's to dispose.
 *
 * `opts.placement` (weights/hold.ts placementFor(base_quantization)) holds the projection weights as a language
 * model's frozen matrices are held: packed F16/BF16 words or int8/NF4 codes that the webgpu kernels decode as they
 * read them, or, unpacked, float32 of the quantized values. The default holds everything as float32; convolutions
 * are float32 whatever the placement.
 */
export function buildUnet(component: DiffusersComponent, opts?: { readonly placement?: WeightPlacement }): Unet {
  const cfg = parseUnetConfig(component.config);
  const w = new UnetWeights(component, opts?.placement);
  try {
    return assemble(cfg, w, component);
  } catch (e) {
    tf.dispose(w.derived);
    throw e;
  }
}

function assemble(cfg: UnetConfig, w: UnetWeights, component: DiffusersComponent): Unet {
  const channels = cfg.blockOutChannels;
  const last = channels.length - 1;
  const groups = cfg.normGroups;
  // The projections a builder reads are the ones it appends to w.linears.
  const block = (reads: UnetBlock['reads'], build: () => Block): UnetBlock => {
    const first = w.linears.length;
    const run = build();
    return { run, linears: w.linears.slice(first), reads };
  };
  const resnet = (path: string, inChannels: number, outChannels: number, outputScale = cfg.resnetOutScaleFactor) =>
    block('temb', () => resnetBlock(w, path, { inChannels, outChannels, timeEmbedDim: cfg.timeEmbedDim, groups, eps: cfg.normEps, outputScale }));
  const transformer = (path: string, ch: number, heads: number, layers: number) =>
    block('context', () =>
      transformer2d(w, path, { channels: ch, heads, layers, contextDim: cfg.crossAttentionDim, groups, linearProjection: cfg.useLinearProjection }),
    );

  const convIn = w.conv('conv_in', cfg.inChannels, channels[0]!, cfg.convInKernel, 1, (cfg.convInKernel - 1) / 2);
  const time1 = w.linear('time_embedding.linear_1', cfg.timeProjDim, cfg.timeEmbedDim, { bias: true });
  const time2 = w.linear('time_embedding.linear_2', cfg.timeEmbedDim, cfg.timeEmbedDim, { bias: true });

  // Down blocks: each level's ResNets (+ Transformer2D for CrossAttn blocks), then a stride-2 conv except at the last.
  const down: DownBlock[] = cfg.downBlockTypes.map((type, i) => {
    const out = channels[i]!;
    const input = i === 0 ? channels[0]! : channels[i - 1]!;
    const path = `down_blocks.${i}`;
    return {
      layers: Array.from({ length: cfg.layersPerBlock[i]! }, (_, j) => ({
        resnet: resnet(`${path}.resnets.${j}`, j === 0 ? input : out, out),
        attention:
          type === 'CrossAttnDownBlock2D'
            ? transformer(`${path}.attentions.${j}`, out, cfg.headsPerBlock[i]!, cfg.transformerLayersPerBlock[i]!)
            : null,
      })),
      downsample: i < last ? downsample(w, `${path}.downsamplers.0`, out, cfg.downsamplePadding) : null,
    };
  });

  // UNetMidBlock2DCrossAttn: ResNet, then (Transformer2D, ResNet) once.
  const midChannels = channels[last]!;
  const midFirst = resnet('mid_block.resnets.0', midChannels, midChannels, cfg.midBlockScaleFactor);
  const midAttention = transformer('mid_block.attentions.0', midChannels, cfg.headsPerBlock[last]!, cfg.transformerLayersPerBlock[last]!);
  const midSecond = resnet('mid_block.resnets.1', midChannels, midChannels, cfg.midBlockScaleFactor);

  // Up blocks, lowest resolution first: layers_per_block + 1 ResNets, each taking one skip connection (concatenated
  // after the running activations), channel counts as diffusers' UNet2DConditionModel.__init__ derives them.
  const reversed = [...channels].reverse();
  const reversedHeads = [...cfg.headsPerBlock].reverse();
  const reversedLayers = [...cfg.layersPerBlock].reverse();
  const up: UpBlock[] = cfg.upBlockTypes.map((type, i) => {
    const prevOut = reversed[Math.max(i - 1, 0)]!;
    const out = reversed[i]!;
    const input = reversed[Math.min(i + 1, last)]!;
    const n = reversedLayers[i]! + 1;
    const path = `up_blocks.${i}`;
    return {
      layers: Array.from({ length: n }, (_, j) => {
        const skip = j === n - 1 ? input : out;
        const resnetIn = j === 0 ? prevOut : out;
        return {
          resnet: resnet(`${path}.resnets.${j}`, resnetIn + skip, out),
          attention: type === 'CrossAttnUpBlock2D' ? transformer(`${path}.attentions.${j}`, out, reversedHeads[i]!, cfg.upTransformerLayers[i]!) : null,
        };
      }),
      upsample: i < last ? upsample(w, `${path}.upsamplers.0`, out) : null,
    };
  });

  const normOut = w.groupNorm('conv_norm_out', channels[0]!, groups, cfg.normEps);
  const convOut = w.conv('conv_out', channels[0]!, cfg.outChannels, cfg.convOutKernel, 1, (cfg.convOutKernel - 1) / 2);

  // Every tensor of the component must be one the model reads: extra ones mean another architecture (or options
  // this config does not declare), which would otherwise be silently ignored.
  const unused = [...component.weights.keys()].filter((k) => !w.readNames.has(k));
  if (unused.length > 0) {
    throw new UserError(
      'unet/ weights',
      `tensor "${unused[0]}"${unused.length > 1 ? ` (and ${unused.length - 1} more)` : ''} is not part of the UNet that unet/config.json describes.`,
      'Use the config.json that came with these weights.',
    );
  }

  const timeProjection = (timesteps: readonly number[]): tf.Tensor2D =>
    tf.tensor2d(timestepFeatures(timesteps, cfg.timeProjDim, cfg.flipSinToCos, cfg.freqShift), [timesteps.length, cfg.timeProjDim]);

  let disposed = false;
  const forward = (sample: tf.Tensor4D, timesteps: readonly number[], context: tf.Tensor3D, linear: LinearApply, checkpointing: boolean): tf.Tensor4D => {
    if (disposed) throw new Error('Unet.forward() called after dispose()');
    const [batch, inChannels] = sample.shape;
    if (inChannels !== cfg.inChannels) throw new Error(`Unet.forward: sample has ${inChannels} channels, the UNet takes ${cfg.inChannels}`);
    if (timesteps.length !== batch) throw new Error(`Unet.forward: ${timesteps.length} timesteps for a batch of ${batch}`);
    if (context.shape[0] !== batch || context.shape[2] !== cfg.crossAttentionDim) {
      throw new Error(`Unet.forward: context [${context.shape.join(', ')}] does not fit a batch of ${batch} and cross_attention_dim ${cfg.crossAttentionDim}`);
    }
    const temb = linear(time2, silu(linear(time1, timeProjection(timesteps))) as tf.Tensor2D);
    const inputs: BlockInputs = { linear, temb, context };
    // Each block gets the activations and the one other tensor it reads as the inputs of a checkpoint, so that
    // their gradients (a LoRA on the time embedding or the text encoder trains through them) leave its op.
    const step = (b: UnetBlock, x: tf.Tensor4D): tf.Tensor4D => {
      const withExtra = (extra: tf.Tensor, apply: LinearApply): BlockInputs =>
        b.reads === 'temb' ? { linear: apply, temb: extra as tf.Tensor2D, context } : { linear: apply, temb, context: extra as tf.Tensor3D };
      return runMultiInputBlock(([h, extra], apply) => b.run(h as tf.Tensor4D, withExtra(extra!, apply)), [x, b.reads === 'temb' ? temb : context], {
        apply: linear,
        linears: b.linears,
        checkpointing,
      });
    };

    let x = tf.transpose(sample, [0, 2, 3, 1]) as tf.Tensor4D;
    if (cfg.centerInputSample) x = tf.sub(tf.mul(x, 2), 1) as tf.Tensor4D;
    x = conv2d(x, convIn);
    const skips: tf.Tensor4D[] = [x];
    for (const block of down) {
      for (const { resnet: r, attention } of block.layers) {
        x = step(r, x);
        if (attention) x = step(attention, x);
        skips.push(x);
      }
      if (block.downsample) {
        x = block.downsample(x, inputs);
        skips.push(x);
      }
    }
    x = step(midSecond, step(midAttention, step(midFirst, x)));
    for (const block of up) {
      for (const { resnet: r, attention } of block.layers) {
        const skip = skips.pop()!;
        x = step(r, tf.concat([x, skip], 3));
        if (attention) x = step(attention, x);
      }
      if (block.upsample) {
        // The next skip's size: twice this one, unless an odd latent size was rounded up on the way down.
        const next = skips[skips.length - 1]!;
        x = block.upsample(x, [next.shape[1], next.shape[2]]);
      }
    }
    x = conv2d(silu(groupNorm(x, normOut)) as tf.Tensor4D, convOut);
    return tf.transpose(x, [0, 3, 1, 2]);
  };

  return {
    config: cfg,
    linears: w.linears,
    forward: (sample, timesteps, context, opts) =>
      tf.tidy(() => forward(sample, timesteps, context, opts?.linear ?? applyLinear, opts?.gradientCheckpointing ?? false)),
    timeProjection,
    dispose() {
      if (disposed) return;
      disposed = true;
      tf.dispose(w.derived);
      for (const t of component.weights.values()) if (!t.isDisposed) t.dispose();
    },
  };
}
