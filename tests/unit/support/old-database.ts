import { deleteDB, openDB, type IDBPDatabase } from 'idb';
import { closeDatabase, DB_NAME } from '../../../src/storage/db';

/**
 * For migration tests: the app's database closed and deleted, then created afresh at the old schema `version` with
 * the stores that version had (4: no checkpoints; 5: checkpoints, no adapters). The caller fills and closes it.
 */
export async function freshDbAtVersion(version: 4 | 5): Promise<IDBPDatabase> {
  await closeDatabase();
  await deleteDB(DB_NAME);
  return openDB(DB_NAME, version, {
    upgrade(d) {
      for (const name of ['models', 'importedLogs', 'datasets', 'runs']) d.createObjectStore(name, { keyPath: 'id' });
      d.createObjectStore('tensors', { keyPath: ['modelId', 'tensor', 'index'] }).createIndex('byModel', 'modelId');
      for (const name of ['metrics', 'logs']) d.createObjectStore(name, { keyPath: ['runId', name === 'logs' ? 'index' : 'step'] });
      d.createObjectStore('artifacts', { keyPath: ['runId', 'path'] });
      d.createObjectStore('datasetChunks', { keyPath: ['datasetId', 'index'] });
      if (version >= 5) {
        d.createObjectStore('checkpoints', { keyPath: ['runId', 'step'] });
        d.createObjectStore('checkpointChunks', { keyPath: ['runId', 'step', 'index'] });
      }
    },
  });
}
