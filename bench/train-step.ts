import * as tf from '@tensorflow/tfjs';
import '../src/worker/backend'; // registers webgpu and wasm, wasm binaries served by the app
import { packStream, trainWindows } from '../src/core/data/packing';
import { withStockWasmMatMul } from '../src/core/kernels/wasm_matmul';
import { FUSED_KERNELS_FLAG } from '../src/core/kernels/webgpu_run';
import { LoraAdapter } from '../src/core/lora';
import { parseModelConfig } from '../src/core/models/config';
import { causalLmLoss } from '../src/core/models/loss';
import { expectedTensors } from '../src/core/models/manifest';
import { buildModel, type CausalLM } from '../src/core/models/model';
import { Trainer, windowExamples } from '../src/core/train';
import { median } from './timing';

/** The shared fixtures' shape: GPT-2, 64 wide, 2 layers, 4 heads, byte vocabulary. */
const TINY_GPT2 = {
  model_type: 'gpt2', vocab_size: 257, n_positions: 128, n_embd: 64, n_layer: 2, n_head: 4,
  activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, tie_word_embeddings: true,
};
const BATCH = 8;
const SEQ_LEN = 64;
const RANK = 8;

export interface TrainStepRow {
  readonly variant: string;
  readonly backend: string;
  readonly tokensPerSecond: number;
  readonly msPerStep: number;
}

/** The fixtures' model with random weights of the right shapes: speed does not depend on the values. */
export function randomTinyGpt2(): CausalLM {
  const cfg = parseModelConfig(TINY_GPT2);
  const weights = new Map<string, tf.Tensor>();
  let seed = 1;
  for (const [name, shape] of expectedTensors(cfg)) {
    const isNorm = /ln_|norm/.test(name);
    weights.set(name, isNorm && name.endsWith('weight') ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.02, 'float32', seed++));
  }
  return buildModel(cfg, weights);
}

type Variant = 'fused' | 'plain' | 'stock-wasm';
const VARIANT_NAMES: Record<Variant, string> = {
  fused: 'LoRA Lab kernels',
  plain: 'plain tfjs composition',
  'stock-wasm': 'plain tfjs composition',
};

async function timeSteps(variant: Variant, steps: number, warmup: number): Promise<TrainStepRow> {
  if (variant === 'stock-wasm') return withStockWasmMatMul(() => timeSteps('plain', steps, warmup)).then((r) => ({ ...r, variant: VARIANT_NAMES[variant] }));
  // The plain composition: every op of the step (LoRA linears, norms, attention, activations, loss) in
  // stock tfjs ops, as the fused ops themselves fall back to when the flag is off.
  tf.env().set(FUSED_KERNELS_FLAG, variant === 'fused');
  try {
    return await timeStepsAsConfigured(variant, steps, warmup);
  } finally {
    tf.env().set(FUSED_KERNELS_FLAG, true);
  }
}

async function timeStepsAsConfigured(variant: Variant, steps: number, warmup: number): Promise<TrainStepRow> {
  const model = randomTinyGpt2();
  const adapter = LoraAdapter.create(model, { rank: RANK, alpha: 2 * RANK, dropout: 0, targetModules: ['c_attn'], useRslora: false }, 1);
  const ids = Array.from({ length: (steps + warmup) * BATCH * SEQ_LEN + 1 }, (_, i) => (i * 31 + 7) % 256);
  const train = trainWindows(packStream([{ ids }], null), SEQ_LEN);
  const linear = adapter.apply({ training: false });
  const stepStarts: number[] = [];
  const trainer = new Trainer({
    variables: adapter.variables(),
    lossFn: (batch) => tf.tidy(() => causalLmLoss(model.forward(batch.inputs, { linear }), batch.targets, batch.mask)),
    train: windowExamples(train),
    options: { batchSize: BATCH, maxSteps: steps + warmup, learningRate: 1e-4, scheduler: 'constant', seed: 1 },
    callbacks: { onStepEnd: () => void stepStarts.push(performance.now()) },
  });
  await trainer.run();
  // Steps after warm-up: pipelines compiled, buffer pools filled.
  const timed = stepStarts.slice(warmup - 1);
  const ms = (timed.at(-1)! - timed[0]!) / (timed.length - 1);
  adapter.dispose();
  model.dispose();
  return { variant: VARIANT_NAMES[variant], backend: tf.getBackend(), msPerStep: ms, tokensPerSecond: (BATCH * SEQ_LEN * 1000) / ms };
}

/**
 * A whole training step (forward, backward, clipping, AdamW) at the fixtures' shape, per backend. The
 * variants take turns, `rounds` times (the first round warms up `warmup` steps, later ones one step,
 * pipelines being compiled by then), and each reports its median round: on a shared machine a change
 * in load then hits both variants alike instead of whichever ran during it.
 */
export async function runTrainStepBench(options: { steps?: number; warmup?: number; rounds?: number; backends?: string[] } = {}): Promise<TrainStepRow[]> {
  const { steps = 5, warmup = 2, rounds = 3, backends = ['webgpu', 'wasm'] } = options;
  tf.env().set('WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD', 0);
  const rows: TrainStepRow[] = [];
  for (const backend of backends) {
    if (!(await tf.setBackend(backend)) || tf.getBackend() !== backend) throw new Error(`the ${backend} backend did not start`);
    // The fused kernels are WebGPU programs; on wasm LoRA Lab's kernel is its BatchMatMul
    // (src/core/kernels/wasm_matmul.ts), and the plain figure takes tfjs's stock one.
    const variants: Variant[] = backend === 'webgpu' ? ['plain', 'fused'] : ['stock-wasm', 'fused'];
    const times = variants.map(() => [] as TrainStepRow[]);
    for (let round = 0; round < rounds; round++) {
      for (const [i, variant] of variants.entries()) times[i]!.push(await timeSteps(variant, steps, round === 0 ? warmup : 1));
    }
    for (const rowsOfVariant of times) {
      const ms = median(rowsOfVariant.map((r) => r.msPerStep));
      rows.push({ ...rowsOfVariant[0]!, msPerStep: ms, tokensPerSecond: (BATCH * SEQ_LEN * 1000) / ms });
    }
  }
  return rows;
}
