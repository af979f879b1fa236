import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';

/** A tfjs matMul on the webgpu backend in the page, compared with the cpu backend. */
export async function run(): Promise<{ backend: string; maxAbsDiff: number }> {
  tf.env().set('WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD', 0);
  await tf.setBackend('webgpu');
  const backend = tf.getBackend();
  const a = tf.randomUniform([37, 24], -1, 1, 'float32', 1);
  const b = tf.randomUniform([24, 40], -1, 1, 'float32', 2);
  const gpu = await tf.matMul(a, b).data();
  const av = await a.data();
  const bv = await b.data();
  let maxAbsDiff = 0;
  for (let i = 0; i < 37; i++)
    for (let j = 0; j < 40; j++) {
      let s = 0;
      for (let k = 0; k < 24; k++) s += av[i * 24 + k]! * bv[k * 40 + j]!;
      maxAbsDiff = Math.max(maxAbsDiff, Math.abs(s - gpu[i * 40 + j]!));
    }
  return { backend, maxAbsDiff };
}
