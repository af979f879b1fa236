import * as tf from '@tensorflow/tfjs';
import { loraLinear, loraLinearReference, type LoraLinearArgs } from '../../../src/core/kernels/lora_linear';
import { frozenLinear, frozenLinearReference } from '../../../src/core/kernels/frozen_linear';
import { onBackend, relErr, takePrograms, webgpu, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface KernelCase {
  tokens: number;
  inFeatures: number;
  outFeatures: number;
  rank: number;
  layout: 'in_out' | 'out_in';
  bias: boolean;
  /** Dropout probability; 0 means no mask. */
  dropout: number;
  scaling: number;
  /** Draw the mask inside the differentiated function, so that tf.grads disposes it before backprop. */
  maskInside?: boolean;
  /** Run with tfjs's IS_TEST flag, under which a kernel that leaves tensors alive (saved ones too) throws. */
  leakCheck?: boolean;
}

export interface CaseResult {
  /** Max |fused - reference| / max(1, max |reference|), per output. */
  errors: { y: number; dx: number; dA: number; dB: number };
  /** Programs dispatched by the fused forward pass, then by the fused forward + backward pass. */
  forwardPrograms: string[];
  gradPrograms: string[];
  leakedTensors: number;
  leakedDataIds: number;
  gpuErrors: string[];
}

interface CaseTensors {
  args: Omit<LoraLinearArgs, 'x' | 'loraA' | 'loraB' | 'weight'> & { weight: tf.Tensor2D };
  x: tf.Tensor2D;
  loraA: tf.Tensor2D;
  loraB: tf.Tensor2D;
  dy: tf.Tensor2D;
}

function makeMask(c: KernelCase, seed: number): tf.Tensor2D | null {
  if (c.dropout === 0) return null;
  return tf.tidy(() => {
    const keep = tf.greaterEqual(tf.randomUniform([c.tokens, c.inFeatures], 0, 1, 'float32', seed), c.dropout);
    return tf.mul(tf.cast(keep, 'float32'), 1 / (1 - c.dropout)) as tf.Tensor2D;
  });
}

function makeCase(c: KernelCase, seed: number): CaseTensors {
  const u = (shape: number[], s: number) => tf.randomUniform(shape, -1, 1, 'float32', seed * 16 + s);
  const weightShape = c.layout === 'in_out' ? [c.inFeatures, c.outFeatures] : [c.outFeatures, c.inFeatures];
  return {
    args: {
      weight: u(weightShape, 1) as tf.Tensor2D,
      layout: c.layout,
      bias: c.bias ? (u([c.outFeatures], 2) as tf.Tensor1D) : null,
      scaling: c.scaling,
      dropoutMask: c.maskInside ? null : makeMask(c, seed * 16 + 3),
    },
    x: u([c.tokens, c.inFeatures], 4) as tf.Tensor2D,
    loraA: u([c.rank, c.inFeatures], 5) as tf.Tensor2D,
    loraB: u([c.outFeatures, c.rank], 6) as tf.Tensor2D,
    dy: u([c.tokens, c.outFeatures], 7) as tf.Tensor2D,
  };
}

function disposeCase(t: CaseTensors): void {
  const { weight, bias, dropoutMask } = t.args;
  tf.dispose([t.x, t.loraA, t.loraB, t.dy, weight, ...(bias ? [bias] : []), ...(dropoutMask ? [dropoutMask] : [])]);
}

/** y, dx, dA and dB of `op` (tf.grads with a random dy), read back; every tensor it made is disposed. */
async function forwardAndGrads(op: (a: LoraLinearArgs) => tf.Tensor2D, c: KernelCase, seed: number) {
  const t = makeCase(c, seed);
  const apply = (x: tf.Tensor, loraA: tf.Tensor, loraB: tf.Tensor): tf.Tensor2D => {
    const dropoutMask = c.maskInside ? makeMask(c, seed * 16 + 3) : t.args.dropoutMask;
    return op({ ...t.args, dropoutMask, x: x as tf.Tensor2D, loraA: loraA as tf.Tensor2D, loraB: loraB as tf.Tensor2D });
  };
  takePrograms();
  const y = tf.tidy(() => apply(t.x, t.loraA, t.loraB));
  const yData = (await y.data()) as Float32Array;
  const forwardPrograms = takePrograms();
  const grads = tf.grads(apply)([t.x, t.loraA, t.loraB], t.dy);
  const gradData = (await Promise.all(grads.map((g) => g.data()))) as Float32Array[];
  const gradPrograms = takePrograms();
  tf.dispose([y, ...grads]);
  disposeCase(t);
  return { y: yData, dx: gradData[0]!, dA: gradData[1]!, dB: gradData[2]!, forwardPrograms, gradPrograms };
}

/** Forward and all three gradients of the fused op against tf.grads of the plain composition. */
export async function checkCase(c: KernelCase, seed: number): Promise<CaseResult> {
  const tensorsBefore = tf.memory().numTensors;
  const dataIdsBefore = webgpu().numDataIds();
  if (c.leakCheck) tf.env().set('IS_TEST', true);
  const { value: fused, gpuErrors } = await withErrorScope(() => forwardAndGrads(loraLinear, c, seed)).finally(() =>
    tf.env().set('IS_TEST', false),
  );
  const reference = await onBackend('cpu', () => forwardAndGrads(loraLinearReference, c, seed));
  return {
    errors: {
      y: relErr(fused.y, reference.y),
      dx: relErr(fused.dx, reference.dx),
      dA: relErr(fused.dA, reference.dA),
      dB: relErr(fused.dB, reference.dB),
    },
    forwardPrograms: fused.forwardPrograms,
    gradPrograms: fused.gradPrograms,
    leakedTensors: tf.memory().numTensors - tensorsBefore,
    leakedDataIds: webgpu().numDataIds() - dataIdsBefore,
    gpuErrors,
  };
}

/**
 * A few optimizer steps through tf.variableGrads, fused against reference, with the base weight a
 * trainable variable: it must get no gradient from the fused op (it is frozen; no dW is computed).
 */
export async function checkTraining(): Promise<{
  maxParamDiff: number;
  fusedGradNames: string[];
  leakedTensors: number;
  gpuErrors: string[];
}> {
  const tensorsBefore = tf.memory().numTensors;
  const c: KernelCase = {
    tokens: 37, inFeatures: 33, outFeatures: 65, rank: 4, layout: 'out_in', bias: true, dropout: 0.1, scaling: 2,
  };
  const train = async (op: (a: LoraLinearArgs) => tf.Tensor2D, tag: string) => {
    const t = makeCase(c, 11);
    const weight = tf.variable(t.args.weight, true, `w_${tag}`);
    const loraA = tf.variable(t.loraA, true, `a_${tag}`);
    const loraB = tf.variable(t.loraB, true, `b_${tag}`);
    const optimizer = tf.train.sgd(0.05);
    let names: string[] = [];
    for (let step = 0; step < 3; step++) {
      const { value: loss, grads } = tf.variableGrads(() => {
        const dropoutMask = makeMask(c, 100 + step);
        const y = op({ ...t.args, weight, dropoutMask, x: t.x, loraA, loraB });
        return tf.mean(tf.square(tf.sub(y, t.dy))) as tf.Scalar;
      }, [weight, loraA, loraB]);
      names = Object.keys(grads).filter((n) => grads[n] != null).sort();
      // The reference does compute dW (stock ops know nothing of frozen weights); train LoRA only.
      optimizer.applyGradients({ [loraA.name]: grads[loraA.name]!, [loraB.name]: grads[loraB.name]! });
      await loss.data();
      tf.dispose([loss, ...Object.values(grads)]);
    }
    const params = [await loraA.data(), await loraB.data()];
    optimizer.dispose();
    disposeCase(t);
    tf.dispose([weight, loraA, loraB]);
    return { params, names };
  };
  const { value: fused, gpuErrors } = await withErrorScope(() => train(loraLinear, 'fused'));
  const reference = await onBackend('cpu', () => train(loraLinearReference, 'ref'));
  let maxParamDiff = 0;
  fused.params.forEach((p, i) => {
    const r = reference.params[i]!;
    for (let k = 0; k < p.length; k++) maxParamDiff = Math.max(maxParamDiff, Math.abs(p[k]! - r[k]!));
  });
  return { maxParamDiff, fusedGradNames: fused.names, leakedTensors: tf.memory().numTensors - tensorsBefore, gpuErrors };
}

/** On another backend loraLinear is the reference composition. */
export async function checkCpuFallback(): Promise<{ backend: string; maxDiff: number; programs: number }> {
  takePrograms();
  await tf.setBackend('cpu');
  try {
    const c: KernelCase = {
      tokens: 7, inFeatures: 24, outFeatures: 40, rank: 4, layout: 'in_out', bias: true, dropout: 0.2, scaling: 0.5,
    };
    const t = makeCase(c, 5);
    const args = { ...t.args, x: t.x, loraA: t.loraA, loraB: t.loraB };
    const y = loraLinear(args);
    const yRef = loraLinearReference(args);
    const maxDiff = relErr((await y.data()) as Float32Array, (await yRef.data()) as Float32Array);
    tf.dispose([y, yRef]);
    disposeCase(t);
    return { backend: tf.getBackend(), maxDiff, programs: takePrograms().length };
  } finally {
    await tf.setBackend('webgpu');
  }
}

export interface FrozenCase {
  tokens: number;
  inFeatures: number;
  outFeatures: number;
  layout: 'in_out' | 'out_in';
  bias: boolean;
}

/**
 * frozenLinear (the LoRA matmul kernel at rank 0) on webgpu against the stock composition on cpu: y and
 * dx, the programs it ran, and that a trainable weight takes the stock path and gets its gradient.
 */
export async function checkFrozenLinear(c: FrozenCase, seed: number) {
  const tensorsBefore = tf.memory().numTensors;
  const run = async (op: typeof frozenLinear, trainable: boolean) => {
    const u = (shape: number[], s: number) => tf.randomUniform(shape, -1, 1, 'float32', seed * 16 + s);
    const weightShape = c.layout === 'in_out' ? [c.inFeatures, c.outFeatures] : [c.outFeatures, c.inFeatures];
    const w = u(weightShape, 1);
    const weight = (trainable ? tf.variable(w) : w) as tf.Tensor2D;
    const bias = c.bias ? (u([c.outFeatures], 2) as tf.Tensor1D) : null;
    const x = u([c.tokens, c.inFeatures], 3);
    const dy = u([c.tokens, c.outFeatures], 4);
    takePrograms();
    const y = tf.tidy(() => op({ x: x as tf.Tensor2D, weight, layout: c.layout, bias }));
    const yData = (await y.data()) as Float32Array;
    const forwardPrograms = takePrograms();
    const loss = (xIn: tf.Tensor) => tf.sum(tf.mul(op({ x: xIn as tf.Tensor2D, weight, layout: c.layout, bias }), dy)) as tf.Scalar;
    const dx = tf.grad(loss)(x);
    const dxData = (await dx.data()) as Float32Array;
    let weightGrads = 0;
    if (trainable) {
      const { value, grads } = tf.variableGrads(() => loss(x), [weight as tf.Variable]);
      weightGrads = Object.keys(grads).length;
      tf.dispose([value, ...Object.values(grads)]);
    }
    tf.dispose([y, dx, w, weight, x, dy, ...(bias ? [bias] : [])]);
    return { y: yData, dx: dxData, forwardPrograms, weightGrads };
  };
  const { value: fused, gpuErrors } = await withErrorScope(() => run(frozenLinear, false));
  const reference = await onBackend('cpu', () => run(frozenLinearReference, false));
  const trainable = await withErrorScope(() => run(frozenLinear, true));
  return {
    errors: { y: relErr(fused.y, reference.y), dx: relErr(fused.dx, reference.dx), trainableY: relErr(trainable.value.y, reference.y) },
    forwardPrograms: fused.forwardPrograms,
    trainablePrograms: trainable.value.forwardPrograms,
    trainableWeightGrads: trainable.value.weightGrads,
    leakedTensors: tf.memory().numTensors - tensorsBefore,
    gpuErrors: [...gpuErrors, ...trainable.gpuErrors],
  };
}
