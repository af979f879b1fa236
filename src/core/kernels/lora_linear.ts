import * as tf from '@tensorflow/tfjs';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { isPacked, matrixShape, tensorsOf, withTensors, type FrozenMatrix } from '../weights/packed';
import { LoraMatMulProgram } from './lora_matmul_webgpu';
import { LoraProjectProgram } from './lora_project_webgpu';
import { LoraTokenReduceProgram } from './lora_token_reduce_webgpu';
import { encodingOf, matrixBindings } from './packed_weight_webgpu';
import { loraLinearReference } from './reference';
import { fusedKernelBackend, runProgram } from './webgpu_run';

export { loraLinearReference };

export interface LoraLinearArgs {
  /** [T, in], T = batch·tokens. */
  x: tf.Tensor2D;
  /**
   * The frozen base weight: [in, out] for 'in_out' (GPT-2 Conv1D), [out, in] for 'out_in' (nn.Linear);
   * float32 values or packed words (weights/packed.ts).
   */
  weight: FrozenMatrix;
  layout: 'in_out' | 'out_in';
  /** [out], frozen. */
  bias: tf.Tensor1D | null;
  /** [r, in]. */
  loraA: tf.Tensor2D;
  /** [out, r]. */
  loraB: tf.Tensor2D;
  scaling: number;
  /**
   * [T, in] of 0 or 1/(1-p) (inverted dropout on the LoRA input only), or null for p = 0 or eval.
   * The caller draws it (seeded); the same mask is used in the backward pass.
   */
  dropoutMask: tf.Tensor2D | null;
}

interface LoraDims {
  tokens: number;
  inFeatures: number;
  outFeatures: number;
  rank: number;
}

/**
 * `y = x·W' + bias + s·(dropout(x)·Aᵀ)·Bᵀ`. On the webgpu backend this runs the fused kernels: two
 * dispatches forward (xa, then the base matmul with the LoRA term in its epilogue) and four backward
 * (dxa, dB, dA, then dx with the LoRA term in its epilogue; a fifth, xa again, when tfjs's IS_TEST flag
 * is set). Any sizes; float32 only. Elsewhere it is `loraLinearReference`.
 * Gradients flow to x, loraA and loraB only; the base weight and bias are frozen and get none.
 */
export function loraLinear(args: LoraLinearArgs): tf.Tensor2D {
  const dims = checkArgs(args);
  const backend = fusedKernelBackend();
  return backend ? fusedLoraLinear(backend, args, dims) : loraLinearReference(args);
}

function fusedLoraLinear(backend: WebGPUBackend, args: LoraLinearArgs, dims: LoraDims): tf.Tensor2D {
  const { weight, layout, bias, scaling, dropoutMask } = args;
  const { tokens, inFeatures, outFeatures, rank } = dims;
  const hasMask = dropoutMask !== null;
  const rhsEncoding = encodingOf(weight);
  const weightTensorCount = tensorsOf(weight).length;

  // xa = dropout(x)·Aᵀ, needed by the forward epilogue and by dB.
  const project = (x: tf.Tensor, loraA: tf.Tensor, mask: tf.Tensor | null) =>
    runProgram(
      backend,
      new LoraProjectProgram({ dimT: tokens, dimK: inFeatures, rank, scale: 1, lowLayout: 'rk', hasMask }),
      // An absent mask or bias is bound to a stand-in tensor that the kernel never reads.
      [x, loraA, mask ?? x],
    );
  // With IS_TEST set, tfjs counts every tensor a kernel leaves alive beyond its outputs as a leak, and
  // throws; a saved intermediate counts. There xa is recomputed in the backward pass instead of saved.
  const saveXa = !tf.env().getBool('IS_TEST');

  // The frozen tensors are closed over rather than passed in, so that no gradient is computed for
  // them. They are saved all the same, because tf.grads disposes whatever its function created (a
  // mask drawn inside a loss function, say) before the backward pass runs.
  const op = tf.customGrad((...inputs) => {
    const [x, loraA, loraB, save] = inputs as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
    const xa = project(x, loraA, dropoutMask);
    const y = runProgram(
      backend,
      new LoraMatMulProgram({
        dimM: tokens,
        dimN: outFeatures,
        dimK: inFeatures,
        rank,
        scale: scaling,
        rhsLayout: layout === 'in_out' ? 'kn' : 'nk',
        rhsEncoding,
        upLayout: 'nr',
        hasBias: bias !== null,
        hasMask: false,
      }),
      [x, ...matrixBindings(weight, x), xa, loraB, bias ?? x, x],
    );
    // x holds the mask's place when there is none, so that xa keeps its index; the weight's tensors
    // (one, or words and scales) come last.
    save([x, loraA, loraB, dropoutMask ?? x, ...(saveXa ? [xa] : []), ...tensorsOf(weight)]);

    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => {
      const [sx, sA, sB, sMaskOrX] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
      const sxa = saveXa ? saved[4] : undefined;
      const sw = withTensors(weight, saved.slice(saved.length - weightTensorCount));
      const mask = hasMask ? sMaskOrX : null;
      const xaForDB = sxa ?? project(sx, sA, mask);
      // dxa = s·dy·B, already scaled, feeds both dA and the LoRA part of dx.
      const dxa = runProgram(
        backend,
        new LoraProjectProgram({
          dimT: tokens, dimK: outFeatures, rank, scale: scaling, lowLayout: 'kr', hasMask: false,
        }),
        [dy, sB, dy],
      );
      const dB = runProgram(
        backend,
        new LoraTokenReduceProgram({
          dimT: tokens, dimP: outFeatures, rank, scale: scaling, outLayout: 'pr', hasMask: false,
        }),
        [dy, xaForDB, dy],
      );
      const dA = runProgram(
        backend,
        new LoraTokenReduceProgram({ dimT: tokens, dimP: inFeatures, rank, scale: 1, outLayout: 'rp', hasMask }),
        [sx, dxa, mask ?? sx],
      );
      // dx = dy·W'ᵀ + mask⊙(dxa·A): the forward kernel again, reading the weight transposed.
      const dx = runProgram(
        backend,
        new LoraMatMulProgram({
          dimM: tokens,
          dimN: inFeatures,
          dimK: outFeatures,
          rank,
          scale: 1,
          rhsLayout: layout === 'in_out' ? 'nk' : 'kn',
          rhsEncoding,
          upLayout: 'rn',
          hasBias: false,
          hasMask,
        }),
        [dy, ...matrixBindings(sw, dy), dxa, sA, dy, mask ?? dy],
      );
      dxa.dispose();
      if (!sxa) xaForDB.dispose();
      return [dx, dA, dB];
    };
    return { value: y as tf.Tensor2D, gradFunc };
  });
  return op(args.x, args.loraA, args.loraB) as tf.Tensor2D;
}

function checkArgs(args: LoraLinearArgs): LoraDims {
  const { x, weight, layout, bias, loraA, loraB, dropoutMask } = args;
  const fail = (what: string): never => {
    throw new Error(`loraLinear: ${what}`);
  };
  const shape = (t: tf.Tensor): string => `[${t.shape.join(', ')}]`;
  const named = { x, weight: isPacked(weight) ? null : weight, bias, loraA, loraB, dropoutMask };
  for (const [name, t] of Object.entries(named)) {
    if (t && t.dtype !== 'float32') fail(`${name} must be float32, got ${t.dtype}`);
  }
  if (x.rank !== 2) fail(`x must be [tokens, in], got ${shape(x)}`);
  const [tokens, inFeatures] = x.shape as [number, number];
  if (!isPacked(weight) && weight.rank !== 2) fail(`weight must be 2-D, got ${shape(weight)}`);
  const [w0, w1] = matrixShape(weight);
  const [wIn, outFeatures] = layout === 'in_out' ? [w0, w1] : [w1, w0];
  if (wIn !== inFeatures) fail(`weight [${w0}, ${w1}] (${layout}) does not take ${inFeatures} inputs`);
  if (loraA.rank !== 2 || loraA.shape[1] !== inFeatures) fail(`loraA must be [r, ${inFeatures}], got ${shape(loraA)}`);
  const rank = loraA.shape[0] as number;
  if (loraB.rank !== 2 || loraB.shape[0] !== outFeatures || loraB.shape[1] !== rank) {
    fail(`loraB must be [${outFeatures}, ${rank}], got ${shape(loraB)}`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== outFeatures)) {
    fail(`bias must be [${outFeatures}], got ${shape(bias)}`);
  }
  if (dropoutMask && !tf.util.arraysEqual(dropoutMask.shape, x.shape)) {
    fail(`dropoutMask must match x ${shape(x)}, got ${shape(dropoutMask)}`);
  }
  if (tokens < 1 || inFeatures < 1 || outFeatures < 1 || rank < 1) fail('every dimension must be at least 1');
  return { tokens, inFeatures, outFeatures, rank };
}
