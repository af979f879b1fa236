import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { loadTokenizer } from '../../src/core/data/tokenizer';
import { isUserError } from '../../src/core/errors';

const FIXTURES = new URL('../../../shared/fixtures/models/', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, FIXTURES), 'utf8');

describe('loadTokenizer', () => {
  const tokenizer = loadTokenizer(read('tiny-gpt2/tokenizer.json'), read('tiny-gpt2/tokenizer_config.json'));

  test('encodes text to the same ids as the reference (token id = UTF-8 byte)', () => {
    const expected = JSON.parse(read('tiny-gpt2.expected.json')) as { text: string; tokens: number[] };
    expect(tokenizer.encode(expected.text)).toEqual(expected.tokens);
  });

  test('multi-byte characters and the end-of-text token', () => {
    expect(tokenizer.encode('é<|endoftext|>x')).toEqual([0xc3, 0xa9, 256, 120]);
    expect(tokenizer.decode([0xc3, 0xa9, 256, 120])).toBe('é<|endoftext|>x');
    expect(tokenizer.eosId).toBe(256);
    expect(tokenizer.vocabSize).toBe(257);
  });

  test('works without tokenizer_config.json', () => {
    const bare = loadTokenizer(read('tiny-llama/tokenizer.json'), null);
    expect(bare.encode('ab')).toEqual([97, 98]);
    expect(bare.eosId).toBe(256);
  });

  test.each([
    ['not JSON', '{"model": ', /tokenizer\.json: is not valid JSON/],
    ['an array', '[1, 2]', /tokenizer\.json: must hold a JSON object/],
    ['no model section', '{"version": "1.0"}', /tokenizer\.json: has no "model" section/],
  ])('refuses a tokenizer.json that is %s', (_what, text, message) => {
    let error: unknown;
    try {
      loadTokenizer(text, null);
    } catch (e) {
      error = e;
    }
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).toMatch(message);
  });

  test('refuses a tokenizer_config.json that is not JSON', () => {
    expect(() => loadTokenizer(read('tiny-gpt2/tokenizer.json'), 'nope')).toThrow(/tokenizer_config\.json: is not valid JSON/);
  });
});
