import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DiffusersFolder } from '../../../src/core/models/diffusion/component';
import { filesOnDisk } from './disk-files';

/** The shared tiny SD 1.x fixture folder (diffusers layout) and its reference outputs. */
export const SD_FIXTURES = fileURLToPath(new URL('../../../../shared/fixtures/sd/', import.meta.url));
export const TINY_SD = join(SD_FIXTURES, 'tiny-sd');

/** A diffusers folder on disk as the map of relative paths → byte sources the core loader reads. */
export function diffusersFolderFromDisk(dir: string = TINY_SD): DiffusersFolder {
  return new Map(filesOnDisk(dir).map((f) => [f.path, f.source]));
}

/** A JSON file of the SD fixtures, e.g. `expected/unet_forward_seed0.json`. */
export function readSdFixtureJson<T = unknown>(relativePath: string): T {
  return JSON.parse(readFileSync(join(SD_FIXTURES, relativePath), 'utf8')) as T;
}
