// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { isUserError, type UserError } from '../../src/core/errors';
import { exportPeftAdapter } from '../../src/core/export/peft';
import { LoraAdapter } from '../../src/core/lora/index';
import { configWithInitAdapter, writtenConfigKeys } from '../../src/core/lora/adapter-check';
import { parseRunConfigYaml, unwrapRunConfig } from '../../src/core/config';
import type { CausalLM } from '../../src/core/models/index';
import { bytesSource, readHeader, readTensorBytes, toFloat32, writeSafetensors } from '../../src/core/safetensors/index';
import { placementFor } from '../../src/core/weights/hold';
import { deleteAdapter, getAdapter, listAdapters } from '../../src/storage/adapters';
import { openDatabase, type LoraLabDb, type StoredModel } from '../../src/storage/db';
import { loadStoredModel } from '../../src/storage/model-weights';
import { deleteModel, getModel } from '../../src/storage/models';
import type { RunEvent } from '../../src/worker/protocol';
import { evaluateStoredAdapter, importAdapterFiles, loadStoredAdapter, storedModelShape } from '../../src/worker/stored-adapters';
import { freshDbAtVersion } from './support/old-database';
import { runContext, trainPinned } from './support/run-context';
import { freshDbWithModelFolder } from './support/stored-model';

// Issue 12, "adapters in": a PEFT adapter folder dropped onto a stored model is checked against it, stored in
// IndexedDB (one record, gone with the model), and used: its logits against the fixtures' independent PyTorch
// reference, an evaluation, and `init_adapter` to train further from it.

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const ARCHS = ['tiny-gpt2', 'tiny-llama'] as const;
type Arch = (typeof ARCHS)[number];

interface Expected {
  tokens: number[];
  logits_with_adapter: number[][];
  loss_with_adapter: { text: string; seq_len: number; loss: number };
}
const expectedOf = (arch: Arch): Expected => JSON.parse(readFileSync(join(FIXTURES, `${arch}.expected.json`), 'utf8')) as Expected;
const fixtureBytes = (rel: string): Uint8Array<ArrayBuffer> => new Uint8Array(readFileSync(join(FIXTURES, rel)));
const fixtureConfig = (arch: Arch): Record<string, unknown> => JSON.parse(readFileSync(join(FIXTURES, `${arch}-adapter/adapter_config.json`), 'utf8')) as Record<string, unknown>;

/** An adapter folder as the browser hands it over: Files named by their path in the picked folder. */
function folder(name: string, config: string, weights: Uint8Array<ArrayBuffer>, extra: File[] = []): File[] {
  const file = (path: string, bytes: BlobPart) => {
    const f = new File([bytes], path.slice(path.lastIndexOf('/') + 1));
    Object.defineProperty(f, 'webkitRelativePath', { value: path });
    return f;
  };
  return [file(`${name}/adapter_config.json`, config), file(`${name}/adapter_model.safetensors`, weights), ...extra];
}
const fixtureFolder = (arch: Arch, name = `${arch}-adapter`): File[] =>
  folder(name, JSON.stringify(fixtureConfig(arch)), fixtureBytes(`${arch}-adapter/adapter_model.safetensors`), [new File(['# a PEFT model card'], 'README.md')]);

const ctx = { signal: new AbortController().signal, progress: () => undefined };

async function stored(arch: Arch): Promise<{ db: LoraLabDb; model: StoredModel }> {
  const { db, modelId } = await freshDbWithModelFolder(join(FIXTURES, arch), arch);
  return { db, model: (await getModel(db, modelId))! };
}

async function logitsOf(model: CausalLM, tokens: number[], adapter: LoraAdapter | null): Promise<Float32Array> {
  const out = model.forward(tf.tensor2d([tokens], [1, tokens.length], 'int32'), adapter ? { linear: adapter.apply({ training: false }) } : undefined);
  const values = (await out.data()) as Float32Array;
  out.dispose();
  return values;
}

function maxAbsDiff(a: Float32Array, b: Float32Array | number[][]): number {
  const flat = b instanceof Float32Array ? b : Float32Array.from(b.flat());
  expect(a.length).toBe(flat.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - flat[i]!));
  return m;
}

async function refusal(p: Promise<unknown>): Promise<UserError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(isUserError(e), `expected a UserError, got ${String(e)}`).toBe(true);
  const message = (e as Error).message;
  expect(message).not.toContain('\n');
  return e as UserError;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('a PEFT adapter folder onto a stored model', () => {
  for (const arch of ARCHS) {
    it(`${arch}: the fixture's adapter is stored and gives the PyTorch reference's logits`, async () => {
      const { db, model: storedModel } = await stored(arch);
      const info = await importAdapterFiles(db, { modelId: storedModel.id, name: 'from-python', files: fixtureFolder(arch) }, ctx);
      expect(info).toMatchObject({ modelId: storedModel.id, name: 'from-python', baseModelName: arch, settings: { rank: 4, alpha: 8 } });
      // Per layer: GPT-2's c_attn, attn.c_proj and mlp.c_proj (c_proj names both); Llama's q_proj, v_proj, down_proj.
      expect(info.moduleCount).toBe(6);
      expect((await listAdapters(db, storedModel.id)).map((a) => a.name)).toEqual(['from-python']);

      const { model } = await loadStoredModel(db, storedModel, placementFor('none'));
      const adapter = await loadStoredAdapter(db, storedModel, model, 'from-python');
      const expected = expectedOf(arch);
      expect(maxAbsDiff(await logitsOf(model, expected.tokens, adapter), expected.logits_with_adapter)).toBeLessThan(1e-4);
      adapter.dispose();
      model.dispose();
    });
  }

  it('export → import → identical logits (our own PEFT files round-trip bit for bit)', async () => {
    const { db, model: storedModel } = await stored('tiny-gpt2');
    const { model } = await loadStoredModel(db, storedModel, placementFor('none'));
    const trained = LoraAdapter.create(model, { rank: 3, alpha: 5, dropout: 0, targetModules: 'all-linear', useRslora: false }, 7);
    // B non-zero, so the adapter changes the logits and the comparison is not trivially equal to the base model's.
    for (const m of trained.modules) m.B.assign(tf.randomNormal(m.B.shape, 0, 0.05, 'float32', 11));
    const files = await exportPeftAdapter(model, trained, storedModel.name);
    await importAdapterFiles(db, { modelId: storedModel.id, name: 'round-trip', files: folder('run', files['adapter_config.json'], files['adapter_model.safetensors']) }, ctx);
    const back = await loadStoredAdapter(db, storedModel, model, 'round-trip');
    const tokens = expectedOf('tiny-gpt2').tokens;
    const before = await logitsOf(model, tokens, trained);
    expect(maxAbsDiff(before, await logitsOf(model, tokens, null))).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(await logitsOf(model, tokens, back), before)).toBe(0);
    trained.dispose();
    back.dispose();
    model.dispose();
  });

  it('the stored model shape (config.json alone) is the loaded model\'s projections', async () => {
    for (const arch of ARCHS) {
      const { db, model: storedModel } = await stored(arch);
      const { model } = await loadStoredModel(db, storedModel, placementFor('none'));
      expect(storedModelShape(storedModel).linears.map(({ path, inFeatures, outFeatures }) => ({ path, inFeatures, outFeatures }))).toEqual(
        model.linears.map(({ path, inFeatures, outFeatures }) => ({ path, inFeatures, outFeatures })),
      );
      model.dispose();
    }
  });

  it('an adapter goes with its model; a second one of the same name is refused; one is deleted alone', async () => {
    const { db, model } = await stored('tiny-gpt2');
    await importAdapterFiles(db, { modelId: model.id, name: 'a', files: fixtureFolder('tiny-gpt2') }, ctx);
    await importAdapterFiles(db, { modelId: model.id, name: 'b', files: fixtureFolder('tiny-gpt2') }, ctx);
    const twice = await refusal(importAdapterFiles(db, { modelId: model.id, name: 'a', files: fixtureFolder('tiny-gpt2') }, ctx));
    expect(twice.message).toBe('adapter: "a" is already stored with tiny-gpt2. Give the new one another name, or delete the stored one first.');
    await deleteAdapter(db, model.id, 'b');
    expect((await listAdapters(db, model.id)).map((a) => a.name)).toEqual(['a']);
    await deleteModel(db, model.id);
    expect(await db.getAll('adapters')).toEqual([]);
    expect(await getAdapter(db, model.id, 'a')).toBeUndefined();
  });
});

describe('adapters that do not fit the model are refused naming the tensor, and nothing is stored', () => {
  /** The fixture adapter's tensors, to damage one at a time. */
  async function fixtureTensors(): Promise<{ name: string; shape: number[]; data: Float32Array }[]> {
    const source = bytesSource('adapter_model.safetensors', fixtureBytes('tiny-gpt2-adapter/adapter_model.safetensors'));
    const header = await readHeader(source);
    return Promise.all(header.tensors.map(async (e) => ({ name: e.name, shape: [...e.shape], data: toFloat32(e.dtype, await readTensorBytes(source, e)) })));
  }
  const C_ATTN_A = 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight';
  const transpose = (t: { shape: number[]; data: Float32Array }) => {
    const [rows, cols] = t.shape as [number, number];
    const out = new Float32Array(t.data.length);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = t.data[i * cols + j]!;
    return { shape: [cols, rows], data: out };
  };

  const cases: [string, (ts: Awaited<ReturnType<typeof fixtureTensors>>, config: Record<string, unknown>) => [unknown[], Record<string, unknown>], RegExp][] = [
    [
      'a rank in adapter_config.json the tensors do not have (r 8, tensors of rank 4)',
      (ts, c) => [ts, { ...c, r: 8 }],
      /^adapter_model\.safetensors: tensor "base_model\.model\.transformer\.h\.0\.attn\.c_attn\.lora_A\.weight" has shape \[4, 64\], but rank 8 on this model's 64 → 192 projection transformer\.h\.0\.attn\.c_attn needs \[8, 64\]\./,
    ],
    [
      'a module the config targets with no weights (lora_A of h.1 attn.c_proj removed)',
      (ts, c) => [ts.filter((t) => t.name !== 'base_model.model.transformer.h.1.attn.c_proj.lora_A.weight'), c],
      /^adapter_model\.safetensors: has no lora_A weight for module transformer\.h\.1\.attn\.c_proj, which target_modules selects\./,
    ],
    [
      'a tensor of the wrong shape (lora_B of c_attn for a 128-wide projection)',
      (ts, c) => [ts.map((t) => (t.name.endsWith('h.0.attn.c_attn.lora_B.weight') ? { ...t, shape: [128, 4], data: new Float32Array(512) } : t)), c],
      /^adapter_model\.safetensors: tensor "base_model\.model\.transformer\.h\.0\.attn\.c_attn\.lora_B\.weight" has shape \[128, 4\], but rank 4 on this model's 64 → 192 projection transformer\.h\.0\.attn\.c_attn needs \[192, 4\]\./,
    ],
    [
      'a Conv1D lora_A stored transposed ([in, r])',
      (ts, c) => [ts.map((t) => (t.name === C_ATTN_A ? { ...t, ...transpose(t) } : t)), c],
      /^adapter_model\.safetensors: tensor "base_model\.model\.transformer\.h\.0\.attn\.c_attn\.lora_A\.weight" has shape \[64, 4\], but .* needs \[4, 64\] \(it is stored transposed, in Conv1D's \[in, out\] orientation\)\. Save lora_A as \[r, in\]/,
    ],
    [
      'a module path this model does not have (layer 5 of a 2-layer model)',
      (ts, c) => [[...ts, { name: 'base_model.model.transformer.h.5.attn.c_attn.lora_A.weight', shape: [4, 64], data: new Float32Array(256) }], c],
      /^adapter_model\.safetensors: tensor "base_model\.model\.transformer\.h\.5\.attn\.c_attn\.lora_A\.weight" belongs to module transformer\.h\.5\.attn\.c_attn, which this gpt2 model does not have\. Check that the adapter belongs to this model\. It was trained for tiny-gpt2\./,
    ],
    [
      'a target module name this model has no such module for (q_proj on GPT-2)',
      (ts, c) => [ts, { ...c, target_modules: ['c_attn', 'q_proj'] }],
      /^adapter_config\.json: "target_modules": q_proj matches no module of this gpt2 model; its modules are: c_attn, c_proj, c_fc\./,
    ],
    [
      'a NaN value',
      (ts, c) => [ts.map((t) => (t.name === C_ATTN_A ? { ...t, data: t.data.map((x, i) => (i === 5 ? Number.NaN : x)) } : t)), c],
      /^adapter_model\.safetensors: holds a NaN or infinite value in tensor base_model\.model\.transformer\.h\.0\.attn\.c_attn\.lora_A\.weight \(element 5 of 4×64\)\./,
    ],
  ];

  for (const [what, damage, message] of cases) {
    it(what, async () => {
      const { db, model } = await stored('tiny-gpt2');
      await importAdapterFiles(db, { modelId: model.id, name: 'good', files: fixtureFolder('tiny-gpt2') }, ctx);
      const snapshot = async () => ({ adapters: await db.getAll('adapters'), models: await db.getAll('models'), tensorSlices: await db.count('tensors') });
      const before = await snapshot();
      const [tensors, config] = damage(await fixtureTensors(), fixtureConfig('tiny-gpt2'));
      const bytes = writeSafetensors(tensors as { name: string; shape: number[]; data: Float32Array }[], { format: 'pt' });
      const e = await refusal(importAdapterFiles(db, { modelId: model.id, name: 'bad', files: folder('bad', JSON.stringify(config), bytes) }, ctx));
      expect(e.message).toMatch(message);
      expect(await snapshot()).toEqual(before);
    });
  }

  it('a truncated weights file and a folder without adapter_config.json', async () => {
    const { db, model } = await stored('tiny-gpt2');
    const bytes = fixtureBytes('tiny-gpt2-adapter/adapter_model.safetensors');
    const cut = await refusal(importAdapterFiles(db, { modelId: model.id, name: 'cut', files: folder('cut', JSON.stringify(fixtureConfig('tiny-gpt2')), bytes.slice(0, bytes.length - 100)) }, ctx));
    expect(cut.message).toMatch(/^adapter_model\.safetensors: tensor ".*lora_B\.weight" ends at byte \d+ .*truncated/);
    const noConfig = await refusal(importAdapterFiles(db, { modelId: model.id, name: 'half', files: folder('half', '{}', bytes).slice(1) }, ctx));
    expect(noConfig.message).toMatch(/^adapter half: has no adapter_config\.json\. A PEFT adapter folder holds adapter_config\.json and adapter_model\.safetensors/);
    expect(await db.getAll('adapters')).toEqual([]);
  });
});

describe('init_adapter', () => {
  const runYaml = (arch: Arch, extra: string[]) =>
    [`base_model: ${arch}`, 'train_data: train.txt', 'val_data: val.txt', 'output_dir: ./out/further', 'init_adapter: from-python', 'max_steps: 1', 'batch_size: 2', 'seq_len: 32', 'learning_rate: 0.001', 'log_steps: 1', 'eval_on_start: true', 'seed: 3', ...extra].join('\n');

  async function train(db: LoraLabDb, modelId: string, configYaml: string, events: RunEvent[] = []) {
    return trainPinned(
      db,
      { modelId, configYaml, trainData: new File(['zebra quilt jinx! '.repeat(40)], 'train.txt'), valData: new File([expectedOf('tiny-gpt2').loss_with_adapter.text], 'val.txt') },
      runContext((e) => void events.push(e)),
    );
  }

  for (const arch of ARCHS) {
    it(`${arch}: the step-0 eval (eval_on_start) is the PyTorch reference's loss with the adapter; the run takes its r, alpha and targets`, async () => {
      const { db, model } = await stored(arch);
      await importAdapterFiles(db, { modelId: model.id, name: 'from-python', files: fixtureFolder(arch) }, ctx);
      const events: RunEvent[] = [];
      const { runId } = await train(db, model.id, runYaml(arch, []), events);
      const reference = expectedOf(arch).loss_with_adapter;
      const step0 = events.find((e) => e.kind === 'eval' && e.step === 0);
      expect(step0, 'an eval at step 0').toBeDefined();
      expect(Math.abs((step0 as { loss: number }).loss - reference.loss)).toBeLessThan(1e-4);
      const started = events.find((e) => e.kind === 'started') as { trainableParameters: number };
      expect(started.trainableParameters).toBe((await getAdapter(db, model.id, 'from-python'))!.parameterCount);
      const run = (await db.get('runs', runId))!;
      expect(run.config).toMatchObject({ init_adapter: 'from-python', lora_rank: 4, lora_alpha: 8 });
      expect([...(run.config.target_modules as string[])].sort()).toEqual(((fixtureConfig(arch)['target_modules'] as string[])).sort());
    }, 60_000);
  }

  it('a config that says otherwise is refused naming both values; one that agrees, or says nothing, is not', async () => {
    const { db, model } = await stored('tiny-gpt2');
    await importAdapterFiles(db, { modelId: model.id, name: 'from-python', files: fixtureFolder('tiny-gpt2') }, ctx);
    const rank = await refusal(train(db, model.id, runYaml('tiny-gpt2', ['lora_rank: 16'])));
    expect(rank.message).toBe('init_adapter: the adapter "from-python" has r = 4, but lora_rank is 16. Remove lora_rank or set it to 4.');
    const alpha = await refusal(train(db, model.id, runYaml('tiny-gpt2', ['lora_alpha: 32'])));
    expect(alpha.message).toBe('init_adapter: the adapter "from-python" has lora_alpha = 8, but lora_alpha is 32. Remove lora_alpha or set it to 8.');
    const targets = await refusal(train(db, model.id, runYaml('tiny-gpt2', ['target_modules: [c_attn]'])));
    expect(targets.message).toBe('init_adapter: the adapter "from-python" has target_modules = [c_attn, c_proj], but target_modules is [c_attn]. Remove target_modules or set it to [c_attn, c_proj].');
    const missing = await refusal(train(db, model.id, runYaml('tiny-gpt2', []).replace('init_adapter: from-python', 'init_adapter: nope')));
    expect(missing.message).toMatch(/^init_adapter: no adapter named "nope" is stored with the model tiny-gpt2\. Its adapters are: "from-python"\./);
    // Nothing was stored for the refused runs.
    expect(await db.getAll('runs')).toEqual([]);

    // Agreeing values (LLaMA-Factory's names included) pass; the check itself, without a run:
    const shape = storedModelShape(model);
    const settings = { rank: 4, alpha: 8, dropout: 0, targetModules: ['c_attn', 'c_proj'], useRslora: false };
    const yaml = runYaml('tiny-gpt2', ['lora_rank: 4', 'lora_alpha: 8', 'lora_target: c_proj,c_attn']);
    const { config } = unwrapRunConfig(parseRunConfigYaml(yaml));
    expect(configWithInitAdapter(config, writtenConfigKeys(yaml), { name: 'x', settings }, shape)).toMatchObject({ lora_rank: 4, lora_alpha: 8 });
    // Not written: the defaults (lora_rank 8, lora_alpha 16) give way to the adapter's.
    const bare = runYaml('tiny-gpt2', []);
    expect(configWithInitAdapter(unwrapRunConfig(parseRunConfigYaml(bare)).config, writtenConfigKeys(bare), { name: 'x', settings }, shape)).toMatchObject({
      lora_rank: 4,
      lora_alpha: 8,
      target_modules: ['c_attn', 'c_proj'],
    });
  });
});

describe('evaluating a stored adapter', () => {
  it('the eval loss on a dataset is the PyTorch reference loss with the adapter, and without it the base loss', async () => {
    const { db, model: storedModel } = await stored('tiny-gpt2');
    await importAdapterFiles(db, { modelId: storedModel.id, name: 'from-python', files: fixtureFolder('tiny-gpt2') }, ctx);
    const loaded = { id: storedModel.id, name: storedModel.name, placement: placementFor('none'), ...(await loadStoredModel(db, storedModel, placementFor('none'))) };
    const reference = JSON.parse(readFileSync(join(FIXTURES, 'tiny-gpt2.expected.json'), 'utf8')) as { loss_with_adapter: { text: string; loss: number; windows: number }; loss_base: { loss: number } };
    const data = new File([reference.loss_with_adapter.text], 'val.txt');
    const withAdapter = await evaluateStoredAdapter(db, { modelId: storedModel.id, adapter: 'from-python', data, seqLen: 32, batchSize: 4 }, loaded, ctx);
    expect(Math.abs(withAdapter.loss - reference.loss_with_adapter.loss)).toBeLessThan(1e-4);
    expect(withAdapter.windows).toBe(reference.loss_with_adapter.windows);
    const base = await evaluateStoredAdapter(db, { modelId: storedModel.id, adapter: null, data, seqLen: 32, batchSize: 4 }, loaded, ctx);
    expect(Math.abs(base.loss - reference.loss_base.loss)).toBeLessThan(1e-4);
    loaded.model.dispose();
  });
});

describe('init_adapter in the headless runner', () => {
  it('is a folder next to the YAML; one without the weights file is refused in one line before anything is built', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lora-lab-headless-adapter-'));
    mkdirSync(join(dir, 'model'));
    writeFileSync(join(dir, 'model', 'config.json'), '{}');
    writeFileSync(join(dir, 'train.txt'), 'some text');
    mkdirSync(join(dir, 'my-adapter'));
    writeFileSync(join(dir, 'my-adapter', 'adapter_config.json'), JSON.stringify(fixtureConfig('tiny-gpt2')));
    writeFileSync(join(dir, 'run.yaml'), 'base_model: ./model\ntrain_data: ./train.txt\noutput_dir: ./out\ninit_adapter: ./my-adapter\n');
    const runner = fileURLToPath(new URL('../../scripts/headless.mjs', import.meta.url));
    // Run from another folder: the path is the YAML's neighbour, not the working directory's.
    const result = spawnSync(process.execPath, [runner, 'train', '--config', join(dir, 'run.yaml')], { encoding: 'utf8', timeout: 30_000, cwd: tmpdir() });
    expect(result.status).toBe(2);
    const stderr = result.stderr.trim();
    expect(stderr.split('\n')).toHaveLength(1);
    expect(stderr).toBe(`error: init_adapter: ${join(dir, 'my-adapter')} has no adapter_model.safetensors; a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors`);
  });
});

describe('the version-6 migration', () => {
  it('adds the adapters store to a version-5 database without touching its data', async () => {
    const v5 = await freshDbAtVersion(5);
    await v5.put('models', { id: 'old-model', status: 'ready', name: 'old' });
    v5.close();
    const db = await openDatabase();
    expect(db.version).toBeGreaterThanOrEqual(6);
    expect(await db.get('models', 'old-model')).toEqual({ id: 'old-model', status: 'ready', name: 'old' });
    expect(await listAdapters(db, 'old-model')).toEqual([]);
  });
});
