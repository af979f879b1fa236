#!/usr/bin/env node
// The headless runner: `npm run headless -- train --config RUN.yaml`.
// Builds the app, serves it on 127.0.0.1, drives it in headless Chromium, imports the model and data
// the config names through the app's own code paths, trains, and writes the run's output folder
// (PEFT adapter, logs/, config.yaml, metrics.csv, diagnosis.json) into the config's output_dir.
// Exits 0 on success; on bad input, non-zero with a one-line message.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import { launchChromium } from './chromium.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

class InputError extends Error {}

function usage() {
  return 'usage: npm run headless -- train --config RUN.yaml';
}

function parseArgs(argv) {
  const [command, ...rest] = argv;
  if (command !== 'train') throw new InputError(usage());
  const i = rest.indexOf('--config');
  const config = i >= 0 ? rest[i + 1] : undefined;
  if (!config) throw new InputError(usage());
  return { configPath: resolve(config) };
}

/** Paths in the config are relative to the config file. Everything else is validated by the app itself. */
function readPaths(configPath) {
  if (!existsSync(configPath)) throw new InputError(`${configPath}: no such config file`);
  const text = readFileSync(configPath, 'utf8');
  let data;
  try {
    data = parseYaml(text) ?? {};
  } catch (e) {
    throw new InputError(`${basename(configPath)}: not valid YAML (${String(e.message).split('\n')[0]})`);
  }
  if (typeof data !== 'object' || Array.isArray(data)) throw new InputError(`${basename(configPath)}: must be a YAML mapping of keys to values`);
  const base = dirname(configPath);
  const path = (key, required) => {
    const value = data[key];
    if (value === undefined || value === null || value === '') {
      if (required) throw new InputError(`${basename(configPath)}: ${key} is required`);
      return null;
    }
    if (typeof value !== 'string') throw new InputError(`${basename(configPath)}: ${key} must be a path`);
    return resolve(base, value);
  };
  const paths = {
    text,
    baseModel: path('base_model', true),
    trainData: path('train_data', true),
    valData: path('val_data', false),
    outputDir: path('output_dir', true),
    backend: typeof data.backend === 'string' ? data.backend : 'auto',
  };
  if (!existsSync(paths.baseModel) || !statSync(paths.baseModel).isDirectory()) throw new InputError(`base_model: ${paths.baseModel} is not a folder`);
  for (const key of ['trainData', 'valData']) {
    if (paths[key] && !existsSync(paths[key])) throw new InputError(`${key === 'trainData' ? 'train_data' : 'val_data'}: ${paths[key]} does not exist`);
  }
  return paths;
}

const fmt = (n, digits = 4) => (Number.isFinite(n) ? Number(n.toPrecision(digits)).toString() : String(n));
const eta = (s) => (!Number.isFinite(s) ? '…' : s < 60 ? `${Math.round(s)} s` : `${Math.round(s / 60)} min`);

function printEvent(e) {
  switch (e.kind) {
    case 'started':
      console.log(`run ${e.runId}: ${e.totalSteps} steps, ${e.trainTokens} training tokens, ${e.evalTokens} eval tokens, ${e.trainableParameters} trainable parameters`);
      break;
    case 'step':
      console.log(`step ${e.step} epoch ${fmt(e.epoch, 3)} loss ${fmt(e.loss)} lr ${fmt(e.learningRate, 3)} grad_norm ${fmt(e.gradNorm, 3)} tok/s ${Math.round(e.tokensPerSecond)} eta ${eta(e.secondsLeft)}`);
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

async function main() {
  const { configPath } = parseArgs(process.argv.slice(2));
  const paths = readPaths(configPath);

  const outDir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-'));
  const { preview } = await import('vite');
  let server;
  let browser;
  try {
    console.log('building the app…');
    execFileSync('npx', ['vite', 'build', '--logLevel', 'error', '--outDir', outDir, '--emptyOutDir'], { cwd: ROOT, stdio: 'inherit', env: { ...process.env, NODE_ENV: 'production' } });
    server = await preview({ root: ROOT, build: { outDir }, preview: { host: '127.0.0.1', port: 0 }, logLevel: 'error' });
    const url = server.resolvedUrls.local[0];
    console.log(`serving ${url}`);

    browser = await launchChromium();
    const { page, context } = browser;
    if (paths.backend === 'webgpu' || paths.backend === 'wasm') {
      await context.addInitScript((b) => localStorage.setItem('lora-lab.backend', b), paths.backend);
    }
    await page.exposeFunction('loraLabHeadlessEvent', printEvent);
    await page.goto(url);
    await page.waitForFunction(() => window.loraLab !== undefined);
    const backend = await page.evaluate(() => window.loraLab.ready.then(() => document.querySelector('[data-testid=backend]')?.textContent ?? ''));
    console.log(`backend: ${backend.replace(/\s+/g, ' ').trim()}`);

    console.log(`importing ${paths.baseModel}`);
    await page.locator('[data-testid=model-folder-input]').setInputFiles(paths.baseModel);
    const modelName = basename(paths.baseModel);
    const errorOrModel = await Promise.race([
      page.getByRole('radio', { name: new RegExp(`^${modelName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\b`) }).waitFor({ timeout: 600_000 }).then(() => null),
      page.getByRole('alert').first().waitFor({ timeout: 600_000 }).then(() => page.getByRole('alert').first().textContent()),
    ]);
    if (errorOrModel) throw new InputError(errorOrModel.replace(/\s+/g, ' ').replace(/^Could not use this input\s*/, '').replace(/Dismiss$/, '').trim());
    const modelId = await page.getByRole('radio', { checked: true }).inputValue();

    const file = (p) => (p ? { name: basename(p), base64: readFileSync(p).toString('base64') } : null);
    const result = await page.evaluate(
      async ({ modelId, configYaml, train, val }) => {
        const toFile = (f) => (f ? new File([Uint8Array.from(atob(f.base64), (c) => c.charCodeAt(0))], f.name) : null);
        try {
          const run = await window.loraLab.call('train', { modelId, configYaml, trainData: toFile(train), valData: toFile(val) }, { onEvent: (e) => window.loraLabHeadlessEvent(e) });
          const { files } = await window.loraLab.call('exportRun', { runId: run.runId });
          const b64 = (bytes) => {
            let s = '';
            for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            return btoa(s);
          };
          return { ok: true, run, files: files.map((f) => ({ path: f.path, base64: b64(f.bytes) })) };
        } catch (e) {
          return { ok: false, message: e.message, userError: e.detail?.userError ?? false };
        }
      },
      { modelId, configYaml: paths.text, train: file(paths.trainData), val: file(paths.valData) },
    );
    if (!result.ok) {
      if (result.userError) throw new InputError(result.message);
      throw new Error(result.message);
    }
    for (const f of result.files) {
      const target = join(paths.outputDir, f.path);
      mkdirSync(dirname(target), { recursive: true });
      writeFileSync(target, Buffer.from(f.base64, 'base64'));
    }
    console.log(`run ${result.run.reason} after ${result.run.steps} steps; wrote ${result.files.length} files to ${paths.outputDir}`);
  } finally {
    await browser?.close();
    await new Promise((r) => (server ? server.httpServer.close(r) : r()));
    rmSync(outDir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e instanceof InputError ? `error: ${e.message}` : `error: ${e.stack ?? e}`);
    process.exit(e instanceof InputError ? 2 : 1);
  },
);
