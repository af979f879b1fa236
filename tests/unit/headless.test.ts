import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
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
    ['no command', [], /^error: usage: npm run headless -- train --config RUN\.yaml \[--crash-at-step N\]$/],
    ['a config file that does not exist', ['train', '--config', '/nonexistent/run.yaml'], /^error: \/nonexistent\/run\.yaml: no such config file$/],
    ['YAML that does not parse', ['train', '--config', configFile('base_model: [unclosed\n')], /^error: run\.yaml: not valid YAML/],
    ['no base_model', ['train', '--config', configFile('train_data: ./t.txt\noutput_dir: ./out\n')], /^error: run\.yaml: base_model is required$/],
    ['a base_model folder that is not there', ['train', '--config', configFile('base_model: ./nowhere\ntrain_data: ./t.txt\noutput_dir: ./out\n')], /^error: base_model: .*nowhere does not exist$/],
  ])('%s', (_what, args, message) => {
    const { status, stderr } = headless(args);
    expect(status).not.toBe(0);
    expect(stderr.split('\n')).toHaveLength(1);
    expect(stderr).toMatch(message);
  });
});

/**
 * A folder beside run.yaml: `model/` holding a config.json and whatever `links` say (name → target),
 * and a train.txt, so that only what a case breaks is wrong.
 */
function withModel(links: Record<string, string>, yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-links-'));
  mkdirSync(join(dir, 'model'));
  writeFileSync(join(dir, 'model', 'config.json'), '{}');
  writeFileSync(join(dir, 'train.txt'), 'some text');
  for (const [name, target] of Object.entries(links)) symlinkSync(target, join(dir, name));
  writeFileSync(join(dir, 'run.yaml'), yaml);
  return join(dir, 'run.yaml');
}

describe('symbolic links in the paths: followed, and refused in one line when they lead nowhere', () => {
  test.each([
    ['a base_model that is a link to nothing', withModel({ gone: './nowhere' }, 'base_model: ./gone\ntrain_data: ./train.txt\noutput_dir: ./out\n'), /^error: base_model: \/.*\/gone is a symbolic link to \.\/nowhere, which does not exist$/],
    ['a model file that is a link to nothing (a cache with a missing blob)', withModel({ 'model/tokenizer.json': '../blobs/0a1b2c' }, 'base_model: ./model\ntrain_data: ./train.txt\noutput_dir: ./out\n'), /^error: base_model: \/.*\/model\/tokenizer\.json is a symbolic link to \.\.\/blobs\/0a1b2c, which does not exist$/],
    ['a base_model link to a file, not a folder', withModel({ 'file-link': './train.txt' }, 'base_model: ./file-link\ntrain_data: ./train.txt\noutput_dir: ./out\n'), /^error: base_model: \/.*\/file-link is not a folder$/],
    ['a train_data link to a folder, not a file', withModel({ 'data-link': './model' }, 'base_model: ./model\ntrain_data: ./data-link\noutput_dir: ./out\n'), /^error: train_data: \/.*\/data-link is not a file$/],
    ['a loop of links', withModel({ a: './b', b: './a' }, 'base_model: ./a\ntrain_data: ./train.txt\noutput_dir: ./out\n'), /^error: base_model: \/.*\/a: a loop of symbolic links$/],
  ])('%s', (_what, config, message) => {
    const { status, stderr } = headless(['train', '--config', config]);
    expect(status).toBe(2);
    expect(stderr.split('\n')).toHaveLength(1);
    expect(stderr).toMatch(message);
  });
});
