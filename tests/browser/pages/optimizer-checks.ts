import * as tf from '@tensorflow/tfjs';
import { adamwValues, adamwValuesReference, allFinite, sumOfSquares, type AdamWStep } from '../../../src/core/kernels/optimizer';
import { onBackend, relErr, takePrograms, webgpu, withErrorScope } from './webgpu-page';

export { setup } from './webgpu-page';

export interface OptimizerResult {
  /** relErr of the fused p, m, v against the stock composition on cpu, and of the sum of squares. */
  errors: { p: number; m: number; v: number; sumSquares: number };
  /** allFinite of clean values, and with a NaN, +Inf or -Inf planted in p, m or v in turn. */
  finiteClean: number;
  finitePlanted: number[];
  programs: string[];
  leakedDataIds: number;
  gpuErrors: string[];
}

/** adamwValues, allFinite and sumOfSquares on a variable of `shape` at step t, fused vs reference. */
export async function checkOptimizer(shape: number[], t: number, weightDecay: number, seed: number): Promise<OptimizerResult> {
  const dataIdsBefore = webgpu().numDataIds();
  const lr = 3e-3;
  const step: AdamWStep = {
    beta1: 0.9,
    beta2: 0.999,
    decay: 1 - lr * weightDecay,
    stepSize: lr / (1 - 0.9 ** t),
    bc2Sqrt: Math.sqrt(1 - 0.999 ** t),
    eps: 1e-8,
  };
  const run = async (update: typeof adamwValues) => {
    const u = (s: number, lo = -1) => tf.randomUniform(shape, lo, 1, 'float32', seed * 8 + s);
    const current = tf.tidy(() => ({ p: u(1), m: tf.mul(u(2), 0.1), v: tf.mul(u(3, 0), 0.01) }));
    const g = u(4);
    takePrograms();
    const next = update(current, g, step);
    const squares = sumOfSquares(g);
    const out = { p: (await next.p.data()) as Float32Array, m: (await next.m.data()) as Float32Array, v: (await next.v.data()) as Float32Array, sumSquares: (await squares.data()) as Float32Array };
    const cleanFlag = allFinite(next);
    const finiteClean = (await cleanFlag.data())[0]!;
    const programs = takePrograms();
    const finitePlanted: number[] = [];
    for (const which of ['p', 'm', 'v'] as const) {
      for (const bad of [NaN, Infinity, -Infinity]) {
        const values = new Float32Array(out[which]);
        values[values.length - 1] = bad;
        const planted = { ...next, [which]: tf.tensor(values, shape) };
        const flag = allFinite(planted);
        finitePlanted.push((await flag.data())[0]!);
        tf.dispose([planted[which], flag]);
      }
    }
    tf.dispose([current.p, current.m, current.v, g, next.p, next.m, next.v, squares, cleanFlag]);
    return { ...out, finiteClean, finitePlanted, programs };
  };
  const { value: fused, gpuErrors } = await withErrorScope(() => run(adamwValues));
  const reference = await onBackend('cpu', () => run(adamwValuesReference));
  return {
    errors: {
      p: relErr(fused.p, reference.p),
      m: relErr(fused.m, reference.m),
      v: relErr(fused.v, reference.v),
      sumSquares: relErr(fused.sumSquares, reference.sumSquares),
    },
    finiteClean: fused.finiteClean,
    finitePlanted: fused.finitePlanted,
    programs: fused.programs,
    leakedDataIds: webgpu().numDataIds() - dataIdsBefore,
    gpuErrors,
  };
}
