// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import * as tf from '@tensorflow/tfjs';
import { unzipSync } from 'fflate';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadTokenizer } from '../../src/core/data/tokenizer';
import { LOSS_PLOT } from '../../src/core/export/loss-plot-png';
import { zipRunBundle } from '../../src/core/export/run-bundle';
import { readHeader, bytesSource } from '../../src/core/safetensors/index';
import type { LoraLabDb } from '../../src/storage/db';
import { getModel } from '../../src/storage/models';
import { exportRunFiles } from '../../src/worker/run-files';
import { decodePng } from './support/png';
import { trainPinned } from './support/run-context';
import { freshDbWithTinyGpt2 } from './support/stored-model';

// The run bundle end to end, in Node (cpu backend, fake-indexeddb): two short tiny-gpt2 runs, one on plain text and
// one on chat data, exported as the worker exports them and zipped as the UI zips them; the zip is opened with
// fflate and every file is read back: the model card and its PNG, and llamafactory/ checked against the run.

const text = new TextDecoder();

/** 24 paragraphs, each its own document (LoRA Lab splits plain text at blank lines). */
const PARAGRAPHS = Array.from({ length: 24 }, (_, i) => `Paragraph ${i}: the quick brown fox jumps over the lazy dog ${i} times.`);

const TEXT_CONFIG = [
  'base_model: tiny-gpt2',
  'train_data: train.txt',
  'output_dir: ./out/text-run',
  'lora_rank: 2',
  'lora_alpha: 4',
  'lora_dropout: 0.1',
  'target_modules: [c_attn]',
  'max_steps: 4',
  'batch_size: 2',
  'grad_accum_steps: 2',
  'seq_len: 16',
  'log_steps: 1',
  'eval_steps: 2',
  'val_split: 0.2',
  'save_steps: 2',
  'learning_rate: 0.01',
  'lr_scheduler: linear',
  'warmup_steps: 2',
  'seed: 5',
].join('\n');

/** Chat records both ways LoRA Lab reads them: OpenAI `messages` and ShareGPT `conversations`. */
const CHATS = Array.from({ length: 12 }, (_, i) =>
  i % 3 === 2
    ? { conversations: [{ from: 'human', value: `What is ${i} plus one?` }, { from: 'gpt', value: `It is ${i + 1}.` }] }
    : { messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: `Name number ${i}.` }, { role: 'assistant', content: `Number ${i}.` }] },
);
const CHAT_VAL = [{ messages: [{ role: 'user', content: 'Name number 99.' }, { role: 'assistant', content: 'Number 99.' }] }];

const CHAT_CONFIG = [
  'base_model: tiny-gpt2',
  'train_data: chat.jsonl',
  'val_data: chat_val.jsonl',
  'output_dir: ./out/chat-run',
  'lora_rank: 4',
  'lora_alpha: 8',
  'target_modules: c_attn',
  'epochs: 1',
  'batch_size: 2',
  'seq_len: 32',
  'log_steps: 2',
  'save_steps: 0',
  'learning_rate: 0.005',
  'lr_scheduler: constant',
  'seed: 11',
].join('\n');

let db: LoraLabDb;
let modelId: string;

beforeAll(async () => {
  await tf.setBackend('cpu');
  ({ db, modelId } = await freshDbWithTinyGpt2());
});

async function train(configYaml: string, trainData: File, valData: File | null): Promise<string> {
  const result = await trainPinned(db, { modelId, configYaml, trainData, valData });
  expect(result.reason).toBe('completed');
  return result.runId;
}

/** The run exported and zipped as the UI does, then opened: path (without the run's folder) → bytes. */
async function zippedRun(runId: string, folder: string): Promise<Map<string, Uint8Array>> {
  const files = await exportRunFiles(db, runId);
  const parts: Uint8Array[] = [];
  await zipRunBundle(files, folder, (chunk) => parts.push(chunk));
  expect(parts.length).toBeGreaterThan(1); // streamed, not one buffer
  const zip = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (zip.set(p, at), at + p.length), 0);
  const opened = unzipSync(zip);
  const byPath = new Map<string, Uint8Array>();
  for (const [name, bytes] of Object.entries(opened)) {
    expect(name.startsWith(`${folder}/`), name).toBe(true);
    byPath.set(name.slice(folder.length + 1), bytes);
  }
  // Exactly the exported files, byte for byte.
  expect([...byPath.keys()].sort()).toEqual(files.map((f) => f.path).sort());
  for (const f of files) expect(Buffer.from(byPath.get(f.path)!).equals(f.bytes), f.path).toBe(true);
  return byPath;
}

/** metrics.csv as rows of numbers (null where empty). */
function metricsRows(csv: string): Record<string, number | null>[] {
  const [head, ...lines] = csv.trim().split('\n').map((l) => l.split(','));
  return lines.map((l) => Object.fromEntries(head!.map((k, i) => [k, l[i] === '' ? null : Number(l[i])])));
}

function jsonl(bytes: Uint8Array): unknown[] {
  return text.decode(bytes).trim().split('\n').map((l) => JSON.parse(l) as unknown);
}

/** Pixels of exactly `color` inside the plot area, as [x, y]. */
function pixelsOf(png: ReturnType<typeof decodePng>, color: readonly number[]): [number, number][] {
  const { left, top, right, bottom } = LOSS_PLOT.area;
  const found: [number, number][] = [];
  for (let y = top; y < bottom; y++) {
    for (let x = left + 1; x <= right; x++) {
      const [r, g, b] = png.pixel(x, y);
      if (r === color[0] && g === color[1] && b === color[2]) found.push([x, y]);
    }
  }
  return found;
}

describe('the run bundle of a plain-text run', () => {
  let files: Map<string, Uint8Array>;
  let rows: Record<string, number | null>[];

  beforeAll(async () => {
    const runId = await train(TEXT_CONFIG, new File([PARAGRAPHS.join('\n\n')], 'train.txt'), null);
    files = await zippedRun(runId, 'text-run');
    rows = metricsRows(text.decode(files.get('metrics.csv')!));
  }, 120_000);

  it('holds the adapter, logs, config, metrics, diagnosis, summary, model card, plot and llamafactory/', async () => {
    for (const path of [
      'adapter_model.safetensors',
      'adapter_config.json',
      'config.yaml',
      'metrics.csv',
      'diagnosis.json',
      'run_summary.json',
      'README.md',
      'loss_curves.png',
      'llamafactory/train.yaml',
      'llamafactory/dataset_info.json',
      'llamafactory/train.jsonl',
    ]) {
      expect(files.has(path), path).toBe(true);
    }
    expect([...files.keys()].some((p) => /^logs\/events\.out\.tfevents\./.test(p))).toBe(true);
    const header = await readHeader(bytesSource('adapter_model.safetensors', files.get('adapter_model.safetensors')!));
    expect(header.tensors.map((t) => t.name)).toContain('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight');
  });

  it('README.md: base model, data counts, hyper-parameters, final and best losses, the plot, the diagnosis, PEFT loading', async () => {
    const card = text.decode(files.get('README.md')!);
    expect(card).toMatch(/^---\nbase_model: "tiny-gpt2"\nlibrary_name: peft\n/);
    // The counts, computed here with the model's own tokenizer on the paragraphs written.
    const stored = (await getModel(db, modelId))!;
    const tokenizer = loadTokenizer(stored.files.tokenizer, stored.files.tokenizerConfig);
    const tokens = PARAGRAPHS.reduce((n, p) => n + tokenizer.encode(p).length, 0);
    expect(card).toContain(`- Training: \`train.txt\`, plain text (every token trained): 24 records, ${tokens.toLocaleString('en-US')} tokens.`);
    expect(card).toContain('- Validation: 20% of the training documents, held out (val_split 0.2).');
    expect(card).toContain('| LoRA rank (r) | 2 |');
    expect(card).toContain('| target modules | c_attn |');
    expect(card).toContain('| learning rate | 0.01 (linear, 2 warmup steps) |');
    expect(card).toContain('| batch | 2 sequences × 2 accumulation steps of 16 tokens |');
    const train = rows.filter((r) => r['loss'] !== null);
    const evals = rows.filter((r) => r['eval_loss'] !== null);
    const last = train.at(-1)!;
    expect(card).toContain(`- Final training loss: ${last['loss']!.toFixed(4)} (step ${last['step']})`);
    expect(evals.map((r) => r['step'])).toEqual([2, 4]);
    const best = evals.reduce((a, b) => (b['eval_loss']! < a['eval_loss']! ? b : a));
    expect(card).toContain(`- Best eval loss: ${best['eval_loss']!.toFixed(4)} (step ${best['step']})`);
    expect(card).toContain('![Training and eval loss by step](loss_curves.png)');
    const findings = JSON.parse(text.decode(files.get('diagnosis.json')!)) as { code: string }[];
    for (const f of findings) expect(card).toContain(`**${f.code}**`);
    expect(card).toContain('from peft import PeftModel');
    expect(card).toContain('model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("tiny-gpt2"), ".")');
  });

  it("loss_curves.png decodes, and the run's curves are drawn on it", () => {
    const png = decodePng(files.get('loss_curves.png')!);
    expect([png.width, png.height]).toEqual([LOSS_PLOT.width, LOSS_PLOT.height]);
    expect(png.pixel(2, 2)).toEqual([...LOSS_PLOT.background]);
    const train = pixelsOf(png, LOSS_PLOT.train);
    const evals = pixelsOf(png, LOSS_PLOT.eval);
    expect(train.length).toBeGreaterThan(100);
    expect(evals.length).toBeGreaterThan(20);
    // Steps 1 to 4 on an axis from 0 to 4: the train curve spans three quarters of the plot's width.
    const xs = train.map(([x]) => x);
    const width = LOSS_PLOT.area.right - LOSS_PLOT.area.left;
    expect(Math.max(...xs) - Math.min(...xs)).toBeGreaterThan(0.7 * width);
  });

  it('llamafactory/: a pt config with the run\'s values, and dataset_info.json naming the documents it trained on', () => {
    const yaml = parse(text.decode(files.get('llamafactory/train.yaml')!)) as Record<string, unknown>;
    expect(yaml).toMatchObject({
      model_name_or_path: 'tiny-gpt2',
      stage: 'pt',
      do_train: true,
      finetuning_type: 'lora',
      lora_rank: 2,
      lora_alpha: 4,
      lora_dropout: 0.1,
      lora_target: 'c_attn',
      learning_rate: 0.01,
      lr_scheduler_type: 'linear',
      warmup_steps: 2,
      per_device_train_batch_size: 2,
      gradient_accumulation_steps: 2,
      max_steps: 4,
      cutoff_len: 16,
      logging_steps: 1,
      save_steps: 2,
      seed: 5,
      output_dir: 'saves/text-run',
      report_to: 'tensorboard',
      dataset: 'train',
      dataset_dir: '.',
      val_size: 0.2,
      eval_strategy: 'steps',
      eval_steps: 2,
    });
    expect(yaml).not.toHaveProperty('template');
    expect(yaml).not.toHaveProperty('num_train_epochs');
    const info = JSON.parse(text.decode(files.get('llamafactory/dataset_info.json')!)) as Record<string, { file_name: string; columns: unknown }>;
    expect(info['train']).toEqual({ file_name: 'train.jsonl', columns: { prompt: 'text' } });
    expect(jsonl(files.get(`llamafactory/${info['train']!.file_name}`)!)).toEqual(PARAGRAPHS.map((p) => ({ text: p })));
  });
});

describe('the run bundle of a chat run', () => {
  let files: Map<string, Uint8Array>;

  beforeAll(async () => {
    const lines = (records: unknown[]) => records.map((r) => JSON.stringify(r)).join('\n');
    const runId = await train(CHAT_CONFIG, new File([lines(CHATS)], 'chat.jsonl'), new File([lines(CHAT_VAL)], 'chat_val.jsonl'));
    files = await zippedRun(runId, 'chat-run');
  }, 120_000);

  it('llamafactory/: an sft config with the template of the chat layout the run used, and sharegpt data with role/content tags', () => {
    const yaml = parse(text.decode(files.get('llamafactory/train.yaml')!)) as Record<string, unknown>;
    expect(yaml).toMatchObject({
      stage: 'sft',
      // tiny-gpt2 has no chat_template: LoRA Lab used Zephyr's layout, which is LLaMA-Factory's zephyr template.
      template: 'zephyr',
      lora_rank: 4,
      lora_alpha: 8,
      lora_dropout: 0.05,
      lora_target: 'c_attn',
      learning_rate: 0.005,
      lr_scheduler_type: 'constant',
      warmup_steps: 0,
      per_device_train_batch_size: 2,
      gradient_accumulation_steps: 1,
      num_train_epochs: 1,
      cutoff_len: 32,
      logging_steps: 2,
      save_strategy: 'no',
      seed: 11,
      dataset: 'chat',
      eval_dataset: 'chat_val',
      eval_strategy: 'epoch',
    });
    expect(yaml).not.toHaveProperty('max_steps');
    const info = JSON.parse(text.decode(files.get('llamafactory/dataset_info.json')!)) as Record<string, { file_name: string }>;
    const tags = { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant', system_tag: 'system' };
    expect(info['chat']).toEqual({ file_name: 'chat.jsonl', formatting: 'sharegpt', columns: { messages: 'messages' }, tags });
    expect(info['chat_val']).toEqual({ file_name: 'chat_val.jsonl', formatting: 'sharegpt', columns: { messages: 'messages' }, tags });
    // ShareGPT's human/gpt turns come out as user/assistant, as LoRA Lab read them.
    const expected = CHATS.map((c) =>
      'messages' in c ? c : { messages: c.conversations.map((m) => ({ role: m.from === 'human' ? 'user' : 'assistant', content: m.value })) },
    );
    expect(jsonl(files.get(`llamafactory/${info['chat']!.file_name}`)!)).toEqual(expected);
    expect(jsonl(files.get(`llamafactory/${info['chat_val']!.file_name}`)!)).toEqual(CHAT_VAL);
  });

  it('README.md counts the chat records and says the assistant turns were trained', () => {
    const card = text.decode(files.get('README.md')!);
    expect(card).toMatch(/- Training: `chat\.jsonl`, chat messages \(assistant turns trained\): 12 records, [\d,]+ tokens\./);
    expect(card).toMatch(/- Validation: `chat_val\.jsonl`, chat messages \(assistant turns trained\): 1 record, [\d,]+ tokens\./);
    expect(decodePng(files.get('loss_curves.png')!).width).toBe(LOSS_PLOT.width);
  });
});
