import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';

const runner = new URL('../../scripts/headless.mjs', import.meta.url).pathname;

/** Runs the headless runner on bad input: these are refused before anything is built or launched. */
function headless(args: string[]) {
  const result = spawnSync(process.execPath, [runner, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr.trim() };
}

function configFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-'));
  writeFileSync(join(dir, 'run.yaml'), text);
  return join(dir, 'run.yaml');
}

describe('npm run headless on bad input: non-zero exit and one line saying what is wrong', () => {
  test.each([
    ['no command', [], /^error: usage: npm run headless -- train --config RUN\.yaml$/],
    ['a config file that does not exist', ['train', '--config', '/nonexistent/run.yaml'], /^error: \/nonexistent\/run\.yaml: no such config file$/],
    ['YAML that does not parse', ['train', '--config', configFile('base_model: [unclosed\n')], /^error: run\.yaml: not valid YAML/],
    ['no base_model', ['train', '--config', configFile('train_data: ./t.txt\noutput_dir: ./out\n')], /^error: run\.yaml: base_model is required$/],
    ['a base_model folder that is not there', ['train', '--config', configFile('base_model: ./nowhere\ntrain_data: ./t.txt\noutput_dir: ./out\n')], /^error: base_model: .*nowhere is not a folder$/],
  ])('%s', (_what, args, message) => {
    const { status, stderr } = headless(args);
    expect(status).not.toBe(0);
    expect(stderr.split('\n')).toHaveLength(1);
    expect(stderr).toMatch(message);
  });
});
