import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import {
  chatSettingsFromConfig,
  datasetStats,
  detectFormat,
  readDataset,
  type DatasetDoc,
  type ReadDatasetOptions,
  type TokenizedDataset,
} from '../../src/core/data/dataset';
import { textRecords } from '../../src/core/data/formats/text';
import type { DatasetRecord } from '../../src/core/data/formats/types';
import { packStream } from '../../src/core/data/packing';
import { previewRecords } from '../../src/core/data/preview';
import { loadTokenizer } from '../../src/core/data/tokenizer';
import { isUserError } from '../../src/core/errors';
import { bytesSource, type ByteSource } from '../../src/core/safetensors';

// The fixture tokenizer is byte-level without merges: token id = UTF-8 byte, 256 = <|endoftext|>. So the ids
// expected below are simply the bytes of the text.
const FIXTURES = new URL('../../../shared/fixtures/models/', import.meta.url);
const read = (path: string) => readFileSync(new URL(path, FIXTURES), 'utf8');
const tokenizer = loadTokenizer(read('tiny-gpt2/tokenizer.json'), read('tiny-gpt2/tokenizer_config.json'));
const EOS = 256;

const utf8 = (s: string) => new TextEncoder().encode(s);
const source = (name: string, content: string | Uint8Array | number[]): ByteSource =>
  bytesSource(name, typeof content === 'string' ? utf8(content) : Uint8Array.from(content));

type Options = Partial<Omit<ReadDatasetOptions, 'tokenizer'>>;
const load = (name: string, content: string | Uint8Array | number[], opts: Options = {}) =>
  readDataset(source(name, content), { tokenizer, chatTemplate: null, ...opts });

/** Runs `fn` and returns the UserError it throws (failing the test when it throws nothing or something else). */
async function userError(fn: () => Promise<unknown>): Promise<Error> {
  let error: unknown;
  try {
    await fn();
  } catch (e) {
    error = e;
  }
  expect(error, 'expected a UserError').toBeDefined();
  if (!isUserError(error)) throw error;
  return error;
}
const failure = (name: string, content: string | Uint8Array | number[], opts: Options = {}) => userError(() => load(name, content, opts));

/** A document described as parts: text (its UTF-8 bytes are the ids) or raw ids, each trained or not. */
type Part = [string | number[], boolean];
function expectDoc(doc: DatasetDoc | undefined, parts: Part[]): void {
  const ids: number[] = [];
  const mask: number[] = [];
  for (const [content, trained] of parts) {
    const partIds = typeof content === 'string' ? [...utf8(content)] : content;
    ids.push(...partIds);
    mask.push(...partIds.map(() => (trained ? 1 : 0)));
  }
  expect(doc).toBeDefined();
  expect(doc!.ids).toEqual(ids);
  expect(doc!.lossMask === undefined ? null : Array.from(doc!.lossMask)).toEqual(mask);
}
/** A document where every token counts: no mask at all. */
function expectPlain(doc: DatasetDoc | undefined, text: string): void {
  expect(doc).toBeDefined();
  expect(doc!.ids).toEqual([...utf8(text)]);
  expect(doc!.lossMask).toBeUndefined();
}

const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

describe('formats by extension', () => {
  test.each([
    ['notes.TXT', 'text'],
    ['README.md', 'text'],
    ['train.jsonl', 'jsonl'],
    ['data.Json', 'jsonl'],
    ['metadata.csv', 'csv'],
    ['pairs.tsv', 'csv'],
    ['train.bin', 'bin'],
  ])('%s → %s', (name, format) => {
    expect(detectFormat(name)).toBe(format);
  });

  test('an unknown extension is refused with the accepted ones listed', async () => {
    const e = await failure('data.parquet', 'x');
    expect(e.message).toMatch(/^data\.parquet: is not a dataset format LoRA Lab reads \(\.parquet\)\./);
    expect(e.message).toContain('.jsonl');
  });
});

describe('plain text', () => {
  test('splits on blank lines (several, or whitespace-only) when there is no end-of-text marker', async () => {
    const ds = await load('corpus.txt', 'Hello world\nsecond line\n\n\n  \nPara two\n');
    expect(ds).toMatchObject({ file: 'corpus.txt', format: 'text', kind: 'text', records: 2, tokens: 23 + 8 });
    expect(ds.docs.map((d) => d.id)).toEqual(['line 1', 'line 6']);
    expectPlain(ds.docs[0], 'Hello world\nsecond line');
    expectPlain(ds.docs[1], 'Para two');
  });

  test.each([1, 3, 7, 1 << 20])('splits only on <|endoftext|> when it occurs (slices of %i bytes)', async (chunkBytes) => {
    const ds = await load('corpus.md', 'a\n\nb<|endoftext|>\nc\n<|endoftext|><|endoftext|>\n', { chunkBytes });
    expect(ds.docs.map((d) => d.id)).toEqual(['line 1', 'line 4']);
    expectPlain(ds.docs[0], 'a\n\nb'); // the blank line stays inside the document
    expectPlain(ds.docs[1], 'c');
    expect(ds.warnings).toEqual([]); // back-to-back markers and the trailing one make no empty records
  });

  test("splits on the tokenizer's own eos text too", async () => {
    const ds = await load('corpus.txt', 'one</s>two\n\nstill two', { specialTokens: { eos: '</s>' } });
    expect(ds.docs.map((d) => d.ids.length)).toEqual([3, 14]);
  });

  test('CRLF line ends become LF', async () => {
    const ds = await load('win.txt', 'x\r\ny\r\n\r\nz');
    expectPlain(ds.docs[0], 'x\ny');
    expectPlain(ds.docs[1], 'z');
  });

  test('multi-byte characters split across slices, and a UTF-8 byte-order mark', async () => {
    const ds = await load('u.txt', [0xef, 0xbb, 0xbf, ...utf8('é€\n\n😀')], { chunkBytes: 1 });
    expectPlain(ds.docs[0], 'é€');
    expectPlain(ds.docs[1], '😀');
  });
});

describe('very long text documents are cut at line breaks', () => {
  const records = async (text: string, maxDocChars: number, chunkBytes: number) => {
    const out: DatasetRecord[] = [];
    for await (const batch of textRecords(source('t.txt', text), { markers: ['<|endoftext|>'], maxDocChars, chunkBytes })) out.push(...batch.records);
    return out.map((r) => [r.id, r.segments.map((s) => s.text).join('')]);
  };

  test('paragraphs', async () => {
    expect(await records('aaaa\nbbbb\ncccc\n\ndd', 9, 3)).toEqual([
      ['line 1', 'aaaa\nbbbb'],
      ['line 3', 'cccc'],
      ['line 5', 'dd'],
    ]);
  });

  test('between markers', async () => {
    expect(await records('12345\n67890\nabc<|endoftext|>x', 8, 4)).toEqual([
      ['line 1', '12345'],
      ['line 2', '67890'],
      ['line 3', 'abc'],
      ['line 3', 'x'],
    ]);
  });

  test('a marker-separated line with no breaks, never splitting a character or a marker', async () => {
    const text = '😀'.repeat(10) + '<|endoftext|>' + 'b'.repeat(9);
    const docs = await records(text, 5, 3);
    expect(docs.map(([, t]) => t).join('|')).toMatch(/^(😀)+(\|(😀)+)*\|b+(\|b+)*$/u);
    expect(docs.map(([, t]) => t).join('')).toBe('😀'.repeat(10) + 'b'.repeat(9));
    for (const [, t] of docs) expect(t!.length).toBeLessThanOrEqual(5);
  });
});

describe('invalid UTF-8 names the line and the byte offset', () => {
  test.each([
    ['a stray 0xFF', [...utf8('ok\nfine\nbad '), 0xff, ...utf8(' here')], 'line 3 is not valid UTF-8 (byte 0xFF at byte offset 12)'],
    ['a character cut off at the end', [...utf8('ab'), 0xc3], 'line 1 is not valid UTF-8 (byte 0xC3 at byte offset 2)'],
    ['an encoded surrogate', [...utf8('x\n'), 0xed, 0xa0, 0x80], 'line 2 is not valid UTF-8 (byte 0xED at byte offset 2)'],
    ['an overlong encoding', [...utf8('\n\n\n'), 0xc0, 0xaf], 'line 4 is not valid UTF-8 (byte 0xC0 at byte offset 3)'],
  ])('%s', async (_what, bytes, message) => {
    for (const chunkBytes of [1, 2, 1 << 20]) {
      const e = await failure('bad.txt', bytes, { chunkBytes });
      expect(e.message).toBe(`bad.txt: ${message}. Save the file with UTF-8 encoding.`);
    }
  });

  test('in a JSONL file too', async () => {
    const bytes = [...utf8('{"text": "a"}\n{"text": "'), 0x80, ...utf8('"}\n')];
    expect((await failure('train.jsonl', bytes)).message).toContain('train.jsonl: line 2 is not valid UTF-8 (byte 0x80 at byte offset 24)');
  });

  test('UTF-16 gets its own message', async () => {
    expect((await failure('wide.txt', [0xff, 0xfe, 0x61, 0x00])).message).toBe(
      'wide.txt: is UTF-16 text, and LoRA Lab reads UTF-8. Save the file with UTF-8 encoding.',
    );
  });
});

describe('JSONL records', () => {
  test('text records; blank lines are skipped and ids are line numbers', async () => {
    const ds = await load('train.jsonl', '{"text": "hi"}\n\n{"text": "yo", "meta": 1}\n');
    expect(ds).toMatchObject({ format: 'jsonl', kind: 'text', records: 2, tokens: 4 });
    expect(ds.docs.map((d) => d.id)).toEqual(['line 1', 'line 3']);
    expectPlain(ds.docs[1], 'yo');
  });

  test('prompt + completion: only the completion is trained', async () => {
    const ds = await load('pc.jsonl', '{"prompt": "Q: 1+1?\\nA:", "completion": " 2"}\n{"prompt": "x", "response": "y"}');
    expect(ds.kind).toBe('prompt_completion');
    expectDoc(ds.docs[0], [['Q: 1+1?\nA:', false], [' 2', true]]);
    expectDoc(ds.docs[1], [['x', false], ['y', true]]); // "response" is accepted for "completion"
  });

  test('Alpaca: instruction, blank line, input (when present), blank line masked; output trained', async () => {
    const ds = await load(
      'alpaca.json',
      '{"instruction": "Add", "input": "2 3", "output": "5"}\n{"instruction": "Say hi", "input": "", "output": "hi"}\n{"instruction": "Nod", "output": "ok"}',
    );
    expect(ds.kind).toBe('alpaca');
    expectDoc(ds.docs[0], [['Add\n\n2 3\n\n', false], ['5', true]]);
    expectDoc(ds.docs[1], [['Say hi\n\n', false], ['hi', true]]);
    expectDoc(ds.docs[2], [['Nod\n\n', false], ['ok', true]]);
  });

  test("chat with the model's template: only assistant content and its end marker are trained", async () => {
    const conversation = {
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: 'Hello!' },
        { role: 'user', content: 'Bye' },
        { role: 'assistant', content: 'Ciao' },
      ],
    };
    const ds = await load('chat.jsonl', JSON.stringify(conversation), { chatTemplate: CHATML });
    expect(ds.kind).toBe('chat');
    expectDoc(ds.docs[0], [
      ['<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n', false],
      ['Hello!<|im_end|>', true],
      ['\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n', false],
      ['Ciao<|im_end|>', true],
      ['\n', false],
    ]);
  });

  test('chat without a template uses the fallback layout, turns ended by eos', async () => {
    const ds = await load('chat.jsonl', '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}');
    expectDoc(ds.docs[0], [
      ['<|user|>\nHi', false],
      [[EOS], false],
      ['\n<|assistant|>\n', false],
      ['Yo', true],
      [[EOS], true],
      ['\n', false],
    ]);
  });

  test('ShareGPT conversations map human/gpt to user/assistant', async () => {
    const ds = await load('sg.jsonl', '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Yo"}]}', {
      chatTemplate: CHATML,
    });
    expectDoc(ds.docs[0], [
      ['<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n', false],
      ['Yo<|im_end|>', true],
      ['\n', false],
    ]);
  });

  test('a template that renders earlier turns differently still trains exactly the assistant content', async () => {
    // Marks the final message, so shorter renders are not prefixes of the full one; spans are found by content.
    const template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if loop.last %}{{ ' [end]' }}{% endif %}{{ eos_token }}{% endfor %}";
    const ds = await load('chat.jsonl', '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]}', {
      chatTemplate: template,
    });
    expectDoc(ds.docs[0], [
      ['user: a', false],
      [[EOS], false],
      ['assistant: ', false],
      ['b', true],
      [[EOS], true],
      ['user: c [end]', false],
      [[EOS], false],
    ]);
  });

  test('a JSON array, pretty-printed, with brackets and quotes inside strings (streamed in small slices)', async () => {
    const text = '[\n  {"text": "a [b] {c}"},\n  {"text": "say \\"]\\" then,"}\n]\n';
    for (const chunkBytes of [1, 4, 1 << 20]) {
      const ds = await load('data.json', text, { chunkBytes });
      expect(ds.docs.map((d) => d.id)).toEqual(['record 1', 'record 2']);
      expectPlain(ds.docs[0], 'a [b] {c}');
      expectPlain(ds.docs[1], 'say "]" then,');
    }
  });

  test('a .json file holding JSONL is read as JSONL', async () => {
    const ds = await load('data.json', '{"text": "a"}\n{"text": "b"}\n');
    expect(ds.docs.map((d) => d.id)).toEqual(['line 1', 'line 2']);
  });
});

describe('bad JSON input names the record', () => {
  test.each([
    ['a line that is not JSON', 'train.jsonl', '{"text": "a"}\n{"text": oops}\n', /^train\.jsonl: line 2 is not JSON \(.+\)\. A \.jsonl dataset/],
    ['a line that is not an object', 'train.jsonl', '{"text": "a"}\n["text"]\n', /^train\.jsonl: line 2 is a list, not a JSON object/],
    [
      'a record with no known fields',
      'train.jsonl',
      '{"text": "a"}\n\n{"question": "q", "answer": "a"}\n',
      /^train\.jsonl: line 3 has none of the fields LoRA Lab trains on \(it has "question", "answer"\)\. Each record needs "text"/,
    ],
    ['a field that is not a string', 'pc.jsonl', '{"prompt": "a", "completion": 42}', /^pc\.jsonl: line 1: "completion" is a number \(42\); it must be a string\./],
    [
      'kinds mixed in one file',
      'mix.jsonl',
      '{"text": "a"}\n{"text": "b"}\n{"prompt": "c", "completion": "d"}\n',
      /^mix\.jsonl: line 3 is a prompt\/completion record, but the records before it \(from line 1\) are text records\./,
    ],
    ['chat messages that are not a list', 'c.jsonl', '{"messages": "hi"}', /^c\.jsonl: line 1: "messages" is a string; it must be a list/],
    ['a chat message without a role', 'c.jsonl', '{"messages": [{"content": "hi"}]}', /^c\.jsonl: line 1: message 1 of "messages" has no "role"\./],
    ['a JSON array element that is not JSON', 'a.json', "[\n{\"text\": 'x'}\n]", /^a\.json: record 1 \(line 2\) is not JSON \(/],
    ['a JSON array missing a comma', 'a.json', '[{"text": "x"}\n {"text": "y"}]', /^a\.json: line 2: expected "," or "]" after record 1\./],
    ['a JSON array with a trailing comma', 'a.json', '[{"text": "x"},\n]', /^a\.json: record 2 \(line 2\) is missing: the array has a "," before its "\]"\./],
    ['a JSON array cut short', 'a.json', '[{"text": "x"}, {"text": "y', /^a\.json: record 2 \(line 1\) never ends/],
    ['a JSON array with no closing bracket', 'a.json', '[{"text": "x"}\n', /^a\.json: the JSON array never ends/],
    ['text after a JSON array', 'a.json', '[{"text": "x"}]\n{"text": "y"}', /^a\.json: line 2 has text after the array's closing "\]"\./],
    ['an empty file', 'e.jsonl', '', /^e\.jsonl: is empty \(0 bytes\)\./],
    ['only blank lines', 'e.jsonl', '\n  \n\n', /^e\.jsonl: has no records/],
    ['an empty array', 'e.json', ' [ ] ', /^e\.json: has no records/],
  ])('%s', async (_what, name, content, message) => {
    expect((await failure(name, content)).message).toMatch(message);
  });

  test('a chat template that refuses a conversation names the record', async () => {
    const template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with the user') }}{% endif %}x";
    const e = await failure('c.jsonl', '{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [{"role": "assistant", "content": "b"}]}', {
      chatTemplate: template,
    });
    expect(e.message).toBe('c.jsonl: line 2: the chat template refused this conversation (Conversations must start with the user).');
  });

  test('a chat template that does not parse blames tokenizer_config.json', async () => {
    const e = await failure('c.jsonl', '{"messages": [{"role": "user", "content": "a"}]}', { chatTemplate: '{% if %}' });
    expect(e.message).toMatch(/^tokenizer_config\.json: its chat_template could not be parsed/);
  });
});

describe('CSV and TSV', () => {
  const quoted = 'id,text\r\n1,"Hello, ""world""\r\nline two"\r\n\r\n2,plain "quote" inside\r\n3,"closed"after';
  test.each([1, 2, 3, 5, 1 << 20])('RFC 4180 quoting: delimiters, "" and line breaks inside quotes (slices of %i bytes)', async (chunkBytes) => {
    const ds = await load('data.csv', quoted, { chunkBytes });
    expect(ds).toMatchObject({ format: 'csv', kind: 'text', records: 3 });
    expect(ds.docs.map((d) => d.id)).toEqual(['line 2', 'line 5', 'line 6']);
    expectPlain(ds.docs[0], 'Hello, "world"\nline two');
    expectPlain(ds.docs[1], 'plain "quote" inside');
    expectPlain(ds.docs[2], 'closedafter');
  });

  test('prompt + response columns, matched without case; only the response is trained', async () => {
    const ds = await load('pairs.csv', ' Prompt ,RESPONSE,notes\n"Q, please",A,x\n');
    expect(ds.kind).toBe('prompt_completion');
    expectDoc(ds.docs[0], [['Q, please', false], ['A', true]]);
  });

  test('metadata.csv style: caption trained, file_name kept as the record id', async () => {
    const ds = await load('metadata.csv', 'file_name,caption\na.png,a cat\nb.png,a dog\n');
    expect(ds.kind).toBe('text');
    expect(ds.docs.map((d) => d.id)).toEqual(['a.png', 'b.png']);
    expectPlain(ds.docs[1], 'a dog');
  });

  test('TSV splits on tabs and keeps commas', async () => {
    const ds = await load('data.tsv', 'text\tlabel\nhello, "there"\t1\n"a\tb"\t2\n');
    expectPlain(ds.docs[0], 'hello, "there"');
    expectPlain(ds.docs[1], 'a\tb');
  });

  test.each([
    [
      'no usable column',
      'q.csv',
      'question,answer\nq,a\n',
      'q.csv: has no column LoRA Lab can train on (the header on line 1 has "question", "answer"). Accepted: "text"; "prompt" with "completion" or "response"; "instruction" with "output" and optional "input"; or "caption".',
    ],
    [
      'a row with too many fields',
      't.csv',
      'text\nfine\nnot, fine\n',
      't.csv: line 3 has 2 fields, but the header has 1. Put fields that contain commas or line breaks in "double quotes", and write a " inside them as "".',
    ],
    ['a quote that is never closed', 't.csv', 'text\n"a\n\nb\n', 't.csv: the quoted field that starts on line 2 is never closed. Add the missing closing ".'],
    ['a header and no rows', 't.csv', 'text\n\n', 't.csv: has no records: it holds only blank lines or an empty list. Pick the file that holds the training data.'],
  ])('%s', async (_what, name, content, message) => {
    expect((await failure(name, content)).message).toBe(message);
  });
});

describe('pre-tokenized .bin', () => {
  const u16 = (ids: number[]) => new Uint8Array(Uint16Array.from(ids).buffer);
  const u32 = (ids: number[]) => new Uint8Array(Uint32Array.from(ids).buffer);

  test('uint16 little-endian by default; one document, no mask, no separator added to the ids', async () => {
    const ds = await load('train.bin', [1, 0, 0, 1, 65, 0], { chunkBytes: 3 });
    expect(ds).toMatchObject({ format: 'bin', kind: 'tokens', records: 1, tokens: 3, warnings: [] });
    expect(ds.docs).toHaveLength(1);
    expect(ds.docs[0]!.ids).toEqual([1, 256, 65]);
    expect(ds.docs[0]!.lossMask).toBeUndefined();
  });

  test.each([
    ['dtype in the meta file', 'train.bin', '{"dtype": "uint32"}'],
    ["nanoGPT's vocab_size above 65535 in the meta file", 'train.bin', '{"vocab_size": 100277}'],
    ['"uint32" in the file name', 'train_uint32.bin', undefined],
    ['"u32" in the file name', 'val.U32.bin', undefined],
  ])('uint32 from %s', async (_what, name, meta) => {
    const ds = await load(name, u32([7, 256, 0]), meta === undefined ? {} : { meta: source('train.meta.json', meta) });
    expect(ds.docs[0]!.ids).toEqual([7, 256, 0]);
  });

  test('the meta file wins over the file name', async () => {
    const ds = await load('train_uint32.bin', u16([7, 8]), { meta: source('train_uint32.meta.json', '{"dtype": "uint16"}') });
    expect(ds.docs[0]!.ids).toEqual([7, 8]);
  });

  test.each([
    [
      'an id outside the vocabulary',
      'train.bin',
      u16([1, 2, 300, 400]),
      undefined,
      /^train\.bin: token 2 \(byte offset 4\) is id 300, but the tokenizer has only 257 ids \(vocabulary mismatch\)\./,
    ],
    [
      'a size that is not a whole number of ids',
      'train.bin',
      [1, 0, 2],
      undefined,
      /^train\.bin: is 3 bytes, which is not a whole number of uint16 token ids \(2 bytes each; the width comes from the default \(uint16\)\)\. If the ids are uint32, add train\.meta\.json/,
    ],
    ['uint32 size check', 'x_u32.bin', u16([1, 2, 3]), undefined, /^x_u32\.bin: is 6 bytes, which is not a whole number of uint32 token ids/],
    ['a meta file that is not JSON', 'train.bin', u16([1]), 'dtype: uint32', /^train\.meta\.json: is not valid JSON/],
    ['a meta file with an unknown dtype', 'train.bin', u16([1]), '{"dtype": "int8"}', /^train\.meta\.json: has dtype "int8", which LoRA Lab does not read\./],
    ['an empty file', 'train.bin', [], undefined, /^train\.bin: is empty/],
  ])('%s is refused', async (_what, name, bytes, meta, message) => {
    const e = await failure(name, bytes, meta === undefined ? {} : { meta: source('train.meta.json', meta) });
    expect(e.message).toMatch(message);
  });
});

describe('size limit', () => {
  const huge = (name: string): ByteSource => ({
    name,
    size: 2 * 1024 ** 3 + 2,
    read: () => Promise.reject(new Error('must not be read')),
  });

  test('text formats over 2 GB are refused before reading', async () => {
    const e = await userError(() => readDataset(huge('big.jsonl'), { tokenizer, chatTemplate: null }));
    expect(e.message).toMatch(/^big\.jsonl: is 2\.00 GB, over the 2 GB limit for text datasets\. .*\.bin/);
  });

  test('a .bin of that size is not refused for its size (it streams)', async () => {
    await expect(readDataset(huge('big.bin'), { tokenizer, chatTemplate: null })).rejects.toThrow('must not be read');
  });
});

describe('warnings', () => {
  test('empty records and records with nothing trained are left out; duplicates are kept', async () => {
    const ds = await load(
      'pc.jsonl',
      [
        '{"prompt": "a", "completion": "b"}',
        '{"prompt": "", "completion": ""}',
        '{"prompt": "a", "completion": "b"}',
        '{"prompt": "only a prompt", "completion": ""}',
        '{"prompt": "a", "completion": "b"}',
        '{"prompt": "ab", "completion": ""}',
      ].join('\n'),
    );
    expect(ds.records).toBe(6);
    expect(ds.docs.map((d) => d.id)).toEqual(['line 1', 'line 3', 'line 5']);
    expect(ds.tokens).toBe(6);
    expect(ds.warnings).toEqual([
      { code: 'empty_records', count: 1, message: '1 record is empty and left out.', examples: ['line 2'] },
      {
        code: 'no_trained_tokens',
        count: 2,
        message: '2 records have nothing to train on (an empty completion) and are left out.',
        examples: ['line 4', 'line 6'],
      },
      {
        code: 'duplicates',
        count: 2,
        message: '2 records repeat an earlier record word for word; repeats are kept, and are learnt more strongly.',
        examples: ['line 3', 'line 5'],
      },
    ]);
  });

  test('a chat that ends before any assistant turn has nothing trained', async () => {
    const ds = await load('c.jsonl', '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n{"messages": [{"role": "user", "content": "?"}]}');
    expect(ds.warnings.map((w) => [w.code, w.examples])).toEqual([['no_trained_tokens', ['line 2']]]);
  });

  test('the same text with a different mask is not a duplicate', async () => {
    const ds = await load('pc.jsonl', '{"prompt": "ab", "completion": "c"}\n{"prompt": "a", "completion": "bc"}');
    expect(ds.warnings).toEqual([]);
  });

  test('a file where nothing is left to train on is refused', async () => {
    expect((await failure('t.jsonl', '{"text": ""}\n{"text": ""}')).message).toBe(
      't.jsonl: has nothing to train on: all 2 records are empty or have no part that is trained.',
    );
  });
});

describe('datasetStats', () => {
  test('counts, windows as packing cuts them, the longest record, and too_long for the given seq_len', async () => {
    const ds = await load('pc.jsonl', '{"prompt": "abc", "completion": "de"}\n{"prompt": "x", "completion": "yz"}\n{"prompt": "", "completion": "0123456789"}');
    const stats = datasetStats(ds, 4);
    const stream = packStream(ds.docs, ds.eosId);
    expect(stream.ids.length).toBe(5 + 3 + 10 + 3);
    expect(stats).toMatchObject({
      records: 3,
      tokens: 18,
      streamTokens: 21,
      trainedTokens: 2 + 2 + 10 + 3,
      windows: 5, // floor((21 - 1) / 4)
      longestRecord: { id: 'line 3', tokens: 10 },
    });
    expect(stats.trainedTokens).toBe(stream.lossMask.reduce((a, b) => a + b, 0));
    expect(stats.warnings).toEqual([
      {
        code: 'too_long',
        count: 2,
        message: '2 records are longer than seq_len (4 tokens), so they are cut across training windows and never seen whole. Raise seq_len or shorten them.',
        examples: ['line 1', 'line 3'],
      },
    ]);
    expect(datasetStats(ds, 10).warnings).toEqual([]);
    expect(datasetStats(ds, 21).windows).toBe(0);
  });

  test('a .bin stream is never too long', async () => {
    const ds = await load('t.bin', new Uint8Array(40));
    expect(datasetStats(ds, 4).warnings).toEqual([]);
    expect(datasetStats(ds, 4).windows).toBe(5); // 20 ids + eos
  });
});

describe('previewRecords', () => {
  test('shows tokens with trained vs masked, multi-byte characters whole, and the eos separator', async () => {
    const ds = await load('pc.jsonl', '{"prompt": "Hé", "completion": "ok"}\n{"prompt": "p", "completion": "q"}');
    const [first, ...rest] = previewRecords(ds, tokenizer, 1);
    expect(rest).toEqual([]);
    expect(first).toEqual({
      id: 'line 1',
      omitted: 0,
      tokens: [
        { text: 'H', trained: false, ids: [72] },
        { text: 'é', trained: false, ids: [0xc3, 0xa9] },
        { text: 'o', trained: true, ids: [111] },
        { text: 'k', trained: true, ids: [107] },
        { text: '<|endoftext|>', trained: true, ids: [EOS] },
      ],
    });
  });

  test('cuts long records after maxTokens and says how many were left out', async () => {
    const ds = await load('t.txt', 'abcdef');
    const [p] = previewRecords(ds, tokenizer, 5, 4);
    expect(p!.tokens.map((t) => t.text).join('')).toBe('abcd');
    expect(p!.tokens.every((t) => t.trained)).toBe(true);
    expect(p!.omitted).toBe(3); // "e", "f" and the separator
  });
});

describe('progress and cancellation', () => {
  test('progress runs over the file bytes and ends at the total', async () => {
    const lines = Array.from({ length: 200 }, (_, i) => JSON.stringify({ text: `record ${i}` })).join('\n');
    const calls: [number, number][] = [];
    const ds = await load('p.jsonl', lines, { chunkBytes: 64, onProgress: (done, total) => calls.push([done, total]) });
    expect(ds.docs).toHaveLength(200);
    const size = utf8(lines).length;
    expect(calls.at(-1)).toEqual([size, size]);
    for (let i = 1; i < calls.length; i++) expect(calls[i]![0]).toBeGreaterThanOrEqual(calls[i - 1]![0]);
  });

  test('an aborted signal stops the read', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(load('t.txt', 'abc', { signal: controller.signal })).rejects.toMatchObject({ name: 'AbortError' });
  });

  test('aborting mid-read stops it', async () => {
    const controller = new AbortController();
    const inner = source('t.jsonl', Array.from({ length: 100 }, () => '{"text": "x"}').join('\n'));
    let reads = 0;
    const counting: ByteSource = {
      name: inner.name,
      size: inner.size,
      read: (b, e) => {
        if (++reads === 3) controller.abort();
        return inner.read(b, e);
      },
    };
    const run = readDataset(counting, { tokenizer, chatTemplate: null, signal: controller.signal, chunkBytes: 16 });
    await expect(run).rejects.toMatchObject({ name: 'AbortError' });
    expect(reads).toBeLessThan(5);
  });
});

describe('chatSettingsFromConfig', () => {
  test('reads the template and special tokens, including the older named-template list', () => {
    expect(chatSettingsFromConfig(read('tiny-gpt2/tokenizer_config.json'))).toEqual({ chatTemplate: null, bosToken: '<|endoftext|>', eosToken: '<|endoftext|>' });
    expect(
      chatSettingsFromConfig(
        JSON.stringify({
          chat_template: [
            { name: 'tool_use', template: 'T' },
            { name: 'default', template: 'D' },
          ],
          eos_token: { content: '</s>' },
        }),
      ),
    ).toEqual({ chatTemplate: 'D', bosToken: null, eosToken: '</s>' });
    expect(chatSettingsFromConfig(null)).toEqual({ chatTemplate: null, bosToken: null, eosToken: null });
  });
});

/** Type-level check that a dataset's documents are what packing takes. */
export const docsForPacking = (ds: TokenizedDataset) => packStream(ds.docs, ds.eosId);
