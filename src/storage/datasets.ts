import type { DatasetFormat, RecordKind } from '../core/data/formats/types';
import { UserError } from '../core/errors';
import type { ByteSource } from '../core/safetensors/source';
import type { LoraLabDb } from './db';
import { DATASET_RECORDS, deleteRecord, ownedBuffer, slicedSource, sweepUnfinishedRecords, writeSliced } from './chunked-records';
import { platformLocks, type Locks } from './locks';
import { StorageFullError } from './quota';

/**
 * Datasets kept in IndexedDB: the file's raw bytes in slices (like model weights, so a large file is never
 * held whole) and a small record that the list shows. The bytes are stored as they came, not as token ids:
 * ids depend on the model's tokenizer, and the same file can train several models.
 *
 * This module stores and reads; checking a file (readDataset with a model's tokenizer) is the worker's job
 * (src/worker/datasets.ts), done before anything is written here.
 */

export interface DatasetSummary {
  readonly kind: RecordKind;
  /** Records read from the file, including those left out (empty, nothing trained). */
  readonly records: number;
  /** Tokens of the documents kept, with the tokenizer of `modelName`. */
  readonly tokens: number;
  /** The model whose tokenizer checked the file at import; another model may count differently. */
  readonly modelName: string;
}

export interface StoredDataset {
  readonly id: string;
  /** The file name, extension included: the format is read from it again when the dataset is used. */
  readonly name: string;
  /** `importing` until the last slice is written; such leftovers of a crash are swept on start. */
  readonly status: 'importing' | 'ready';
  readonly format: DatasetFormat;
  readonly sizeBytes: number;
  readonly createdAt: number;
  /** Slice size the bytes were stored in; every slice but the last is this long. */
  readonly chunkBytes: number;
  readonly chunkCount: number;
  /** The `<name>.meta.json` that came with a .bin (it may give the id width), or null. */
  readonly metaJson: string | null;
  readonly summary: DatasetSummary | null;
}

/** One slice of a dataset file's bytes. */
export interface DatasetChunk {
  readonly datasetId: string;
  readonly index: number;
  readonly bytes: ArrayBuffer;
}

/** Slices of 4 MiB: small enough that reading a 1 MiB window of a text file does not fetch much more than it needs. */
export const DATASET_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * Files of this size or more are refused before anything is read. A text dataset is tokenized into memory, and
 * the ids of 2 GB of text (hundreds of millions of numbers) do not fit a browser tab; a .bin of that size would be
 * the same ids already. The limit is decimal (2 000 000 000 bytes), so a "2 GB" file is refused whichever way its
 * size was counted.
 */
export const DATASET_LIMIT_BYTES = 2_000_000_000;

/** Throws the message the person sees for a file that is too large to use (checked on the page and in the worker). */
export function checkDatasetSize(name: string, size: number): void {
  if (size >= DATASET_LIMIT_BYTES) {
    throw new UserError(
      name,
      `is ${(size / 1e9).toFixed(2)} GB; LoRA Lab takes datasets under 2 GB, since their tokens must fit in this tab's memory.`,
      'Use a part of it (a LoRA rarely needs more than a few hundred MB of text).',
    );
  }
}

export interface StoreDatasetOptions {
  readonly name: string;
  readonly format: DatasetFormat;
  readonly metaJson?: string | null;
  readonly summary?: DatasetSummary | null;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly signal?: AbortSignal;
  /** Bytes the origin may still store; checked before anything is written. */
  readonly freeBytes?: number;
  /** Slice size; tests make it tiny so that reads cross slice boundaries. */
  readonly chunkBytes?: number;
  /** Where the import's lock is held while it writes (other tabs' sweeps skip it); defaults to platformLocks(). */
  readonly locks?: Locks;
}

/**
 * Copies a file into IndexedDB slice by slice. On any failure (a full disk, a cancel, a file that changed while
 * it was read) what was written is removed again, so a dataset is either fully there or not listed at all.
 */
export async function storeDataset(db: LoraLabDb, source: ByteSource, options: StoreDatasetOptions): Promise<StoredDataset> {
  const chunkBytes = options.chunkBytes ?? DATASET_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes <= 0) throw new RangeError(`storeDataset: chunkBytes must be a positive integer, not ${chunkBytes}`);
  checkDatasetSize(options.name, source.size);
  if (source.size === 0) throw new UserError(options.name, 'is empty (0 bytes).', 'Pick the file that holds the training data.');
  if (options.freeBytes !== undefined && source.size > options.freeBytes) throw storageFull(options.name, source.size, options.freeBytes);

  const dataset: StoredDataset = {
    id: crypto.randomUUID(),
    name: options.name,
    status: 'importing',
    format: options.format,
    sizeBytes: source.size,
    createdAt: Date.now(),
    chunkBytes,
    chunkCount: Math.ceil(source.size / chunkBytes),
    metaJson: options.metaJson ?? null,
    summary: options.summary ?? null,
  };
  return writeSliced(db, {
    kind: DATASET_RECORDS,
    record: dataset,
    locks: options.locks ?? platformLocks(),
    writeSlices: () => writeSlices(db, source, dataset, options),
    full: () => storageFull(options.name, source.size, options.freeBytes),
    sweptByAnotherTab: () => new UserError(options.name, 'was removed by another LoRA Lab tab while it was being stored.', 'Import it again, with one tab open.'),
  });
}

/** storeDataset's slices: the file's bytes as they came (the record is written around them). */
async function writeSlices(db: LoraLabDb, source: ByteSource, dataset: StoredDataset, options: StoreDatasetOptions): Promise<void> {
  const { chunkBytes } = dataset;
  options.onProgress?.(0, source.size);
  for (let index = 0; index < dataset.chunkCount; index++) {
    options.signal?.throwIfAborted();
    const begin = index * chunkBytes;
    const end = Math.min(source.size, begin + chunkBytes);
    const bytes = await source.read(begin, end);
    if (bytes.byteLength !== end - begin) {
      throw new UserError(options.name, 'became shorter while it was being stored: it was changed on disk.', 'Pick the file again.');
    }
    await db.put('datasetChunks', { datasetId: dataset.id, index, bytes: ownedBuffer(bytes) });
    options.onProgress?.(end, source.size);
  }
}

/** Datasets ready to use, newest first. */
export async function listDatasets(db: LoraLabDb): Promise<StoredDataset[]> {
  const all = await db.getAll('datasets');
  return all.filter((d) => d.status === 'ready').sort((a, b) => b.createdAt - a.createdAt);
}

export async function getDataset(db: LoraLabDb, id: string): Promise<StoredDataset | undefined> {
  const dataset = await db.get('datasets', id);
  return dataset?.status === 'ready' ? dataset : undefined;
}

/** Deletes a dataset's record and every slice of it, in one transaction. */
export function deleteDataset(db: LoraLabDb, id: string): Promise<void> {
  return deleteRecord(db, DATASET_RECORDS, id);
}

/**
 * Removes imports that never finished (their tab closed or crashed half-way), leaving alone those a live tab still
 * writes (their lock is held); see chunked-records.ts.
 */
export function sweepUnfinishedDatasets(db: LoraLabDb, locks: Locks): Promise<number> {
  return sweepUnfinishedRecords(db, DATASET_RECORDS, locks);
}

/** A stored dataset as random-access bytes (see slicedSource), named like the original file, so readDataset reads it exactly as it read the picked file. */
export function storedDatasetSource(db: LoraLabDb, dataset: StoredDataset): ByteSource {
  return slicedSource(
    { name: dataset.name, size: dataset.sizeBytes, sliceBytes: dataset.chunkBytes },
    async (index) => (await db.get('datasetChunks', [dataset.id, index]))?.bytes,
    (index) => new UserError(dataset.name, `is damaged in this browser's storage (slice ${index + 1} of ${dataset.chunkCount} is missing).`, 'Delete it and import the file again.'),
  );
}

function storageFull(name: string, needed: number, free: number | undefined): UserError {
  const room = free === undefined ? '' : ` (about ${(Math.max(0, free) / 1e6).toFixed(0)} MB are free)`;
  return new StorageFullError(name, `does not fit in this browser's storage: it needs ${(needed / 1e6).toFixed(1)} MB${room}.`, 'Delete datasets, runs or models you no longer need, then import it again.');
}
