import * as tf from '@tensorflow/tfjs';

/**
 * tfjs-backend-wasm 4.22's Identity copies its input into a fresh allocation, where the cpu and
 * webgpu backends share the data and count one more reference. Identity is what tf.clone runs, and
 * the gradient tape clones every tensor an op saves for its backward pass: on wasm a training step
 * held a full copy of every frozen weight a matmul or gather saved (the embedding up to three times
 * with a tied head), which is what ran a 135M model out of wasm's 4 GiB. This Identity shares, as
 * the stock wasm Reshape already does: tfjs never writes into an op's input, and the backend frees
 * the data when its last reference is disposed.
 */
const sharedIdentity: tf.KernelConfig = {
  kernelName: 'Identity',
  backendName: 'wasm',
  kernelFunc: ({ inputs, backend }) => {
    const x = inputs['x'] as tf.TensorInfo;
    (backend as unknown as { incRef(dataId: object): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  },
};

let registered = false;

/** Installs the sharing wasm Identity, once per process; a no-op where wasm is not registered. */
export function registerWasmSharedIdentity(): void {
  if (registered || !tf.getKernel('Identity', 'wasm')) return;
  registered = true;
  tf.unregisterKernel('Identity', 'wasm');
  tf.registerKernel(sharedIdentity);
}
