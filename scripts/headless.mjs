#!/usr/bin/env node
// The headless runner: `npm run headless -- train --config RUN.yaml`.
// Builds the app, serves it on 127.0.0.1, drives it in headless Chromium, imports the model and data
// the config names through the app's own worker calls, trains, and writes the run's output folder
// (PEFT adapter, logs/, config.yaml, metrics.csv, diagnosis.json, run_summary.json, the README.md model
// card with loss_curves.png, llamafactory/: the run bundle of src/core/export/run-bundle.ts) into output_dir.
// A config with a `sweep:` map trains each of its runs back to back into output_dir/<run name>/ and
// writes output_dir/sweep_summary.csv (headless-sweep.mjs).
// Exits 0 on success. Every failure, from a bad path to a crashed page, ends with exactly one line
// `error: …` on stderr and a non-zero exit (2 for bad input, 1 otherwise), never a stack trace.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crashWatch, resumeAfterCrash } from './headless-crash.mjs';
import { firstLine, guardPage, RunnerError, withTimeout } from './headless-guard.mjs';
import { InputError, parseArgs, readConfig } from './headless-inputs.mjs';
import { importInitAdapter } from './headless-adapter.mjs';
import { writeExportedFiles } from './headless-export.mjs';
import { installPageCalls, withExportedFiles } from './headless-page.mjs';
import { loadSweep, sweepSummary } from './headless-sweep.mjs';
import { trainImagesInPage } from './headless-images.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Starting the app (page load, engine worker, backend) takes seconds; this is for a machine under load. */
const START_TIMEOUT_MS = 180_000;

const fmt = (n, digits = 4) => (Number.isFinite(n) ? Number(n.toPrecision(digits)).toString() : String(n));
const eta = (s) => (!Number.isFinite(s) ? '…' : s < 60 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

/** What a step's throughput counts: tokens, or images for an image run (its started event says which). */
let throughputUnit = 'tok/s';

function printEvent(e) {
  switch (e.kind) {
    case 'started': {
      throughputUnit = e.images ? 'img/s' : 'tok/s';
      const data = e.images ? `${e.images.train} training images, ${e.images.eval} validation images` : `${e.trainTokens} training tokens, ${e.evalTokens} eval tokens`;
      console.log(`run ${e.runId}: ${e.totalSteps} steps, ${data}, ${e.trainableParameters} trainable parameters${e.fromStep > 0 ? `; resuming after step ${e.fromStep}` : ''}`);
      break;
    }
    case 'step':
      console.log(`step ${e.step} epoch ${fmt(e.epoch, 3)} loss ${fmt(e.loss)} lr ${fmt(e.learningRate, 3)} grad_norm ${fmt(e.gradNorm, 3)} ${throughputUnit} ${throughputUnit === 'img/s' ? fmt(e.tokensPerSecond, 3) : Math.round(e.tokensPerSecond)} eta ${eta(e.secondsLeft)}`);
      break;
    case 'eval':
      console.log(`eval step ${e.step} eval_loss ${fmt(e.loss)}`);
      break;
    case 'diagnosis':
      for (const f of e.findings) console.log(`diagnosis ${f.code} (${f.severity}): ${f.message} ${f.suggestion}`);
      break;
    default:
      break;
  }
}

/** A line when a phase begins (storing weights, loading them, tokenizing), then one at most every 15 s. */
function progressPrinter() {
  let phase = null;
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (p.phase === phase && now - last < 15_000) return;
    const amount = p.total > 0 ? ` ${Math.floor((100 * p.done) / p.total)}%` : '';
    const size = p.unit === 'bytes' && p.total > 0 ? ` of ${fmt(p.total / 2 ** 20, 3)} MiB` : '';
    console.log(`${p.phase}…${amount}${size}`);
    phase = p.phase;
    last = now;
  };
}

/** vite build, quiet on success; on failure its first error line, not its whole report. */
function buildApp(outDir) {
  try {
    execFileSync('npx', ['vite', 'build', '--logLevel', 'error', '--outDir', outDir, '--emptyOutDir'], {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'pipe'],
      maxBuffer: 64 * 2 ** 20,
      env: { ...process.env, NODE_ENV: 'production' },
    });
  } catch (e) {
    throw new RunnerError(`building the app failed: ${firstLine(e.stderr?.toString() || e)}`);
  }
}

/**
 * Hands files to the page through hidden file inputs: Chromium reads them from disk itself (links
 * followed, nothing base64-encoded, no size limit) and the page gets real File objects.
 */
async function fileInput(page, id, paths) {
  await page.evaluate((id) => {
    const input = Object.assign(document.createElement('input'), { type: 'file', multiple: true, id, hidden: true });
    document.body.append(input);
  }, id);
  await page.setInputFiles(`#${id}`, paths);
  const count = await page.evaluate((id) => document.getElementById(id).files.length, id);
  if (count !== paths.length) throw new RunnerError(`Chromium took ${count} of the ${paths.length} files given for ${id}`);
}

async function main() {
  const { configPath, crashAtStep } = parseArgs(process.argv.slice(2));
  const crash = crashAtStep === null ? null : crashWatch(crashAtStep);
  const paths = readConfig(configPath);
  // A sweep is checked whole before anything is built: a typo in its last list fails now, not an hour in.
  const sweep = paths.hasSweep && paths.kind === 'text' ? await loadSweep(configPath, paths.text) : null;
  if (sweep && crash) throw new InputError('--crash-at-step: works on one run, not on a sweep; remove sweep or the option');

  // LORA_LAB_BUILT_APP: a production build made already (the browser tests' own), served as it is instead of
  // building the same app once more for every run; it is not ours to delete.
  const prebuilt = process.env.LORA_LAB_BUILT_APP || null;
  const outDir = prebuilt ?? mkdtempSync(join(tmpdir(), 'lora-lab-headless-'));
  let server;
  let browser;
  let guard;
  const cleanUp = async () => {
    guard?.closing();
    if (browser) await withTimeout(browser.close(), 30_000);
    if (server) {
      server.httpServer.closeAllConnections?.();
      await withTimeout(new Promise((r) => server.httpServer.close(r)), 10_000);
    }
    if (!prebuilt) rmSync(outDir, { recursive: true, force: true });
  };
  onSignals(cleanUp);
  try {
    if (!prebuilt) {
      console.log('building the app…');
      buildApp(outDir);
    }
    const { preview } = await import('vite');
    server = await preview({ root: ROOT, build: { outDir }, preview: { host: '127.0.0.1', port: 0 }, logLevel: 'silent' });
    const url = server.resolvedUrls.local[0];
    console.log(`serving ${url}`);

    try {
      // Loaded here, not at the top: bad input is refused without loading playwright at all.
      const { launchChromium } = await import('./chromium.mjs');
      browser = await launchChromium();
    } catch (e) {
      throw new RunnerError(`could not start Chromium: ${firstLine(e)}`);
    }
    const { context } = browser;
    let { page } = browser;
    guard = guardPage({ page, context });
    page.setDefaultTimeout(START_TIMEOUT_MS);
    if (paths.backend === 'webgpu' || paths.backend === 'wasm') {
      await context.addInitScript((b) => localStorage.setItem('lora-lab.backend', b), paths.backend);
    }
    const printProgress = progressPrinter();
    const setUp = async (p) => {
      await p.exposeFunction('loraLabHeadlessEvent', (e) => {
        crash?.see(e);
        printEvent(e);
        // A full disk pauses the run until a person frees space (src/worker/storage-full.ts); unattended, say so and end.
        if (e.kind === 'paused' && e.reason) {
          const what = e.reason.replace(/ Free space \(Storage panel\) and press Resume\.$/, '');
          // At once, before closing Chromium: a close first would end the run with a vaguer "page closed" (playwright
          // kills the browser it launched when this process exits).
          fail(new RunnerError(`${what} Free disk space and run it again.`));
        }
      });
      await p.exposeFunction('loraLabHeadlessProgress', printProgress);
      await p.addInitScript(installPageCalls);
    };
    await setUp(page);

    await guard.step('opening the app', page.goto(url));
    await guard.step('starting the engine', page.waitForFunction(() => window.loraLab !== undefined));
    const backend = await guard.step(
      'starting the engine',
      page.evaluate(() =>
        window.loraLab.ready.then(() => {
          const panel = document.querySelector('[data-testid=backend]');
          const parts = [...(panel?.querySelectorAll('.badge, .reason, .adapter') ?? [])].map((e) => e.textContent.replace(/\s+/g, ' ').trim());
          return { text: parts.filter(Boolean).join(' · '), error: panel?.querySelector('[role=alert]')?.textContent ?? null };
        }),
      ),
    );
    if (backend.error) throw new InputError(`backend: ${backend.error.trim()}`);
    console.log(`backend: ${backend.text}`);

    /**
     * Waits for `training` to end, or with --crash-at-step for its halt: then the page is torn down and the run
     * resumed in a new one (`resume(runId)`: the request and payload that continue it). Writes the run's files.
     */
    const finish = async (training, resume) => {
      let result;
      const halt = crash ? await Promise.race([crash.halted, training.then(() => null)]) : null;
      if (halt) {
        training.catch(() => undefined); // it ends with the page, torn down on purpose
        guard.closing();
        ({ page, guard, result } = await resumeAfterCrash({ page, context, url, halt, resume: resume(halt.runId), guard: (p) => guardPage({ page: p, context }), setUp }));
      } else {
        result = await training;
        if (crash && result.ok) throw new InputError(`--crash-at-step ${crash.step}: the run ended after ${result.run?.steps ?? 'its'} steps, before that step`);
      }
      if (!result.ok) throw result.userError ? new InputError(result.message) : new RunnerError(`training: ${result.message}`);
      await writeRunFiles(page, paths.outputDir, result);
    };

    if (paths.kind === 'image') {
      const training = trainImagesInPage({ page, guard, fileInput, paths, haltAfterStep: crashAtStep ?? undefined });
      await finish(training, (runId) => ({ request: 'resumeImageRun', payload: { runId } }));
      return;
    }

    console.log(`importing ${paths.baseModel}`);
    await guard.step('handing the model files to Chromium', fileInput(page, 'lora-lab-headless-model', paths.modelFiles));
    await guard.step('handing the data files to Chromium', fileInput(page, 'lora-lab-headless-train', [paths.trainData]));
    if (paths.valData) await guard.step('handing the data files to Chromium', fileInput(page, 'lora-lab-headless-val', [paths.valData]));

    const imported = await guard.step(
      `importing ${basename(paths.baseModel)}`,
      page.evaluate((name) => window.loraLabHeadlessCall('importModel', { name, files: [...document.getElementById('lora-lab-headless-model').files] }), basename(paths.baseModel)),
    );
    if (!imported.ok) throw imported.userError ? new InputError(imported.message) : new RunnerError(`importing the model: ${imported.message}`);
    const modelId = imported.result.modelId;
    await importInitAdapter({ page, guard, fileInput, modelId, initAdapter: paths.initAdapter });

    const train = (configYaml, haltAfterStep) => guard.step(
      'training',
      withExportedFiles(
        page,
        page.evaluate(
          ({ modelId, configYaml, hasVal, haltAfterStep }) => {
            const file = (id) => document.getElementById(id).files[0];
            return window.loraLabHeadlessTrain('train', { modelId, configYaml, trainData: file('lora-lab-headless-train'), valData: hasVal ? file('lora-lab-headless-val') : null, haltAfterStep });
          },
          { modelId, configYaml, hasVal: paths.valData !== null, haltAfterStep },
        ),
      ),
    );
    if (sweep) {
      await runSweep(sweep, train, paths.outputDir, page);
      return;
    }
    await finish(train(paths.text, crashAtStep ?? undefined), (runId) => ({ request: 'resumeRun', payload: { runId, modelId } }));
  } finally {
    await cleanUp();
  }
}

/** The run's exported files into its folder (headless-export.mjs), and a line saying so. */
async function writeRunFiles(page, dir, result) {
  try {
    await writeExportedFiles(page, dir, result.files);
  } catch (e) {
    throw new RunnerError(`writing the run's files into ${dir}: ${firstLine(e)}`);
  }
  console.log(`run ${result.run.reason} after ${result.run.steps} steps; wrote ${result.files.length} files to ${dir}`);
  const summary = result.files.find((f) => f.path === 'run_summary.json');
  if (summary) console.log(summaryLine(JSON.parse(Buffer.from(summary.base64, 'base64').toString('utf8'))));
}

/**
 * The sweep's runs back to back on the one loaded model, each into output_dir/<its name>, then
 * output_dir/sweep_summary.csv ranking them. A run that fails stops the sweep: the runs before it
 * keep their folders.
 */
async function runSweep(sweep, train, outputDir, page) {
  const done = [];
  for (const [i, run] of sweep.runs.entries()) {
    console.log(`sweep run ${i + 1} of ${sweep.runs.length}: ${run.name}`);
    const result = await train(run.yaml, undefined);
    if (!result.ok) throw result.userError ? new InputError(`${run.name}: ${result.message}`) : new RunnerError(`training ${run.name}: ${result.message}`);
    await writeRunFiles(page, join(outputDir, run.name), result);
    done.push({ run, files: result.files });
  }
  const { csv, best } = await sweepSummary(sweep.keys, done);
  const target = join(outputDir, 'sweep_summary.csv');
  try {
    writeFileSync(target, csv);
  } catch (e) {
    throw new RunnerError(`writing ${target}: ${firstLine(e)}`);
  }
  console.log(`sweep of ${sweep.runs.length} runs done; wrote ${target}${best ? `; best: ${best.folder}` : ''}`);
}

/** run_summary.json in one line: what the run held and how fast it went. */
function summaryLine(s) {
  const mib = (b) => `${fmt(b / 2 ** 20, 4)} MiB`;
  const heap = s.wasm_heap_bytes ? `, wasm memory ${mib(s.wasm_heap_bytes)}` : '';
  const speed = s.tokens_per_second === null ? 'no step timed' : `median ${Math.round(s.tokens_per_second)} tok/s, ${fmt(s.step_seconds, 3)} s a step`;
  return `summary: peak ${mib(s.peak_memory_bytes)} (base weights ${mib(s.base_weight_bytes)}${heap}) on ${s.backend}${s.adapter ? ` (${s.adapter})` : ''}; ${speed}; ${fmt(s.total_seconds, 3)} s in all`;
}

/** Ctrl-C closes Chromium and the server before exiting, with the one line every failure gets. */
let interrupted = null;
function onSignals(cleanUp) {
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      // Set first: closing the browser makes the run's own wait fail, and that is not the news.
      interrupted = signal;
      void withTimeout(cleanUp(), 15_000).then(() => fail(new RunnerError(`stopped by ${signal}`), 130));
    });
  }
}

let failed = false;
function fail(e, code) {
  if (failed) return;
  if (interrupted && code !== 130) return; // the signal handler says it once the browser is closed
  failed = true;
  const message = e instanceof InputError || e instanceof RunnerError ? e.message : firstLine(e);
  process.stderr.write(`error: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(code ?? (e instanceof InputError ? 2 : 1));
}

// Nothing may escape as a stack trace, not even an error thrown where no one awaits it.
process.on('uncaughtException', (e) => fail(e));
process.on('unhandledRejection', (e) => fail(e));

main().then(
  () => {
    if (!interrupted) process.exit(0);
  },
  (e) => fail(e),
);
