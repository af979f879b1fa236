import type { BrowserContext, Page } from 'playwright-core';
import { launchChromium } from '../../scripts/chromium.mjs';

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
  const { context, page, close } = await launchChromium();
  const errors: string[] = [];
  const requests: string[] = [];
  context.on('request', (r) => requests.push(r.url()));
  context.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  context.on('weberror', (e) => errors.push(String(e.error())));
  return { context, page, errors, requests, close };
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
