import type { StoreNames } from 'idb';
import { UserError } from '../core/errors';
import type { ByteSource } from '../core/safetensors/source';
import type { LoraLabDb, LoraLabSchema } from './db';
import type { Locks } from './locks';
import { lockName } from './locks';
import { storageFullIf } from './quota';

/**
 * The one chunked-record store: everything LoRA Lab keeps in slices (model weights, dataset files, a run's curves,
 * logs, files and checkpoints) is a small record in one store plus slices in other stores whose keys begin with the
 * record's id. This module owns what they all share:
 *
 * - the key range of one record's slices, and deleting a record with every slice in one transaction;
 * - the importing flag: a record is stored `importing` before its first slice and `ready` after its last, under a
 *   lock, so a crash half-way leaves a record the start-up sweep recognises, and a failure removes what was written;
 * - the start-up sweep of records no live tab owns any more (their lock is free), re-checked inside the lock;
 * - turning a full disk into a StorageFullError (quota.ts);
 * - slices back into bytes, and bytes into slices IndexedDB may keep.
 *
 * Each store's own module (models.ts, import-model.ts, datasets.ts, runs.ts, checkpoints.ts) keeps only what is its
 * own: its record's fields, how it cuts its bytes, its messages.
 */

type RecordStore = 'models' | 'datasets' | 'runs' | 'diffusionModels' | 'imageDatasets';
type SliceStore = Exclude<StoreNames<LoraLabSchema>, RecordStore | 'importedLogs'>;

/** A kind of chunked record: its record store, the stores of its slices, and the lock its writer holds. */
export interface RecordKind {
  readonly records: RecordStore;
  readonly slices: readonly SliceStore[];
  readonly lock: (id: string) => string;
}

/** A model's slices: its weights, and the adapters imported onto it (adapters.ts), which go with it. */
export const MODEL_RECORDS: RecordKind = { records: 'models', slices: ['tensors', 'adapters'], lock: lockName.modelImport };
export const DATASET_RECORDS: RecordKind = { records: 'datasets', slices: ['datasetChunks'], lock: lockName.datasetImport };
/** A run's slices: its curves, event-file chunks, files, and checkpoints (records and bytes) all begin with its id. */
export const RUN_RECORDS: RecordKind = {
  records: 'runs',
  slices: ['metrics', 'logs', 'artifacts', 'checkpoints', 'checkpointChunks'],
  lock: lockName.run,
};

/** Every key of a compound [id, …] store that begins with `id`: one record's slices. */
export function slicesOf(id: string): IDBKeyRange {
  return IDBKeyRange.bound([id], [id, []]);
}

/** Deletes a record and every slice of it in one transaction: it is either all there or all gone. */
export async function deleteRecord(db: LoraLabDb, kind: RecordKind, id: string): Promise<void> {
  await deleteSlices(db, [kind.records, ...kind.slices], id);
}

/** Deletes what `stores` hold under `id` (the record, when its store is listed) in one transaction. */
export async function deleteSlices(db: LoraLabDb, stores: readonly StoreNames<LoraLabSchema>[], id: string): Promise<void> {
  const tx = db.transaction([...stores], 'readwrite');
  await Promise.all([
    ...stores.map((name) => {
      const store = tx.objectStore(name) as unknown as { delete(key: IDBKeyRange | string): Promise<void> };
      return store.delete(isRecordStore(name) ? id : slicesOf(id));
    }),
    tx.done,
  ]);
}

function isRecordStore(name: string): name is RecordStore {
  return name === 'models' || name === 'datasets' || name === 'runs' || name === 'diffusionModels' || name === 'imageDatasets';
}

// ─── The importing flag ─────────────────────────────────────────────────────────────────────────────────────────

/** A record written slice by slice: `importing` until its last slice is stored. */
export interface SlicedRecord {
  readonly id: string;
  readonly status: 'importing' | 'ready';
}

export interface SliceWriting<R extends SlicedRecord> {
  readonly kind: RecordKind;
  /** The record as first stored (status `importing`). */
  readonly record: R;
  readonly locks: Locks;
  /** Stores the slices (each with `db.put`); throws to give up, and what it wrote is removed. */
  writeSlices(): Promise<void>;
  /** What a full disk is called for this record (names the file and what it needs). */
  full(): UserError;
  /** What to say when another tab, which could not see this writer's lock, swept the record half-way. */
  sweptByAnotherTab(): UserError;
}

/**
 * Writes a record and its slices under the record's lock: the record first (`importing`), then the slices, then
 * the record again as `ready`, only if it still says `importing`. On any failure (a bad slice, a cancel, a full
 * disk) everything written is deleted again, so the record is either fully there or not at all; a full disk
 * becomes `full()`. If even the clean-up fails, the record still says `importing` and the next sweep removes it.
 */
export function writeSliced<R extends SlicedRecord>(db: LoraLabDb, w: SliceWriting<R>): Promise<R> {
  return w.locks.hold(w.kind.lock(w.record.id), async () => {
    try {
      // Inside the try: a full disk can refuse even this first small record, and must read as "storage full" too.
      await db.put(w.kind.records, w.record as never);
      await w.writeSlices();
      // A tab that cannot see this lock (no Web Locks on the origin, or an older LoRA Lab) sweeps records still
      // marked `importing` as a crash's leftovers; if that happened, slices are gone and this must not become ready.
      const tx = db.transaction(w.kind.records, 'readwrite');
      const current = (await tx.store.get(w.record.id)) as SlicedRecord | undefined;
      if (current?.status !== 'importing') {
        tx.done.catch(() => undefined); // the abort below rejects it; the error thrown says why
        tx.abort();
        throw w.sweptByAnotherTab();
      }
      const ready: R = { ...w.record, status: 'ready' };
      await tx.store.put(ready as never);
      await tx.done;
      return ready;
    } catch (e) {
      await deleteRecord(db, w.kind, w.record.id).catch(() => undefined);
      throw storageFullIf(e, w.full);
    }
  });
}

// ─── The start-up sweep ─────────────────────────────────────────────────────────────────────────────────────────

/**
 * Settles records that look unfinished (`isUnfinished`) and that no live tab owns (the record's lock is free):
 * `settle` runs inside the lock and reads the record again, since it may have been finished between the listing
 * and the lock; it returns whether it settled it. Returns how many it settled.
 */
export async function sweepUnowned<R extends { readonly id: string }>(
  db: LoraLabDb,
  kind: RecordKind,
  locks: Locks,
  isUnfinished: (record: R) => boolean,
  settle: (id: string) => Promise<boolean>,
): Promise<number> {
  const candidates = ((await db.getAll(kind.records)) as unknown as R[]).filter(isUnfinished);
  let settled = 0;
  for (const record of candidates) {
    const result = await locks.ifFree(kind.lock(record.id), () => settle(record.id));
    if (result.taken && result.value) settled++;
  }
  return settled;
}

/** Removes imports that never finished (their tab closed or crashed half-way); live tabs' imports are left alone. */
export function sweepUnfinishedRecords(db: LoraLabDb, kind: RecordKind, locks: Locks): Promise<number> {
  return sweepUnowned<SlicedRecord>(db, kind, locks, (r) => r.status === 'importing', (id) => deleteIfImporting(db, kind, id));
}

async function deleteIfImporting(db: LoraLabDb, kind: RecordKind, id: string): Promise<boolean> {
  const stores = [kind.records, ...kind.slices];
  const tx = db.transaction(stores, 'readwrite');
  const record = (await tx.objectStore(kind.records).get(id)) as SlicedRecord | undefined;
  const unfinished = record?.status === 'importing';
  if (unfinished) {
    await (tx.objectStore(kind.records) as unknown as { delete(key: string): Promise<void> }).delete(id);
    for (const name of kind.slices) await (tx.objectStore(name) as unknown as { delete(key: IDBKeyRange): Promise<void> }).delete(slicesOf(id));
  }
  await tx.done;
  return unfinished;
}

// ─── Bytes ──────────────────────────────────────────────────────────────────────────────────────────────────────

/** Slices' bytes joined in order (the slices as read back, sorted by key). */
export function joinSlices(slices: readonly { readonly bytes: ArrayBuffer }[]): Uint8Array {
  if (slices.length === 1) return new Uint8Array(slices[0]!.bytes);
  const out = new Uint8Array(slices.reduce((n, s) => n + s.bytes.byteLength, 0));
  let offset = 0;
  for (const s of slices) {
    out.set(new Uint8Array(s.bytes), offset);
    offset += s.bytes.byteLength;
  }
  return out;
}

/** An ArrayBuffer holding exactly these bytes (a view's buffer may be larger, or shared), for IndexedDB to keep. */
export function ownedBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? bytes.buffer
    : (bytes.slice().buffer as ArrayBuffer);
}

/**
 * Bytes stored in equal slices (the last one shorter) as random-access bytes. The last slice read is kept: readers (a
 * safetensors header then its tensors, a dataset's reader in windows) mostly ask for ranges inside one slice, and
 * would otherwise fetch it again each time. A slice missing or of the wrong size is `damaged(index)`: the browser
 * evicted or damaged part of the origin's storage, and the person can only import it again.
 */
export function slicedSource(
  file: { readonly name: string; readonly size: number; readonly sliceBytes: number },
  fetchSlice: (index: number) => Promise<ArrayBuffer | undefined>,
  damaged: (index: number) => Error,
): ByteSource {
  let cached: { index: number; bytes: Uint8Array } | null = null;
  const slice = async (index: number): Promise<Uint8Array> => {
    if (cached?.index === index) return cached.bytes;
    const bytes = await fetchSlice(index);
    if (!bytes || bytes.byteLength !== Math.min(file.sliceBytes, file.size - index * file.sliceBytes)) throw damaged(index);
    cached = { index, bytes: new Uint8Array(bytes) };
    return cached.bytes;
  };
  return {
    name: file.name,
    size: file.size,
    async read(begin: number, end: number): Promise<Uint8Array> {
      if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin || end > file.size) {
        throw new RangeError(`${file.name}: read(${begin}, ${end}) is outside 0..${file.size}`);
      }
      const out = new Uint8Array(end - begin);
      const size = file.sliceBytes;
      for (let index = Math.floor(begin / size); index * size < end; index++) {
        const bytes = await slice(index);
        const from = Math.max(begin, index * size);
        const to = Math.min(end, index * size + bytes.byteLength);
        out.set(bytes.subarray(from - index * size, to - index * size), from - begin);
      }
      return out;
    },
  };
}
