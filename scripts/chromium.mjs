// How LoRA Lab launches headless Chromium (the browser tests and the headless runner share it).
// Debian's chromium, never a downloaded browser; flags from ../shared/notes/webgpu.md.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const CHROME_PATH = process.env.CHROME_PATH ?? '/usr/lib/chromium/chromium';

export const CHROMIUM_ARGS = [
  '--enable-unsafe-webgpu', // the one flag WebGPU needs (SwiftShader on GPU-less machines)
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--disable-quic',
  '--disable-dev-shm-usage',
];

/** A fresh persistent profile (IndexedDB and the service worker survive reloads); close() removes it. */
export async function launchChromium() {
  const profile = mkdtempSync(join(tmpdir(), 'lora-lab-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROME_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
  });
  return {
    context,
    page: context.pages()[0] ?? (await context.newPage()),
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
