// npm run bench:node — the WebGPU half of `npm run bench` in Node, on Dawn (the `webgpu` npm package),
// for a machine that has a GPU but no browser (a CI runner with a GPU, a lent GPU server). Prints the
// same ratios: fused kernels against the plain tfjs composition per op, and a whole training step.
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

const adapter = await navigator.gpu.requestAdapter();
console.log(`WebGPU adapter (Dawn in Node): ${adapter ? `${adapter.info.vendor} ${adapter.info.architecture} ${adapter.info.description}`.trim() : 'none'}\n`);
if (!adapter || !(await tf.setBackend('webgpu'))) process.exit(1);

const shapes = quick ? [{ name: 'tiny 64→192', tokens: 512, inFeatures: 64, outFeatures: 192, rank: 8 }] : undefined;
const kernels = await runKernelBench({ shapes, iterations: quick ? 5 : 20 });
console.log('LoRA linear (T tokens, r 8): median ms, plain tfjs ÷ fused = speed-up');
for (const r of kernels.rows) {
  const s = r.shape;
  console.log(
    `  ${s.name.padEnd(24)} T ${s.tokens}  forward ${r.fusedForwardMs.toFixed(2)} vs ${r.referenceForwardMs.toFixed(2)} ms = ${r.forwardSpeedup.toFixed(2)}×` +
      `   fwd+bwd ${r.fusedTrainMs.toFixed(2)} vs ${r.referenceTrainMs.toFixed(2)} ms = ${r.trainSpeedup.toFixed(2)}×`,
  );
}
const ops = await runFusedOpsBench({ iterations: quick ? 5 : 20 });
console.log('\nThe other fused ops at the tiny GPT-2\'s shapes: median ms, plain tfjs ÷ fused = speed-up');
for (const r of ops) {
  console.log(
    `  ${r.name.padEnd(28)} forward ${r.fusedForwardMs.toFixed(2)} vs ${r.referenceForwardMs.toFixed(2)} ms = ${(r.referenceForwardMs / r.fusedForwardMs).toFixed(2)}×` +
      `   fwd+bwd ${r.fusedTrainMs.toFixed(2)} vs ${r.referenceTrainMs.toFixed(2)} ms = ${(r.referenceTrainMs / r.fusedTrainMs).toFixed(2)}×`,
  );
}
const opt = await runOptimizerBench({ iterations: quick ? 5 : 20 });
console.log(`  ${`clipping + AdamW, ${opt.variables} vars`.padEnd(28)} step    ${opt.fusedMs.toFixed(2)} vs ${opt.referenceMs.toFixed(2)} ms = ${(opt.referenceMs / opt.fusedMs).toFixed(2)}×`);
const steps = await runTrainStepBench({ steps: quick ? 4 : 10, backends: ['webgpu'] });
console.log('\nTraining step, tiny GPT-2 (64 wide, 2 layers), batch 8 × seq 64, LoRA r 8 on c_attn:');
for (const r of steps) console.log(`  ${r.backend.padEnd(7)} ${r.variant.padEnd(24)} ${r.tokensPerSecond.toFixed(0).padStart(7)} tokens/s  (${r.msPerStep.toFixed(1)} ms/step)`);
const [plain, fused] = steps;
if (plain && fused) console.log(`  webgpu step speed-up, fused ÷ plain: ${(fused.tokensPerSecond / plain.tokensPerSecond).toFixed(2)}×`);
process.exit(0);
