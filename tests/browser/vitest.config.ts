import { defineConfig } from 'vitest/config';

// Browser tests: Node-side vitest files that drive Debian's Chromium through playwright-core.
// globalSetup builds the app once and serves it (built + dev server) on 127.0.0.1.
export default defineConfig({
  test: {
    root: new URL('../..', import.meta.url).pathname,
    include: ['tests/browser/**/*.test.ts'],
    environment: 'node',
    globalSetup: ['tests/browser/global-setup.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    // One Chromium at a time: CI has 2 cores and SwiftShader uses them all.
    fileParallelism: false,
  },
});
