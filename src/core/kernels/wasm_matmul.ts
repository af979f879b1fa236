import * as tf from '@tensorflow/tfjs';

/**
 * tfjs-backend-wasm 4.22 multiplies plainly through XNNPACK, but a product with a transposed operand
 * (`a·bᵀ`, `aᵀ·b`) takes a path 6–10× slower — and most of a backward pass is such products
 * (dx = dy·Wᵀ, dW = xᵀ·dy), as is x·Wᵀ for every nn.Linear weight. This wraps the wasm BatchMatMul
 * kernel so that a 2-D product transposes its operand explicitly (one fast copy) and then multiplies
 * plainly. Batched (attention) products are left alone: splitting them was slower. Same numbers,
 * same kernel name, so every op and gradient benefits without knowing.
 */
function plainMatMul(stock: tf.KernelConfig, transpose: tf.KernelConfig): tf.KernelConfig {
  return {
    kernelName: 'BatchMatMul',
    backendName: 'wasm',
    // The stock kernel binds its wasm function when the backend starts: keep that step.
    setupFunc: stock.setupFunc,
    disposeFunc: stock.disposeFunc,
    kernelFunc: (args) => {
      const { inputs, backend, attrs } = args;
      const a = inputs['a'] as tf.TensorInfo;
      const b = inputs['b'] as tf.TensorInfo;
      const { transposeA, transposeB } = attrs as unknown as { transposeA: boolean; transposeB: boolean };
      if (a.shape.length !== 2 || b.shape.length !== 2 || (!transposeA && !transposeB)) return stock.kernelFunc(args);
      const swap = (t: tf.TensorInfo) => transpose.kernelFunc({ inputs: { x: t }, backend, attrs: { perm: [1, 0] } }) as tf.TensorInfo;
      const a2 = transposeA ? swap(a) : a;
      const b2 = transposeB ? swap(b) : b;
      try {
        return stock.kernelFunc({ inputs: { a: a2, b: b2 }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } });
      } finally {
        // The transposed copies are this kernel's scratch: free them before returning.
        const owner = backend as { disposeData(dataId: object): void };
        if (a2 !== a) owner.disposeData(a2.dataId);
        if (b2 !== b) owner.disposeData(b2.dataId);
      }
    },
  };
}

let kernels: { stock: tf.KernelConfig; plain: tf.KernelConfig } | null = null;

function use(config: tf.KernelConfig): void {
  tf.unregisterKernel('BatchMatMul', 'wasm');
  tf.registerKernel(config);
}

/** Installs the faster wasm BatchMatMul, once per process; a no-op where wasm is not registered. */
export function registerWasmPlainMatMul(): void {
  if (kernels) return;
  const stock = tf.getKernel('BatchMatMul', 'wasm');
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (!stock || !transpose) return;
  kernels = { stock, plain: plainMatMul(stock, transpose) };
  use(kernels.plain);
}

/** Runs `fn` with tfjs's stock wasm BatchMatMul: for the benchmark's "plain tfjs" figure only. */
export async function withStockWasmMatMul<T>(fn: () => Promise<T>): Promise<T> {
  if (!kernels) return fn();
  use(kernels.stock);
  try {
    return await fn();
  } finally {
    use(kernels.plain);
  }
}
