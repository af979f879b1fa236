import { beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../../src/core/config';
import { parseSweepGrid } from '../../src/core/config/sweep';
import { loadQueue, saveQueue, type QueuedRun, type QueuedStatus } from '../../src/ui/run-queue-storage';
import { queuedSweeps } from '../../src/ui/sweep-download';

// The queue is kept in localStorage; Node has none, so a plain in-memory one stands in (a Storage is a string map).
beforeEach(() => {
  const items = new Map<string, string>();
  globalThis.localStorage = {
    getItem: (k: string) => items.get(k) ?? null,
    setItem: (k: string, v: string) => void items.set(k, String(v)),
    removeItem: (k: string) => void items.delete(k),
    clear: () => items.clear(),
    key: (i: number) => [...items.keys()][i] ?? null,
    get length() {
      return items.size;
    },
  };
});

/** The runs of a grid over the default config, queued as the UI queues them (run-queue.svelte.ts). */
function queueGrid(outputDir: string, grid: string, sweepId: string, statuses: QueuedStatus[]): QueuedRun[] {
  const result = parseSweepGrid({ ...DEFAULT_CONFIG, output_dir: outputDir }, grid);
  if (!result.ok) throw new Error(result.issues.map((i) => i.message).join('; '));
  return result.sweep.runs.map((run, i) => ({
    id: `${sweepId}-${i}`,
    name: run.name,
    config: run.config,
    modelId: 'model',
    trainDatasetId: 'train',
    valDatasetId: null,
    sweepId,
    values: run.values,
    status: statuses[i]!,
    runId: statuses[i] === 'waiting' ? null : `run-${sweepId}-${i}`,
    error: null,
  }));
}

describe("a queue's sweeps, as Download sweep lists them", () => {
  it('groups each grid, names it after its output_dir, keeps the keys in the grid order and lists only runs with output', () => {
    const alone: QueuedRun = { ...queueGrid('./out', 'learning_rate: [1e-4]', 'x', ['completed'])[0]!, id: 'alone', sweepId: null, values: [] };
    const items = [
      ...queueGrid('./output/lr-test/', 'lora_rank: [8, 16]\nlearning_rate: [1e-4, 2e-4]', 'a', ['completed', 'diverged', 'running', 'waiting']),
      alone,
      ...queueGrid('runs\\sweep', 'learning_rate: [1e-4]', 'b', ['failed']),
    ];
    const sweeps = queuedSweeps(items);
    expect(sweeps.map((s) => ({ id: s.id, folder: s.folder, keys: s.keys, total: s.total, finished: s.finished.map((q) => q.name) }))).toEqual([
      { id: 'a', folder: 'lr-test', keys: ['lora_rank', 'learning_rate'], total: 4, finished: ['r_8_lr_1e-4', 'r_8_lr_2e-4'] },
      { id: 'b', folder: 'sweep', keys: ['learning_rate'], total: 1, finished: [] },
    ]);
  });

  it('the swept values survive a reload of the queue; a config queued alone has none', () => {
    const items = queueGrid('./output', 'learning_rate: [1e-4, 2e-4]\nlora_rank: [16]', 's', ['completed', 'waiting']);
    saveQueue(items);
    const loaded = loadQueue();
    expect(loaded.map((q) => q.values)).toEqual([
      [{ key: 'learning_rate', value: 1e-4 }, { key: 'lora_rank', value: 16 }],
      [{ key: 'learning_rate', value: 2e-4 }, { key: 'lora_rank', value: 16 }],
    ]);
    expect(queuedSweeps(loaded)[0]!.folder).toBe('output');

    // A damaged entry's values read as none rather than as a wrong column.
    localStorage.setItem('lora-lab.run-queue', JSON.stringify([{ ...items[0], values: [{ key: 'no_such_key', value: 1 }] }]));
    expect(loadQueue()[0]!.values).toEqual([]);
  });
});
