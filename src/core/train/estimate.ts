import type { Gpt2Config, LlamaConfig, ModelConfig } from '../models/config.js';
import { expectedTensors } from '../models/manifest.js';

/**
 * What a LoRA run will need, worked out from the settings alone before anything is loaded, so the
 * UI can show it (and warn) before a run starts. Pure arithmetic: no tfjs, no DOM.
 *
 * Every tensor is float32 on the device (the loader converts f16/bf16 checkpoints), so bytes are
 * 4 × elements throughout.
 */

const F32 = 4;

/** Above this share of the device's memory a run is flagged: the estimate is rough, and the browser and OS need some too. */
const MEMORY_HIGH_FRACTION = 0.8;
/** lora_rank is worth naming in a memory warning only when the adapter and its optimizer state are a real share of it. */
const ADAPTER_SHARE_WORTH_NAMING = 0.25;

export type EstimateWarningCode = 'buffer_too_large' | 'memory_high' | 'seq_len_too_long' | 'no_windows';

export interface EstimateWarning {
  readonly code: EstimateWarningCode;
  /** Plain words, ending with what to change (naming config keys such as batch_size, seq_len, lora_rank). */
  readonly message: string;
}

export interface RunEstimate {
  /** Σ over targeted projections of r·(in + out): A is [r, in], B is [out, r]. */
  readonly trainableParameters: number;
  /** Distinct base-model parameters (a tied output head counted once, as it is one tensor). */
  readonly baseParameters: number;
  readonly memory: {
    /** Base weights, float32 on the device. */
    readonly weightsBytes: number;
    /** LoRA A and B, float32. */
    readonly loraBytes: number;
    /** AdamW's first and second moments (m and v) for every LoRA parameter, float32. */
    readonly optimizerBytes: number;
    /** Peak of one micro-batch's forward + backward at batch_size × seq_len; see `activationFloats`. */
    readonly activationsBytes: number;
    readonly totalBytes: number;
  };
  /** Input tokens one epoch feeds the model: windows × seq_len (what the trainer's tokens/s counts). */
  readonly tokensPerEpoch: number;
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  /** The largest single tensor the run needs, weights included: what must fit the adapter's per-buffer limits. */
  readonly largestBufferBytes: number;
  /** What that tensor is, in words with its shape, e.g. "logits [batch·seq_len, vocab]". */
  readonly largestBufferName: string;
  readonly warnings: readonly EstimateWarning[];
  /** Training time from a measured throughput, evaluation excluded; null without one (or without any window). */
  readonly secondsEstimate: number | null;
}

export interface RunEstimateInput {
  readonly model: ModelConfig;
  /** The projections LoRA will wrap (after target_modules is resolved). */
  readonly targets: readonly { readonly inFeatures: number; readonly outFeatures: number }[];
  readonly rank: number;
  readonly batchSize: number;
  readonly gradAccumSteps: number;
  readonly seqLen: number;
  readonly epochs: number;
  readonly maxSteps: number;
  /** Tokens in the packed training stream (documents joined with eos). */
  readonly trainTokens: number;
  /** The WebGPU adapter's limits; null or absent on wasm, where no per-buffer limit is checked. */
  readonly limits?: { readonly maxBufferSize: number; readonly maxStorageBufferBindingSize: number } | null;
  /**
   * The run's ops take LoRA Lab's fused WebGPU kernels (training on webgpu): no [seq, seq] attention
   * tensors, and one tensor per norm, activation and loss where stock tfjs ops make several. Default
   * false: the stock-op composition that the wasm backend runs.
   */
  readonly fusedKernels?: boolean;
  /** Memory the run may use, if the caller knows it; enables the memory_high warning. */
  readonly deviceMemoryBytes?: number | null;
  /** A measured training throughput (input tokens per second), e.g. from a previous run on this device. */
  readonly tokensPerSecond?: number | null;
}

export function estimateRun(input: RunEstimateInput): RunEstimate {
  checkInput(input);
  const { model, targets, rank, batchSize, seqLen } = input;
  const fused = input.fusedKernels ?? false;

  const trainableParameters = targets.reduce((n, t) => n + rank * (t.inFeatures + t.outFeatures), 0);
  const weightShapes = [...expectedTensors(model)];
  const baseParameters = weightShapes.reduce((n, [, shape]) => n + elements(shape), 0);

  const steps = stepCounts(input);

  const weightsBytes = baseParameters * F32;
  const loraBytes = trainableParameters * F32;
  const optimizerBytes = 2 * trainableParameters * F32;
  const activationsBytes = activationBytes(model, targets, rank, batchSize, seqLen, trainableParameters, fused);
  const totalBytes = weightsBytes + loraBytes + optimizerBytes + activationsBytes;

  const buffers = [...weightBuffers(model, weightShapes), ...activationBuffers(model, batchSize, seqLen, fused)];
  const largest = buffers.reduce((a, b) => (b.bytes > a.bytes ? b : a));

  const warnings: EstimateWarning[] = [];
  if (steps.windows === 0) warnings.push(noWindowsWarning(input.trainTokens, seqLen));
  if (seqLen > model.maxPositions) {
    warnings.push({
      code: 'seq_len_too_long',
      message:
        `seq_len ${seqLen} is longer than this model's ${model.maxPositions} positions, so the model cannot read ` +
        `windows that long. Set seq_len to ${model.maxPositions} or less.`,
    });
  }
  if (input.limits) warnings.push(...bufferWarnings(model, batchSize, seqLen, fused, buffers, input.limits));
  if (input.deviceMemoryBytes != null && input.deviceMemoryBytes > 0 && totalBytes > MEMORY_HIGH_FRACTION * input.deviceMemoryBytes) {
    warnings.push(
      memoryWarning(
        { weightsBytes, loraBytes, optimizerBytes, activationsBytes, totalBytes },
        input.deviceMemoryBytes,
        batchSize,
        seqLen,
      ),
    );
  }

  const tps = input.tokensPerSecond;
  const secondsEstimate =
    tps != null && Number.isFinite(tps) && tps > 0 && steps.windows > 0 ? steps.tokensTotal / tps : null;

  return {
    trainableParameters,
    baseParameters,
    memory: { weightsBytes, loraBytes, optimizerBytes, activationsBytes, totalBytes },
    tokensPerEpoch: steps.windows * seqLen,
    stepsPerEpoch: steps.stepsPerEpoch,
    totalSteps: steps.totalSteps,
    largestBufferBytes: largest.bytes,
    largestBufferName: largest.name,
    warnings,
    secondsEstimate,
  };
}

function checkInput(i: RunEstimateInput): void {
  const whole = (name: string, v: number, min: number): void => {
    if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`estimateRun: ${name} must be an integer ≥ ${min}, got ${v}`);
  };
  whole('rank', i.rank, 1);
  whole('batchSize', i.batchSize, 1);
  whole('gradAccumSteps', i.gradAccumSteps, 1);
  whole('seqLen', i.seqLen, 1);
  whole('maxSteps', i.maxSteps, 0);
  whole('trainTokens', i.trainTokens, 0);
  if (!(i.epochs >= 0) || !Number.isFinite(i.epochs)) throw new RangeError(`estimateRun: epochs must be finite and ≥ 0, got ${i.epochs}`);
  for (const t of i.targets) {
    whole('target inFeatures', t.inFeatures, 1);
    whole('target outFeatures', t.outFeatures, 1);
  }
}

const elements = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

// ─── Steps ────────────────────────────────────────────────────────────────────────────────────────

/**
 * The counts the Trainer itself works with (trainer.ts, packing.ts), restated here so the estimate
 * needs no windows in hand:
 *   windows         = floor((trainTokens − 1) / seqLen) when trainTokens > seqLen, else 0
 *                     (a window reads seqLen + 1 tokens and windows step by seqLen);
 *   micro-batches   = ceil(windows / batchSize)          (the last partial batch is kept);
 *   stepsPerEpoch   = ceil(micro-batches / gradAccum)    (the last step averages what is left);
 *   totalSteps      = maxSteps when > 0, else ceil(epochs · stepsPerEpoch).
 * tokensTotal is the input tokens those steps feed the model: every window of each whole epoch,
 * then batch·accum windows per leftover step, since only an epoch's last step can be short and
 * the leftover steps are fewer than an epoch's.
 */
function stepCounts(i: RunEstimateInput): { windows: number; stepsPerEpoch: number; totalSteps: number; tokensTotal: number } {
  const windows = i.trainTokens > i.seqLen ? Math.floor((i.trainTokens - 1) / i.seqLen) : 0;
  if (windows === 0) return { windows, stepsPerEpoch: 0, totalSteps: 0, tokensTotal: 0 };
  const micro = Math.ceil(windows / i.batchSize);
  const stepsPerEpoch = Math.ceil(micro / i.gradAccumSteps);
  const totalSteps = i.maxSteps > 0 ? i.maxSteps : Math.ceil(i.epochs * stepsPerEpoch);
  const fullEpochs = Math.floor(totalSteps / stepsPerEpoch);
  const extraSteps = totalSteps - fullEpochs * stepsPerEpoch;
  const windowsSeen = fullEpochs * windows + extraSteps * i.batchSize * i.gradAccumSteps;
  return { windows, stepsPerEpoch, totalSteps, tokensTotal: windowsSeen * i.seqLen };
}

// ─── Activations ──────────────────────────────────────────────────────────────────────────────────

/**
 * Peak device memory of one training micro-batch beyond the weights, the adapter and AdamW's state.
 *
 * Why the peak is about twice the forward pass: tfjs has no activation checkpointing.
 * tf.variableGrads runs the forward inside a tidy that keeps every tensor some op's gradient saved
 * (nearly all of them), then walks the tape backwards keeping the gradient of every tensor between
 * the LoRA variables and the loss in one map; the saved tensors and all those gradients are
 * released together only when the backward pass ends. So at its end roughly every intermediate
 * of the forward is alive twice: its value and its gradient (`F` below, counted once each).
 *
 *   peak = F + max(F + 2·M, L·T·V) + 2·P
 *
 *   F      elements of every tensor the forward creates (see forwardFloats: per layer the hidden
 *          states, norms, q/k/v and their head layouts, attention scores, masked scores and probs
 *          [batch, heads, seq, seq], the MLP intermediate and its activation, the LoRA branch;
 *          then the final norm, the logits [tokens, vocab], inputs and per-token loss values).
 *   2·M    the temporaries of one gradient function while it runs (softmax's backward makes two
 *          tensors the size of its input), M being the largest intermediate.
 *   L·T·V  the loss gradient, computed first, when only the forward is alive: with stock ops (L = 5)
 *          softmax, one-hot, its float copy, the difference and the scaled result, all [tokens, vocab];
 *          with the fused kernels (L = 1) the one gradient the cross-entropy kernel writes.
 *   2·P    the LoRA gradients of this micro-batch and the running sum over gradient accumulation.
 *
 * It is an upper-ish bound: a few forward tensors are saved by no one and freed early, and tensors
 * before the first LoRA target get no gradient. A Node check against tfjs's cpu backend
 * (tests/unit/estimate.test.ts) finds the stock-op count 3–21% above the measured peak; a browser
 * check on WebGPU (tests/browser/estimate.test.ts) does the same for the fused-kernel count. Not counted: lora_dropout's
 * mask and masked input ([tokens, in] each per target), and tfjs's WebGPU buffer pool, which keeps
 * freed buffers for reuse, so the browser may report more GPU memory in use than is live.
 * The optimizer step runs after the activations are freed and needs about 5·P (gradients, clipped
 * gradients, new parameters and moments), counted instead when that is larger.
 */
function activationBytes(
  model: ModelConfig,
  targets: RunEstimateInput['targets'],
  rank: number,
  batch: number,
  seq: number,
  loraParams: number,
  fused: boolean,
): number {
  const T = batch * seq;
  const F = forwardFloats(model, targets, rank, batch, seq, fused);
  const M = Math.max(...activationBuffers(model, batch, seq, fused).map((b) => b.bytes / F32));
  const lossGradients = fused ? 1 : 5;
  const backwardPeak = F + Math.max(F + 2 * M, lossGradients * T * model.vocabSize) + 2 * loraParams;
  return Math.max(backwardPeak, 5 * loraParams) * F32;
}

/** Elementwise ops per element of the MLP intermediate for each GPT-2 activation, as ops.ts writes them. */
const GPT2_ACTIVATION_OPS: Readonly<Record<Gpt2Config['activation'], number>> = {
  gelu_new: 9, // x², x³, ·0.044715, +x, ·√(2/π), tanh, +1, x·0.5, product
  gelu: 5, // x·√½, erf, +1, x·0.5, product
  relu: 1,
  silu: 2, // sigmoid, product
};

/**
 * Elements of every tensor one forward pass creates, loss included, at batch × seq (T tokens).
 * Reshapes share their input's buffer and are not counted; transposes, slices and concats copy and are.
 * [T, 1] row statistics of the norms are counted too, though they hardly matter.
 */
function forwardFloats(
  model: ModelConfig,
  targets: RunEstimateInput['targets'],
  rank: number,
  batch: number,
  seq: number,
  fused: boolean,
): number {
  const T = batch * seq;
  // The LoRA branch per target, the base projection itself being counted with the model. Stock ops:
  // x·Aᵀ and its scaled copy [T, r], (x·Aᵀ)·Bᵀ and its sum with the base output [T, out]. Fused: only
  // x·Aᵀ [T, r], the term being added in the base matmul's epilogue.
  const loraBranch = targets.reduce((n, t) => n + (fused ? T * rank : 2 * T * rank + 2 * T * t.outFeatures), 0);
  // The batch's ids, targets and mask, and the loss's per-token values (flat targets, weights,
  // row max, log-sum-exp, picked logit, losses): small next to the rest.
  const inputsAndLoss = 10 * T;
  const body = model.arch === 'gpt2' ? gpt2Floats(model, batch, seq, fused) : llamaFloats(model, batch, seq, fused);
  return body + loraBranch + inputsAndLoss + T * model.vocabSize /* logits */;
}

function gpt2Floats(c: Gpt2Config, batch: number, seq: number, fused: boolean): number {
  const T = batch * seq;
  const H = c.hiddenSize;
  const embeddings = T * H /* wte rows */ + seq * H /* wpe rows */ + T * H; /* their sum */
  if (fused) {
    // Each projection writes one [T, out] with its bias added in the kernel; each norm, the activation
    // and the attention write one tensor (attention needs no mask and keeps no [seq, seq] scores).
    const perLayer =
      T * H + // ln_1
      3 * T * H + // c_attn [T, 3H], which attention reads as it is
      T * H + // attention
      T * H + // attn c_proj
      T * H + // ln_2
      2 * T * c.intermediateSize + // c_fc, activation
      T * H + // mlp c_proj
      2 * T * H; // two residual adds
    return embeddings + c.numLayers * perLayer + T * H /* ln_f */;
  }
  const scores = batch * c.numHeads * seq * seq;
  // layerNorm: x − mean, its square, ·rsqrt, ·weight, +bias → 5 [T, H] (+ 4 [T, 1] statistics).
  const norm = 5 * T * H + 4 * T;
  const perLayer =
    2 * norm +
    6 * T * H + // c_attn: x·W [T, 3H] and +bias
    3 * T * H + // split into q, k, v
    3 * T * H + // each transposed to [batch, heads, seq, headDim]
    3 * T * H + // q·scale, probs·v, transposed back
    3 * scores + // scores, scores + mask, softmax
    2 * T * H + // attn c_proj and +bias
    2 * T * H + // mlp c_proj and +bias
    2 * T * H + // two residual adds
    (2 + GPT2_ACTIVATION_OPS[c.activation]) * T * c.intermediateSize; // c_fc, +bias, activation
  const mask = 5 * seq * seq; // distance, comparison, zeros, fill, where
  return embeddings + mask + c.numLayers * perLayer + norm /* ln_f */;
}

function llamaFloats(c: LlamaConfig, batch: number, seq: number, fused: boolean): number {
  const T = batch * seq;
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  // RoPE on a [T, d] tensor: two halves, −x₂, their concat, ·cos, ·sin, the sum → 5.5 × T·d.
  const rope = (d: number): number => 5.5 * T * d;
  const embeddings = T * H + 2 * seq * c.headDim; /* cos and sin tables */
  if (fused) {
    // Projections write one [T, out] with any bias added in the kernel; RoPE is stock ops either way.
    const perLayer =
      T * H + // input norm
      T * qDim + rope(qDim) + // q_proj, rotated
      T * kvDim + rope(kvDim) + // k_proj, rotated
      T * kvDim + // v_proj
      T * (qDim + 2 * kvDim) + // q, k and v concatenated for attention
      T * qDim + // attention
      T * H + // o_proj
      T * H + // post-attention norm
      4 * T * I + // gate, up, silu(gate), silu·up
      T * H + // down_proj
      2 * T * H; // two residual adds
    return embeddings + c.numLayers * perLayer + T * H /* final norm */;
  }
  // Grouped-query attention stacks a kv head's query heads along the sequence, so the scores have
  // batch · heads · seq · seq elements whatever the kv head count.
  const scores = batch * c.numHeads * seq * seq;
  // RMSNorm: x², ·rsqrt, ·weight → 3 [T, H] (+ 3 [T, 1]).
  const norm = 3 * T * H + 3 * T;
  const perLayer =
    2 * norm +
    T * qDim + T * qDim + rope(qDim) + // q_proj, to heads, rotated
    T * kvDim + T * kvDim + rope(kvDim) + // k_proj, to heads, rotated
    T * kvDim + T * kvDim + // v_proj, to heads
    2 * T * (qDim + 2 * kvDim) + // q, k and v concatenated for attention, and split apart again there
    3 * T * qDim + // q·scale, probs·v, transposed back
    3 * scores + // scores, scores + mask, softmax
    T * H + // o_proj
    5 * T * I + // gate, up, sigmoid(gate), silu(gate), silu·up
    T * H + // down_proj
    2 * T * H + // two residual adds
    (c.attentionBias ? T * (qDim + 2 * kvDim) : 0) +
    (c.attentionOutputBias ? T * H : 0) +
    (c.mlpBias ? T * (2 * I + H) : 0);
  const mask = (c.slidingWindow === null ? 5 : 7) * seq * seq;
  return embeddings + mask + c.numLayers * perLayer + norm /* final norm */;
}

// ─── Largest buffers ──────────────────────────────────────────────────────────────────────────────

interface Buffer {
  readonly name: string;
  readonly bytes: number;
  /** Activations grow with batch_size and seq_len; weights do not. */
  readonly kind: 'activation' | 'weight';
}

/**
 * The biggest activations, each one tensor in one GPU buffer. Every one is bound whole as a
 * storage buffer by some kernel, so each must fit maxStorageBufferBindingSize (and maxBufferSize).
 */
function activationBuffers(model: ModelConfig, batch: number, seq: number, fused: boolean): Buffer[] {
  const T = batch * seq;
  const out: Buffer[] = [
    // The loss gradient makes several more of this size: softmax, one-hot, difference (stock ops).
    { name: 'logits [batch·seq_len, vocab]', bytes: T * model.vocabSize * F32, kind: 'activation' },
    { name: 'MLP activations [batch·seq_len, intermediate]', bytes: T * model.intermediateSize * F32, kind: 'activation' },
  ];
  if (fused) {
    // The attention gradient kernel writes dq | dk | dv as one tensor.
    const qkv = (model.numHeads + 2 * model.numKvHeads) * model.headDim;
    out.push({ name: 'q/k/v gradient [batch·seq_len, (heads + 2·kv heads)·head_dim]', bytes: T * qkv * F32, kind: 'activation' });
  } else {
    out.push({ name: 'attention scores [batch, heads, seq_len, seq_len]', bytes: batch * model.numHeads * seq * seq * F32, kind: 'activation' });
  }
  if (model.arch === 'gpt2') {
    out.push({ name: 'fused q/k/v projection [batch·seq_len, 3·hidden]', bytes: T * 3 * model.hiddenSize * F32, kind: 'activation' });
  }
  return out;
}

function weightBuffers(model: ModelConfig, shapes: readonly (readonly [string, number[]])[]): Buffer[] {
  const largest = shapes.reduce((a, b) => (elements(b[1]) > elements(a[1]) ? b : a));
  const [name, shape] = largest;
  const isEmbedding = name === 'transformer.wte.weight' || name === 'model.embed_tokens.weight';
  const isHead = name === 'lm_head.weight';
  const words = isEmbedding
    ? `token embedding [vocab, hidden]${model.tiedEmbeddings ? ' (also the output head)' : ''}`
    : isHead
      ? 'output head [vocab, hidden]'
      : `weight ${name} [${shape.join(', ')}]`;
  return [{ name: words, bytes: elements(shape) * F32, kind: 'weight' }];
}

function bufferWarnings(
  model: ModelConfig,
  batch: number,
  seq: number,
  fused: boolean,
  buffers: readonly Buffer[],
  limits: NonNullable<RunEstimateInput['limits']>,
): EstimateWarning[] {
  const bindingIsLower = limits.maxStorageBufferBindingSize <= limits.maxBufferSize;
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const limitWords = `this GPU's limit for one buffer (${formatBytes(limit)}, its ${bindingIsLower ? 'maxStorageBufferBindingSize' : 'maxBufferSize'})`;
  const warnings: EstimateWarning[] = [];

  const weight = buffers.filter((b) => b.kind === 'weight' && b.bytes > limit);
  for (const w of weight) {
    warnings.push({
      code: 'buffer_too_large',
      message:
        `The model's ${w.name} is ${formatBytes(w.bytes)}, more than ${limitWords}. No batch_size, seq_len or ` +
        'lora_rank setting changes that: choose a smaller model, or a browser or GPU that allows larger buffers.',
    });
  }

  const activation = buffers.filter((b) => b.kind === 'activation' && b.bytes > limit);
  if (activation.length > 0) {
    const worst = activation.reduce((a, b) => (b.bytes > a.bytes ? b : a));
    const fits = (b: number, s: number): boolean => activationBuffers(model, b, s, fused).every((x) => x.bytes <= limit);
    // Every activation buffer grows linearly with batch, so the largest batch that fits is direct.
    const perWindow = Math.max(...activationBuffers(model, 1, seq, fused).map((x) => x.bytes));
    const maxBatch = Math.floor(limit / perWindow);
    let fix: string;
    if (maxBatch >= 1) {
      fix =
        `Lower batch_size to ${maxBatch} or less (raise grad_accum_steps to keep the same number of sequences ` +
        'per optimizer step), or lower seq_len.';
    } else {
      // Even one window is too big: find the longest seq_len that fits at batch 1 (fits is monotone in seq).
      let lo = 0;
      let hi = seq;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (fits(1, mid)) lo = mid;
        else hi = mid - 1;
      }
      fix =
        lo >= 1
          ? `Even batch_size 1 is too much at this seq_len: set batch_size to 1 and seq_len to ${lo} or less.`
          : 'Even one token per step is too much for this GPU: choose a model with a smaller vocabulary or a GPU that allows larger buffers.';
    }
    warnings.push({
      code: 'buffer_too_large',
      message:
        `At batch_size ${batch} and seq_len ${seq}, the ${worst.name} would be ${formatBytes(worst.bytes)} in one ` +
        `buffer, more than ${limitWords}. ${fix}`,
    });
  }
  return warnings;
}

// ─── Other warnings ───────────────────────────────────────────────────────────────────────────────

function noWindowsWarning(trainTokens: number, seqLen: number): EstimateWarning {
  const fix =
    trainTokens >= 3
      ? `Set seq_len to ${trainTokens - 1} or less, or add more training text.`
      : 'Add more training text.';
  return {
    code: 'no_windows',
    message:
      `The training text has ${trainTokens} token${trainTokens === 1 ? '' : 's'}, but one training window needs ` +
      `seq_len + 1 = ${seqLen + 1}, so there is nothing to train on. ${fix}`,
  };
}

function memoryWarning(m: RunEstimate['memory'], device: number, batch: number, seq: number): EstimateWarning {
  const over = m.totalBytes > device;
  const parts =
    `weights ${formatBytes(m.weightsBytes)}, activations ${formatBytes(m.activationsBytes)}, ` +
    `adapter and optimizer ${formatBytes(m.loraBytes + m.optimizerBytes)}`;
  const fixes: string[] = [];
  if (m.weightsBytes > MEMORY_HIGH_FRACTION * device) {
    fixes.push(`The model's weights alone need ${formatBytes(m.weightsBytes)}: choose a smaller model.`);
  } else {
    fixes.push(
      `Activations grow with batch_size (now ${batch}) and with seq_len (now ${seq}; attention grows with its square): ` +
        'lower batch_size and raise grad_accum_steps to keep the same number of sequences per step, or lower seq_len.',
    );
    if (m.loraBytes + m.optimizerBytes > ADAPTER_SHARE_WORTH_NAMING * m.totalBytes) {
      fixes.push('The adapter and its optimizer state grow with lora_rank: a lower lora_rank also helps.');
    }
  }
  return {
    code: 'memory_high',
    message:
      `This run needs about ${formatBytes(m.totalBytes)} (${parts}), ${over ? 'more than' : 'close to'} the ` +
      `${formatBytes(device)} available. ${fixes.join(' ')}`,
  };
}

function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}
