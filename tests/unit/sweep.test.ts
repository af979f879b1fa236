import { describe, expect, it } from 'vitest';
import { formatIssue, parseRunConfigYaml, runConfigToYaml, type ConfigIssue } from '../../src/core/config';
import { MAX_SWEEP_RUNS, parseSweepGrid, parseSweepYaml, sweepRunName, sweepValueName } from '../../src/core/config/sweep';

const BASE = ['base_model: ./model', 'train_data: ./train.txt', 'output_dir: ./output/sweep', 'max_steps: 20', 'lora_alpha: 16'];

function sweepOf(...lines: string[]) {
  const result = parseSweepYaml([...BASE, ...lines].join('\n'), 'run.yaml');
  if (!result.ok) throw new Error(result.issues.map(formatIssue).join('\n'));
  if (!result.sweep) throw new Error('no sweep');
  return { ...result, sweep: result.sweep };
}

function issuesOf(...lines: string[]): readonly ConfigIssue[] {
  const result = parseSweepYaml([...BASE, ...lines].join('\n'), 'run.yaml');
  if (result.ok) throw new Error('expected issues');
  return result.issues;
}

describe('a sweep: map expands into run configs', () => {
  it('a 2 × 2 grid is four runs, the first key varying slowest, each named and placed under output_dir', () => {
    const { config, sweep } = sweepOf('sweep: {learning_rate: [1.0e-4, 2.0e-4], lora_rank: [8, 16]}');
    expect(config.output_dir).toBe('./output/sweep');
    expect(sweep.keys).toEqual(['learning_rate', 'lora_rank']);
    expect(sweep.runs.map((r) => r.name)).toEqual(['lr_1e-4_r_8', 'lr_1e-4_r_16', 'lr_2e-4_r_8', 'lr_2e-4_r_16']);
    expect(sweep.runs.map((r) => [r.config.learning_rate, r.config.lora_rank])).toEqual([
      [1e-4, 8],
      [1e-4, 16],
      [2e-4, 8],
      [2e-4, 16],
    ]);
    expect(sweep.runs.map((r) => r.config.output_dir)).toEqual(sweep.runs.map((r) => `./output/sweep/${r.name}`));
    // Everything not swept is the config's own.
    for (const run of sweep.runs) expect(run.config).toMatchObject({ base_model: './model', max_steps: 20, lora_alpha: 16 });
  });

  it("each run's config is a plain config: written as YAML, it parses back to itself, without a sweep", () => {
    const { sweep } = sweepOf('sweep:', '  learning_rate: [1e-4, 3e-4]');
    for (const run of sweep.runs) {
      const text = runConfigToYaml(run.config);
      expect(text).not.toMatch(/^sweep/m);
      const back = parseRunConfigYaml(text);
      expect(back.ok && back.config).toEqual(run.config);
      const again = parseSweepYaml(text);
      expect(again.ok && again.sweep).toBeNull();
    }
  });

  it("names hold only the keys that vary, in the seed's style, with short names for common keys", () => {
    const { sweep } = sweepOf('sweep: {learning_rate: [1e-4, 2e-4], lora_rank: [16], lora_dropout: [0, 0.1], warmup_steps: [5]}');
    expect(sweep.runs.map((r) => r.name)).toEqual(['lr_1e-4_dropout_0', 'lr_1e-4_dropout_0.1', 'lr_2e-4_dropout_0', 'lr_2e-4_dropout_0.1']);
    expect(sweep.runs.every((r) => r.config.lora_rank === 16 && r.config.warmup_steps === 5)).toBe(true);
    // One run in all: named from every key, so it still gets a folder of its own.
    expect(sweepOf('sweep: {learning_rate: [2e-4]}').sweep.runs.map((r) => r.name)).toEqual(['lr_2e-4']);
    expect(sweepRunName([
      { key: 'lora_alpha', value: 32 },
      { key: 'batch_size', value: 4 },
      { key: 'epochs', value: 3 },
      { key: 'lr_scheduler', value: 'linear' },
      { key: 'target_modules', value: ['c_attn', 'c_proj'] },
    ])).toBe('alpha_32_bs_4_ep_3_lr_scheduler_linear_target_modules_c_attn+c_proj');
  });

  it('values read in names the way people write them', () => {
    expect([1e-4, 2e-4, 1.5e-4, 5e-5, 1e-3, 0.01, 0.1, 0.25, 16, 0, 1000].map(sweepValueName)).toEqual([
      '1e-4', '2e-4', '1.5e-4', '5e-5', '1e-3', '1e-2', '0.1', '0.25', '16', '0', '1000',
    ]);
    expect(sweepValueName('all-linear')).toBe('all-linear');
    expect(sweepValueName('a/b c')).toBe('a-b-c');
    expect(sweepValueName(true)).toBe('true');
  });

  it('quoted numbers and other tools\' key names are read as in a plain config', () => {
    const { sweep } = sweepOf('sweep: {network_dim: ["4", 8], learning_rate: ["1e-4"]}');
    expect(sweep.keys).toEqual(['lora_rank', 'learning_rate']);
    expect(sweep.runs.map((r) => [r.name, r.config.lora_rank, r.config.learning_rate])).toEqual([
      ['r_4', 4, 1e-4],
      ['r_8', 8, 1e-4],
    ]);
  });

  it('a swept key given at the top level too gives way to the sweep, with a warning', () => {
    const { sweep, warnings } = sweepOf('learning_rate: 5e-4', 'sweep: {learning_rate: [1e-4, 2e-4]}');
    expect(sweep.runs.map((r) => r.config.learning_rate)).toEqual([1e-4, 2e-4]);
    expect(warnings.map(formatIssue)).toContain("learning_rate: 0.0005 is replaced by the sweep's values");
  });

  it('warnings about one run name it', () => {
    const { warnings } = sweepOf('sweep: {learning_rate: [1e-4, 0.5]}');
    expect(warnings.map((w) => w.message)).toContainEqual(expect.stringMatching(/^0\.5 is high for LoRA .*\(in run lr_0\.5\)$/));
  });
});

describe('a bad sweep is refused with the key and its line', () => {
  it('a bad value names the key and the line of the value', () => {
    const issues = issuesOf('sweep:', '  learning_rate:', '    - 1e-4', '    - 2', '  lora_rank: [8, 0]');
    expect(issues.map(formatIssue)).toEqual([
      'line 9: sweep.learning_rate: must be a number from 0 to 1, got 2',
      'line 10: sweep.lora_rank: must be an integer from 1 to 256, got 0',
    ]);
  });

  it('an unknown key gets the nearest name; keys that cannot vary say why', () => {
    const issues = issuesOf('sweep:', '  lora_rnak: [8, 16]', '  output_dir: [a, b]', '  train_data: [x.txt]');
    expect(issues.map(formatIssue)).toEqual([
      'line 7: sweep.lora_rnak: unknown key — did you mean lora_rank?',
      "line 8: sweep.output_dir: cannot be swept: each run's folder is named from the swept values under output_dir",
      'line 9: sweep.train_data: cannot be swept: a sweep trains on one dataset; write one config per dataset',
    ]);
  });

  it('an empty list, a value that is not a list, a repeated value, an empty or non-map sweep', () => {
    expect(issuesOf('sweep: {learning_rate: []}').map(formatIssue)).toEqual([
      'line 6: sweep.learning_rate: the list is empty; give at least one value, or remove the key',
    ]);
    expect(issuesOf('sweep: {learning_rate: 1e-4}').map(formatIssue)).toEqual([
      'line 6: sweep.learning_rate: must be a list of values to try, e.g. [0.0001, …], got 0.0001',
    ]);
    expect(issuesOf('sweep: {lora_rank: [8, 16, 8]}').map(formatIssue)).toEqual(['line 6: sweep.lora_rank: lists 8 twice; each value runs once']);
    expect(issuesOf('sweep: {}').map(formatIssue)).toEqual(['line 6: sweep: lists no keys; give a list of values for a key, or remove sweep']);
    expect(issuesOf('sweep: [1e-4, 2e-4]').map(formatIssue)).toEqual([
      'line 6: sweep: must be a map of config keys to lists of values (e.g. sweep: {learning_rate: [1e-4, 2e-4]})',
    ]);
  });

  it(`a grid over ${MAX_SWEEP_RUNS} runs is refused, one of ${MAX_SWEEP_RUNS} is not`, () => {
    const list = (n: number) => `[${Array.from({ length: n }, (_, i) => i + 1).join(', ')}]`;
    expect(issuesOf(`sweep: {lora_rank: ${list(13)}, seed: ${list(5)}}`).map(formatIssue)).toEqual([
      'line 6: sweep: 13 × 5 = 65 runs, more than the 64 a sweep may hold; shorten the lists',
    ]);
    expect(sweepOf(`sweep: {lora_rank: ${list(8)}, seed: ${list(8)}}`).sweep.runs).toHaveLength(64);
  });

  it('a rule across keys broken by one run names that run', () => {
    const issues = issuesOf('sweep: {warmup_steps: [10, 30]}');
    expect(issues.map(formatIssue)).toEqual([
      'warmup_steps: 30 warmup steps is more than max_steps (20); the learning rate would never reach its peak (in run warmup_steps_30)',
    ]);
  });

  it("the config's own issues and the sweep's are reported together, down the file", () => {
    const issues = issuesOf('lora_rnak: 8', 'sweep: {learning_rate: [7]}');
    expect(issues.map(formatIssue)).toEqual([
      'line 6: lora_rnak: unknown key — did you mean lora_rank?',
      'line 7: sweep.learning_rate: must be a number from 0 to 1, got 7',
    ]);
  });

  it('parseRunConfigYaml reads the config of a sweep without calling sweep a run key', () => {
    const plain = parseRunConfigYaml([...BASE, 'sweep: {learning_rate: [1e-4, 2e-4]}'].join('\n'));
    expect(plain.ok && plain.config.learning_rate).toBe(1e-4);
  });
});

describe("the app's queue: a grid written on its own", () => {
  const base = (() => {
    const r = parseRunConfigYaml(BASE.join('\n'));
    if (!r.ok) throw new Error('bad base');
    return r.config;
  })();

  it('expands against the config in the form, with the grid\'s own line numbers', () => {
    const ok = parseSweepGrid(base, 'learning_rate: [1e-4, 2e-4]\nlora_rank: [8, 16]\n');
    expect(ok.ok && ok.sweep.runs.map((r) => [r.name, r.config.output_dir, r.config.learning_rate, r.config.lora_rank])).toEqual([
      ['lr_1e-4_r_8', './output/sweep/lr_1e-4_r_8', 1e-4, 8],
      ['lr_1e-4_r_16', './output/sweep/lr_1e-4_r_16', 1e-4, 16],
      ['lr_2e-4_r_8', './output/sweep/lr_2e-4_r_8', 2e-4, 8],
      ['lr_2e-4_r_16', './output/sweep/lr_2e-4_r_16', 2e-4, 16],
    ]);
    const bad = parseSweepGrid(base, 'learning_rate: [1e-4]\nlora_rank: [8, 300]\n');
    expect(!bad.ok && bad.issues.map(formatIssue)).toEqual(['line 2: sweep.lora_rank: must be an integer from 1 to 256, got 300']);
    const broken = parseSweepGrid(base, 'learning_rate: [1e-4\n');
    expect(!broken.ok && broken.issues[0]!.message).toMatch(/^not valid YAML at line \d+, column \d+: /);
  });

  it('a config with a sweep read as one run says that the sweep is not run there', () => {
    const plain = parseRunConfigYaml([...BASE, 'sweep: {learning_rate: [1e-4, 2e-4]}'].join('\n'));
    expect(plain.ok && plain.warnings.map(formatIssue)).toEqual([
      'line 6: sweep: lists runs to try, which this config alone does not run: use the queue\'s "Add a grid" or the headless runner',
    ]);
  });
});

it('parseSweepYaml does not pass on the note that a sweep is not run', () => {
  const { warnings } = sweepOf('sweep: {learning_rate: [1e-4, 2e-4]}');
  expect(warnings).toEqual([]);
});
