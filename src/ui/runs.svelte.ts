import { openDatabase } from '../storage/db';
import type { StoredRun } from '../storage/db';
import { listRuns } from '../storage/runs';

/** The stored runs, newest first. */
class RunList {
  items = $state<StoredRun[]>([]);

  async refresh(): Promise<void> {
    this.items = await listRuns(await openDatabase());
  }
}

export const runs = new RunList();
