import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import { medians } from './timing';
import { activation, activationReference } from '../src/core/kernels/activation';
import { causalAttention, causalAttentionReference, type AttentionShape } from '../src/core/kernels/attention';
import { weightedNll, weightedNllReference } from '../src/core/kernels/cross_entropy';
import { frozenLinear, frozenLinearReference } from '../src/core/kernels/frozen_linear';
import { normalize, normalizeReference } from '../src/core/kernels/norm';
import { FUSED_KERNELS_FLAG } from '../src/core/kernels/webgpu_run';
import { AdamW } from '../src/core/train/adamw';
import { clipByGlobalNorm } from '../src/core/train/clip';

export interface FusedOpRow {
  name: string;
  /** Medians in ms, each run awaited to the data on the CPU. */
  fusedForwardMs: number;
  referenceForwardMs: number;
  fusedTrainMs: number;
  referenceTrainMs: number;
}

/**
 * Each fused op of a training step other than the LoRA linear (bench/kernels.ts has that) against its
 * stock-tfjs reference on webgpu, at the tiny GPT-2's shapes (512 tokens, 64 wide, 4 heads, MLP 256,
 * vocabulary 257): forward, and forward + backward (gradient for the op's input, as in LoRA training
 * where the weights are frozen). Medians of `iterations` after `warmup` runs, in alternation.
 */
export async function runFusedOpsBench(options: { iterations?: number; warmup?: number } = {}): Promise<FusedOpRow[]> {
  const { iterations = 10, warmup = 2 } = options;
  tf.env().set('WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD', 0);
  if (tf.getBackend() !== 'webgpu') await tf.setBackend('webgpu');
  if (tf.getBackend() !== 'webgpu') throw new Error('runFusedOpsBench needs the webgpu backend');
  const rows: FusedOpRow[] = [];

  const bench = async (name: string, x: tf.Tensor, dy: tf.Tensor, fused: (x: tf.Tensor) => tf.Tensor, reference: typeof fused) => {
    const forward = (f: typeof fused) => async () => {
      const y = f(x);
      await y.data();
      y.dispose();
    };
    const train = (f: typeof fused) => async () => {
      const { value, grads } = tf.valueAndGrads((v: tf.Tensor) => f(v))([x], dy);
      await Promise.all([value.data(), grads[0]!.data()]);
      tf.dispose([value, ...grads]);
    };
    const [fusedForwardMs, referenceForwardMs] = await medians(forward(fused), forward(reference), iterations, warmup);
    const [fusedTrainMs, referenceTrainMs] = await medians(train(fused), train(reference), iterations, warmup);
    rows.push({ name, fusedForwardMs, referenceForwardMs, fusedTrainMs, referenceTrainMs });
  };

  const input = (shape: number[], seed: number) => tf.randomNormal(shape, 0, 1, 'float32', seed);
  const x64 = input([512, 64], 1);
  const x256 = input([512, 256], 2);
  const dy64 = input([512, 64], 3);
  const dy256 = input([512, 256], 4);
  const weight = input([64, 256], 5) as tf.Tensor2D;
  const gamma = input([64], 6);
  const beta = input([64], 7);

  const fc = { weight, layout: 'in_out', bias: null } as const;
  await bench('linear 64→256, no LoRA', x64, dy256, (v) => frozenLinear({ ...fc, x: v as tf.Tensor2D }), (v) => frozenLinearReference({ ...fc, x: v as tf.Tensor2D }));
  await bench('LayerNorm [512, 64]', x64, dy64, (v) => normalize(v as tf.Tensor2D, gamma, beta, 1e-5, 'layer'), (v) => normalizeReference(v as tf.Tensor2D, gamma, beta, 1e-5, 'layer'));
  const shape: AttentionShape = { batch: 8, seq: 64, heads: 4, kvHeads: 4, headDim: 16, scale: 0.25, slidingWindow: null };
  const qkv = input([512, 192], 8);
  const dyAttention = input([512, 64], 9);
  await bench('attention 8 × 64, 4 heads', qkv, dyAttention, (v) => causalAttention(v as tf.Tensor2D, shape), (v) => causalAttentionReference(v as tf.Tensor2D, shape));
  tf.dispose([qkv, dyAttention]);
  await bench('GELU (tanh) [512, 256]', x256, dy256, (v) => activation(v, 'gelu_tanh'), (v) => activationReference(v, 'gelu_tanh'));
  tf.dispose([x64, x256, dy64, dy256, weight, gamma, beta]);

  const logits = tf.randomNormal([512, 257], 0, 3, 'float32', 8) as tf.Tensor2D;
  const targets = tf.randomUniform([512], 0, 257, 'int32', 9) as tf.Tensor1D;
  const weights = tf.fill([512], 1 / 512) as tf.Tensor1D;
  const dy = tf.scalar(1);
  await bench(
    'cross-entropy [512, 257]',
    logits,
    dy,
    (v) => weightedNll(v as tf.Tensor2D, targets, weights),
    (v) => weightedNllReference(v as tf.Tensor2D, targets, weights),
  );
  tf.dispose([logits, targets, weights, dy]);
  return rows;
}

/**
 * One optimizer step (global-norm clipping and AdamW, as the Trainer takes it) over the LoRA variables
 * of all-linear r 8 on the tiny GPT-2 (2 layers × 4 projections × A and B), fused kernels on vs off.
 * Medians in ms, alternating.
 */
export interface OptimizerBenchRow {
  readonly variables: number;
  readonly fusedMs: number;
  readonly referenceMs: number;
}

export async function runOptimizerBench(options: { iterations?: number; warmup?: number } = {}): Promise<OptimizerBenchRow> {
  const { iterations = 10, warmup = 2 } = options;
  if (tf.getBackend() !== 'webgpu') await tf.setBackend('webgpu');
  const shapes = [[8, 64], [192, 8], [8, 64], [64, 8], [8, 64], [256, 8], [8, 256], [64, 8]];
  const variables = [...shapes, ...shapes].map((shape, i) => tf.variable(tf.randomNormal(shape, 0, 0.02, 'float32', i + 1)));
  const grads = variables.map((v, i) => tf.randomNormal(v.shape, 0, 1, 'float32', 100 + i));
  const optimizer = new AdamW(variables, { weightDecay: 0.01 });
  const step = (fused: boolean) => async () => {
    tf.env().set(FUSED_KERNELS_FLAG, fused);
    try {
      const { grads: clipped, norm } = clipByGlobalNorm(grads, 1);
      const update = optimizer.prepare(clipped, 1e-3);
      await update.finiteCheck.data();
      update.discard();
      tf.dispose([...clipped, norm]);
    } finally {
      tf.env().set(FUSED_KERNELS_FLAG, true);
    }
  };
  const [fusedMs, referenceMs] = await medians(step(true), step(false), iterations, warmup);
  optimizer.dispose();
  tf.dispose([...variables, ...grads]);
  return { variables: variables.length, fusedMs, referenceMs };
}
