import { UserError } from '../core/errors';
import type { LoraSettings } from '../core/lora/settings';
import type { LoraLabDb } from './db';
import { StorageFullError, storageFullIf } from './quota';

/**
 * PEFT adapters imported onto a stored model (issue 12, "adapters in"): one record each, keyed by [model id, name],
 * holding the two files as they came (checked against the model before they get here; see worker/stored-adapters.ts).
 * The key begins with the model's id, so deleting the model deletes its adapters in the same transaction
 * (chunked-records.ts, MODEL_RECORDS). A record is written whole in one put, so a failure leaves nothing behind.
 */
export interface StoredAdapter {
  readonly modelId: string;
  /** Unique per model: what the library lists and what `init_adapter` names in the app. */
  readonly name: string;
  readonly importedAt: number;
  /** From adapter_config.json, as LoRA Lab reads it: r, lora_alpha, lora_dropout, target_modules, use_rslora. */
  readonly settings: LoraSettings;
  /** adapter_config.json's base_model_name_or_path, or null. */
  readonly baseModelName: string | null;
  /** Trainable values: r·(in + out) per adapted projection. */
  readonly parameterCount: number;
  /** How many projections it adapts. */
  readonly moduleCount: number;
  readonly files: {
    /** adapter_config.json, as imported. */
    readonly config: string;
    /**
     * adapter_model.safetensors, as imported. A Blob, so listing adapters does not read their weights (browsers keep
     * a stored Blob's bytes aside until they are read).
     */
    readonly weights: Blob;
  };
}

/** What lists show of an adapter; its files stay in storage. */
export type AdapterInfo = Omit<StoredAdapter, 'files'> & { readonly sizeBytes: number };

export function adapterInfo(a: StoredAdapter): AdapterInfo {
  const { files, ...info } = a;
  return { ...info, sizeBytes: files.weights.size };
}

const modelRange = (modelId: string): IDBKeyRange => IDBKeyRange.bound([modelId], [modelId, []]);

/** The adapters stored with a model, newest first. */
export async function listAdapters(db: LoraLabDb, modelId: string): Promise<StoredAdapter[]> {
  const all = await db.getAll('adapters', modelRange(modelId));
  return all.sort((a, b) => b.importedAt - a.importedAt);
}

export async function getAdapter(db: LoraLabDb, modelId: string, name: string): Promise<StoredAdapter | undefined> {
  return db.get('adapters', [modelId, name]);
}

/**
 * Stores a checked adapter. Refused when its model is gone (deleted from another tab while the files were checked)
 * or when the model already has an adapter of that name; both are read in the same transaction as the write.
 */
export async function storeAdapter(db: LoraLabDb, adapter: StoredAdapter): Promise<StoredAdapter> {
  try {
    const tx = db.transaction(['models', 'adapters'], 'readwrite');
    const refuse = (e: UserError): never => {
      tx.done.catch(() => undefined); // the abort rejects it; the error thrown says why
      tx.abort();
      throw e;
    };
    const model = await tx.objectStore('models').get(adapter.modelId);
    if (model?.status !== 'ready') refuse(new UserError('model', 'is not in the library any more (it was deleted).', 'Import the model again, then the adapter.'));
    if (await tx.objectStore('adapters').get([adapter.modelId, adapter.name])) {
      refuse(
        new UserError('adapter', `"${adapter.name}" is already stored with ${model!.name}.`, 'Give the new one another name, or delete the stored one first.'),
      );
    }
    await tx.objectStore('adapters').put(adapter);
    await tx.done;
    return adapter;
  } catch (e) {
    throw storageFullIf(
      e,
      () => new StorageFullError('browser storage', `is full: the adapter "${adapter.name}" could not be stored.`, 'Delete runs or models you no longer need, then import it again.'),
    );
  }
}

export async function deleteAdapter(db: LoraLabDb, modelId: string, name: string): Promise<void> {
  await db.delete('adapters', [modelId, name]);
}

/** The name an adapter folder gets in the library: the folder's name, or `adapter` when files were picked loose. */
export function adapterNameOf(paths: readonly string[]): string {
  for (const p of paths) {
    const parts = p.split('/').filter(Boolean);
    if (parts.length >= 2) return parts[parts.length - 2]!;
  }
  return 'adapter';
}
