import { formatIssue, runConfigToYaml, runName, type RunConfig } from '../core/config';
import { parseSweepGrid } from '../core/config/sweep';
import { datasets } from './datasets.svelte';
import { engine } from './engine.svelte';
import { loadQueue, saveQueue, type QueuedRun, type QueuedStatus } from './run-queue-storage';
import { training } from './training.svelte';

export type { QueuedRun, QueuedStatus } from './run-queue-storage';

/** The end of a run, as the queue lists it. */
const ENDED: Record<string, QueuedStatus> = { completed: 'completed', early_stopped: 'completed', stopped: 'stopped', diverged: 'diverged' };

function newId(): string {
  return crypto.randomUUID();
}

/**
 * Runs waiting to train, one after another: the engine trains one run at a time (the worker refuses a
 * second), so the queue starts the next when one ends. Entries are configs queued alone or the runs of
 * a grid (a sweep); each keeps the model and data chosen when it was queued. Kept across reloads.
 */
class RunQueue {
  items = $state<QueuedRun[]>(loadQueue());
  /** True while the queue works through its waiting runs; pausing lets the current run finish and starts no more. */
  running = $state(false);
  /** The entry being trained, if any. */
  readonly current = $derived(this.items.find((q) => q.status === 'running') ?? null);
  readonly waiting = $derived(this.items.filter((q) => q.status === 'waiting').length);

  private set(items: QueuedRun[]): void {
    this.items = items;
    saveQueue(items);
  }

  private update(id: string, change: Partial<QueuedRun>): void {
    this.set(this.items.map((q) => (q.id === id ? { ...q, ...change } : q)));
  }

  /** What a queued run trains on: the model and datasets picked now. A problem in plain words when one is missing. */
  private target(): { modelId: string; trainDatasetId: string; valDatasetId: string | null } | string {
    const model = engine.selectedModel;
    const train = datasets.train;
    if (!model) return 'Pick a model first.';
    if (!train) return 'Choose a training dataset first.';
    return { modelId: model.id, trainDatasetId: train.id, valDatasetId: datasets.validation?.id ?? null };
  }

  /** Queues the config as it is; returns a problem to show, or null. */
  addConfig(config: RunConfig): string | null {
    const target = this.target();
    if (typeof target === 'string') return target;
    const entry: QueuedRun = { id: newId(), name: runName(config), config, ...target, sweepId: null, values: [], status: 'waiting', runId: null, error: null };
    this.set([...this.items, entry]);
    return null;
  }

  /**
   * Queues every run of a grid over the config (`learning_rate: [1e-4, 2e-4]` per line), each named from
   * its values under the config's output_dir. Returns the problems, one line each (empty when queued).
   */
  addGrid(config: RunConfig, gridText: string): string[] {
    const target = this.target();
    if (typeof target === 'string') return [target];
    const result = parseSweepGrid(config, gridText);
    if (!result.ok) return result.issues.map(formatIssue);
    const sweepId = newId();
    const entries = result.sweep.runs.map(
      (run): QueuedRun => ({ id: newId(), name: run.name, config: run.config, ...target, sweepId, values: run.values, status: 'waiting', runId: null, error: null }),
    );
    this.set([...this.items, ...entries]);
    return [];
  }

  /** Moves a waiting entry one place up (-1) or down (+1) among the entries. */
  move(id: string, by: -1 | 1): void {
    const i = this.items.findIndex((q) => q.id === id);
    const j = i + by;
    if (i < 0 || j < 0 || j >= this.items.length) return;
    const items = [...this.items];
    [items[i], items[j]] = [items[j]!, items[i]!];
    this.set(items);
  }

  /** A waiting entry leaves the queue; the running one is stopped (its run keeps what it trained so far). */
  cancel(id: string): void {
    const entry = this.items.find((q) => q.id === id);
    if (!entry) return;
    if (entry.status === 'running') training.send('stop');
    else this.set(this.items.filter((q) => q.id !== id));
  }

  /** Forgets the entries that are done (the runs themselves stay in the runs list). */
  clearFinished(): void {
    this.set(this.items.filter((q) => q.status === 'waiting' || q.status === 'running'));
  }

  /** Trains the waiting entries in order, one at a time, until none is left or the queue is paused. */
  async run(): Promise<void> {
    // Before the engine has its backend the worker cannot train (after a reload the queue is listed at once).
    if (this.running || training.busy || training.inAnotherTab || engine.backend === null) return;
    this.running = true;
    try {
      for (;;) {
        const next = this.items.find((q) => q.status === 'waiting');
        // A run started by hand (or in another tab) holds the engine: the queue waits to be started again.
        if (!this.running || !next || training.busy || training.inAnotherTab) break;
        this.update(next.id, { status: 'running', error: null });
        await training.start({
          modelId: next.modelId,
          configYaml: runConfigToYaml(next.config),
          trainData: { datasetId: next.trainDatasetId },
          valData: next.valDatasetId === null ? null : { datasetId: next.valDatasetId },
        });
        const status = training.error ? 'failed' : (ENDED[training.endReason ?? ''] ?? 'stopped');
        this.update(next.id, { status, runId: training.runId, error: training.error?.message ?? null });
      }
    } finally {
      this.running = false;
    }
  }

  /** Lets the current run finish and starts no other. */
  pause(): void {
    this.running = false;
  }

  /**
   * The stored runs of the latest sweep (the one training now, else the last one started), the live one
   * included once it has started: the runs panel overlays them as they come.
   */
  sweepRunIds(liveRunId: string | null): string[] {
    const started = this.items.filter((q) => q.sweepId !== null && (q.runId !== null || q.status === 'running'));
    const sweepId = (this.current?.sweepId ?? started.at(-1)?.sweepId) || null;
    if (sweepId === null) return [];
    return this.items.flatMap((q) => {
      if (q.sweepId !== sweepId) return [];
      if (q.runId !== null) return [q.runId];
      return q.status === 'running' && liveRunId !== null ? [liveRunId] : [];
    });
  }
}

export const runQueue = new RunQueue();
