import 'fake-indexeddb/auto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deleteDB } from 'idb';
import { bytesSource } from '../../../src/core/safetensors/index';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb } from '../../../src/storage/db';
import { importModel } from '../../../src/storage/import-model';
import { localLocks } from '../../../src/storage/locks';

const FIXTURES = fileURLToPath(new URL('../../../../shared/fixtures/models/', import.meta.url));

/** A fresh database (fake-indexeddb) holding the fixture tiny-gpt2, imported as the app imports a folder. */
export async function freshDbWithTinyGpt2(): Promise<{ db: LoraLabDb; modelId: string }> {
  return freshDbWithModelFolder(join(FIXTURES, 'tiny-gpt2'), 'tiny-gpt2');
}

/** A fresh database (fake-indexeddb) holding the model folder `dir` (e.g. public/demo/model), imported as `name`. */
export async function freshDbWithModelFolder(dir: string, name: string): Promise<{ db: LoraLabDb; modelId: string }> {
  await closeDatabase();
  await deleteDB(DB_NAME);
  const db = await openDatabase();
  const files = readdirSync(dir).map((file) => bytesSource(`${name}/${file}`, new Uint8Array(readFileSync(join(dir, file)))));
  const modelId = (await importModel(db, files, { name, locks: localLocks() })).id;
  return { db, modelId };
}
