/**
 * TensorBoard logs brought in from elsewhere (another machine's `logs/` folder, an exported run), kept in
 * IndexedDB so they can be overlaid on this browser's own runs and survive a reload. Only the scalars are
 * kept: the comparison chart plots nothing else.
 */
import { isUserError } from '../core/errors';
import { parseRunConfigYaml, type RunConfig } from '../core/config';
import { readEventFile, scalarSeries } from '../core/logging';
import type { LoraLabDb } from './db';

/** One tag's points, ordered by step, one point per step. */
export interface ImportedScalar {
  readonly steps: Float64Array;
  readonly values: Float64Array;
}

/** One imported run: the event files of one folder, merged as TensorBoard merges them. */
export interface ImportedLog {
  readonly id: string;
  /** The run's name: its folder (`lr_1e-4` for `lr_1e-4/logs/events…`), or the file's name when picked alone. */
  readonly name: string;
  /** The event files' paths as picked, for the list's tooltip. */
  readonly files: readonly string[];
  readonly importedAt: number;
  readonly scalars: Readonly<Record<string, ImportedScalar>>;
  /** The run config, when LoRA Lab wrote the log (its `config` text at step 0): lets config differences be shown. */
  readonly config: RunConfig | null;
}

export interface EventFileInput {
  /** Path relative to what was picked or dropped (`logs/run/events…`), or the bare file name. */
  readonly path: string;
  readonly bytes: Uint8Array;
}

/** Why a file could not be imported; names the file so the message can say which one. */
export interface ImportProblem {
  readonly file: string;
  readonly problem: string;
  readonly fix?: string;
  /** True when the reader itself failed on it (a bug in LoRA Lab, not a damaged file). */
  readonly bug: boolean;
}

export interface ParsedImport {
  readonly logs: Omit<ImportedLog, 'id' | 'importedAt'>[];
  readonly problems: ImportProblem[];
  /** Runs whose files hold no scalars (only images, text or histograms): nothing to plot, so not kept. */
  readonly withoutScalars: string[];
}

/** TensorBoard treats any file with `tfevents` in its name as an event file; everything else in a folder is skipped. */
export function isEventFileName(path: string): boolean {
  return (path.split('/').at(-1) ?? '').includes('tfevents');
}

/** The folder holding a file names its run; LoRA Lab's own layout `<run>/logs/events…` is named after `<run>`. */
export function runNameOfLogPath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  const file = parts.pop() ?? path;
  const folder = parts.at(-1);
  if (folder === undefined) return file;
  if (folder === 'logs' && parts.length >= 2) return parts.at(-2)!;
  return folder;
}

/**
 * Reads every file and groups their scalars by run. Reading never stops at the first bad file, so every
 * problem can be reported at once; the caller stores nothing when there is any.
 */
export function parseEventFiles(files: readonly EventFileInput[]): ParsedImport {
  const problems: ImportProblem[] = [];
  const groups = new Map<string, { files: string[]; points: Map<string, { step: number; value: number }[]>; config: RunConfig | null }>();
  // Files are merged in name order, which for TensorBoard's names is the order they were written.
  const ordered = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const file of ordered) {
    let events;
    try {
      events = readEventFile(file.path, file.bytes);
    } catch (e) {
      problems.push(
        isUserError(e)
          ? { file: file.path, problem: e.problem, fix: e.fix, bug: false }
          : { file: file.path, problem: e instanceof Error ? e.message : String(e), bug: true },
      );
      continue;
    }
    const name = runNameOfLogPath(file.path);
    let group = groups.get(name);
    if (!group) groups.set(name, (group = { files: [], points: new Map(), config: null }));
    group.files.push(file.path);
    for (const [tag, points] of scalarSeries(events)) {
      const all = group.points.get(tag);
      if (all) all.push(...points);
      else group.points.set(tag, points.map((p) => ({ step: p.step, value: p.value })));
    }
    group.config ??= configOf(events);
  }

  const logs: ParsedImport['logs'] = [];
  const withoutScalars: string[] = [];
  for (const [name, group] of groups) {
    if (group.points.size === 0) {
      withoutScalars.push(name);
      continue;
    }
    const scalars: Record<string, ImportedScalar> = {};
    for (const [tag, points] of group.points) scalars[tag] = byStep(points);
    logs.push({ name, files: group.files, scalars, config: group.config });
  }
  return { logs, problems, withoutScalars };
}

/** LoRA Lab writes the run's YAML as the text summary `config`; a log from anywhere else has none. */
function configOf(events: ReturnType<typeof readEventFile>): RunConfig | null {
  for (const e of events) {
    if (e.kind !== 'summary') continue;
    for (const v of e.values) {
      if (v.kind !== 'text' || v.tag !== 'config') continue;
      const parsed = parseRunConfigYaml(v.text);
      return parsed.ok ? parsed.config : null;
    }
  }
  return null;
}

/**
 * Ordered by step, as TensorBoard plots a tag; a step logged twice (a resumed run) keeps the point written
 * last. The sort is stable, so "last" means last in the files' order.
 */
function byStep(points: { step: number; value: number }[]): ImportedScalar {
  const sorted = points.map((p, i) => ({ ...p, i })).sort((a, b) => a.step - b.step || a.i - b.i);
  const steps: number[] = [];
  const values: number[] = [];
  for (const p of sorted) {
    if (steps.length > 0 && steps[steps.length - 1] === p.step) values[values.length - 1] = p.value;
    else {
      steps.push(p.step);
      values.push(p.value);
    }
  }
  return { steps: Float64Array.from(steps), values: Float64Array.from(values) };
}

/** Stores a whole import in one transaction: a failure part-way leaves none of it behind. */
export async function putImportedLogs(db: LoraLabDb, logs: readonly ImportedLog[]): Promise<void> {
  const tx = db.transaction('importedLogs', 'readwrite');
  await Promise.all([...logs.map((log) => tx.store.put(log)), tx.done]);
}

/** Newest import first, like the run list. */
export async function listImportedLogs(db: LoraLabDb): Promise<ImportedLog[]> {
  return (await db.getAll('importedLogs')).sort((a, b) => b.importedAt - a.importedAt);
}

export async function deleteImportedLog(db: LoraLabDb, id: string): Promise<void> {
  await db.delete('importedLogs', id);
}
