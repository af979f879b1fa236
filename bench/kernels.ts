import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import { loraLinear, loraLinearReference, type LoraLinearArgs } from '../src/core/kernels/lora_linear';
import { medians } from './timing';

export interface KernelBenchShape {
  name: string;
  tokens: number;
  inFeatures: number;
  outFeatures: number;
  rank: number;
}

/** GPT-2 small's attention projections at 512 tokens, and a tiny layer where dispatch overhead dominates. */
export const KERNEL_BENCH_SHAPES: KernelBenchShape[] = [
  { name: 'gpt2 c_attn 768→2304', tokens: 512, inFeatures: 768, outFeatures: 2304, rank: 8 },
  { name: 'gpt2 c_proj 768→768', tokens: 512, inFeatures: 768, outFeatures: 768, rank: 8 },
  { name: 'tiny 64→192', tokens: 512, inFeatures: 64, outFeatures: 192, rank: 8 },
];

export interface KernelBenchOptions {
  shapes?: KernelBenchShape[];
  /** Timed runs per measurement; the median is reported. */
  iterations?: number;
  /** Untimed runs first (pipeline compilation, buffer pool warm-up). */
  warmup?: number;
}

export interface KernelBenchRow {
  shape: KernelBenchShape;
  /** Medians in ms, each run awaited to the data on the CPU. */
  fusedForwardMs: number;
  referenceForwardMs: number;
  fusedTrainMs: number;
  referenceTrainMs: number;
  /** reference / fused: above 1 means the fused kernels are faster. */
  forwardSpeedup: number;
  trainSpeedup: number;
}

export interface KernelBenchResult {
  backend: string;
  adapter: string;
  iterations: number;
  rows: KernelBenchRow[];
}

/**
 * Times loraLinear (fused WebGPU kernels) against loraLinearReference (stock tfjs ops): the forward
 * pass as in evaluation (no dropout), and forward + backward as in training (GPT-2 Conv1D layout, bias,
 * dropout 0.1; gradients for x, A and B). Runs in a page or worker with WebGPU.
 */
export async function runKernelBench(options: KernelBenchOptions = {}): Promise<KernelBenchResult> {
  const { shapes = KERNEL_BENCH_SHAPES, iterations = 10, warmup = 2 } = options;
  if (tf.getBackend() !== 'webgpu') await tf.setBackend('webgpu');
  if (tf.getBackend() !== 'webgpu') throw new Error('runKernelBench needs the webgpu backend');
  const info = (tf.backend() as unknown as { adapterInfo?: { vendor?: string; architecture?: string } }).adapterInfo;

  const rows: KernelBenchRow[] = [];
  for (const shape of shapes) {
    const t = makeInputs(shape);
    const forward = (op: typeof loraLinear) => async () => {
      const y = op({ ...t.args, dropoutMask: null });
      await y.data();
      y.dispose();
    };
    const train = (op: typeof loraLinear) => async () => {
      const grads = tf.grads((x, loraA, loraB) =>
        op({ ...t.args, x: x as tf.Tensor2D, loraA: loraA as tf.Tensor2D, loraB: loraB as tf.Tensor2D }),
      )([t.args.x, t.args.loraA, t.args.loraB], t.dy);
      await Promise.all(grads.map((g) => g.data()));
      tf.dispose(grads);
    };
    const [fusedForwardMs, referenceForwardMs] = await medians(
      forward(loraLinear), forward(loraLinearReference), iterations, warmup,
    );
    const [fusedTrainMs, referenceTrainMs] = await medians(train(loraLinear), train(loraLinearReference), iterations, warmup);
    tf.dispose([t.dy, ...Object.values(t.args).filter((v): v is tf.Tensor => v instanceof tf.Tensor)]);
    rows.push({
      shape,
      fusedForwardMs,
      referenceForwardMs,
      fusedTrainMs,
      referenceTrainMs,
      forwardSpeedup: referenceForwardMs / fusedForwardMs,
      trainSpeedup: referenceTrainMs / fusedTrainMs,
    });
  }
  return { backend: tf.getBackend(), adapter: `${info?.vendor ?? '?'} ${info?.architecture ?? '?'}`, iterations, rows };
}

function makeInputs(shape: KernelBenchShape): { args: LoraLinearArgs; dy: tf.Tensor2D } {
  const { tokens, inFeatures, outFeatures, rank } = shape;
  const u = (dims: number[], seed: number, scale = 1) => tf.randomUniform(dims, -scale, scale, 'float32', seed);
  const dropout = 0.1;
  const dropoutMask = tf.tidy(() => {
    const keep = tf.greaterEqual(tf.randomUniform([tokens, inFeatures], 0, 1, 'float32', 7), dropout);
    return tf.mul(tf.cast(keep, 'float32'), 1 / (1 - dropout));
  }) as tf.Tensor2D;
  return {
    args: {
      x: u([tokens, inFeatures], 1) as tf.Tensor2D,
      weight: u([inFeatures, outFeatures], 2, 0.05) as tf.Tensor2D,
      layout: 'in_out',
      bias: u([outFeatures], 3) as tf.Tensor1D,
      loraA: u([rank, inFeatures], 4, 0.05) as tf.Tensor2D,
      loraB: u([outFeatures, rank], 5, 0.05) as tf.Tensor2D,
      scaling: 2,
      dropoutMask,
    },
    dy: u([tokens, outFeatures], 6) as tf.Tensor2D,
  };
}
