/**
 * The one test for "the browser refused a write because the origin's storage is full", used by every store
 * (models, datasets, runs). Browsers disagree on how they say it, so this lists what each says:
 *
 * - Chrome, Edge, Safari and current Firefox: a DOMException named `QuotaExceededError` (legacy code 22).
 * - Older Firefox: `NS_ERROR_DOM_QUOTA_REACHED` (code 1014) from storage APIs; its IndexedDB and DOM layers have
 *   also surfaced the internal names `NS_ERROR_DOM_INDEXEDDB_QUOTA_ERR` and `NS_ERROR_DOM_QUOTA_EXCEEDED_ERR`.
 * - Old WebKit (Safari 7 and before): the constant's name, `QUOTA_EXCEEDED_ERR`, as the error's name.
 *
 * The check reads `name` and `code` rather than `instanceof DOMException`: an error can come from another realm
 * (a worker's, or a test's IndexedDB polyfill), where instanceof is false for a real DOMException.
 */

import { UserError } from '../core/errors';

const QUOTA_NAMES: ReadonlySet<string> = new Set([
  'QuotaExceededError',
  'NS_ERROR_DOM_QUOTA_REACHED',
  'NS_ERROR_DOM_QUOTA_EXCEEDED_ERR',
  'NS_ERROR_DOM_INDEXEDDB_QUOTA_ERR',
  'QUOTA_EXCEEDED_ERR',
]);

/** DOMException's legacy QUOTA_EXCEEDED_ERR code, and Firefox's code for NS_ERROR_DOM_QUOTA_REACHED. */
const QUOTA_CODES: ReadonlySet<number> = new Set([22, 1014]);

export function isQuotaError(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const { name, code } = e as { name?: unknown; code?: unknown };
  if (typeof name === 'string' && QUOTA_NAMES.has(name)) return true;
  // A bare code means nothing on a plain Error (Node's errors carry string codes); only trust it on a DOMException-like.
  return typeof code === 'number' && QUOTA_CODES.has(code) && typeof name === 'string' && name !== 'Error';
}

/**
 * "The browser's storage is full", said so the person can act: a UserError (one line, what could not be stored,
 * what to free). Its own class so that a caller can tell it from other refusals: a training run pauses on it
 * instead of failing (src/worker/storage-full.ts).
 */
export class StorageFullError extends UserError {}

export function isStorageFull(e: unknown): boolean {
  return e instanceof StorageFullError || isQuotaError(e);
}

/**
 * The quota mapping every store uses: a quota error becomes `full()` (a StorageFullError, or a UserError of the
 * caller's own wording); any other error is returned unchanged (a bug or a broken disk is not "storage full").
 * Also looks at an aborted transaction's cause, where some browsers put the quota error.
 */
export function storageFullIf(e: unknown, full: () => UserError): unknown {
  if (isQuotaError(e) || isQuotaError((e as { cause?: unknown } | null)?.cause)) return full();
  return e;
}

/** Runs a write; a full disk becomes `full()`. */
export async function mappingFullDisk<T>(write: () => Promise<T>, full: () => UserError): Promise<T> {
  try {
    return await write();
  } catch (e) {
    throw storageFullIf(e, full);
  }
}
