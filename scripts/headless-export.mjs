// The run's exported files, from the page into output_dir. Small files come back from the page inline, as base64;
// a file the worker hands over as a Blob (a merged model's shard, kept on disk by the browser, see
// src/storage/runs.ts putArtifact) stays in the page and is copied here one slice at a time, so neither the page
// nor this process ever holds it whole (a 2 GB shard as one base64 string would not even fit in a JS string).

import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** Bytes of a Blob copied per round trip to the page (about 11 MB of base64). */
const SLICE_BYTES = 8 * 1024 * 1024;

/**
 * Runs in the page (page.evaluate(listExportedInPage)), after the run's files from `exportRun` were left in
 * window.loraLabHeadlessExport: the files as the runner lists them, `{ path, base64 }` for bytes, `{ path, blob,
 * size }` for a Blob, which stays in the page under window.loraLabHeadlessBlobs[blob] until it has been copied.
 */
export function listExportedInPage() {
  const b64 = (bytes) => {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(s);
  };
  const files = window.loraLabHeadlessExport ?? [];
  window.loraLabHeadlessExport = null;
  const blobs = (window.loraLabHeadlessBlobs = []);
  return files.map((f) => (f.bytes instanceof Blob ? { path: f.path, blob: blobs.push(f.bytes) - 1, size: f.bytes.size } : { path: f.path, base64: b64(f.bytes) }));
}

/** Writes the listed files into `dir`, copying Blobs from `page` a slice at a time. */
export async function writeExportedFiles(page, dir, files) {
  for (const f of files) {
    const target = join(dir, f.path);
    mkdirSync(dirname(target), { recursive: true });
    if (f.base64 !== undefined) writeFileSync(target, Buffer.from(f.base64, 'base64'));
    else await copyExportedBlob(page, f, target);
  }
  await page.evaluate(() => {
    window.loraLabHeadlessBlobs = [];
  });
}

async function copyExportedBlob(page, file, target) {
  const fd = openSync(target, 'w');
  try {
    for (let at = 0; at < file.size; at += SLICE_BYTES) {
      const base64 = await page.evaluate(
        async ({ index, begin, end }) => {
          const bytes = new Uint8Array(await window.loraLabHeadlessBlobs[index].slice(begin, end).arrayBuffer());
          let s = '';
          for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
          return btoa(s);
        },
        { index: file.blob, begin: at, end: Math.min(file.size, at + SLICE_BYTES) },
      );
      writeSync(fd, Buffer.from(base64, 'base64'));
    }
  } finally {
    closeSync(fd);
  }
}
