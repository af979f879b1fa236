// npm run bench:node — the WebGPU half of `npm run bench` in Node, on Dawn (the `webgpu` npm package),
// for a machine that has a GPU but no browser (a CI runner with a GPU, a lent GPU server). Prints the
// same ratios: fused kernels against the plain tfjs composition per op, and a whole training step; then
// training steps of real-size models (GPT-2 124M, TinyLlama-1.1B; bench/node-shapes.ts) fused vs plain
// with their peak memory, base weights held as none / int8 / nf4. --quick: fewer iterations, and the
// real-size models cut to one layer and 4 tokens (enough to check the path on SwiftShader).
//
// Dawn is not a dependency of the app; point DAWN_NODE at an unpacked `webgpu` package (its index.js,
// package.json and dist/<platform>-<arch>/dawn.node), e.g. from `npm pack webgpu@0.6.2`. Without a
// hardware adapter, VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json runs it on SwiftShader.
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';

const quick = process.argv.includes('--quick');
const dawnDir = process.env.DAWN_NODE;
if (!dawnDir) {
  console.error('Set DAWN_NODE to an unpacked `webgpu` npm package (see the top of bench/node-webgpu.ts).');
  process.exit(2);
}
const { create, globals } = (await import(pathToFileURL(`${dawnDir}/index.js`).href)) as {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
};
Object.assign(globalThis, globals);
Object.defineProperty(globalThis, 'navigator', { value: { gpu: create([]) }, configurable: true });
// tfjs-backend-webgpu registers itself on import only if navigator.gpu exists then: the benchmark
// modules, which import it, are loaded after the globals are in place.
const { runKernelBench } = await import('./kernels');
const { runFusedOpsBench, runOptimizerBench } = await import('./fused-ops');
const { runTrainStepBench } = await import('./train-step');
const { fusedOpLines, kernelLines, shapeLines, trainStepLines } = await import('./report');
const { deviceCases, runDeviceCase } = await import('./node-shapes');

const adapter = await navigator.gpu.requestAdapter();
console.log(`WebGPU adapter (Dawn in Node): ${adapter ? `${adapter.info.vendor} ${adapter.info.architecture} ${adapter.info.description}`.trim() : 'none'}\n`);
if (!adapter || !(await tf.setBackend('webgpu'))) process.exit(1);

const iterations = quick ? 5 : 20;
const shapes = quick ? [{ name: 'tiny 64→192', tokens: 512, inFeatures: 64, outFeatures: 192, rank: 8 }] : undefined;
console.log(kernelLines((await runKernelBench({ shapes, iterations })).rows).join('\n'));
const ops = await runFusedOpsBench({ iterations });
console.log(`\n${fusedOpLines(ops, await runOptimizerBench({ iterations })).join('\n')}`);
console.log(`\n${trainStepLines(await runTrainStepBench({ steps: quick ? 2 : 4, rounds: quick ? 2 : 3, backends: ['webgpu'] })).join('\n')}`);
for (const c of deviceCases(quick)) {
  const { heading, storedBytes, rows } = await runDeviceCase(c);
  console.log(`\n${shapeLines(heading, storedBytes, null, rows).join('\n')}`);
}
process.exit(0);
