import { UserError } from '../core/errors';
import { lockName, type Locks } from '../storage/locks';

/**
 * One training run per origin, not only per worker: each tab has its own worker (and its own ModelSlot pin), so two
 * tabs could otherwise train at once, on one GPU. The worker that trains holds `lockName.training` for the whole
 * request, weights loading included; a second tab's request finds it taken and is refused at once, not queued.
 */
export async function asTheOneTrainer<T>(locks: Locks, work: () => Promise<T>): Promise<T> {
  const turn = await locks.ifFree(lockName.training, work);
  if (!turn.taken) throw anotherTabTrains();
  return turn.value;
}

/** The refusal, one wording for the worker and for the page that watches another tab's run. */
export function anotherTabTrains(): UserError {
  return new UserError('training', 'is running in another tab: LoRA Lab trains one run at a time.', 'Wait for that run to end (this tab shows it live), or stop it in its tab.');
}
