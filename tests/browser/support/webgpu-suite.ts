import { afterAll, beforeAll, expect, inject } from 'vitest';
import { callInPage, openBrowser, type BrowserSession } from '../harness';

export interface WebGpuPage {
  /** Calls an export of the page module in the page. */
  call<T>(exportName: string, ...args: unknown[]): Promise<T>;
  /** Console and page errors so far, without Chromium's 404 for the favicon the blank page lacks. */
  errors(): string[];
}

/**
 * For a suite of checks run inside the page: a browser on the dev server's blank page, with the
 * module `modulePath` (under tests/browser/pages/) switched to WebGPU by its `setup` export, which
 * must report the webgpu backend (tfjs silently stays on cpu without an adapter). Opened before the
 * suite's tests and closed after them; call at the top level of a test file.
 */
export function useWebGpuPage(modulePath: string): WebGpuPage {
  let browser: BrowserSession | undefined;
  const session = (): BrowserSession => {
    if (!browser) throw new Error('the browser is not open yet: use the page inside tests');
    return browser;
  };
  beforeAll(async () => {
    browser = await openBrowser();
    await browser.page.goto(`${inject('devUrl')}/tests/browser/pages/blank.html`);
    const { backend } = await callInPage<{ backend: string }>(browser.page, modulePath, 'setup');
    expect(backend).toBe('webgpu');
  });
  afterAll(async () => browser?.close());
  return {
    call: <T>(exportName: string, ...args: unknown[]) => callInPage<T>(session().page, modulePath, exportName, ...args),
    errors: () => session().errors.filter((e) => !/Failed to load resource: .* 404/.test(e)),
  };
}
