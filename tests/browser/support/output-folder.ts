import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';

/** Every file of a run's output folder by its path inside it, read from disk. */
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
