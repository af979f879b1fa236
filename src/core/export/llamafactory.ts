import { stringify } from 'yaml';
import type { RunConfig } from '../config/schema';
import { detectFormat } from '../data/dataset';
import { readTokenIds } from '../data/formats/bin';
import { ChatFormatter, type ChatMessage } from '../data/formats/chat';
import { csvRecords } from '../data/formats/csv';
import { jsonRecords } from '../data/formats/jsonl';
import type { RecordContext } from '../data/formats/records';
import { textRecords } from '../data/formats/text';
import type { DatasetRecord, RecordBatch, RecordKind } from '../data/formats/types';
import type { ByteSource } from '../safetensors/source';

/**
 * The hand-off to LLaMA-Factory (`llamafactory-cli train`), for a run that outgrew the browser: `llamafactory/` in
 * every run's output holds `train.yaml` with the run's settings, `dataset_info.json`, and the run's data as JSONL.
 *
 * The data is not copied as it was picked but read again by LoRA Lab's own readers (formats/*.ts) and written in
 * the layout LLaMA-Factory's data/README describes, so the documents, prompts and answers LLaMA-Factory trains on
 * are the ones LoRA Lab trained on: a text file's documents (split at blank lines or end-of-text markers), the
 * masked prompt exactly as LoRA Lab built it (Alpaca's "{instruction}\n\n{input}\n\n" included), the chat
 * messages with ShareGPT's from/value turned into role/content. Formats LLaMA-Factory does not read (.md, .tsv,
 * nanoGPT .bin) come out as the same JSONL.
 */

/** What LLaMA-Factory trains: `pt` (plain text, every token) or `sft` (prompt masked, answer trained). */
export type LlamaFactoryStage = 'pt' | 'sft';

export function stageOf(kind: RecordKind): LlamaFactoryStage {
  return kind === 'text' || kind === 'tokens' ? 'pt' : 'sft';
}

/**
 * LLaMA-Factory's template for data of `kind` on a model whose chat template is `chatTemplate` (null: the model has
 * none). Prompt/completion and Alpaca records are joined as they are by LoRA Lab, which is LLaMA-Factory's `empty`
 * template; chat data takes the template that writes the model's own chat format (recognised by its markers), and
 * Zephyr's for a model without one, the layout LoRA Lab falls back to (FALLBACK_CHAT_TEMPLATE). Null for `pt`.
 */
export function llamaFactoryTemplate(kind: RecordKind, chatTemplate: string | null): string | null {
  if (stageOf(kind) === 'pt') return null;
  if (kind !== 'chat') return 'empty';
  if (chatTemplate === null) return 'zephyr';
  if (chatTemplate.includes('<|start_header_id|>')) return 'llama3';
  if (chatTemplate.includes('<|im_start|>')) return /qwen/i.test(chatTemplate) ? 'qwen' : /smollm/i.test(chatTemplate) ? 'smollm2' : 'chatml';
  if (chatTemplate.includes('[INST]')) return chatTemplate.includes('<<SYS>>') ? 'llama2' : 'mistral';
  if (chatTemplate.includes('<|user|>')) return 'zephyr';
  return 'default';
}

// ─── The data file ─────────────────────────────────────────────────────────────────────────────────

/** The columns a JSONL row of each kind has; dataset_info.json maps them (datasetInfoEntry). */
type Row = { text: string } | { instruction: string; output: string } | { messages: ChatMessage[] };

export interface HandoffData {
  readonly kind: RecordKind;
  /** Rows written (records LoRA Lab leaves out, empty or with nothing trained, are left out here too). */
  readonly rows: number;
  /** JSONL, one row per line. */
  readonly bytes: Uint8Array;
}

export interface HandoffReadOptions {
  /** End-of-text marker texts that split a plain-text file into documents (as the training read used). */
  readonly markers: readonly string[];
  /** For a .bin of token ids: the tokenizer that turns them back into text. Without it a .bin is refused. */
  readonly tokenizer?: { readonly vocabSize: number; readonly eosId: number | null; decode(ids: readonly number[]): string };
  /** The .meta.json next to a .bin. */
  readonly meta?: ByteSource;
}

/**
 * Chat records keep their messages: in place of rendering them with a template, this formatter hands the messages
 * back as the record's one segment (JSON), which llamaFactoryData turns into the row's `messages`.
 */
class MessagesAsSegment extends ChatFormatter {
  constructor() {
    super(null, { bos_token: '', eos_token: '' });
  }

  override segments(messages: readonly ChatMessage[]) {
    return messages.length === 0 ? [] : [{ text: JSON.stringify(messages), trained: true }];
  }
}

/** The dataset file `source` as LLaMA-Factory's JSONL rows. */
export async function llamaFactoryData(source: ByteSource, opts: HandoffReadOptions): Promise<HandoffData> {
  const format = detectFormat(source.name);
  const lines: string[] = [];
  let kind: RecordKind | null = null;
  if (format === 'bin') {
    if (!opts.tokenizer) throw new Error(`llamaFactoryData: ${source.name} holds token ids, and no tokenizer was given to turn them into text`);
    const tok = opts.tokenizer;
    const ids = await readTokenIds(source, { meta: opts.meta, vocabSize: tok.vocabSize, chunkBytes: 1 << 22, progress: async () => undefined });
    // Documents are what lies between end-of-text ids (nanoGPT writes one after each); LLaMA-Factory's pt stage
    // puts the eos back after each row.
    let start = 0;
    for (let i = 0; i <= ids.length; i++) {
      if (i < ids.length && ids[i] !== tok.eosId) continue;
      const text = tok.decode(ids.slice(start, i));
      if (text.trim() !== '') lines.push(JSON.stringify({ text } satisfies Row));
      start = i + 1;
    }
    kind = 'tokens';
  } else {
    const ctx: RecordContext = { file: source.name, chat: new MessagesAsSegment() };
    const read = { chunkBytes: 1 << 20 };
    let batches: AsyncGenerator<RecordBatch>;
    if (format === 'text') batches = textRecords(source, { ...read, markers: opts.markers });
    else if (format === 'jsonl') batches = jsonRecords(source, ctx, read);
    else batches = csvRecords(source, ctx, { ...read, delimiter: /\.tsv$/i.test(source.name) ? '\t' : ',' });
    for await (const batch of batches) {
      for (const record of batch.records) {
        kind ??= record.kind;
        const row = rowOf(record);
        if (row) lines.push(JSON.stringify(row));
      }
    }
  }
  if (kind === null) throw new Error(`llamaFactoryData: ${source.name} has no records`);
  return { kind, rows: lines.length, bytes: new TextEncoder().encode(lines.length ? `${lines.join('\n')}\n` : '') };
}

/** A record as a row, or null where LoRA Lab would train on nothing of it. */
function rowOf(record: DatasetRecord): Row | null {
  const join = (trained: boolean) =>
    record.segments
      .filter((s) => s.trained === trained)
      .map((s) => s.text)
      .join('');
  switch (record.kind) {
    case 'text':
    case 'tokens': {
      const text = join(true);
      return text === '' ? null : { text };
    }
    case 'prompt_completion':
    case 'alpaca': {
      const output = join(true);
      return output === '' ? null : { instruction: join(false), output };
    }
    case 'chat': {
      const messages = record.segments.length ? (JSON.parse(record.segments[0]!.text) as ChatMessage[]) : [];
      return messages.some((m) => m.role === 'assistant') ? { messages } : null;
    }
  }
}

/** dataset_info.json's entry for a file written by llamaFactoryData (LLaMA-Factory's data/README). */
export function datasetInfoEntry(fileName: string, kind: RecordKind): Record<string, unknown> {
  switch (kind) {
    case 'text':
    case 'tokens':
      return { file_name: fileName, columns: { prompt: 'text' } };
    case 'prompt_completion':
    case 'alpaca':
      return { file_name: fileName, columns: { prompt: 'instruction', response: 'output' } };
    case 'chat':
      return {
        file_name: fileName,
        formatting: 'sharegpt',
        columns: { messages: 'messages' },
        tags: { role_tag: 'role', content_tag: 'content', user_tag: 'user', assistant_tag: 'assistant', system_tag: 'system' },
      };
  }
}

// ─── train.yaml ────────────────────────────────────────────────────────────────────────────────────

export interface TrainYamlInput {
  readonly config: RunConfig;
  /** The run's target modules, resolved for the model (resolveTargetModules). */
  readonly targets: readonly string[] | 'all-linear';
  /** What model_name_or_path says: the Hugging Face id or folder of the base model. */
  readonly modelPath: string;
  /** The base model's name in LoRA Lab, for the comment beside model_name_or_path. */
  readonly modelName: string;
  readonly kind: RecordKind;
  readonly template: string | null;
  readonly dataset: string;
  /** The validation file's dataset name, when the run had val_data. */
  readonly evalDataset: string | null;
}

/**
 * Numbers as PyYAML (YAML 1.1, which LLaMA-Factory reads configs with) reads floats: `1e-4` would be a string
 * there, `1.0e-4` is a float. Integers stay integers.
 */
function float(x: number): string {
  if (Number.isInteger(x) && Math.abs(x) < 1e21) return `${x}.0`;
  const s = String(x);
  if (!s.includes('e')) return s;
  const [mantissa, exponent] = s.split('e') as [string, string];
  return `${mantissa.includes('.') ? mantissa : `${mantissa}.0`}e${/^[+-]/.test(exponent) ? exponent : `+${exponent}`}`;
}

/** LoRA Lab's scheduler as Hugging Face's lr_scheduler_type (both follow transformers' schedule functions). */
function schedulerOf(config: RunConfig): string {
  if (config.lr_scheduler === 'constant') return config.warmup_steps > 0 ? 'constant_with_warmup' : 'constant';
  return config.lr_scheduler;
}

/** `llamafactory-cli train train.yaml`, run inside llamafactory/, trains what this run trained. */
export function llamaFactoryTrainYaml(input: TrainYamlInput): string {
  const { config: c, kind } = input;
  const stage = stageOf(kind);
  const out: string[] = [];
  const put = (key: string, value: string | number | boolean, comment?: string) => {
    // YAML 1.1 quoting, so a string such as "no" is not read back as false by PyYAML.
    const text = typeof value === 'string' ? stringify(value, { version: '1.1' }).trimEnd() : String(value);
    out.push(`${key}: ${text}${comment ? `  # ${comment}` : ''}`);
  };
  const section = (title: string) => out.push('', `### ${title}`);

  out.push(
    '# LLaMA-Factory config written by LoRA Lab: the same LoRA, data and schedule as this run.',
    '# Run it from this folder: llamafactory-cli train train.yaml (several GPUs: see the README of LoRA Lab).',
  );
  section('model');
  put('model_name_or_path', input.modelPath, `the Hugging Face id or local folder of ${input.modelName}`);
  if (c.base_quantization !== 'none') put('quantization_bit', c.base_quantization === 'nf4' ? 4 : 8, `base_quantization: ${c.base_quantization} (QLoRA)`);

  section('method');
  put('stage', stage, stage === 'pt' ? 'plain text: every token trained' : 'prompt masked, answers trained');
  put('do_train', true);
  put('finetuning_type', 'lora');
  put('lora_rank', c.lora_rank);
  put('lora_alpha', c.lora_alpha);
  out.push(`lora_dropout: ${float(c.lora_dropout)}`);
  put('lora_target', input.targets === 'all-linear' ? 'all' : input.targets.join(','));
  if (c.use_rslora) put('use_rslora', true);
  out.push("# adapter_name_or_path: ..  # uncomment to go on training this run's adapter instead of a new one");

  section('dataset');
  put('dataset', input.dataset);
  put('dataset_dir', '.');
  if (input.template !== null) put('template', input.template);
  put('cutoff_len', c.seq_len, 'seq_len');
  // LoRA Lab joins records (an end-of-text token between them) and cuts the stream into seq_len windows.
  if (stage === 'sft') put('packing', true, 'records joined and cut into cutoff_len windows, as LoRA Lab trains');

  section('output');
  put('output_dir', `saves/${runFolder(c.output_dir)}`);
  if (c.log_steps > 0) put('logging_steps', c.log_steps);
  else put('logging_strategy', 'no', 'log_steps: 0');
  if (c.save_steps > 0) put('save_steps', c.save_steps);
  else put('save_strategy', 'no', 'save_steps: 0: the adapter is saved at the end only');
  put('plot_loss', true);
  put('report_to', 'tensorboard');

  section('train');
  put('per_device_train_batch_size', c.batch_size, 'on N GPUs the batch is N times larger: divide it, or gradient_accumulation_steps, by N to keep the run\'s');
  put('gradient_accumulation_steps', c.grad_accum_steps);
  out.push(`learning_rate: ${float(c.learning_rate)}`);
  put('lr_scheduler_type', schedulerOf(c));
  put('warmup_steps', c.warmup_steps);
  out.push(`weight_decay: ${float(c.weight_decay)}`);
  out.push(`max_grad_norm: ${float(c.max_grad_norm)}${c.max_grad_norm === 0 ? '  # 0 = no clipping' : ''}`);
  if (c.max_steps > 0) put('max_steps', c.max_steps);
  else out.push(`num_train_epochs: ${float(c.epochs)}`);
  put('seed', c.seed);

  if (input.evalDataset !== null || c.val_split > 0) {
    section('eval');
    if (input.evalDataset !== null) put('eval_dataset', input.evalDataset);
    else out.push(`val_size: ${float(c.val_split)}`);
    put('per_device_eval_batch_size', c.batch_size);
    if (c.eval_steps > 0) {
      put('eval_strategy', 'steps');
      put('eval_steps', c.eval_steps);
    } else put('eval_strategy', 'epoch');
  }
  return `${out.join('\n')}\n`;
}

function runFolder(outputDir: string): string {
  return outputDir.split(/[\\/]+/).filter((p) => p !== '' && p !== '.').at(-1) ?? 'run';
}

// ─── The folder ────────────────────────────────────────────────────────────────────────────────────

export interface HandoffDataset {
  /** The file the run trained (or validated) on, for the name of the JSONL written. */
  readonly sourceName: string;
  readonly data: HandoffData;
}

export interface HandoffFolderInput extends Omit<TrainYamlInput, 'kind' | 'template' | 'dataset' | 'evalDataset'> {
  readonly chatTemplate: string | null;
  readonly train: HandoffDataset;
  readonly val: HandoffDataset | null;
}

/** `llamafactory/`'s files, paths relative to the run's output folder. */
export function llamaFactoryFiles(input: HandoffFolderInput): { path: string; bytes: Uint8Array }[] {
  const trainName = datasetName(input.train.sourceName);
  const valName = input.val ? uniqueName(datasetName(input.val.sourceName), trainName) : null;
  const kind = input.train.data.kind;
  const info: Record<string, unknown> = { [trainName]: datasetInfoEntry(`${trainName}.jsonl`, kind) };
  if (input.val && valName) info[valName] = datasetInfoEntry(`${valName}.jsonl`, input.val.data.kind);
  const yaml = llamaFactoryTrainYaml({ ...input, kind, template: llamaFactoryTemplate(kind, input.chatTemplate), dataset: trainName, evalDataset: valName });
  const text = new TextEncoder();
  return [
    { path: 'llamafactory/train.yaml', bytes: text.encode(yaml) },
    { path: 'llamafactory/dataset_info.json', bytes: text.encode(`${JSON.stringify(info, null, 2)}\n`) },
    { path: `llamafactory/${trainName}.jsonl`, bytes: input.train.data.bytes },
    ...(input.val && valName ? [{ path: `llamafactory/${valName}.jsonl`, bytes: input.val.data.bytes }] : []),
  ];
}

/** A dataset name from a file name: its stem, in the letters, digits, `_` and `-` LLaMA-Factory's names use. */
function datasetName(fileName: string): string {
  const base = fileName.split(/[\\/]/).at(-1) ?? fileName;
  const stem = base.replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9_-]+/g, '_').replace(/^_+|_+$/g, '');
  return stem === '' ? 'data' : stem;
}

function uniqueName(name: string, taken: string): string {
  return name === taken ? `${name}_val` : name;
}
