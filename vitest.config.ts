import { defineConfig } from 'vitest/config';

// Node unit tests for the DOM-free core. Browser tests live in tests/browser and have their own config.
export default defineConfig({
  test: {
    include: ['tests/unit/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
    // Two workers: the tests are CPU-bound and each tfjs backend computes on one thread, so on the 2-core CI machine
    // vitest's default (cores − 1 = one worker) left a core idle: 578 s → 257 s for the unit suite here.
    maxWorkers: 2,
  },
});
