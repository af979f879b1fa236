import type { Gpt2Config, LlamaConfig, ModelConfig } from '../models/config.js';
import { logitsChunkRows } from '../models/loss-chunks.js';
import { expectedTensors } from '../models/manifest.js';
import type { Dtype } from '../safetensors/dtype.js';
import { BASE_QUANTIZATIONS, FLOAT32_PLACEMENT, heldBytes, heldFormat, outputChannelAxis, type BaseQuantization, type WeightPlacement } from '../weights/holding.js';

/**
 * What a LoRA run will need, worked out from the settings alone before anything is loaded, so the
 * UI can show it (and warn) before a run starts. Pure arithmetic: no tfjs, no DOM.
 *
 * Every tensor is float32 on the device but the frozen base weights, which are held as
 * weights/holding.ts decides (packed BF16/F16, int8, NF4 on webgpu), so bytes are 4 × elements elsewhere.
 */

const F32 = 4;

/** Above this share of the device's memory a run is flagged: the estimate is rough, and the browser and OS need some too. */
const MEMORY_HIGH_FRACTION = 0.8;
/** lora_rank is worth naming in a memory warning only when the adapter and its optimizer state are a real share of it. */
const ADAPTER_SHARE_WORTH_NAMING = 0.25;

export type EstimateWarningCode = 'buffer_too_large' | 'memory_high' | 'seq_len_too_long' | 'no_windows' | 'wasm_memory';

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
    /** Base weights as the backend holds them (see `weights` in the input). */
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
  /** The largest base-model weight, float32 (often the token embedding). */
  readonly largestWeightBytes: number;
  readonly warnings: readonly EstimateWarning[];
  /** Training time from a measured throughput, evaluation excluded; null without one (or without any window). */
  readonly secondsEstimate: number | null;
  /**
   * gradient_checkpointing: whether the run has it on; the activations with it on (what turning it on
   * would leave of `memory.activationsBytes`); and whether the estimate recommends turning it on: it
   * is off, the run would not fit the memory it has (memory_high, or wasm's limit), and it would help.
   */
  readonly gradientCheckpointing: { readonly enabled: boolean; readonly activationsBytes: number; readonly recommended: boolean };
  /** The base weights' bytes under each base_quantization on this backend: what each choice costs and saves. */
  readonly weightsBytesByQuantization: Readonly<Record<BaseQuantization, number>>;
}

export interface RunEstimateInput {
  readonly model: ModelConfig;
  /**
   * The projections LoRA will wrap (after target_modules is resolved). `path` matters only for
   * `lm_head`: a trained head takes the loss's logits whole rather than in chunks.
   */
  readonly targets: readonly { readonly path?: string; readonly inFeatures: number; readonly outFeatures: number }[];
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
  /**
   * How the base weights are stored (the checkpoint's dtype) and will be held (weights/holding.ts).
   * Default: float32 throughout, as on wasm.
   */
  readonly weights?: { readonly storedDtype: Dtype; readonly placement: WeightPlacement } | null;
  /** The run config's gradient_checkpointing: each block recomputed in the backward pass. Default false. */
  readonly gradientCheckpointing?: boolean;
  /** Memory the run may use, if the caller knows it; enables the memory_high warning. */
  readonly deviceMemoryBytes?: number | null;
  /** The run trains on WebAssembly with at most this much memory (WASM_MEMORY_LIMIT_BYTES): enables the wasm_memory warning. */
  readonly wasmMemoryLimitBytes?: number | null;
  /** A measured training throughput (input tokens per second), e.g. from a previous run on this device. */
  readonly tokensPerSecond?: number | null;
}

export function estimateRun(input: RunEstimateInput): RunEstimate {
  checkInput(input);
  const { model, targets, rank, batchSize, seqLen } = input;
  const fused = input.fusedKernels ?? false;
  const checkpointing = input.gradientCheckpointing ?? false;
  const headTrained = targets.some((t) => t.path === 'lm_head');

  const trainableParameters = targets.reduce((n, t) => n + rank * (t.inFeatures + t.outFeatures), 0);
  const weightShapes = [...expectedTensors(model)];
  const baseParameters = weightShapes.reduce((n, [, shape]) => n + elements(shape), 0);

  const steps = stepCounts(input);

  const storedDtype = input.weights?.storedDtype ?? 'F32';
  const placement = input.weights?.placement ?? FLOAT32_PLACEMENT;
  const weightsBytesAs = (p: WeightPlacement) =>
    weightShapes.reduce((n, [name, shape]) => n + heldBytes(heldFormat(name, storedDtype, shape, p), shape, outputChannelAxis(model.arch)), 0);
  const weightsBytes = weightsBytesAs(placement);
  const weightsBytesByQuantization = Object.fromEntries(
    BASE_QUANTIZATIONS.map((quantization) => [quantization, weightsBytesAs({ ...placement, quantization })]),
  ) as Record<BaseQuantization, number>;
  const loraBytes = trainableParameters * F32;
  const optimizerBytes = 2 * trainableParameters * F32;
  const activationsAt = (ckpt: boolean) =>
    activationBytes(model, targets, rank, batchSize, seqLen, trainableParameters, { fused, checkpointing: ckpt, headTrained });
  const activationsBytes = activationsAt(checkpointing);
  const checkpointedBytes = activationsAt(true);
  const totalBytes = weightsBytes + loraBytes + optimizerBytes + activationsBytes;

  const [largestWeight] = weightBuffers(model, weightShapes, storedDtype, placement);
  const buffers = [largestWeight!, ...activationBuffers(model, batchSize, seqLen, fused, headTrained)];
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
  if (input.limits) warnings.push(...bufferWarnings(model, batchSize, seqLen, fused, headTrained, buffers, input.limits));
  const memoryHigh = input.deviceMemoryBytes != null && input.deviceMemoryBytes > 0 && totalBytes > MEMORY_HIGH_FRACTION * input.deviceMemoryBytes;
  const memory = { weightsBytes, loraBytes, optimizerBytes, activationsBytes, totalBytes };
  const wasmProblem = input.wasmMemoryLimitBytes != null ? wasmMemoryProblem({ memory, largestWeightBytes: largestWeight!.bytes }, input.wasmMemoryLimitBytes) : null;
  const overWasm = wasmProblem !== null;
  const gradientCheckpointing = {
    enabled: checkpointing,
    activationsBytes: checkpointedBytes,
    recommended: !checkpointing && (memoryHigh || overWasm) && checkpointedBytes < activationsBytes,
  };
  if (memoryHigh) {
    warnings.push(
      memoryWarning(
        { weightsBytes, loraBytes, optimizerBytes, activationsBytes, totalBytes },
        input.deviceMemoryBytes!,
        batchSize,
        seqLen,
        gradientCheckpointing,
      ),
    );
  }

  if (wasmProblem) warnings.push({ code: 'wasm_memory', message: `This run ${wasmProblem.problem} ${wasmProblem.fix}` });

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
    largestWeightBytes: largestWeight!.bytes,
    warnings,
    secondsEstimate,
    gradientCheckpointing,
    weightsBytesByQuantization,
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
 * Why the peak is about twice the forward pass: tf.variableGrads runs the forward inside a tidy that
 * keeps every tensor some op's gradient saved (nearly all of them), then walks the tape backwards
 * keeping the gradient of every tensor between the LoRA variables and the loss in one map; the saved
 * tensors and all those gradients are released together only when the backward pass ends. So at its
 * end roughly every intermediate of the forward is alive twice: its value and its gradient (`F`
 * below, counted once each).
 *
 *   peak = F + max(F + 2·M, G) + 2·P
 *
 *   F      elements of every tensor the forward keeps (see modelFloats: per layer the hidden
 *          states, norms, q/k/v and their head layouts, attention scores, masked scores and probs
 *          [batch, heads, seq, seq], the MLP intermediate and its activation, the LoRA branch;
 *          then the final norm, the logits [tokens, vocab] unless the loss takes them in chunks,
 *          inputs and per-token loss values).
 *   2·M    the temporaries of one gradient function while it runs (softmax's backward makes two
 *          tensors the size of its input), M being the largest intermediate.
 *   G      the loss gradient, computed first, when only the forward is alive. Whole logits: L·T·V,
 *          with stock ops (L = 5) softmax, one-hot, its float copy, the difference and the scaled
 *          result, all [tokens, vocab]; with the fused kernels (L = 1) the one gradient the
 *          cross-entropy kernel writes. In chunks of R tokens (models/loss.ts; whenever the whole
 *          logits would pass LOGITS_CHUNK_BYTES and the head is not trained): one chunk's logits
 *          computed again and their L gradients, (1 + L)·R·V, and the hidden states' gradient
 *          gathered from the chunks, 2·T·H.
 *   2·P    the LoRA gradients of this micro-batch and the running sum over gradient accumulation.
 *
 * With gradient_checkpointing each block keeps only its input, and its backward runs the block
 * again, its saved tensors and gradients freed when it is done:
 *
 *   peak = K + max(K + 2·B + 2·M, G) + 2·P
 *
 *   K      what the forward keeps: everything outside the blocks (embeddings, final norm, logits
 *          when whole, loss values) and the blocks' inputs, layers·T·H.
 *   2·B    one block recomputed (B: the elements its forward makes, its LoRA branch included) and
 *          its gradients.
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
  how: { readonly fused: boolean; readonly checkpointing: boolean; readonly headTrained: boolean },
): number {
  const T = batch * seq;
  const V = model.vocabSize;
  const rows = lossChunkRows(model, T, how.headTrained);
  const { outside, perLayer } = modelFloats(model, batch, seq, how.fused);
  // The LoRA branch per target, the base projection itself being counted with the model. Stock ops:
  // x·Aᵀ and its scaled copy [T, r], (x·Aᵀ)·Bᵀ and its sum with the base output [T, out]. Fused: only
  // x·Aᵀ [T, r], the term being added in the base matmul's epilogue.
  const loraBranch = targets.reduce((n, t) => n + (how.fused ? T * rank : 2 * T * rank + 2 * T * t.outFeatures), 0);
  // The batch's ids, targets and mask, and the loss's per-token values (flat targets, weights,
  // row max, log-sum-exp, picked logit, losses): small next to the rest.
  const inputsAndLoss = 10 * T;
  const logits = rows < T ? 0 : T * V;
  const lossGradients = how.fused ? 1 : 5;
  const G = rows < T ? (1 + lossGradients) * rows * V + 2 * T * model.hiddenSize : lossGradients * T * V;
  const M = Math.max(...activationBuffers(model, batch, seq, how.fused, how.headTrained).map((b) => b.bytes / F32));
  let peak: number;
  if (how.checkpointing) {
    const K = outside + model.numLayers * T * model.hiddenSize + inputsAndLoss + logits;
    const B = perLayer + loraBranch / model.numLayers;
    peak = K + Math.max(K + 2 * B + 2 * M, G) + 2 * loraParams;
  } else {
    const F = outside + model.numLayers * perLayer + loraBranch + inputsAndLoss + logits;
    peak = F + Math.max(F + 2 * M, G) + 2 * loraParams;
  }
  return Math.max(peak, 5 * loraParams) * F32;
}

/** Tokens per chunk of the loss's logits (models/loss.ts): all of them when the head is trained or they fit one chunk. */
function lossChunkRows(model: ModelConfig, tokens: number, headTrained: boolean): number {
  return headTrained ? tokens : Math.min(tokens, logitsChunkRows(model.vocabSize));
}

/** Elementwise ops per element of the MLP intermediate for each GPT-2 activation, as ops.ts writes them. */
const GPT2_ACTIVATION_OPS: Readonly<Record<Gpt2Config['activation'], number>> = {
  gelu_new: 9, // x², x³, ·0.044715, +x, ·√(2/π), tanh, +1, x·0.5, product
  gelu: 5, // x·√½, erf, +1, x·0.5, product
  relu: 1,
  silu: 2, // sigmoid, product
};

/**
 * Elements of every tensor one forward pass of the model creates at batch × seq (T tokens), LoRA and
 * loss aside: `perLayer` in each transformer block, `outside` the rest up to the final norm.
 * Reshapes share their input's buffer and are not counted; transposes, slices and concats copy and are.
 * [T, 1] row statistics of the norms are counted too, though they hardly matter.
 */
function modelFloats(model: ModelConfig, batch: number, seq: number, fused: boolean): { outside: number; perLayer: number } {
  return model.arch === 'gpt2' ? gpt2Floats(model, batch, seq, fused) : llamaFloats(model, batch, seq, fused);
}

function gpt2Floats(c: Gpt2Config, batch: number, seq: number, fused: boolean): { outside: number; perLayer: number } {
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
    return { outside: embeddings + T * H /* ln_f */, perLayer };
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
  return { outside: embeddings + mask + norm /* ln_f */, perLayer };
}

function llamaFloats(c: LlamaConfig, batch: number, seq: number, fused: boolean): { outside: number; perLayer: number } {
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
    return { outside: embeddings + T * H /* final norm */, perLayer };
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
  return { outside: embeddings + mask + norm /* final norm */, perLayer };
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
function activationBuffers(model: ModelConfig, batch: number, seq: number, fused: boolean, headTrained: boolean): Buffer[] {
  const T = batch * seq;
  const rows = lossChunkRows(model, T, headTrained);
  const out: Buffer[] = [
    // The loss gradient makes several more of this size: softmax, one-hot, difference (stock ops).
    rows < T
      ? { name: `logits of one loss chunk [${rows} tokens, vocab]`, bytes: rows * model.vocabSize * F32, kind: 'activation' }
      : { name: 'logits [batch·seq_len, vocab]', bytes: T * model.vocabSize * F32, kind: 'activation' },
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

function weightBuffers(model: ModelConfig, shapes: readonly (readonly [string, number[]])[], dtype: Dtype, placement: WeightPlacement): Buffer[] {
  const largest = shapes.reduce((a, b) => (elements(b[1]) > elements(a[1]) ? b : a));
  const [name, shape] = largest;
  const isEmbedding = name === 'transformer.wte.weight' || name === 'model.embed_tokens.weight';
  const isHead = name === 'lm_head.weight';
  const words = isEmbedding
    ? `token embedding [vocab, hidden]${model.tiedEmbeddings ? ' (also the output head)' : ''}`
    : isHead
      ? 'output head [vocab, hidden]'
      : `weight ${name} [${shape.join(', ')}]`;
  // Packed words and their scales are separate buffers; the words are the larger.
  const format = heldFormat(name, dtype, shape, placement);
  const perWord = format === 'f32' ? 1 : format === 'nf4' ? 8 : format === 'int8' ? 4 : 2;
  return [{ name: words, bytes: Math.ceil(elements(shape) / perWord) * F32, kind: 'weight' }];
}

function bufferWarnings(
  model: ModelConfig,
  batch: number,
  seq: number,
  fused: boolean,
  headTrained: boolean,
  buffers: readonly Buffer[],
  limits: NonNullable<RunEstimateInput['limits']>,
): EstimateWarning[] {
  const bindingIsLower = limits.maxStorageBufferBindingSize <= limits.maxBufferSize;
  const limit = Math.min(limits.maxStorageBufferBindingSize, limits.maxBufferSize);
  const limitWords = `this GPU's limit for one buffer (${formatBytes(limit)}, its ${bindingIsLower ? 'maxStorageBufferBindingSize' : 'maxBufferSize'})`;
  const warnings: EstimateWarning[] = [];

  // LoRA Lab's kernels read a weight past the limit as row blocks (weights/row-blocks.ts); stock ops cannot.
  const weight = fused ? [] : buffers.filter((b) => b.kind === 'weight' && b.bytes > limit);
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
    const fits = (b: number, s: number): boolean => activationBuffers(model, b, s, fused, headTrained).every((x) => x.bytes <= limit);
    // The largest batch that fits (fits is monotone in batch; a loss chunk's logits stop growing at
    // their cap, so this is a search rather than limit / per-window bytes).
    let maxBatch = 0;
    for (let hi = batch - 1; maxBatch < hi; ) {
      const mid = Math.ceil((maxBatch + hi) / 2);
      if (fits(mid, seq)) maxBatch = mid;
      else hi = mid - 1;
    }
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

function memoryWarning(
  m: RunEstimate['memory'],
  device: number,
  batch: number,
  seq: number,
  checkpointing: RunEstimate['gradientCheckpointing'],
): EstimateWarning {
  const over = m.totalBytes > device;
  const parts =
    `weights ${formatBytes(m.weightsBytes)}, activations ${formatBytes(m.activationsBytes)}, ` +
    `adapter and optimizer ${formatBytes(m.loraBytes + m.optimizerBytes)}`;
  const fixes: string[] = [];
  if (m.weightsBytes > MEMORY_HIGH_FRACTION * device) {
    fixes.push(`The model's weights alone need ${formatBytes(m.weightsBytes)}: choose a smaller model.`);
  } else {
    if (checkpointing.recommended) {
      fixes.push(
        `Set gradient_checkpointing: true to recompute each block in the backward pass instead of keeping its ` +
          `activations: about ${formatBytes(checkpointing.activationsBytes)} of activations instead of ` +
          `${formatBytes(m.activationsBytes)}, for about a third more compute.`,
      );
    }
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

// ─── WebAssembly memory ───────────────────────────────────────────────────────────────────────────

/**
 * The most memory tfjs-backend-wasm can grow to. Its single-threaded builds (the one LoRA Lab runs:
 * tfjs-backend-wasm-simd.wasm, or the plain one) declare a maximum of 65536 pages of 64 KiB, 4 GiB, and
 * emscripten's heap stops one page short of that (getHeapMax() = 4294901760). Past it an allocation
 * fails and the module aborts or writes out of bounds, taking the backend with it.
 */
export const WASM_MEMORY_LIMIT_BYTES = 4 * 1024 ** 3 - 64 * 1024;

/**
 * Fragmentation of the wasm heap (one malloc for everything, blocks of a hundred megabytes freed out
 * of order); measured heaps came to 1.03–1.11× the sum below, which this covers with room.
 */
const WASM_HEAP_SLACK = 1.2;

/**
 * Memory a run needs on wasm, where every weight is float32: the tensors the estimate counts, plus
 * what tfjs-backend-wasm keeps beside them, as measured on SmolLM2-135M and GPT-2 124M shapes
 * (tests/browser/wasm-memory.test.ts):
 *   weightsBytes        XNNPACK, which multiplies there, packs the right-hand matrix of a product into
 *                       its own layout and caches that copy for as long as the matrix lives, so a
 *                       frozen weight multiplied untransposed (GPT-2's forward, any backward dx = dy·W)
 *                       is held twice;
 *   2·largest weight    a product with a transposed weight (x·Wᵀ, the tied output head) transposes it
 *                       into a scratch copy that XNNPACK packs again (kernels/wasm_matmul.ts);
 * and a fifth more for the heap's fragmentation.
 */
export function wasmMemoryBytes(estimate: Pick<RunEstimate, 'memory' | 'largestWeightBytes'>): number {
  const m = estimate.memory;
  return Math.ceil(WASM_HEAP_SLACK * (m.totalBytes + m.weightsBytes + 2 * estimate.largestWeightBytes));
}

/**
 * Why a run cannot fit wasm's memory, in words that name the size needed and the limit, or null when
 * it fits. `problem` follows a subject such as "This run"; `fix` says what to change.
 */
export function wasmMemoryProblem(
  estimate: Pick<RunEstimate, 'memory' | 'largestWeightBytes'>,
  limitBytes: number = WASM_MEMORY_LIMIT_BYTES,
): { problem: string; fix: string } | null {
  const need = wasmMemoryBytes(estimate);
  if (need <= limitBytes) return null;
  const m = estimate.memory;
  const withoutActivations = wasmMemoryBytes({ ...estimate, memory: { ...m, activationsBytes: 0, totalBytes: m.totalBytes - m.activationsBytes } });
  const limit = formatBytes(Math.ceil(limitBytes / 65536) * 65536).replace(/\.0 /, ' '); // 4 GiB, not 4.0 GiB less a page
  const problem = `needs about ${formatBytes(need)} on WebAssembly, which holds at most ${limit}`;
  if (withoutActivations > limitBytes) {
    return {
      problem: `${problem}: the model's float32 weights alone take ${formatBytes(m.weightsBytes)} there, and about twice that in use.`,
      fix: 'Use WebGPU, or a smaller model.',
    };
  }
  return {
    problem: `${problem}.`,
    fix: 'Lower batch_size or seq_len (raise grad_accum_steps to keep the same number of sequences per step), or use WebGPU.',
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
