#!/usr/bin/env node
// npm run bench: measures, in one run on this machine, the fused LoRA kernels against the plain tfjs
// composition (per layer, forward and forward+backward) and whole training steps on webgpu and wasm.
// Prints ratios; asserts nothing (speed goals are read from here, not from tests).
// Options: --quick (tiny shape only, fewer iterations: what a GPU-less machine can afford);
// --profile (only where a training step's time goes, kernel by kernel: webgpu fused and plain, wasm).
import { createServer } from 'vite';
import { launchChromium } from '../scripts/chromium.mjs';

const quick = process.argv.includes('--quick');
const profile = process.argv.includes('--profile');
const root = new URL('..', import.meta.url).pathname;
const server = await createServer({ root, server: { host: '127.0.0.1', port: 0 }, logLevel: 'error' });
await server.listen();
const url = server.resolvedUrls.local[0].replace(/\/$/, '');
const browser = await launchChromium();
const call = (module, fn, arg) =>
  browser.page.evaluate(`import(${JSON.stringify(module)}).then((m) => m[${JSON.stringify(fn)}](${JSON.stringify(arg)}))`);

try {
  await browser.page.goto(`${url}/tests/browser/pages/blank.html`);
  const adapter = await browser.page.evaluate(async () => {
    const a = await navigator.gpu?.requestAdapter();
    return a ? `${a.info.vendor} ${a.info.architecture}`.trim() || 'unknown GPU' : 'no WebGPU adapter';
  });
  console.log(`WebGPU adapter: ${adapter}\n`);

  if (profile) {
    for (const [backend, fused] of [['webgpu', true], ['webgpu', false], ['wasm', true]]) {
      const p = await call('/bench/profile-step.ts', 'profileTrainStep', { backend, fused });
      const kernelMs = p.kernels.reduce((sum, k) => sum + k.ms, 0);
      console.log(`${backend}, ${fused ? 'LoRA Lab kernels' : 'plain tfjs'}: forward + backward ${p.wallMs.toFixed(0)} ms (${p.waitMs.toFixed(0)} waiting on the device), kernel time ${kernelMs.toFixed(0)} ms`);
      for (const k of p.kernels.slice(0, 15)) console.log(`  ${k.ms.toFixed(1).padStart(7)} ms ${String(k.count).padStart(4)}×  ${k.name}`);
      console.log('');
    }
  } else {
    await measure();
  }
} finally {
  await browser.close();
  await server.close();
}

async function measure() {
  const shapes = quick ? [{ name: 'tiny 64→192', tokens: 512, inFeatures: 64, outFeatures: 192, rank: 8 }] : undefined;
  const kernels = await call('/bench/kernels.ts', 'runKernelBench', { shapes, iterations: quick ? 5 : 10 });
  console.log('LoRA linear (T tokens, r 8): median ms, plain tfjs ÷ fused = speed-up');
  for (const r of kernels.rows) {
    const s = r.shape;
    console.log(
      `  ${s.name.padEnd(24)} T ${s.tokens}  forward ${r.fusedForwardMs.toFixed(1)} vs ${r.referenceForwardMs.toFixed(1)} ms = ${r.forwardSpeedup.toFixed(2)}×` +
        `   fwd+bwd ${r.fusedTrainMs.toFixed(1)} vs ${r.referenceTrainMs.toFixed(1)} ms = ${r.trainSpeedup.toFixed(2)}×`,
    );
  }

  const ops = await call('/bench/fused-ops.ts', 'runFusedOpsBench', { iterations: quick ? 5 : 10 });
  console.log('\nThe other fused ops at the tiny GPT-2\'s shapes: median ms, plain tfjs ÷ fused = speed-up');
  for (const r of ops) {
    console.log(
      `  ${r.name.padEnd(28)} forward ${r.fusedForwardMs.toFixed(1)} vs ${r.referenceForwardMs.toFixed(1)} ms = ${(r.referenceForwardMs / r.fusedForwardMs).toFixed(2)}×` +
        `   fwd+bwd ${r.fusedTrainMs.toFixed(1)} vs ${r.referenceTrainMs.toFixed(1)} ms = ${(r.referenceTrainMs / r.fusedTrainMs).toFixed(2)}×`,
    );
  }

  const opt = await call('/bench/fused-ops.ts', 'runOptimizerBench', { iterations: quick ? 5 : 10 });
  console.log(
    `  ${`clipping + AdamW, ${opt.variables} vars`.padEnd(28)} step    ${opt.fusedMs.toFixed(1)} vs ${opt.referenceMs.toFixed(1)} ms = ${(opt.referenceMs / opt.fusedMs).toFixed(2)}×`,
  );

  const steps = await call('/bench/train-step.ts', 'runTrainStepBench', { steps: quick ? 4 : 8 });
  console.log('\nTraining step, tiny GPT-2 (64 wide, 2 layers), batch 8 × seq 64, LoRA r 8 on c_attn:');
  for (const r of steps) console.log(`  ${r.backend.padEnd(7)} ${r.variant.padEnd(24)} ${r.tokensPerSecond.toFixed(0).padStart(7)} tokens/s  (${r.msPerStep.toFixed(0)} ms/step)`);
  const plain = steps.find((r) => r.backend === 'webgpu' && r.variant.startsWith('plain'));
  const fused = steps.find((r) => r.backend === 'webgpu' && r.variant.startsWith('LoRA'));
  const wasm = steps.find((r) => r.backend === 'wasm' && r.variant.startsWith('LoRA'));
  const stockWasm = steps.find((r) => r.backend === 'wasm' && r.variant.startsWith('plain'));
  if (wasm && stockWasm) console.log(`  wasm step speed-up, LoRA Lab ÷ plain tfjs: ${(wasm.tokensPerSecond / stockWasm.tokensPerSecond).toFixed(2)}×`);
  if (plain && fused) console.log(`  webgpu step speed-up, fused ÷ plain: ${(fused.tokensPerSecond / plain.tokensPerSecond).toFixed(2)}×`);
  if (wasm && fused) console.log(`  wasm vs webgpu (fused): ${(wasm.tokensPerSecond / fused.tokensPerSecond).toFixed(2)}× the tokens/s`);
}
