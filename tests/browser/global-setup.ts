import type { TestProject } from 'vitest/node';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, preview, type PreviewServer, type ViteDevServer } from 'vite';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The production build (with its service worker), as a person gets it. */
    appUrl: string;
    /** The Vite dev server: lets a test page import any module of src/ directly. */
    devUrl: string;
    /** The folder of that production build: the headless runner serves it instead of building its own. */
    builtAppDir: string;
  }
}

let built: PreviewServer | undefined;
let dev: ViteDevServer | undefined;
let outDir: string | undefined;

export async function setup(project: TestProject): Promise<void> {
  const root = new URL('../..', import.meta.url).pathname;
  // A production build in its own process: inside vitest NODE_ENV is "test", which would build a
  // development bundle (no service worker registration) — not what a person gets.
  // Each run builds into its own folder, so two test runs never serve each other's half-written build.
  outDir = mkdtempSync(join(tmpdir(), 'lora-lab-build-'));
  execFileSync('npx', ['vite', 'build', '--logLevel', 'warn', '--outDir', outDir, '--emptyOutDir'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, NODE_ENV: 'production' },
  });
  built = await preview({ root, build: { outDir }, preview: { host: '127.0.0.1', port: 0, strictPort: false }, logLevel: 'warn' });
  // No hot reload and no file watching: an edit made while the suite runs (a second developer, a
  // formatter) must not reload a test page mid-test; every page load reads the files as they are then.
  dev = await createServer({ root, server: { host: '127.0.0.1', port: 0, hmr: false, watch: null }, logLevel: 'warn' });
  await dev.listen();
  project.provide('appUrl', urlOf(built.resolvedUrls?.local[0]));
  project.provide('devUrl', urlOf(dev.resolvedUrls?.local[0]));
  project.provide('builtAppDir', outDir);
}

export async function teardown(): Promise<void> {
  await dev?.close();
  await new Promise<void>((resolve) => (built ? built.httpServer.close(() => resolve()) : resolve()));
  if (outDir) rmSync(outDir, { recursive: true, force: true });
}

function urlOf(url: string | undefined): string {
  if (!url) throw new Error('the test server did not report its address');
  return url.replace(/\/$/, '');
}
