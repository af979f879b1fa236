import { defineConfig } from 'vite';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { VitePWA } from 'vite-plugin-pwa';

// The app must work offline after one visit, so everything it needs at run time — the worker bundle
// with tfjs (~2-3 MB), the tfjs wasm binaries, the demo model — is precached. Workbox skips files over
// 2 MiB by default, which would silently break offline use; hence the raised limit.
const PRECACHE_LIMIT_BYTES = 64 * 1024 * 1024;

export default defineConfig({
  plugins: [
    svelte(),
    VitePWA({
      strategies: 'generateSW',
      registerType: 'prompt', // a new version is offered, never swapped under a running training
      injectRegister: false, // registered by src/pwa.ts through workbox-window
      manifest: {
        name: 'LoRA Lab',
        short_name: 'LoRA Lab',
        description: 'Fine-tune LoRA adapters in your browser, on your own GPU.',
        theme_color: '#1f2937',
        background_color: '#111827',
        display: 'standalone',
        start_url: '.',
        icons: [
          { src: 'icons/icon-192.png', sizes: '192x192', type: 'image/png' },
          { src: 'icons/icon-512.png', sizes: '512x512', type: 'image/png' },
          { src: 'icons/icon-512.png', sizes: '512x512', type: 'image/png', purpose: 'maskable' },
        ],
      },
      workbox: {
        globPatterns: ['**/*.{js,css,html,wasm,png,svg,json,txt,csv,safetensors,wgsl,webmanifest}'],
        maximumFileSizeToCacheInBytes: PRECACHE_LIMIT_BYTES,
        cleanupOutdatedCaches: true,
        // The first visit's page is taken over at once, so it works offline without a reload.
        // Later versions still wait for "Reload to update" (no skipWaiting).
        clientsClaim: true,
        navigateFallback: 'index.html',
      },
    }),
  ],
  worker: { format: 'es' },
  // Pre-bundled up front so the dev server never re-optimizes (and reloads the page) mid-test.
  optimizeDeps: { include: ['@tensorflow/tfjs', '@tensorflow/tfjs-backend-webgpu', '@tensorflow/tfjs-backend-wasm', 'uplot', 'idb', 'yaml', 'valibot', 'fflate', '@huggingface/tokenizers', '@huggingface/jinja', 'workbox-window'] },
  build: { target: 'es2022', chunkSizeWarningLimit: 4096 },
  server: { host: '127.0.0.1' },
  preview: { host: '127.0.0.1' },
});
