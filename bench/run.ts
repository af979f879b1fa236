// npm run bench: measures, in one run on this machine, the fused kernels against the plain tfjs
// composition (per op, forward and forward+backward) and whole training steps on webgpu and wasm, in
// headless Chromium. Prints ratios; asserts nothing (speed goals are read from here, not from tests).
// Options: --quick (tiny shape only, fewer iterations: what a GPU-less machine can afford);
// --profile (only where a training step's time goes, kernel by kernel: webgpu fused and plain, wasm);
// --shape NAME (a real model's widths instead, random weights through the app's import and load; see
// bench/shape-bench.ts for its options).
import { createServer } from 'vite';
import { launchChromium } from '../scripts/chromium.mjs';
import type { FusedOpRow, OptimizerBenchRow } from './fused-ops';
import type { KernelBenchResult } from './kernels';
import type { StepProfile } from './profile-step';
import { fusedOpLines, kernelLines, trainStepLines } from './report';
import { prepareShapeBench, type ShapeBench } from './shape-bench';
import type { TrainStepRow } from './train-step';

const quick = process.argv.includes('--quick');
const profile = process.argv.includes('--profile');
let shape: ShapeBench | null = null;
try {
  // Before anything is launched: a mistyped option ends here, in one line.
  if (process.argv.includes('--shape')) shape = prepareShapeBench(process.argv);
} catch (e) {
  console.error(`bench: ${(e as Error).message}`);
  process.exit(2);
}
// However the run ends, the model folder (up to gigabytes in the temporary directory) goes.
process.on('exit', () => shape?.dispose());
const root = new URL('..', import.meta.url).pathname;
// No HMR: an edit elsewhere in the working tree would otherwise reload the page in the middle of a measurement.
const server = await createServer({ root, server: { host: '127.0.0.1', port: 0, hmr: false }, logLevel: 'error' });
await server.listen();
const url = server.resolvedUrls!.local[0]!.replace(/\/$/, '');
const browser = await launchChromium();
/** Runs an export of a bench module inside the page (the modules need WebGPU, so they run there). */
const call = <T>(module: string, fn: string, arg: unknown): Promise<T> =>
  browser.page.evaluate(`import(${JSON.stringify(module)}).then((m) => m[${JSON.stringify(fn)}](${JSON.stringify(arg)}))`) as Promise<T>;

try {
  await browser.page.goto(`${url}/tests/browser/pages/blank.html`);
  const adapter = await browser.page.evaluate(async () => {
    const a = await navigator.gpu?.requestAdapter();
    return a ? `${a.info.vendor} ${a.info.architecture}`.trim() || 'unknown GPU' : 'no WebGPU adapter';
  });
  console.log(`WebGPU adapter: ${adapter}\n`);
  if (shape) await shape.measure(browser.page, call);
  else if (profile) await printProfiles();
  else await measure();
} finally {
  await browser.close();
  await server.close();
}

async function printProfiles(): Promise<void> {
  for (const [backend, fused] of [['webgpu', true], ['webgpu', false], ['wasm', true]] as const) {
    const p = await call<StepProfile>('/bench/profile-step.ts', 'profileTrainStep', { backend, fused });
    const kernelMs = p.kernels.reduce((sum, k) => sum + k.ms, 0);
    console.log(`${backend}, ${fused ? 'LoRA Lab kernels' : 'plain tfjs'}: forward + backward ${p.wallMs.toFixed(0)} ms (${p.waitMs.toFixed(0)} waiting on the device), kernel time ${kernelMs.toFixed(0)} ms`);
    for (const k of p.kernels.slice(0, 15)) console.log(`  ${k.ms.toFixed(1).padStart(7)} ms ${String(k.count).padStart(4)}×  ${k.name}`);
    console.log('');
  }
}

async function measure(): Promise<void> {
  const iterations = quick ? 5 : 10;
  const shapes = quick ? [{ name: 'tiny 64→192', tokens: 512, inFeatures: 64, outFeatures: 192, rank: 8 }] : undefined;
  const kernels = await call<KernelBenchResult>('/bench/kernels.ts', 'runKernelBench', { shapes, iterations });
  console.log(kernelLines(kernels.rows).join('\n'));
  const ops = await call<FusedOpRow[]>('/bench/fused-ops.ts', 'runFusedOpsBench', { iterations });
  const optimizer = await call<OptimizerBenchRow>('/bench/fused-ops.ts', 'runOptimizerBench', { iterations });
  console.log(`\n${fusedOpLines(ops, optimizer).join('\n')}`);
  const steps = await call<TrainStepRow[]>('/bench/train-step.ts', 'runTrainStepBench', { steps: quick ? 2 : 3, rounds: quick ? 2 : 3 });
  console.log(`\n${trainStepLines(steps).join('\n')}`);
}
