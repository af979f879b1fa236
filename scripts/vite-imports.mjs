// Preload for running src/ under Node with tsx (`tsx --import ./scripts/vite-imports.mjs …`): the code
// imports WGSL shaders with Vite's `?raw` suffix and the wasm binaries with `?url`, which Node does not
// understand. This module hook serves them as Vite does: `?raw` as the file's text, `?url` as its
// address, each a default-exported string. Vite and Vitest need none of it.
import { register } from 'node:module';

const hook = `
  import { readFileSync } from 'node:fs';
  import { fileURLToPath } from 'node:url';
  export async function load(url, context, next) {
    let value;
    if (url.endsWith('?raw')) value = readFileSync(fileURLToPath(url.slice(0, -'?raw'.length)), 'utf8');
    else if (url.endsWith('?url')) value = url.slice(0, -'?url'.length);
    else return next(url, context);
    return { format: 'module', source: 'export default ' + JSON.stringify(value) + ';', shortCircuit: true };
  }`;
register(`data:text/javascript,${encodeURIComponent(hook)}`);
