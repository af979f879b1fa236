import { defineConfig } from 'vite';

// Bundles bench/node-webgpu.ts with everything it imports (tfjs, the kernels, their WGSL) into one
// file that plain Node runs, for a GPU machine that has Node but no node_modules (scripts/device-bench.sh).
export default defineConfig({
  logLevel: 'warn',
  publicDir: false,
  ssr: { noExternal: true, target: 'node' },
  build: {
    ssr: 'bench/node-webgpu.ts',
    outDir: '.device/bench',
    emptyOutDir: true,
    minify: false,
    rollupOptions: { output: { format: 'es', entryFileNames: 'node-webgpu.mjs', codeSplitting: false } },
  },
});
