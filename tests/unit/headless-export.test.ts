import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
// @ts-expect-error -- a plain .mjs script of the headless runner, without type declarations
import { listExportedInPage, writeExportedFiles } from '../../scripts/headless-export.mjs';

/**
 * The headless runner's copy of a run's files out of the page: a page stand-in that runs page.evaluate's
 * function here, on a `window` of its own, and records how many bytes each round trip carried back.
 */
function pageStandIn() {
  const window: Record<string, unknown> = {};
  let largestReturn = 0;
  const page = {
    async evaluate<A, R>(fn: (arg: A) => R | Promise<R>, arg: A): Promise<R> {
      (globalThis as { window?: unknown }).window = window;
      try {
        const result = await fn(arg);
        largestReturn = Math.max(largestReturn, typeof result === 'string' ? result.length : JSON.stringify(result ?? null).length);
        return result;
      } finally {
        delete (globalThis as { window?: unknown }).window;
      }
    },
  };
  return { page, window, largestReturn: () => largestReturn };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('headless export of a run folder', () => {
  it('copies a Blob (a merged shard) in slices, byte-identical, and small files inline', async () => {
    // 20 MB of a pattern with no period of a slice's size (a slice copied to the wrong place shows): three round trips.
    const shard = new Uint8Array(20 * 1024 * 1024 + 123);
    for (let i = 0; i < shard.length; i++) shard[i] = (i * 2654435761) >>> 24;
    const { page, window, largestReturn } = pageStandIn();
    window.loraLabHeadlessExport = [
      { path: 'adapter_config.json', bytes: new TextEncoder().encode('{"r": 4}') },
      { path: 'merged/model.safetensors', bytes: new Blob([shard]) },
      { path: 'merged/empty.json', bytes: new Blob([]) },
    ];
    const files = await page.evaluate(listExportedInPage, undefined);
    expect(files).toEqual([
      { path: 'adapter_config.json', base64: Buffer.from('{"r": 4}').toString('base64') },
      { path: 'merged/model.safetensors', blob: 0, size: shard.length },
      { path: 'merged/empty.json', blob: 1, size: 0 },
    ]);
    const dir = mkdtempSync(join(tmpdir(), 'headless-export-'));
    dirs.push(dir);
    await writeExportedFiles(page, dir, files);
    expect(Buffer.from(readFileSync(join(dir, 'merged/model.safetensors'))).equals(Buffer.from(shard))).toBe(true);
    expect(readFileSync(join(dir, 'adapter_config.json'), 'utf8')).toBe('{"r": 4}');
    expect(readFileSync(join(dir, 'merged/empty.json')).length).toBe(0);
    // No round trip carried the shard whole: at most one 8 MiB slice, as base64 (4/3 of it).
    expect(largestReturn()).toBeLessThanOrEqual(Math.ceil((8 * 1024 * 1024) / 3) * 4);
    expect(largestReturn()).toBeGreaterThan(8 * 1024 * 1024);
    expect(window.loraLabHeadlessBlobs).toEqual([]);
  });
});
