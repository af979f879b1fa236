import { defineConfig } from 'vitest/config';

// Node unit tests for the DOM-free core. Browser tests live in tests/browser and have their own config.
export default defineConfig({
  test: {
    include: ['tests/unit/**/*.test.ts'],
    environment: 'node',
    testTimeout: 60_000,
  },
});
