// The headless runner's sweeps: a config with a `sweep:` map runs each of its runs back to back, each into
// its own folder under output_dir, then writes output_dir/sweep_summary.csv. The expansion and the
// summary are the app's own core code (src/core/config/sweep.ts, src/core/export/sweep-summary.ts), loaded
// from source with tsx, so the runner and the app can never disagree on what a sweep holds.
import { basename } from 'node:path';
import { InputError } from './headless-inputs.mjs';

let loaded = null;

/** The core modules, loaded once; only a sweep pays for it (tfjs comes in with the config schema). */
function core() {
  loaded ??= (async () => {
    await import('./vite-imports.mjs'); // the schema's imports reach WGSL files (`?raw`)
    const { tsImport } = await import('tsx/esm/api');
    const load = (path) => tsImport(path, import.meta.url);
    const [sweep, parse, yaml, summary] = await Promise.all([
      load('../src/core/config/sweep.ts'),
      load('../src/core/config/parse.ts'),
      load('../src/core/config/yaml.ts'),
      load('../src/core/export/sweep-summary.ts'),
    ]);
    return { sweep, parse, yaml, summary };
  })();
  return loaded;
}

/**
 * The sweep's runs, checked before anything is built: `{ keys, runs: [{ name, values, yaml }] }`, each
 * run's YAML a plain config of its own. Every problem with the config or the sweep is one InputError.
 */
export async function loadSweep(configPath, text) {
  const { sweep, parse, yaml } = await core();
  const fileName = basename(configPath);
  const result = sweep.parseSweepYaml(text, fileName, { require: ['base_model', 'train_data'] });
  if (!result.ok) {
    try {
      parse.unwrapRunConfig(result, fileName);
    } catch (e) {
      throw new InputError(e.message);
    }
  }
  if (result.sweep === null) throw new InputError(`${fileName}: holds no sweep`);
  for (const w of result.warnings) console.log(`warning: ${parse.formatIssue(w)}`);
  return {
    keys: result.sweep.keys,
    runs: result.sweep.runs.map((run) => ({ name: run.name, values: run.values, yaml: yaml.runConfigToYaml(run.config) })),
  };
}

/** A file's text from the files a run exported (`[{ path, base64 }]`), or null when it has none. */
function text(files, path) {
  const file = files.find((f) => f.path === path);
  return file ? Buffer.from(file.base64, 'base64').toString('utf8') : null;
}

/**
 * sweep_summary.csv from the runs' exported files, and the best run's folder.
 * `done` holds `{ run, files }` for each finished run, `run` as loadSweep gave it.
 */
export async function sweepSummary(keys, done) {
  const { summary } = await core();
  const results = done.map(({ run, files }) =>
    summary.sweepRunResult(run.name, run.values, {
      metricsCsv: text(files, 'metrics.csv') ?? 'step,loss,eval_loss\n',
      diagnosisJson: text(files, 'diagnosis.json') ?? '[]',
      runSummaryJson: text(files, 'run_summary.json') ?? '{}',
    }),
  );
  const [best] = summary.rankSweepRuns(results);
  return { csv: summary.sweepSummaryCsv(keys, results), best: best ?? null };
}
