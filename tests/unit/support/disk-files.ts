import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource, type ByteSource } from '../../../src/core/safetensors/index';

/** A file of a folder on disk as the app reads a picked one: its '/'-path inside the folder and its bytes. */
export interface DiskFile {
  readonly path: string;
  readonly source: ByteSource;
}

/** Every file under `dir`, subfolders included, as the picked files the app reads (paths relative to `dir`). */
export function filesOnDisk(dir: string): DiskFile[] {
  const files: DiskFile[] = [];
  const walk = (rel: string): void => {
    for (const entry of readdirSync(join(dir, rel))) {
      const path = rel ? `${rel}/${entry}` : entry;
      if (statSync(join(dir, path)).isDirectory()) walk(path);
      else files.push({ path, source: bytesSource(path, new Uint8Array(readFileSync(join(dir, path)))) });
    }
  };
  walk('');
  return files;
}
