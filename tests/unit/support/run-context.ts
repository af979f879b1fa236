import type { LoraLabDb, StoredRun } from '../../../src/storage/db';
import { localLocks, type Locks } from '../../../src/storage/locks';
import { ModelSlot } from '../../../src/worker/loaded-model';
import type { RunEvent } from '../../../src/worker/protocol';
import { trainLora, type RunContext, type TrainRequest } from '../../../src/worker/training-run';

/**
 * The RunContext the worker hands a run, for a run in a test: never aborted, progress ignored, each event to
 * `onEvent`, and pause/resume/stop handlers to `onControl` (ignored unless given).
 */
export function runContext(onEvent: (e: RunEvent) => void = () => undefined, onControl: RunContext['onControl'] = () => undefined): RunContext {
  return { signal: new AbortController().signal, progress: () => undefined, event: onEvent, onControl };
}

/**
 * trainLora as one tab's worker runs it: a model slot of its own pinned to the request's model (released when the
 * run ends, however it ends) and that tab's own locks (localLocks() unless `locks` is given); `resumeOf` as trainLora's.
 */
export async function trainPinned(db: LoraLabDb, request: TrainRequest, ctx: RunContext = runContext(), locks: Locks = localLocks(), resumeOf?: StoredRun) {
  const pin = new ModelSlot().pin(request.modelId);
  try {
    return await trainLora(db, request, ctx, { pin, locks }, resumeOf);
  } finally {
    pin.release();
  }
}
