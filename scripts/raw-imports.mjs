// Preload for running src/ under Node with tsx (`tsx --import ./scripts/raw-imports.mjs …`): the
// kernels import their WGSL shaders with Vite's `?raw` suffix, which Node does not understand. This
// module hook serves such imports as Vite does, as a default-exported string. Vite and Vitest need none.
import { register } from 'node:module';

const hook = `
  import { readFileSync } from 'node:fs';
  import { fileURLToPath } from 'node:url';
  export async function load(url, context, next) {
    if (!url.endsWith('?raw')) return next(url, context);
    const text = readFileSync(fileURLToPath(url.slice(0, -'?raw'.length)), 'utf8');
    return { format: 'module', source: 'export default ' + JSON.stringify(text) + ';', shortCircuit: true };
  }`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);
