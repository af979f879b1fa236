import { readFileSync } from 'node:fs';
import { unzipSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEFAULT_CONFIG, type RunConfig } from '../../src/core/config';
import { loadTokenizer } from '../../src/core/data/tokenizer';
import { llamaFactoryData, llamaFactoryTemplate, llamaFactoryTrainYaml } from '../../src/core/export/llamafactory';
import { LOSS_PLOT, lossPlotPng } from '../../src/core/export/loss-plot-png';
import { zipRunBundle, type BundleFile } from '../../src/core/export/run-bundle';
import { bytesSource } from '../../src/core/safetensors/index';
import { decodePng } from './support/png';

// The run bundle's core modules alone: the loss plot's pixels, the LLaMA-Factory data and config for each data
// format, and the streamed zip. The whole bundle of trained runs is in run-bundle-export.test.ts.

const FIXTURE = new URL('../../../shared/fixtures/models/tiny-gpt2/', import.meta.url);
const encode = (s: string) => new TextEncoder().encode(s);
const rows = (bytes: Uint8Array) => new TextDecoder().decode(bytes).trim().split('\n').map((l) => JSON.parse(l) as unknown);

describe('loss_curves.png', () => {
  it('draws the curve where its points are: a V-shaped training loss is lowest in the middle of the plot', () => {
    const train = Array.from({ length: 41 }, (_, i) => ({ step: i, loss: 1 + Math.abs(i - 20) / 10 }));
    const evals = [10, 20, 30].map((step) => ({ step, loss: 1.5 }));
    const png = decodePng(lossPlotPng({ train, eval: evals }));
    const { left, right, top, bottom } = LOSS_PLOT.area;
    const colored = (color: readonly number[]) => {
      const found: [number, number][] = [];
      for (let y = top; y < bottom; y++) for (let x = left + 1; x <= right; x++) if (png.pixel(x, y).every((v, k) => v === color[k])) found.push([x, y]);
      return found;
    };
    const line = colored(LOSS_PLOT.train);
    expect(line.length).toBeGreaterThan(300);
    // The lowest loss (step 20, half-way along an axis from 0 to 40) is the pixel nearest the bottom.
    const lowest = line.reduce((a, b) => (b[1] > a[1] ? b : a));
    expect(Math.abs(lowest[0] - (left + right) / 2)).toBeLessThan(6);
    // Both ends (loss 3, two thirds of the axis' span above loss 1) are far above the middle.
    const atEnd = (x0: number) => Math.min(...line.filter(([x]) => Math.abs(x - x0) <= 2).map(([, y]) => y));
    expect(lowest[1] - atEnd(left + 1)).toBeGreaterThan((bottom - top) * 0.5);
    expect(lowest[1] - atEnd(right - 1)).toBeGreaterThan((bottom - top) * 0.5);
    // Eval dots (loss 1.5 at steps 10, 20, 30) in the other colour, at one height.
    const dots = colored(LOSS_PLOT.eval);
    expect(dots.length).toBeGreaterThan(3 * 20);
    const ys = dots.map(([, y]) => y);
    expect(Math.max(...ys) - Math.min(...ys)).toBeLessThanOrEqual(8);
    // Away from curves, text and grid: background.
    expect(png.pixel(left + 20, bottom - 5)).toEqual([...LOSS_PLOT.background]);
  });

  it('a run with no logged loss still gets a valid PNG (empty axes)', () => {
    const png = decodePng(lossPlotPng({ train: [], eval: [] }));
    expect(png.width).toBe(LOSS_PLOT.width);
    expect(png.pixel(LOSS_PLOT.area.left, LOSS_PLOT.area.bottom)).toEqual([...LOSS_PLOT.ink]);
  });
});

describe('llamafactory/ data', () => {
  const options = { markers: ['<|endoftext|>'] };

  it('prompt/completion JSONL: the prompt LoRA Lab masked and the completion it trained; records with nothing trained left out', async () => {
    const lines = [
      { prompt: 'Q: 2+2?\nA:', completion: ' 4' },
      { prompt: 'Q: capital of France?\nA:', response: ' Paris' },
      { prompt: 'Q: nothing?', completion: '' },
    ];
    const data = await llamaFactoryData(bytesSource('qa.jsonl', encode(lines.map((l) => JSON.stringify(l)).join('\n'))), options);
    expect(data.kind).toBe('prompt_completion');
    expect(rows(data.bytes)).toEqual([
      { instruction: 'Q: 2+2?\nA:', output: ' 4' },
      { instruction: 'Q: capital of France?\nA:', output: ' Paris' },
    ]);
    expect(data.rows).toBe(2);
  });

  it("Alpaca CSV: the instruction and input joined as LoRA Lab joins them, so LLaMA-Factory's empty template sees the same text", async () => {
    const csv = 'instruction,input,output\n"Translate to French",cat,chat\nSay hi,,hello\n';
    const data = await llamaFactoryData(bytesSource('alpaca.csv', encode(csv)), options);
    expect(data.kind).toBe('alpaca');
    expect(rows(data.bytes)).toEqual([
      { instruction: 'Translate to French\n\ncat\n\n', output: 'chat' },
      { instruction: 'Say hi\n\n', output: 'hello' },
    ]);
    expect(llamaFactoryTemplate('alpaca', null)).toBe('empty');
  });

  it('plain text: documents split where LoRA Lab splits them (end-of-text markers here), from .md and .tsv alike', async () => {
    const md = await llamaFactoryData(bytesSource('notes.md', encode('# One\n\nstill one<|endoftext|>Two\n<|endoftext|>\n')), options);
    expect(md.kind).toBe('text');
    expect(rows(md.bytes)).toEqual([{ text: '# One\n\nstill one' }, { text: 'Two' }]);
    const tsv = await llamaFactoryData(bytesSource('t.tsv', encode('text\tsource\nfirst line\ta\nsecond\tb\n')), options);
    expect(rows(tsv.bytes)).toEqual([{ text: 'first line' }, { text: 'second' }]);
  });

  it('nanoGPT .bin: token ids turned back into text with the model tokenizer, one document per end-of-text id', async () => {
    const tokenizer = loadTokenizer(readFileSync(new URL('tokenizer.json', FIXTURE), 'utf8'), readFileSync(new URL('tokenizer_config.json', FIXTURE), 'utf8'));
    const docs = ['Hello there, world.', 'A second document!'];
    const ids = docs.flatMap((d) => [...tokenizer.encode(d), tokenizer.eosId!]);
    const bin = new Uint8Array(new Uint16Array(ids).buffer);
    const data = await llamaFactoryData(bytesSource('train.bin', bin), { ...options, tokenizer });
    expect(data.kind).toBe('tokens');
    expect(rows(data.bytes)).toEqual(docs.map((text) => ({ text })));
  });

  it("chat data takes the template that writes the model's chat format", () => {
    expect(llamaFactoryTemplate('chat', '{{ "<|start_header_id|>" + message["role"] + "<|end_header_id|>" }}')).toBe('llama3');
    expect(llamaFactoryTemplate('chat', "{% for m in messages %}{{'<|im_start|>' + m['role']}}{% endfor %}{# Qwen #}")).toBe('qwen');
    expect(llamaFactoryTemplate('chat', "{{'<|im_start|>' + m['role']}}")).toBe('chatml');
    expect(llamaFactoryTemplate('chat', "{{ bos_token + '[INST] <<SYS>>' }}")).toBe('llama2');
    expect(llamaFactoryTemplate('chat', "{{ '[INST] ' + m['content'] + ' [/INST]' }}")).toBe('mistral');
    expect(llamaFactoryTemplate('chat', null)).toBe('zephyr');
    expect(llamaFactoryTemplate('text', null)).toBeNull();
  });
});

describe('llamafactory/train.yaml', () => {
  const yamlFor = (change: Partial<RunConfig>, targets: readonly string[] | 'all-linear' = ['q_proj', 'v_proj']) =>
    llamaFactoryTrainYaml({
      config: { ...DEFAULT_CONFIG, ...change },
      targets,
      modelPath: 'HuggingFaceTB/SmolLM2-135M',
      modelName: 'SmolLM2-135M',
      kind: 'prompt_completion',
      template: 'empty',
      dataset: 'qa',
      evalDataset: null,
    });

  it('reads back the same under YAML 1.1 (PyYAML, which LLaMA-Factory uses) as under 1.2: floats stay floats, "no" stays a string', () => {
    const text = yamlFor({ learning_rate: 1e-7, weight_decay: 0.01, lora_dropout: 0, log_steps: 0, lr_scheduler: 'constant', warmup_steps: 5 });
    expect(text).toMatch(/^learning_rate: 1\.0e-7$/m);
    for (const version of ['1.1', '1.2'] as const) {
      expect(parse(text, { version })).toMatchObject({
        learning_rate: 1e-7,
        weight_decay: 0.01,
        lora_dropout: 0,
        logging_strategy: 'no',
        lr_scheduler_type: 'constant_with_warmup',
        lora_target: 'q_proj,v_proj',
        template: 'empty',
        stage: 'sft',
        packing: true,
      });
    }
  });

  it("all-linear targets, NF4 base weights and rsLoRA map to LLaMA-Factory's own keys", () => {
    const yaml = parse(yamlFor({ base_quantization: 'nf4', use_rslora: true }, 'all-linear'), { version: '1.1' }) as Record<string, unknown>;
    expect(yaml).toMatchObject({ lora_target: 'all', quantization_bit: 4, use_rslora: true, num_train_epochs: 1 });
  });
});

describe('the streamed zip', () => {
  it('holds every file byte for byte: text deflated, weights stored, an empty file, a file larger than one slice', async () => {
    const big = new Uint8Array(9 * 1024 * 1024 + 3).map((_, i) => (i * 2654435761) >>> 24);
    const files: BundleFile[] = [
      { path: 'README.md', bytes: encode('# run\n'.repeat(1000)) },
      { path: 'adapter_model.safetensors', bytes: big },
      { path: 'logs/empty.txt', bytes: new Uint8Array(0) },
      { path: 'llamafactory/train.yaml', bytes: encode('stage: pt\n') },
    ];
    const parts: Uint8Array[] = [];
    await zipRunBundle(files, 'my-run', (chunk) => parts.push(chunk));
    expect(parts.length).toBeGreaterThan(3);
    const zip = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((at, p) => (zip.set(p, at), at + p.length), 0);
    // Deflated text is much smaller than itself; the stored weights are not.
    expect(zip.length).toBeLessThan(big.length + 10_000);
    const opened = unzipSync(zip);
    expect(Object.keys(opened).sort()).toEqual(files.map((f) => `my-run/${f.path}`).sort());
    // Buffer.equals: vitest's toEqual walks a 9 MB array element by element for minutes.
    for (const f of files) expect(Buffer.from(opened[`my-run/${f.path}`]!).equals(f.bytes), f.path).toBe(true);
  });
});
