import * as tf from '@tensorflow/tfjs';
// The app's backend module: registers webgpu and wasm, with the wasm binaries served by the app.
import '../../../src/worker/backend';
import { causalLmLoss } from '../../../src/core/models/loss';
import { AdamW } from '../../../src/core/train/adamw';
import { clipByGlobalNorm } from '../../../src/core/train/clip';

/**
 * The training step's own math (loss gradient, global-norm clipping over many tensors, AdamW) on one
 * backend, as plain numbers. tfjs backends have had silent bugs here (webgpu's AddN summed only four
 * inputs; wasm's OneHot wrote int bits into float output), so each is compared against cpu.
 */
async function stepMath(backend: string) {
  if (!(await tf.setBackend(backend)) || tf.getBackend() !== backend) throw new Error(`no ${backend} backend`);
  // Ten gradient tensors of different sizes, so any "first n inputs only" bug changes the norm.
  const grads = Array.from({ length: 10 }, (_, i) => tf.tensor(Array.from({ length: 3 + i }, (_, j) => Math.sin(i * 7 + j) * (i + 1)), [3 + i]));
  const { grads: clipped, norm } = clipByGlobalNorm(grads, 1);
  const variables = grads.map((g) => tf.variable(tf.onesLike(g)));
  const optimizer = new AdamW(variables, { weightDecay: 0.01 });
  optimizer.step(clipped, 1e-2);
  optimizer.step(clipped, 1e-2);
  const logits = tf.tensor3d(Array.from({ length: 2 * 5 * 257 }, (_, i) => 3 * Math.sin(i * 0.37)), [2, 5, 257]);
  const targets = tf.tensor2d([1, 2, 3, 4, 256, 7, 8, 9, 10, 11], [2, 5], 'int32');
  const mask = tf.tensor2d([1, 1, 0, 1, 1, 1, 1, 1, 0, 1], [2, 5]);
  const lossGrad = tf.grad((l: tf.Tensor) => causalLmLoss(l as tf.Tensor3D, targets, mask))(logits);
  // Every transpose combination of a 2-D product (wasm reroutes transposed ones, see wasm_matmul.ts).
  const a = tf.tensor2d(Array.from({ length: 7 * 5 }, (_, i) => Math.sin(i)), [7, 5]);
  const b = tf.tensor2d(Array.from({ length: 5 * 7 }, (_, i) => Math.cos(i)), [5, 7]);
  const products = [tf.matMul(a, b), tf.matMul(a, a, false, true), tf.matMul(a, a, true, false), tf.matMul(a, b, true, true)];
  const result = {
    norm: (await norm.data())[0]!,
    clipped: (await Promise.all(clipped.map((g) => g.data()))).flatMap((d) => Array.from(d)),
    variables: (await Promise.all(variables.map((v) => v.data()))).flatMap((d) => Array.from(d)),
    lossGrad: Array.from(await lossGrad.data()),
    matMul: (await Promise.all(products.map((p) => p.data()))).flatMap((d) => Array.from(d)),
  };
  optimizer.dispose();
  tf.dispose([...grads, ...clipped, ...variables, norm, logits, targets, mask, lossGrad, a, b, ...products]);
  return result;
}

export async function run(): Promise<Record<string, { norm: number; maxDiff: Record<string, number> }>> {
  tf.env().set('WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD', 0);
  const reference = await stepMath('cpu');
  const out: Record<string, { norm: number; maxDiff: Record<string, number> }> = {};
  for (const backend of ['webgpu', 'wasm']) {
    const got = await stepMath(backend);
    const diff = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
    out[backend] = {
      norm: got.norm,
      maxDiff: {
        norm: Math.abs(got.norm - reference.norm),
        clipped: diff(got.clipped, reference.clipped),
        variables: diff(got.variables, reference.variables),
        lossGrad: diff(got.lossGrad, reference.lossGrad),
        matMul: diff(got.matMul, reference.matMul),
      },
    };
  }
  out.cpu = { norm: reference.norm, maxDiff: {} };
  return out;
}
