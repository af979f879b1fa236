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
  await closeDatabase();
  await deleteDB(DB_NAME);
  const db = await openDatabase();
  const dir = join(FIXTURES, 'tiny-gpt2');
  const files = readdirSync(dir).map((name) => bytesSource(`tiny-gpt2/${name}`, new Uint8Array(readFileSync(join(dir, name)))));
  const modelId = (await importModel(db, files, { name: 'tiny-gpt2', locks: localLocks() })).id;
  return { db, modelId };
}
