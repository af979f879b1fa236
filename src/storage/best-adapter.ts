import { UserError } from '../core/errors';
import type { LoraLabDb } from './db';
import { isQuotaError } from './quota';
import { artifactBytes } from './runs';

/**
 * The adapter of a run's best evaluation, kept in IndexedDB while the run trains (see worker/best-adapter.ts).
 *
 * Kept adapters are run artifacts under KEPT_PREFIX, one folder per step (`.best/step-30/adapter_model.safetensors`),
 * so deleting a run deletes them with everything else. More than one can be stored for a while: a checkpoint
 * records the step of the best evaluation as of then, and a run resumed from it needs that step's adapter even if
 * a later (now undone) evaluation beat it. The export leaves these paths out (isKeptAdapterPath); the run's end
 * copies the chosen one to the output folder and drops them all.
 */

export const KEPT_PREFIX = '.best/';

/** Files of one adapter by name (PEFT's adapter_model.safetensors and adapter_config.json). */
export type AdapterFiles = Readonly<Record<string, Uint8Array | string>>;

const folderOf = (step: number) => `${KEPT_PREFIX}step-${step}/`;
const ofRun = (runId: string) => IDBKeyRange.bound([runId], [runId, []]);

/** True for the artifacts that hold kept adapters: not part of a run's output folder. */
export function isKeptAdapterPath(path: string): boolean {
  return path.startsWith(KEPT_PREFIX);
}

/** The step a kept adapter's artifact belongs to, or null for any other path. */
function stepOf(path: string): number | null {
  const m = /^\.best\/step-(\d+)\//.exec(path);
  return m ? Number(m[1]) : null;
}

/**
 * Stores `files` as the adapter kept at `step` and deletes the kept adapters of every other step not in `retain`,
 * in one transaction: a failure (a full disk) leaves the kept set as it was, never a half-written adapter.
 */
export async function keepAdapter(db: LoraLabDb, runId: string, step: number, files: AdapterFiles, retain: ReadonlySet<number> = new Set()): Promise<void> {
  const encoded = Object.entries(files).map(([name, bytes]) => ({ name, data: typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes.slice() }));
  const tx = db.transaction('artifacts', 'readwrite');
  try {
    for (const key of await tx.store.getAllKeys(ofRun(runId))) {
      const kept = stepOf(key[1]);
      if (kept !== null && kept !== step && !retain.has(kept)) await tx.store.delete(key);
    }
    for (const { name, data } of encoded) await tx.store.put({ runId, path: `${folderOf(step)}${name}`, bytes: data.buffer as ArrayBuffer });
    await tx.done;
  } catch (e) {
    try {
      tx.abort();
    } catch {
      // Already aborted by the failed request.
    }
    tx.done.catch(() => undefined);
    if (isQuotaError(e) || isQuotaError(tx.error)) {
      throw new UserError('browser storage', `is full: the best adapter so far (step ${step}) could not be stored.`, 'Delete models, datasets or runs you no longer need, then start the run again.');
    }
    throw e;
  }
}

/** The files of the adapter kept at `step`, or null when none is stored for that step. */
export async function readKeptAdapter(db: LoraLabDb, runId: string, step: number): Promise<Record<string, Uint8Array> | null> {
  const prefix = folderOf(step);
  const found = (await db.getAll('artifacts', ofRun(runId))).filter((a) => a.path.startsWith(prefix));
  if (found.length === 0) return null;
  return Object.fromEntries(await Promise.all(found.map(async (a) => [a.path.slice(prefix.length), await artifactBytes(a)] as const)));
}

/** The steps of the adapters kept for the run, ascending. */
export async function keptAdapterSteps(db: LoraLabDb, runId: string): Promise<number[]> {
  const steps = new Set<number>();
  for (const key of await db.getAllKeys('artifacts', ofRun(runId))) {
    const step = stepOf(key[1]);
    if (step !== null) steps.add(step);
  }
  return [...steps].sort((a, b) => a - b);
}

/** Deletes every kept adapter of the run (once the run's output holds the one it needed). */
export async function dropKeptAdapters(db: LoraLabDb, runId: string): Promise<void> {
  const tx = db.transaction('artifacts', 'readwrite');
  for (const key of await tx.store.getAllKeys(ofRun(runId))) if (stepOf(key[1]) !== null) await tx.store.delete(key);
  await tx.done;
}
