import { parseRunConfig, type RunConfig } from '../core/config';
import { isConfigKey } from '../core/config/aliases';
import type { SweptValue } from '../core/config/sweep';

/**
 * The run queue kept in localStorage, so a reload loses no queued run. Small (a few configs), written
 * whole on every change; a damaged or outdated entry is dropped rather than trusted.
 */
const KEY = 'lora-lab.run-queue';

export type QueuedStatus = 'waiting' | 'running' | 'completed' | 'stopped' | 'diverged' | 'failed' | 'interrupted';

export interface QueuedRun {
  readonly id: string;
  /** The run's name (its folder): the config's own, or the sweep's name for the values it tries. */
  readonly name: string;
  readonly config: RunConfig;
  /** What it trains: fixed when queued, so picking another model or dataset later changes nothing queued. */
  readonly modelId: string;
  readonly trainDatasetId: string;
  readonly valDatasetId: string | null;
  /** The sweep it belongs to (one id per added grid); null for a config queued alone. */
  readonly sweepId: string | null;
  /** The values it tries, one per swept key in the sweep's order (sweep_summary.csv's columns); empty outside a sweep. */
  readonly values: readonly SweptValue[];
  readonly status: QueuedStatus;
  /** The stored run, once started. */
  readonly runId: string | null;
  /** Why it failed, in the app's words. */
  readonly error: string | null;
}

const STATUSES = new Set<string>(['waiting', 'running', 'completed', 'stopped', 'diverged', 'failed', 'interrupted']);

function isText(value: unknown): value is string {
  return typeof value === 'string' && value !== '';
}

function readEntry(entry: unknown): QueuedRun | null {
  if (entry === null || typeof entry !== 'object') return null;
  const e = entry as Record<string, unknown>;
  const config = parseRunConfig((e.config ?? {}) as Record<string, unknown>);
  if (!config.ok || !isText(e.id) || !isText(e.name) || !isText(e.modelId) || !isText(e.trainDatasetId)) return null;
  if (typeof e.status !== 'string' || !STATUSES.has(e.status)) return null;
  // A run that was training when the page went away did not finish: the worker marks it interrupted too.
  const status = e.status === 'running' ? 'interrupted' : (e.status as QueuedStatus);
  return {
    id: e.id,
    name: e.name,
    config: config.config,
    modelId: e.modelId,
    trainDatasetId: e.trainDatasetId,
    valDatasetId: isText(e.valDatasetId) ? e.valDatasetId : null,
    sweepId: isText(e.sweepId) ? e.sweepId : null,
    values: readValues(e.values),
    status,
    runId: isText(e.runId) ? e.runId : null,
    error: typeof e.error === 'string' ? e.error : null,
  };
}

/** Swept values as saved; anything not a list of `{key, value}` with a config key reads as none. */
function readValues(saved: unknown): SweptValue[] {
  if (!Array.isArray(saved)) return [];
  const values = saved.filter((v): v is SweptValue => v !== null && typeof v === 'object' && typeof v.key === 'string' && isConfigKey(v.key) && 'value' in v);
  return values.length === saved.length ? values : [];
}

export function loadQueue(): QueuedRun[] {
  try {
    const saved = JSON.parse(localStorage.getItem(KEY) ?? '[]') as unknown;
    return Array.isArray(saved) ? saved.map(readEntry).filter((e): e is QueuedRun => e !== null) : [];
  } catch {
    return [];
  }
}

export function saveQueue(items: readonly QueuedRun[]): void {
  try {
    localStorage.setItem(KEY, JSON.stringify(items));
  } catch {
    // Storage full or disabled: the queue still runs, it is just not remembered across a reload.
  }
}
