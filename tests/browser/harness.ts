import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

/** Debian's chromium; CHROME_PATH overrides (see scripts/ensure-chromium.mjs). */
export const CHROME_PATH = process.env.CHROME_PATH ?? '/usr/lib/chromium/chromium';

// See ../shared/notes/webgpu.md: the one flag WebGPU needs, plus quiet-network flags for a closed network.
const CHROMIUM_ARGS = [
  '--enable-unsafe-webgpu',
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--disable-dev-shm-usage',
];

export interface BrowserSession {
  readonly context: BrowserContext;
  readonly page: Page;
  /** Console errors and uncaught page errors seen so far. */
  readonly errors: string[];
  /** Every request URL the pages made. */
  readonly requests: string[];
  close(): Promise<void>;
}

/** A fresh Chromium profile (persistent, so IndexedDB and the service worker survive reloads). */
export async function openBrowser(): Promise<BrowserSession> {
  const profile = mkdtempSync(join(tmpdir(), 'lora-lab-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROME_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  const errors: string[] = [];
  const requests: string[] = [];
  context.on('request', (r) => requests.push(r.url()));
  context.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  context.on('weberror', (e) => errors.push(String(e.error())));
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    errors,
    requests,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Requests that left the app's origin (data:/blob: URLs never leave the page). */
export function foreignRequests(requests: readonly string[], origin: string): string[] {
  return requests.filter((u) => !u.startsWith(origin) && !/^(data|blob|chrome-extension):/.test(u));
}

/**
 * Calls `exportName(...args)` of a module served by the Vite dev server, inside the page.
 * The call is sent as source text: vitest rewrites `import()` inside functions passed to evaluate.
 */
export async function callInPage<T>(page: Page, modulePath: string, exportName: string, ...args: unknown[]): Promise<T> {
  const argsJson = JSON.stringify(args);
  return page.evaluate(`import(${JSON.stringify(modulePath)}).then((m) => m[${JSON.stringify(exportName)}](...${argsJson}))`) as Promise<T>;
}
