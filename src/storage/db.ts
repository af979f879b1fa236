import { openDB, type DBSchema, type IDBPDatabase } from 'idb';
import type { Dtype } from '../core/safetensors';

/** A base model as the library lists it. Its weights live in the `tensors` store. */
export interface StoredModel {
  readonly id: string;
  readonly name: string;
  /** `importing` until the last chunk is written; such leftovers of a crash are swept on start. */
  readonly status: 'importing' | 'ready';
  readonly arch: string;
  readonly parameterCount: number;
  /** Bytes of weights as stored (original dtype). */
  readonly sizeBytes: number;
  readonly importedAt: number;
  readonly files: {
    readonly config: string;
    readonly tokenizer: string;
    readonly tokenizerConfig: string | null;
  };
  readonly tensors: readonly StoredTensorInfo[];
}

export interface StoredTensorInfo {
  /** Canonical (Hugging Face `*ForCausalLM`) name. */
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  readonly byteLength: number;
  readonly chunkCount: number;
}

/** One slice of one tensor's raw bytes, in its original dtype. */
export interface TensorChunk {
  readonly modelId: string;
  readonly tensor: string;
  readonly index: number;
  readonly bytes: ArrayBuffer;
}

export interface LoraLabSchema extends DBSchema {
  models: { key: string; value: StoredModel };
  tensors: { key: [string, string, number]; value: TensorChunk; indexes: { byModel: string } };
}

export const DB_NAME = 'lora-lab';
const DB_VERSION = 1;

export type LoraLabDb = IDBPDatabase<LoraLabSchema>;

let opened: Promise<LoraLabDb> | undefined;

/** The one database of the app (page and worker each hold a connection). Migrations go by version. */
export function openDatabase(): Promise<LoraLabDb> {
  opened ??= openDB<LoraLabSchema>(DB_NAME, DB_VERSION, {
    upgrade(db, oldVersion) {
      if (oldVersion < 1) {
        db.createObjectStore('models', { keyPath: 'id' });
        const tensors = db.createObjectStore('tensors', { keyPath: ['modelId', 'tensor', 'index'] });
        tensors.createIndex('byModel', 'modelId');
      }
    },
    blocking() {
      // A newer version of the app wants to migrate: let it, rather than wedging both tabs.
      void opened?.then((db) => db.close());
      opened = undefined;
    },
  });
  return opened;
}
