import * as tf from '@tensorflow/tfjs';
import { embeddingLookup } from '../../../src/core/kernels/embedding';
import { frozenLinear, frozenLinearReference } from '../../../src/core/kernels/frozen_linear';
import { unpackMatrix } from '../../../src/core/kernels/frozen_matrix';
import { loraLinear, loraLinearReference, type LoraLinearArgs } from '../../../src/core/kernels/lora_linear';
import { FUSED_KERNELS_FLAG } from '../../../src/core/kernels/webgpu_run';
import { packHalves, quantizeInt8, quantizeNf4, unpackHost } from '../../../src/core/weights/host';
import { disposeMatrix, uploadPacked, type HostPackedMatrix, type PackedFormat } from '../../../src/core/weights/packed';
import { LoraAdapter } from '../../../src/core/lora/adapter';
import { parseModelConfig } from '../../../src/core/models/config';
import { causalLmLoss } from '../../../src/core/models/loss';
import { expectedTensors } from '../../../src/core/models/manifest';
import { buildModel } from '../../../src/core/models/model';
import { seededRandom } from '../../../src/core/random';
import { holdWeight } from '../../../src/core/weights/hold';
import { isRowBlocks } from '../../../src/core/weights/row-blocks';
import { onBackend, relErr, takePrograms, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

// Packed frozen weights on WebGPU, checked against float32 weights holding the same values: every
// expected value here comes from the JavaScript decoder (weights/host.ts) and stock tfjs on the cpu
// backend, never from the WGSL decoder under test.

/** Random bit patterns of finite halves of both signs between about 2⁻⁶ and 2 (zeros and subnormals too). */
function randomHalfBytes(format: 'bf16' | 'f16', count: number, seed: number): Uint8Array {
  const next = seededRandom(seed);
  const halves = new Uint16Array(count);
  for (let i = 0; i < count; i++) {
    const sign = next() < 0.5 ? 0x8000 : 0;
    if (i % 37 === 5) {
      halves[i] = sign | Math.floor(next() * 4); // ±0 and tiny subnormals
      continue;
    }
    halves[i] = format === 'f16'
      ? sign | ((9 + Math.floor(next() * 7)) << 10) | Math.floor(next() * 1024)
      : sign | ((121 + Math.floor(next() * 7)) << 7) | Math.floor(next() * 128);
  }
  return new Uint8Array(halves.buffer);
}

function randomValues(count: number, seed: number): Float32Array {
  const next = seededRandom(seed);
  const v = new Float32Array(count);
  for (let i = 0; i < count; i++) v[i] = (next() * 2 - 1) * (i % 11 === 3 ? 4 : 1);
  return v;
}

export function makeHost(format: PackedFormat, shape: [number, number], channelAxis: 0 | 1, seed: number): HostPackedMatrix {
  const count = shape[0] * shape[1];
  switch (format) {
    case 'bf16':
    case 'f16':
      return packHalves(format, shape, randomHalfBytes(format, count, seed));
    case 'int8':
      return quantizeInt8(randomValues(count, seed), shape, channelAxis);
    case 'nf4':
      return quantizeNf4(randomValues(count, seed), shape);
  }
}

/** The WGSL decoder against the JavaScript one, element for element (both must be exact). */
export async function checkUnpack(format: PackedFormat, rows: number, cols: number, channelAxis: 0 | 1) {
  const host = makeHost(format, [rows, cols], channelAxis, rows * 31 + cols);
  const want = unpackHost(host);
  const { value: got, gpuErrors } = await withErrorScope(async () => {
    const packed = uploadPacked(host);
    const values = unpackMatrix(packed);
    const data = (await values.data()) as Float32Array;
    tf.dispose(values);
    disposeMatrix(packed);
    return data;
  });
  let mismatches = 0;
  for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) mismatches++;
  return { mismatches, count: want.length, gpuErrors };
}

/** Rows by id straight from the packed words, against the JavaScript decoder's rows. */
export async function checkGather(format: PackedFormat, rows: number, cols: number) {
  const host = makeHost(format, [rows, cols], 0, rows + cols);
  const table = unpackHost(host);
  const ids = [0, rows - 1, 3 % rows, 7 % rows, rows - 1, 1 % rows, 0];
  const want = new Float32Array(ids.length * cols);
  ids.forEach((id, t) => want.set(table.subarray(id * cols, (id + 1) * cols), t * cols));
  takePrograms();
  const { value: got, gpuErrors } = await withErrorScope(async () => {
    const packed = uploadPacked(host);
    const idTensor = tf.tensor1d(ids, 'int32');
    const out = embeddingLookup(packed, idTensor);
    const data = (await out.data()) as Float32Array;
    tf.dispose([out, idTensor]);
    disposeMatrix(packed);
    return data;
  });
  return { error: relErr(got, want), programs: takePrograms(), gpuErrors };
}

export interface PackedLinearCase {
  format: PackedFormat;
  tokens: number;
  inFeatures: number;
  outFeatures: number;
  layout: 'in_out' | 'out_in';
  /** 0: frozenLinear (no LoRA); otherwise loraLinear with this rank and dropout 0.1. */
  rank: number;
  bias: boolean;
}

/**
 * y and every gradient of the projection with a packed weight on webgpu, against stock tfjs on the cpu
 * backend with the float32 weight the JavaScript decoder gives; the programs the packed forward ran; and
 * the stock path on webgpu (fused kernels off), which unpacks the weight first.
 */
export async function checkPackedLinear(c: PackedLinearCase, seed: number) {
  const weightShape: [number, number] = c.layout === 'in_out' ? [c.inFeatures, c.outFeatures] : [c.outFeatures, c.inFeatures];
  // int8 scales belong to output channels: columns of a Conv1D weight, rows of an nn.Linear one.
  const host = makeHost(c.format, weightShape, c.layout === 'in_out' ? 1 : 0, seed);
  const dense = unpackHost(host);
  const run = async (packed: boolean) => {
    const u = (shape: number[], s: number) => tf.randomUniform(shape, -1, 1, 'float32', seed * 16 + s);
    const weight = packed ? uploadPacked(host) : tf.tensor2d(dense, weightShape);
    const bias = c.bias ? (u([c.outFeatures], 2) as tf.Tensor1D) : null;
    const x = u([c.tokens, c.inFeatures], 3) as tf.Tensor2D;
    const dy = u([c.tokens, c.outFeatures], 4) as tf.Tensor2D;
    const loraA = u([Math.max(c.rank, 1), c.inFeatures], 5) as tf.Tensor2D;
    const loraB = u([c.outFeatures, Math.max(c.rank, 1)], 6) as tf.Tensor2D;
    const mask = tf.tidy(() => tf.mul(tf.cast(tf.greaterEqual(u([c.tokens, c.inFeatures], 7), -0.8), 'float32'), 1 / 0.9)) as tf.Tensor2D;
    const lora = packed ? loraLinear : loraLinearReference;
    const frozen = packed ? frozenLinear : frozenLinearReference;
    const f = (xIn: tf.Tensor, a: tf.Tensor, b: tf.Tensor): tf.Tensor2D => {
      if (c.rank === 0) return frozen({ x: xIn as tf.Tensor2D, weight, layout: c.layout, bias });
      const args: LoraLinearArgs = {
        x: xIn as tf.Tensor2D, weight, layout: c.layout, bias, loraA: a as tf.Tensor2D, loraB: b as tf.Tensor2D, scaling: 2, dropoutMask: mask,
      };
      return lora(args);
    };
    takePrograms();
    const y = tf.tidy(() => f(x, loraA, loraB));
    const yData = (await y.data()) as Float32Array;
    const forwardPrograms = takePrograms();
    const grads = c.rank === 0 ? [tf.grad((xIn: tf.Tensor) => tf.sum(tf.mul(f(xIn, loraA, loraB), dy)))(x)] : tf.grads(f)([x, loraA, loraB], dy);
    const gradData = (await Promise.all(grads.map((g) => g.data()))) as Float32Array[];
    tf.dispose([y, ...grads, bias, x, dy, loraA, loraB, mask].filter((t): t is tf.Tensor => t !== null));
    if (packed) disposeMatrix(weight as ReturnType<typeof uploadPacked>);
    else tf.dispose(weight as tf.Tensor);
    return { y: yData, grads: gradData, forwardPrograms };
  };
  const tensorsBefore = tf.memory().numTensors;
  const { value: fused, gpuErrors } = await withErrorScope(() => run(true));
  tf.env().set(FUSED_KERNELS_FLAG, false);
  const stock = await withErrorScope(() => run(true)).finally(() => tf.env().set(FUSED_KERNELS_FLAG, true));
  const reference = await onBackend('cpu', () => run(false));
  const errorOf = (got: { y: Float32Array; grads: Float32Array[] }) =>
    Math.max(relErr(got.y, reference.y), ...got.grads.map((g, i) => relErr(g, reference.grads[i]!)));
  return {
    fusedError: errorOf(fused),
    stockError: errorOf(stock.value),
    forwardPrograms: fused.forwardPrograms,
    stockPrograms: stock.value.forwardPrograms,
    leakedTensors: tf.memory().numTensors - tensorsBefore,
    gpuErrors: [...gpuErrors, ...stock.gpuErrors],
  };
}

/**
 * A model whose large matrices are held as row blocks (a small binding limit forced) against the same
 * model held whole, both packed BF16 on webgpu: logits, loss and the LoRA gradients through every
 * blocked projection (GPT-2's Conv1D split along its inputs, Llama's and the heads along their outputs)
 * and the blocked embedding lookups.
 */
export async function checkRowBlocks(arch: 'gpt2' | 'llama') {
  const hf =
    arch === 'gpt2'
      ? { model_type: 'gpt2', vocab_size: 257, n_positions: 64, n_embd: 64, n_layer: 2, n_head: 4, tie_word_embeddings: true }
      : { model_type: 'llama', vocab_size: 257, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 176, max_position_embeddings: 64, tie_word_embeddings: false };
  const cfg = parseModelConfig(hf);
  // Above the LoRA targets (GPT-2's c_attn 24 kB, Llama's q and v 8 and 4 kB in BF16), below the
  // embeddings (33 kB) and the MLP weights (GPT-2 32 kB, Llama 22 kB).
  const limit = arch === 'gpt2' ? 30_000 : 20_000;
  const tensors = [...expectedTensors(cfg)].map(([name, shape], i) => {
    const count = shape.reduce((a, b) => a * b, 1);
    const bytes = shape.length === 1 && !name.endsWith('bias') ? new Uint8Array(new Uint16Array(count).fill(0x3f80).buffer) : randomHalfBytes('bf16', count, 1000 + i);
    return { name, shape, bytes };
  });
  const build = (maxBindingBytes: number | null) =>
    buildModel(cfg, new Map(tensors.map((t) => [t.name, holdWeight(cfg, t.name, 'BF16', t.shape, t.bytes, { packed: true, quantization: 'none', maxBindingBytes })])));
  const tensorsBefore = tf.memory().numTensors;
  const ids = tf.tensor2d(Array.from({ length: 2 * 24 }, (_, i) => (i * 37 + 11) % 257), [2, 24], 'int32');
  const targets = tf.tensor2d(Array.from({ length: 2 * 24 }, (_, i) => (i * 53 + 5) % 257), [2, 24], 'int32');
  const run = async (maxBindingBytes: number | null) => {
    const model = build(maxBindingBytes);
    const blocked = [...model.weights.values()].filter((w) => !(w instanceof tf.Tensor) && isRowBlocks(w)).length;
    const adapter = LoraAdapter.create(model, { rank: 4, alpha: 8, dropout: 0.1, targetModules: arch === 'gpt2' ? ['c_attn'] : ['q_proj', 'v_proj'], useRslora: false }, 7);
    // B starts at zero, which would leave A's gradient zero: give it values so both are checked.
    for (const m of adapter.modules) tf.tidy(() => m.B.assign(tf.randomUniform(m.B.shape, -0.5, 0.5, 'float32', 3)));
    const logits = tf.tidy(() => model.forward(ids));
    const logitData = (await logits.data()) as Float32Array;
    const { value, grads } = tf.variableGrads(() => {
      const out = model.forward(ids, { linear: adapter.apply({ training: true, seed: 5, step: 1 }) });
      return causalLmLoss(out, targets, null);
    }, adapter.variables());
    const loss = (await value.data())[0]!;
    const gradData = await Promise.all(adapter.variables().map(async (v) => (await grads[v.name]!.data()) as Float32Array));
    tf.dispose([logits, value, ...Object.values(grads)]);
    adapter.dispose();
    model.dispose();
    return { blocked, logits: logitData, loss, grads: gradData };
  };
  takePrograms();
  const { value: whole, gpuErrors } = await withErrorScope(() => run(null));
  const split = await withErrorScope(() => run(limit));
  const programs = takePrograms();
  tf.dispose([ids, targets]);
  return {
    blocked: split.value.blocked,
    wholeBlocked: whole.blocked,
    logitsError: relErr(split.value.logits, whole.logits),
    lossDiff: Math.abs(split.value.loss - whole.loss),
    gradError: Math.max(...split.value.grads.map((g, i) => relErr(g, whole.grads[i]!))),
    gradNorm: Math.max(...whole.grads.map((g) => g.reduce((m, x) => Math.max(m, Math.abs(x)), 0))),
    unpacked: programs.filter((p) => p === 'unpackMatrix').length,
    leakedTensors: tf.memory().numTensors - tensorsBefore,
    gpuErrors: [...gpuErrors, ...split.gpuErrors],
  };
}
