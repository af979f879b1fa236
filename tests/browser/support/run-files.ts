import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { Page } from 'playwright-core';
import { readEventFile } from '../../../src/core/logging';
import { applyRestarts, isSessionStart } from '../../../src/core/logging/session-log';

// A run's output as the tests compare it: its stored record, its files (exported by the app or written by the
// headless runner), its curves and its TensorBoard events, clock readings left out.

/** A run record as the app stores it (the fields the tests read). */
export interface StoredRunRecord {
  readonly id: string;
  readonly name: string;
  readonly status: string;
  readonly step: number;
  readonly createdAt: number;
  readonly interruptions?: { at_step: number; resumed_from_step: number }[];
}

/** Every stored run, read from IndexedDB with the plain API, as any tab could. */
export function storedRuns(page: Page): Promise<StoredRunRecord[]> {
  return page.evaluate(
    () =>
      new Promise((resolve, reject) => {
        const open = indexedDB.open('lora-lab');
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const request = open.result.transaction('runs', 'readonly').objectStore('runs').getAll();
          request.onsuccess = () => {
            open.result.close();
            resolve(request.result);
          };
          request.onerror = () => reject(request.error);
        };
      }),
  );
}

/** A run's output folder as the app exports it (exportRun), by path. */
export async function exportedFiles(page: Page, runId: string): Promise<Map<string, Uint8Array>> {
  const files = await page.evaluate(async (id) => {
    const { files } = await window.loraLab!.call('exportRun', { runId: id });
    // A merged model's files come as Blobs (OutputFile): read whole here, the test files are small.
    return Promise.all(files.map(async (f) => ({ path: f.path, bytes: Array.from(f.bytes instanceof Blob ? new Uint8Array(await f.bytes.arrayBuffer()) : f.bytes) })));
  }, runId);
  return new Map(files.map((f) => [f.path, Uint8Array.from(f.bytes)]));
}

/** Every file of a run's output folder on disk by its path inside it. */
export function filesUnder(root: string, dir = root): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) for (const [k, v] of filesUnder(root, path)) out.set(k, v);
    else out.set(relative(root, path), new Uint8Array(readFileSync(path)));
  }
  return out;
}

/** metrics.csv's cells without its clock column (throughput differs from run to run; nothing else may). */
export function curvesOf(files: Map<string, Uint8Array>): string[][] {
  const rows = new TextDecoder().decode(files.get('metrics.csv')).trim().split('\n').map((l) => l.split(','));
  const drop = rows[0]!.indexOf('tokens_per_second');
  return rows.map((r) => r.filter((_, i) => i !== drop));
}

/** The event file as TensorBoard reads it (restarts applied, their marks dropped), clock readings left out. */
export function eventsOf(files: Map<string, Uint8Array>): unknown[] {
  const path = [...files.keys()].find((p) => p.startsWith('logs/'))!;
  return applyRestarts(readEventFile(path, files.get(path)!))
    .filter((e) => !isSessionStart(e))
    .map(({ wallTime: _, ...rest }) =>
      rest.kind === 'summary' ? { ...rest, values: rest.values.map((v) => (v.tag === 'train/tokens_per_second' ? { ...v, value: 'clock' } : v)) } : rest,
    );
}
