import { UserError } from '../core/errors';
import type { LoraLabDb } from './db';
import { StorageFullError, storageFullIf } from './quota';

/**
 * Image LoRAs imported onto a stored Stable Diffusion model (issue 13, "importing either format back"): one record
 * each, keyed by [model id, name], holding the files as they came (checked against the model before they get here;
 * see worker/image-adapters.ts). The key begins with the model's id, so deleting the model deletes them in the same
 * transaction (diffusion-models.ts, DIFFUSION_MODEL_RECORDS). A record is written whole in one put, so a failure
 * leaves nothing behind.
 */

/** A PEFT folder's pair of files (adapter_config.json as text, adapter_model.safetensors as a Blob). */
export interface PeftFiles {
  readonly config: string;
  readonly weights: Blob;
}

/** The files as imported: a kohya `.safetensors` (UNet and text encoder in one), or a PEFT folder per network. */
export type ImageAdapterFiles =
  | { readonly format: 'kohya'; readonly fileName: string; readonly weights: Blob }
  | { readonly format: 'peft'; readonly unet: PeftFiles; readonly textEncoder: PeftFiles | null };

export interface StoredImageAdapter {
  readonly modelId: string;
  /** Unique per model: what the library lists and what `init_adapter` names. */
  readonly name: string;
  readonly importedAt: number;
  /** One rank for every module (LoRA Lab trains one rank; a file with several is refused at import). */
  readonly rank: number;
  /** The alpha that gives every module its scaling: kohya's `alpha`, PEFT's `lora_alpha`. */
  readonly alpha: number;
  /** PEFT's use_rslora (scaling alpha/√r); false for kohya. */
  readonly useRslora: boolean;
  /** How many UNet projections and text-encoder projections it adapts. */
  readonly unetModules: number;
  readonly textEncoderModules: number;
  readonly files: ImageAdapterFiles;
}

/** What lists show of an image adapter; its files stay in storage. */
export interface ImageAdapterInfo extends Omit<StoredImageAdapter, 'files'> {
  readonly format: ImageAdapterFiles['format'];
  readonly sizeBytes: number;
}

export function imageAdapterInfo(a: StoredImageAdapter): ImageAdapterInfo {
  const { files, ...info } = a;
  const sizeBytes = files.format === 'kohya' ? files.weights.size : files.unet.weights.size + (files.textEncoder?.weights.size ?? 0);
  return { ...info, format: files.format, sizeBytes };
}

const modelRange = (modelId: string): IDBKeyRange => IDBKeyRange.bound([modelId], [modelId, []]);

/** The image adapters stored with a model, newest first. */
export async function listImageAdapters(db: LoraLabDb, modelId: string): Promise<StoredImageAdapter[]> {
  const all = await db.getAll('imageAdapters', modelRange(modelId));
  return all.sort((a, b) => b.importedAt - a.importedAt);
}

export function getImageAdapter(db: LoraLabDb, modelId: string, name: string): Promise<StoredImageAdapter | undefined> {
  return db.get('imageAdapters', [modelId, name]);
}

/**
 * Stores a checked image adapter. Refused when its model is gone (deleted from another tab while the files were
 * checked) or already has an adapter of that name; both are read in the same transaction as the write.
 */
export async function storeImageAdapter(db: LoraLabDb, adapter: StoredImageAdapter): Promise<StoredImageAdapter> {
  try {
    const tx = db.transaction(['diffusionModels', 'imageAdapters'], 'readwrite');
    const refuse = (e: UserError): never => {
      tx.done.catch(() => undefined); // the abort rejects it; the error thrown says why
      tx.abort();
      throw e;
    };
    const model = await tx.objectStore('diffusionModels').get(adapter.modelId);
    if (model?.status !== 'ready') refuse(new UserError('model', 'is not in the library any more (it was deleted).', 'Import the model again, then the adapter.'));
    if (await tx.objectStore('imageAdapters').get([adapter.modelId, adapter.name])) {
      refuse(new UserError('adapter', `"${adapter.name}" is already stored with ${model!.name}.`, 'Give the new one another name, or delete the stored one first.'));
    }
    await tx.objectStore('imageAdapters').put(adapter);
    await tx.done;
    return adapter;
  } catch (e) {
    throw storageFullIf(
      e,
      () => new StorageFullError('browser storage', `is full: the adapter "${adapter.name}" could not be stored.`, 'Delete runs or models you no longer need, then import it again.'),
    );
  }
}

export async function deleteImageAdapter(db: LoraLabDb, modelId: string, name: string): Promise<void> {
  await db.delete('imageAdapters', [modelId, name]);
}
