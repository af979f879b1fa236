import type { RunConfig } from '../config/schema';
import type { DatasetFormat, RecordKind } from '../data/formats/types';
import type { Finding } from '../diagnose/types';
import type { LossCurves } from './loss-plot-png';

/**
 * README.md of a run's output: the model card. Hugging Face's front matter (base_model, library_name: peft) so the
 * folder uploads as an adapter card, then what was trained on what, how, how it went, and how to load it.
 */

/** One dataset file of a run as the model card describes it. */
export interface DataFileSummary {
  readonly file: string;
  readonly format: DatasetFormat;
  readonly kind: RecordKind;
  /** Records read from the file, including those left out. */
  readonly records: number;
  /** Tokens of the documents trained on, with the run's tokenizer. */
  readonly tokens: number;
}

export interface RunDataSummary {
  readonly train: DataFileSummary;
  readonly val: DataFileSummary | null;
}

export interface ModelCardInput {
  readonly runName: string;
  /** The base model as LoRA Lab knows it (its stored name). */
  readonly baseModel: string;
  readonly config: RunConfig;
  /** The target modules the run resolved (the model's default when the config says null). */
  readonly targets: readonly string[] | 'all-linear';
  /** How the run ended: completed, stopped, diverged, … */
  readonly status: string;
  readonly steps: number;
  /** Null for runs stored before the summary was kept (the card then says the data is unknown). */
  readonly data: RunDataSummary | null;
  readonly curves: LossCurves;
  readonly findings: readonly Finding[];
  /** From run_summary.json when present: the best evaluation, and the step the adapter's weights are from. */
  readonly bestEval: { readonly step: number; readonly eval_loss: number } | null;
  readonly adapterFromStep: number | null;
  /** The loss plot's path, relative to the card. */
  readonly plotPath: string;
  /** Whether merged/ (the base model with the adapter folded in) is part of the output. */
  readonly hasMerged: boolean;
  /** Whether llamafactory/ (the hand-off to LLaMA-Factory) is part of the output. */
  readonly hasLlamaFactory: boolean;
}

const KIND_WORDS: Readonly<Record<RecordKind, string>> = {
  text: 'plain text (every token trained)',
  prompt_completion: 'prompt/completion (completions trained)',
  alpaca: 'Alpaca instruction/output (outputs trained)',
  chat: 'chat messages (assistant turns trained)',
  tokens: 'token ids (every token trained)',
};

export function modelCard(m: ModelCardInput): string {
  const c = m.config;
  const lines: string[] = [
    '---',
    `base_model: ${JSON.stringify(m.baseModel)}`,
    'library_name: peft',
    'tags:',
    '  - lora',
    '  - lora-lab',
    '---',
    '',
    `# ${m.runName}`,
    '',
    `A LoRA adapter for **${escapeMd(m.baseModel)}**, trained in the browser with LoRA Lab. The run ${statusWords(m.status)} after ${m.steps} ${m.steps === 1 ? 'step' : 'steps'}.`,
    '',
    '## Data',
    '',
  ];
  if (m.data === null) lines.push('Not recorded for this run.');
  else {
    lines.push(dataLine('Training', m.data.train));
    if (m.data.val) lines.push(dataLine('Validation', m.data.val));
    else if (c.val_split > 0) lines.push(`- Validation: ${c.val_split * 100}% of the training documents, held out (val_split ${c.val_split}).`);
    else lines.push('- Validation: none.');
  }

  lines.push('', '## Hyper-parameters', '', '| setting | value |', '|---|---|');
  const rows: [string, string][] = [
    ['LoRA rank (r)', String(c.lora_rank)],
    ['lora_alpha', `${c.lora_alpha}${c.use_rslora ? ' (rsLoRA: scale alpha / √r)' : ''}`],
    ['lora_dropout', String(c.lora_dropout)],
    ['target modules', m.targets === 'all-linear' ? 'all linear layers' : m.targets.join(', ')],
    ['learning rate', `${c.learning_rate} (${c.lr_scheduler}, ${c.warmup_steps} warmup steps)`],
    ['batch', `${c.batch_size} sequences × ${c.grad_accum_steps} accumulation ${c.grad_accum_steps === 1 ? 'step' : 'steps'} of ${c.seq_len} tokens`],
    ['length', c.max_steps > 0 ? `${c.max_steps} steps` : `${c.epochs} ${c.epochs === 1 ? 'epoch' : 'epochs'}`],
    ['weight decay', String(c.weight_decay)],
    ['gradient clipping', c.max_grad_norm > 0 ? `global norm ${c.max_grad_norm}` : 'none'],
    ['base weights', c.base_quantization === 'none' ? 'as stored' : `quantized (${c.base_quantization})`],
    ['seed', String(c.seed)],
  ];
  if (c.init_adapter !== null) rows.push(['started from', `the adapter ${c.init_adapter}`]);
  for (const [k, v] of rows) lines.push(`| ${k} | ${escapeCell(v)} |`);
  lines.push('', 'The full config is in `config.yaml`.');

  lines.push('', '## Results', '');
  const lastTrain = m.curves.train.at(-1);
  const lastEval = m.curves.eval.at(-1);
  const best = m.bestEval ?? bestOf(m.curves.eval);
  lines.push(lastTrain ? `- Final training loss: ${loss(lastTrain.loss)} (step ${lastTrain.step})` : '- Final training loss: not logged.');
  if (m.curves.train.length > 0) {
    const lowest = m.curves.train.reduce((a, b) => (b.loss < a.loss ? b : a));
    lines.push(`- Lowest training loss: ${loss(lowest.loss)} (step ${lowest.step})`);
  }
  if (lastEval) lines.push(`- Final eval loss: ${loss(lastEval.loss)} (step ${lastEval.step})`);
  if (best) lines.push(`- Best eval loss: ${loss(best.eval_loss)} (step ${best.step})`);
  if (m.adapterFromStep !== null) lines.push(`- The adapter's weights are from step ${m.adapterFromStep}.`);
  lines.push('', `![Training and eval loss by step](${m.plotPath})`, '', 'Every logged value is in `metrics.csv`, and in `logs/` for TensorBoard.');

  lines.push('', '## Diagnosis', '');
  if (m.findings.length === 0) lines.push('No finding (see `diagnosis.json`).');
  for (const f of m.findings) lines.push(`- **${f.code}** (${f.severity}, step ${f.step}): ${f.message} ${f.suggestion}`.trimEnd());

  lines.push(
    '',
    '## Use it',
    '',
    'With 🤗 PEFT, from this folder:',
    '',
    '```python',
    'from transformers import AutoModelForCausalLM',
    'from peft import PeftModel',
    `model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(${JSON.stringify(c.base_model || m.baseModel)}), ".")`,
    '```',
    '',
    `Name the base model by its Hugging Face id or local folder if \`${c.base_model || m.baseModel}\` is not one.`,
  );
  if (m.hasMerged) lines.push('', '`merged/` holds the base model with this adapter folded in, for tools that do not load adapters.');
  if (m.hasLlamaFactory) {
    lines.push('', '`llamafactory/` holds this run as a LLaMA-Factory config with its data: `cd llamafactory && llamafactory-cli train train.yaml`.');
  }
  return `${lines.join('\n')}\n`;
}

function dataLine(role: string, d: DataFileSummary): string {
  return `- ${role}: \`${d.file}\`, ${KIND_WORDS[d.kind]}: ${d.records.toLocaleString('en-US')} ${d.records === 1 ? 'record' : 'records'}, ${d.tokens.toLocaleString('en-US')} tokens.`;
}

function statusWords(status: string): string {
  switch (status) {
    case 'completed':
      return 'completed';
    case 'stopped':
      return 'was stopped';
    case 'diverged':
      return 'diverged (the adapter is the last good one)';
    default:
      return `ended as ${status}`;
  }
}

function bestOf(points: readonly { step: number; loss: number }[]): { step: number; eval_loss: number } | null {
  if (points.length === 0) return null;
  const best = points.reduce((a, b) => (b.loss < a.loss ? b : a));
  return { step: best.step, eval_loss: best.loss };
}

function loss(x: number): string {
  return x.toFixed(4);
}

function escapeMd(s: string): string {
  return s.replace(/([\\`*_[\]<>])/g, '\\$1');
}

function escapeCell(s: string): string {
  return s.replace(/\|/g, '\\|');
}
