import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isUserError, UserError } from '../../src/core/errors';
import { exportPeftAdapter, importPeftAdapter, parsePeftAdapterConfig, peftAdapterConfig } from '../../src/core/export/index';
import {
  defaultTargetModules,
  LoraAdapter,
  loraScaling,
  mergedWeights,
  selectTargets,
  validateLoraSettings,
  type LoraModuleTensors,
  type LoraSettings,
} from '../../src/core/lora/index';
import {
  applyLinear,
  buildModel,
  causalLmLoss,
  expectedTensors,
  loadWeightsFromSafetensors,
  parseModelConfig,
  parseModelConfigText,
  type CausalLM,
  type Linear,
  type LinearApply,
  type ModelConfig,
} from '../../src/core/models/index';
import { bytesSource, readHeader, readTensorBytes, toFloat32, writeSafetensors } from '../../src/core/safetensors/index';
// Registers the wasm backend; the wasm tests select it explicitly.
import '@tensorflow/tfjs-backend-wasm';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
const TOL = 1e-4;
const ARCHS = ['tiny-gpt2', 'tiny-llama'] as const;
type Dir = (typeof ARCHS)[number];

interface Expected {
  tokens: number[];
  logits_base: number[][];
  logits_with_adapter: number[][];
  loss_with_adapter: { text: string; seq_len: number; windows: number; loss: number };
}

const fixtureBytes = (rel: string): Uint8Array => new Uint8Array(readFileSync(join(FIXTURES, rel)));
const fixtureText = (rel: string): string => readFileSync(join(FIXTURES, rel), 'utf8');
const configOf = (dir: string): ModelConfig => parseModelConfigText(fixtureText(`${dir}/config.json`));
const expectedOf = (dir: Dir): Expected => JSON.parse(fixtureText(`${dir}.expected.json`)) as Expected;
const adapterConfigText = (dir: Dir): string => fixtureText(`${dir}-adapter/adapter_config.json`);
const adapterConfigJson = (dir: Dir): Record<string, unknown> => JSON.parse(adapterConfigText(dir)) as Record<string, unknown>;
const adapterSource = (dir: Dir) => bytesSource('adapter_model.safetensors', fixtureBytes(`${dir}-adapter/adapter_model.safetensors`));
const utf8Bytes = (s: string): number[] => [...new TextEncoder().encode(s)];

async function loadModel(dir: string): Promise<CausalLM> {
  const cfg = configOf(dir);
  return buildModel(cfg, await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', fixtureBytes(`${dir}/model.safetensors`))]));
}

const importFixture = (model: CausalLM, dir: Dir): Promise<LoraAdapter> =>
  importPeftAdapter(model, adapterConfigText(dir), adapterSource(dir));

/** A model of any shape with random weights, for checks that need no reference values. */
function randomModel(raw: Record<string, unknown>, seed = 1): CausalLM {
  const cfg = parseModelConfig(raw);
  const weights = new Map<string, tf.Tensor>();
  let i = 0;
  for (const [name, shape] of expectedTensors(cfg)) {
    const norm = name.endsWith('norm.weight') || /ln_\d\.weight|ln_f\.weight/.test(name);
    weights.set(name, norm ? tf.ones(shape) : tf.randomNormal(shape, 0, 0.2, 'float32', seed + i++));
  }
  return buildModel(cfg, weights);
}

const rawConfig = (dir: string): Record<string, unknown> => JSON.parse(fixtureText(`${dir}/config.json`)) as Record<string, unknown>;

async function logitsOf(model: CausalLM, tokens: number[], linear?: LinearApply): Promise<Float32Array> {
  const ids = tf.tensor2d([tokens], [1, tokens.length], 'int32');
  const out = model.forward(ids, linear ? { linear } : undefined);
  const data = (await out.data()) as Float32Array;
  tf.dispose([ids, out]);
  return data;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number> | number[][]): number {
  const flat: ArrayLike<number> = Array.isArray(b) && Array.isArray(b[0]) ? (b as number[][]).flat() : (b as ArrayLike<number>);
  expect(a.length).toBe(flat.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - flat[i]!));
  return worst;
}

/** Validation loss as the fixture README defines it: windows of seqLen inputs, step seqLen, last partial dropped. */
async function validationLoss(model: CausalLM, tokens: number[], seqLen: number, linear?: LinearApply): Promise<{ loss: number; windows: number }> {
  const inputs: number[][] = [];
  const targets: number[][] = [];
  for (let start = 0; start + seqLen + 1 <= tokens.length; start += seqLen) {
    inputs.push(tokens.slice(start, start + seqLen));
    targets.push(tokens.slice(start + 1, start + seqLen + 1));
  }
  const loss = tf.tidy(() =>
    causalLmLoss(
      model.forward(tf.tensor2d(inputs, undefined, 'int32'), linear ? { linear } : undefined),
      tf.tensor2d(targets, undefined, 'int32'),
      null,
    ),
  );
  const value = (await loss.data())[0]!;
  loss.dispose();
  return { loss: value, windows: inputs.length };
}

async function userErrorOf(fn: () => unknown): Promise<UserError> {
  try {
    await fn();
  } catch (e) {
    if (isUserError(e)) return e;
    throw e;
  }
  throw new Error('expected a UserError, nothing was thrown');
}

const settings = (over: Partial<LoraSettings> = {}): LoraSettings => ({
  rank: 4,
  alpha: 8,
  dropout: 0,
  targetModules: ['c_attn'],
  useRslora: false,
  ...over,
});

/** PEFT's forward for one projection, written out: base(x) + s·((x⊙mask)·Aᵀ)·Bᵀ. */
function explicitLora(linear: Linear, x: tf.Tensor2D, A: tf.Tensor, B: tf.Tensor, s: number, mask: tf.Tensor | null = null): tf.Tensor2D {
  return tf.tidy(() => {
    const base = applyLinear(linear, x);
    const input = mask ? tf.mul(x, mask) : x;
    return tf.add(base, tf.mul(tf.matMul(tf.matMul(input, A, false, true), B, false, true), s)) as tf.Tensor2D;
  });
}

/** Every (name, shape, values) of a safetensors file. */
async function tensorsOf(bytes: Uint8Array): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const src = bytesSource('x.safetensors', bytes);
  const header = await readHeader(src);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const e of header.tensors) out.set(e.name, { shape: [...e.shape], data: toFloat32(e.dtype, await readTensorBytes(src, e)) });
  return out;
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

describe('settings', () => {
  it('scales by alpha/r, or alpha/√r with rslora', () => {
    expect(loraScaling({ rank: 4, alpha: 8, useRslora: false })).toBe(2);
    expect(loraScaling({ rank: 16, alpha: 8, useRslora: true })).toBe(2);
    expect(loraScaling({ rank: 8, alpha: 16, useRslora: true })).toBeCloseTo(16 / Math.sqrt(8), 12);
  });

  it("uses PEFT's default targets", () => {
    expect(defaultTargetModules('gpt2')).toEqual(['c_attn']);
    expect(defaultTargetModules('llama')).toEqual(['q_proj', 'v_proj']);
  });

  it('matches targets by path suffix, as PEFT does', async () => {
    const gpt2 = await loadModel('tiny-gpt2');
    const paths = (t: LoraSettings['targetModules']) => selectTargets(gpt2, t).map((l) => l.path);
    expect(paths(['c_attn'])).toEqual(['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn']);
    // c_proj names both the attention output and the MLP output projection.
    expect(paths(['c_proj'])).toEqual([
      'transformer.h.0.attn.c_proj',
      'transformer.h.0.mlp.c_proj',
      'transformer.h.1.attn.c_proj',
      'transformer.h.1.mlp.c_proj',
    ]);
    expect(paths(['attn.c_proj'])).toEqual(['transformer.h.0.attn.c_proj', 'transformer.h.1.attn.c_proj']);
    expect(paths(['transformer.h.1.mlp.c_fc'])).toEqual(['transformer.h.1.mlp.c_fc']);
    // A suffix must start at a dot: "proj" is not a module name.
    expect((await userErrorOf(() => selectTargets(gpt2, ['proj']))).subject).toBe('target_modules');
    gpt2.dispose();
  });

  it("'all-linear' takes every projection except lm_head", async () => {
    for (const dir of ARCHS) {
      const model = await loadModel(dir);
      const all = selectTargets(model, 'all-linear');
      expect(all.length).toBe(model.linears.length - 1);
      expect(all.map((l) => l.path)).not.toContain('lm_head');
      expect(model.linears.at(-1)!.path).toBe('lm_head');
      model.dispose();
    }
  });

  it('names the modules a model has when a target matches nothing', async () => {
    const gpt2 = await loadModel('tiny-gpt2');
    const e = await userErrorOf(() => selectTargets(gpt2, ['c_attn', 'c_atn']));
    expect(e.subject).toBe('target_modules');
    expect(e.problem).toBe('c_atn matches no module of this gpt2 model; its modules are: c_attn, c_proj, c_fc.');
    // The tied head shares the embedding matrix, so it is not offered and cannot be targeted.
    expect((await userErrorOf(() => selectTargets(gpt2, ['lm_head']))).problem).toMatch(/shares its weight/);
    gpt2.dispose();

    const llama = await loadModel('tiny-llama');
    expect((await userErrorOf(() => selectTargets(llama, ['c_attn']))).problem).toBe(
      'c_attn matches no module of this llama model; its modules are: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, lm_head.',
    );
    // An untied head may be targeted explicitly, as in PEFT.
    expect(selectTargets(llama, ['lm_head']).map((l) => l.path)).toEqual(['lm_head']);
    llama.dispose();
  });

  it('rejects out-of-range settings with the PEFT field name', async () => {
    expect((await userErrorOf(() => validateLoraSettings(settings({ rank: 0 })))).subject).toBe('r');
    expect((await userErrorOf(() => validateLoraSettings(settings({ rank: 2.5 })))).subject).toBe('r');
    expect((await userErrorOf(() => validateLoraSettings(settings({ alpha: 0 })))).subject).toBe('lora_alpha');
    expect((await userErrorOf(() => validateLoraSettings(settings({ dropout: 1 })))).subject).toBe('lora_dropout');
    expect((await userErrorOf(() => validateLoraSettings(settings({ targetModules: [] })))).subject).toBe('target_modules');
    expect(() => validateLoraSettings(settings({ dropout: 0.1 }))).not.toThrow();
  });
});

describe('PEFT adapter fixtures', () => {
  it.each(ARCHS)('%s: imported adapter reproduces logits_with_adapter and loss_with_adapter', async (dir) => {
    const expected = expectedOf(dir);
    const model = await loadModel(dir);
    const adapter = await importFixture(model, dir);
    expect(adapter.settings).toMatchObject({ rank: 4, alpha: 8, dropout: 0, useRslora: false });
    expect(adapter.scaling).toBe(2);
    expect(adapter.modules.length).toBe(6);

    const logits = await logitsOf(model, expected.tokens, adapter.apply({ training: false }));
    const err = maxAbsDiff(logits, expected.logits_with_adapter);
    // The adapter must actually matter: the adapted logits are far from the base ones.
    const shift = maxAbsDiff(logits, expected.logits_base);
    console.info(`${dir}: max |logit error| with adapter = ${err.toExponential(2)} (adapter shifts logits by up to ${shift.toFixed(3)})`);
    expect(err).toBeLessThan(TOL);
    expect(shift).toBeGreaterThan(100 * TOL);

    const spec = expected.loss_with_adapter;
    const { loss, windows } = await validationLoss(model, utf8Bytes(spec.text), spec.seq_len, adapter.apply({ training: false }));
    console.info(`${dir}: loss with adapter ${loss} vs ${spec.loss}, |error| = ${Math.abs(loss - spec.loss).toExponential(2)}`);
    expect(windows).toBe(spec.windows);
    expect(Math.abs(loss - spec.loss)).toBeLessThan(TOL);
    adapter.dispose();
    model.dispose();
  });

  it.each(ARCHS)('%s: the merged weights give the same logits through the plain forward pass', async (dir) => {
    const expected = expectedOf(dir);
    const model = await loadModel(dir);
    const adapter = await importFixture(model, dir);
    const merged = mergedWeights(model, adapter);
    expect([...merged.keys()].sort()).toEqual([...model.weights.keys()].sort());
    for (const [name, t] of merged) {
      expect(t).not.toBe(model.weights.get(name));
      expect(t.shape).toEqual(model.weights.get(name)!.shape);
    }
    // Only targeted weights change.
    const changed: string[] = [];
    for (const [name, t] of merged) {
      if (maxAbsDiff(await t.data(), await (model.weights.get(name) as tf.Tensor).data()) > 0) changed.push(name);
    }
    expect(changed.sort()).toEqual(adapter.modules.map((m) => `${m.path}.weight`).sort());

    const mergedModel = buildModel(model.config, merged);
    const err = maxAbsDiff(await logitsOf(mergedModel, expected.tokens), expected.logits_with_adapter);
    console.info(`${dir}: merged model max |logit error| = ${err.toExponential(2)}`);
    expect(err).toBeLessThan(TOL);
    mergedModel.dispose();
    // The base model still works: merging took nothing from it.
    expect(maxAbsDiff(await logitsOf(model, expected.tokens), expected.logits_base)).toBeLessThan(TOL);
    adapter.dispose();
    model.dispose();
  });

  it('merges an untied lm_head and nn.Linear layers (no transpose) correctly', async () => {
    const model = await loadModel('tiny-llama');
    const adapter = LoraAdapter.create(model, settings({ rank: 2, alpha: 3, targetModules: ['lm_head', 'o_proj'] }), 4);
    for (const m of adapter.modules) m.B.assign(tf.randomNormal(m.B.shape, 0, 0.1, 'float32', 2));
    const tokens = expectedOf('tiny-llama').tokens.slice(0, 30);
    const viaAdapter = await logitsOf(model, tokens, adapter.apply({ training: false }));
    const mergedModel = buildModel(model.config, mergedWeights(model, adapter));
    const err = maxAbsDiff(await logitsOf(mergedModel, tokens), viaAdapter);
    expect(err).toBeLessThan(TOL);
    expect(maxAbsDiff(viaAdapter, await logitsOf(model, tokens))).toBeGreaterThan(1e-2);
    mergedModel.dispose();
    adapter.dispose();
    model.dispose();
  });

  it.each(ARCHS)('%s: export(import(fixture)) gives back the fixture', async (dir) => {
    const model = await loadModel(dir);
    const adapter = await importFixture(model, dir);
    const files = await exportPeftAdapter(model, adapter, dir);
    const fixtureWeights = fixtureBytes(`${dir}-adapter/adapter_model.safetensors`);
    const ours = await tensorsOf(files['adapter_model.safetensors']);
    const theirs = await tensorsOf(fixtureWeights);
    expect([...ours.keys()]).toEqual([...theirs.keys()]);
    for (const [name, t] of theirs) {
      expect(ours.get(name)!.shape).toEqual(t.shape);
      expect(maxAbsDiff(ours.get(name)!.data, t.data)).toBe(0);
    }
    // Same layout as the Python writer: the files are byte-identical.
    expect(Buffer.from(files['adapter_model.safetensors']).equals(Buffer.from(fixtureWeights))).toBe(true);
    expect((await readHeader(bytesSource('a', files['adapter_model.safetensors']))).metadata).toEqual({ format: 'pt' });

    const config = JSON.parse(files['adapter_config.json']) as Record<string, unknown>;
    const reference = adapterConfigJson(dir);
    for (const [key, value] of Object.entries(reference)) {
      // PEFT holds target_modules in a set, so its saved order is arbitrary; ours is sorted.
      if (key === 'target_modules') expect(config[key]).toEqual([...(value as string[])].sort());
      else expect(config[key], key).toEqual(value);
    }
    // Written as PEFT's to_json_file writes it: sorted keys, two-space indent.
    expect(Object.keys(config)).toEqual(Object.keys(config).sort());
    expect(files['adapter_config.json']).toContain('\n  "alpha_pattern": {},\n');
    adapter.dispose();
    model.dispose();
  });

  it('a fresh adapter round-trips through the PEFT files', async () => {
    const model = await loadModel('tiny-llama');
    const tokens = expectedOf('tiny-llama').tokens.slice(0, 40);
    const s = settings({ rank: 3, alpha: 5, targetModules: 'all-linear', useRslora: true });
    const a = LoraAdapter.create(model, s, 3);
    // Give B values so the round trip is not trivially zero.
    for (const m of a.modules) m.B.assign(tf.randomNormal(m.B.shape, 0, 0.05, 'float32', 9));
    const files = await exportPeftAdapter(model, a, 'my-base');
    const config = JSON.parse(files['adapter_config.json']) as Record<string, unknown>;
    expect(config['target_modules']).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    expect(config).toMatchObject({ r: 3, lora_alpha: 5, use_rslora: true, fan_in_fan_out: false, base_model_name_or_path: 'my-base' });
    const b = await importPeftAdapter(model, files['adapter_config.json'], bytesSource('adapter_model.safetensors', files['adapter_model.safetensors']));
    expect(b.scaling).toBe(a.scaling);
    expect(b.modules.map((m) => m.path)).toEqual(a.modules.map((m) => m.path));
    const la = await logitsOf(model, tokens, a.apply({ training: false }));
    const lb = await logitsOf(model, tokens, b.apply({ training: false }));
    expect(maxAbsDiff(la, lb)).toBe(0);
    a.dispose();
    b.dispose();
    model.dispose();
  });

  it('describes the GPT-2 config as PEFT does (Conv1D → fan_in_fan_out)', async () => {
    const gpt2 = await loadModel('tiny-gpt2');
    const c = peftAdapterConfig(gpt2, settings({ targetModules: 'all-linear' }), 'gpt2');
    expect(c).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      target_modules: ['c_attn', 'c_fc', 'c_proj'],
      fan_in_fan_out: true,
      bias: 'none',
      inference_mode: true,
      init_lora_weights: true,
      modules_to_save: null,
    });
    expect(peftAdapterConfig(gpt2, settings({ targetModules: ['c_proj', 'c_attn', 'c_proj'] }), 'gpt2')['target_modules']).toEqual(['c_attn', 'c_proj']);
    gpt2.dispose();
  });

  it('reads a regex target_modules as the same modules', async () => {
    const gpt2 = await loadModel('tiny-gpt2');
    const cfg = { ...adapterConfigJson('tiny-gpt2'), target_modules: '.*\\.(c_attn|c_proj)' };
    expect(parsePeftAdapterConfig(gpt2, JSON.stringify(cfg)).settings.targetModules).toEqual(['c_attn', 'c_proj']);
    // Only the attention c_proj: the names alone would select more, so full paths are kept.
    const narrow = { ...cfg, target_modules: '.*attn\\.c_proj' };
    expect(parsePeftAdapterConfig(gpt2, JSON.stringify(narrow)).settings.targetModules).toEqual([
      'transformer.h.0.attn.c_proj',
      'transformer.h.1.attn.c_proj',
    ]);
    const viaRegex = await importPeftAdapter(gpt2, JSON.stringify(cfg), adapterSource('tiny-gpt2'));
    const expected = expectedOf('tiny-gpt2');
    expect(maxAbsDiff(await logitsOf(gpt2, expected.tokens, viaRegex.apply({ training: false })), expected.logits_with_adapter)).toBeLessThan(TOL);
    viaRegex.dispose();
    gpt2.dispose();
  });
});

describe('importPeftAdapter checks what it loads', () => {
  it('an adapter for another model size, another depth or another architecture', async () => {
    const narrow = randomModel({ ...rawConfig('tiny-gpt2'), n_embd: 32 });
    const e1 = await userErrorOf(() => importFixture(narrow, 'tiny-gpt2'));
    expect(e1.subject).toBe('adapter_model.safetensors');
    expect(e1.problem).toMatch(/has shape \[4, 64\], but rank 4 on this model's 32 → 96 projection transformer\.h\.0\.attn\.c_attn needs \[4, 32\]/);
    expect(e1.fix).toMatch(/trained for tiny-gpt2/);
    narrow.dispose();

    const shallow = randomModel({ ...rawConfig('tiny-gpt2'), n_layer: 1 });
    expect((await userErrorOf(() => importFixture(shallow, 'tiny-gpt2'))).problem).toMatch(/module transformer\.h\.1\.attn\.c_attn, which this gpt2 model does not have/);
    shallow.dispose();

    const gpt2 = await loadModel('tiny-gpt2');
    const e3 = await userErrorOf(() => importFixture(gpt2, 'tiny-llama'));
    expect(e3.subject).toBe('adapter_config.json');
    expect(e3.problem).toMatch(/^"target_modules": down_proj matches no module of this gpt2 model; its modules are: c_attn, c_proj, c_fc\./);
    expect(e3.fix).toMatch(/trained for tiny-llama/);
    gpt2.dispose();
  });

  it('missing, extra or foreign tensors, and configs LoRA Lab cannot honour', async () => {
    const gpt2 = await loadModel('tiny-gpt2');
    const fixture = await tensorsOf(fixtureBytes('tiny-gpt2-adapter/adapter_model.safetensors'));
    const write = (entries: [string, { shape: number[]; data: Float32Array }][]) =>
      bytesSource('adapter_model.safetensors', writeSafetensors(entries.map(([name, t]) => ({ name, ...t }))));
    const all = [...fixture];
    const config = adapterConfigText('tiny-gpt2');

    const missing = await userErrorOf(() => importPeftAdapter(gpt2, config, write(all.filter(([n]) => !n.includes('h.1.mlp.c_proj.lora_B')))));
    expect(missing.problem).toBe('has no lora_B weight for module transformer.h.1.mlp.c_proj, which target_modules selects.');

    const dora = await userErrorOf(() =>
      importPeftAdapter(gpt2, config, write([...all, ['base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector', { shape: [192], data: new Float32Array(192) }]])),
    );
    expect(dora.problem).toMatch(/DoRA magnitude vector/);

    const untargeted = await userErrorOf(() =>
      importPeftAdapter(gpt2, JSON.stringify({ ...adapterConfigJson('tiny-gpt2'), target_modules: ['c_attn'] }), write(all)),
    );
    expect(untargeted.problem).toMatch(/adapts module transformer\.h\.0\.attn\.c_proj, which target_modules .* does not select/);

    const wrongRank = await userErrorOf(() => importPeftAdapter(gpt2, JSON.stringify({ ...adapterConfigJson('tiny-gpt2'), r: 8 }), write(all)));
    expect(wrongRank.problem).toMatch(/needs \[8, 64\]/);

    const badConfigs: [Record<string, unknown>, RegExp][] = [
      [{ use_dora: true }, /DoRA/],
      [{ bias: 'all' }, /trained biases/],
      [{ rank_pattern: { c_attn: 8 } }, /per-module ranks/],
      [{ modules_to_save: ['lm_head'] }, /extra modules/],
      [{ peft_type: 'IA3' }, /"IA3" adapter/],
      [{ r: 0 }, /"r" must be/],
      [{ lora_dropout: 1 }, /"lora_dropout"/],
      [{ target_modules: 'c_at(' }, /regular expression/],
    ];
    for (const [patch, message] of badConfigs) {
      const e = await userErrorOf(() => importPeftAdapter(gpt2, JSON.stringify({ ...adapterConfigJson('tiny-gpt2'), ...patch }), write(all)));
      expect(e.subject).toBe('adapter_config.json');
      expect(e.problem).toMatch(message);
    }
    expect((await userErrorOf(() => importPeftAdapter(gpt2, '{not json', write(all)))).problem).toMatch(/not valid JSON/);
    gpt2.dispose();
  });

  it('loads adapters saved from the bare GPT2Model', async () => {
    const gpt2 = await loadModel('tiny-gpt2');
    const fixture = await tensorsOf(fixtureBytes('tiny-gpt2-adapter/adapter_model.safetensors'));
    // GPT2Model checkpoints have no "transformer." prefix; PEFT adapters on them name modules "h.0...".
    const bare = writeSafetensors([...fixture].map(([name, t]) => ({ name: name.replace('base_model.model.transformer.', 'base_model.model.'), ...t })));
    const a = await importPeftAdapter(gpt2, adapterConfigText('tiny-gpt2'), bytesSource('adapter_model.safetensors', bare));
    const expected = expectedOf('tiny-gpt2');
    expect(maxAbsDiff(await logitsOf(gpt2, expected.tokens, a.apply({ training: false })), expected.logits_with_adapter)).toBeLessThan(TOL);
    a.dispose();
    gpt2.dispose();
  });

  it('loads BF16 adapters (PEFT saves in the model dtype)', async () => {
    const llama = await loadModel('tiny-llama');
    const fixture = await tensorsOf(fixtureBytes('tiny-llama-adapter/adapter_model.safetensors'));
    const bf16 = writeBf16Safetensors(fixture);
    const half = await importPeftAdapter(llama, adapterConfigText('tiny-llama'), bytesSource('adapter_model.safetensors', bf16));
    for (const m of half.modules) {
      const want = fixture.get(`base_model.model.${m.path}.lora_A.weight`)!.data;
      // BF16 keeps 8 significant bits, so truncation loses less than 2^-7 relative.
      const got = await m.A.data();
      for (let i = 0; i < got.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThanOrEqual(Math.abs(want[i]!) * 2 ** -7);
    }
    const expected = expectedOf('tiny-llama');
    const err = maxAbsDiff(await logitsOf(llama, expected.tokens, half.apply({ training: false })), expected.logits_with_adapter);
    expect(err).toBeGreaterThan(0);
    expect(err).toBeLessThan(0.05);
    half.dispose();
    llama.dispose();
  });
});

/** A BF16 safetensors file (float32 values truncated to their top 16 bits), as PEFT saves a bf16 adapter. */
function writeBf16Safetensors(tensors: Map<string, { shape: number[]; data: Float32Array }>): Uint8Array {
  const names = [...tensors.keys()].sort();
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const name of names) {
    const t = tensors.get(name)!;
    header[name] = { dtype: 'BF16', shape: t.shape, data_offsets: [offset, offset + 2 * t.data.length] };
    offset += 2 * t.data.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const name of names) {
    const bits = new Uint32Array(Float32Array.from(tensors.get(name)!.data).buffer);
    for (const b of bits) {
      out[at++] = (b >>> 16) & 0xff;
      out[at++] = b >>> 24;
    }
  }
  return out;
}

describe('LoraAdapter.create', () => {
  it.each(ARCHS)('%s: B = 0, so the adapted model computes the base model exactly', async (dir) => {
    const model = await loadModel(dir);
    const tokens = expectedOf(dir).tokens;
    const adapter = LoraAdapter.create(model, settings({ targetModules: 'all-linear', dropout: 0.3 }), 1);
    for (const m of adapter.modules) expect(await m.B.data()).toEqual(new Float32Array(m.B.size));
    const base = await logitsOf(model, tokens);
    expect(maxAbsDiff(await logitsOf(model, tokens, adapter.apply({ training: false })), base)).toBe(0);
    // Dropout acts on the LoRA branch only, so with B = 0 training mode changes nothing either.
    expect(maxAbsDiff(await logitsOf(model, tokens, adapter.apply({ training: true, seed: 1, step: 0 })), base)).toBe(0);
    adapter.dispose();
    model.dispose();
  });

  it('draws A from U(-1/√in, 1/√in) (kaiming_uniform_ with a=√5), reproducibly per seed', async () => {
    const model = await loadModel('tiny-llama');
    const s = settings({ rank: 8, targetModules: ['q_proj', 'down_proj'] });
    const a = LoraAdapter.create(model, s, 42);
    const again = LoraAdapter.create(model, s, 42);
    const other = LoraAdapter.create(model, s, 43);
    expect(a.modules.map((m) => m.path)).toEqual([
      'model.layers.0.self_attn.q_proj',
      'model.layers.0.mlp.down_proj',
      'model.layers.1.self_attn.q_proj',
      'model.layers.1.mlp.down_proj',
    ]);
    for (const [i, m] of a.modules.entries()) {
      expect(m.A.shape).toEqual([8, m.linear.inFeatures]);
      expect(m.B.shape).toEqual([m.linear.outFeatures, 8]);
      const values = (await m.A.data()) as Float32Array;
      const bound = 1 / Math.sqrt(m.linear.inFeatures);
      const max = values.reduce((acc, v) => Math.max(acc, Math.abs(v)), 0);
      const mean = values.reduce((acc, v) => acc + v, 0) / values.length;
      const variance = values.reduce((acc, v) => acc + v * v, 0) / values.length;
      expect(max).toBeLessThanOrEqual(bound);
      // A uniform draw fills its range: the largest of ≥512 values is within 2% of the bound.
      expect(max).toBeGreaterThan(0.98 * bound);
      expect(Math.abs(mean)).toBeLessThan((4 * bound) / Math.sqrt(3 * values.length));
      expect(variance / ((bound * bound) / 3)).toBeGreaterThan(0.85);
      expect(variance / ((bound * bound) / 3)).toBeLessThan(1.15);
      expect(await again.modules[i]!.A.data()).toEqual(values);
      expect(maxAbsDiff(await other.modules[i]!.A.data(), values)).toBeGreaterThan(0);
    }
    // Modules get distinct draws, not one stream repeated.
    expect(maxAbsDiff(await a.modules[0]!.A.data(), await a.modules[2]!.A.data())).toBeGreaterThan(0);
    expect(a.parameterCount()).toBe(2 * 8 * (64 + 64) + 2 * 8 * (176 + 64));
    expect(a.variables().length).toBe(8);
    for (const x of [a, again, other]) x.dispose();
    model.dispose();
  });
});

describe('dropout', () => {
  /** One c_attn projection of the GPT-2 fixture with a non-zero adapter, and an input. */
  async function setup(p: number) {
    const model = await loadModel('tiny-gpt2');
    const adapter = await importPeftAdapter(
      model,
      JSON.stringify({ ...adapterConfigJson('tiny-gpt2'), lora_dropout: p }),
      adapterSource('tiny-gpt2'),
    );
    const module = adapter.modules[0]!;
    const x = tf.randomNormal([6, module.linear.inFeatures], 0, 1, 'float32', 5) as tf.Tensor2D;
    const run = async (apply: LinearApply): Promise<Float32Array> => {
      const y = apply(module.linear, x);
      const v = (await y.data()) as Float32Array;
      y.dispose();
      return v;
    };
    const done = () => {
      x.dispose();
      adapter.dispose();
      model.dispose();
    };
    return { model, adapter, module, x, run, done };
  }

  it('changes the output in training mode, reproducibly for the same (seed, step)', async () => {
    const { adapter, run, done } = await setup(0.5);
    const evalOut = await run(adapter.apply({ training: false }));
    expect(await run(adapter.apply({ training: false }))).toEqual(evalOut);
    const s0 = await run(adapter.apply({ training: true, seed: 7, step: 0 }));
    expect(maxAbsDiff(s0, evalOut)).toBeGreaterThan(1e-2);
    expect(await run(adapter.apply({ training: true, seed: 7, step: 0 }))).toEqual(s0);
    expect(maxAbsDiff(await run(adapter.apply({ training: true, seed: 7, step: 1 })), s0)).toBeGreaterThan(1e-2);
    expect(maxAbsDiff(await run(adapter.apply({ training: true, seed: 8, step: 0 })), s0)).toBeGreaterThan(1e-2);
    // A second call through the same LinearApply (another micro-batch) draws a fresh mask.
    const apply = adapter.apply({ training: true, seed: 7, step: 0 });
    expect(await run(apply)).toEqual(s0);
    expect(maxAbsDiff(await run(apply), s0)).toBeGreaterThan(1e-2);
    done();
  });

  it('zeroes LoRA inputs at rate p and scales the kept ones by 1/(1-p)', async () => {
    const p = 0.25;
    const { adapter, module, x, done } = await setup(p);
    const [tokens, inFeatures] = x.shape;
    const r = module.A.shape[0];
    // A = [I_r 0] and B = [I_r; 0] make the branch's first r outputs read s·(x⊙mask) on the first r inputs.
    module.A.assign(tf.tidy(() => tf.concat([tf.eye(r), tf.zeros([r, inFeatures - r])], 1)) as tf.Tensor2D);
    module.B.assign(tf.tidy(() => tf.concat([tf.eye(r), tf.zeros([module.linear.outFeatures - r, r])], 0)) as tf.Tensor2D);
    const ratio = tf.tidy(() => {
      const y = adapter.apply({ training: true, seed: 3, step: 11 })(module.linear, x);
      const branch = tf.div(tf.sub(y, applyLinear(module.linear, x)), adapter.scaling);
      return tf.div(tf.slice(branch, [0, 0], [tokens, r]), tf.slice(x, [0, 0], [tokens, r]));
    });
    const values = [...(await ratio.data())];
    ratio.dispose();
    const kept = values.filter((v) => Math.abs(v - 1 / (1 - p)) < 1e-3).length;
    const dropped = values.filter((v) => Math.abs(v) < 1e-3).length;
    expect(kept + dropped).toBe(values.length);
    expect(dropped).toBeGreaterThan(0);
    expect(kept).toBeGreaterThan(dropped);
    done();
  });

  it('drops at rate p over many elements', async () => {
    const { dropoutMaskArray, streamKey } = await import('../../src/core/random');
    for (const p of [0.05, 0.1, 0.5]) {
      const n = 200_000;
      const mask = dropoutMaskArray(streamKey(1, 2, 3), n, p);
      const dropped = mask.filter((v) => v === 0).length / n;
      expect(Math.abs(dropped - p)).toBeLessThan(4 * Math.sqrt((p * (1 - p)) / n));
      expect(mask.every((v) => v === 0 || v === Math.fround(1 / (1 - p)))).toBe(true);
    }
  });

  it('averages to the no-dropout output over many masks (inverted dropout)', async () => {
    const { adapter, module, x, run, done } = await setup(0.5);
    const evalOut = await run(adapter.apply({ training: false }));
    const base = (await applyLinear(module.linear, x).data()) as Float32Array;
    const n = 600;
    const sum = new Float64Array(evalOut.length);
    for (let step = 0; step < n; step++) {
      const out = await run(adapter.apply({ training: true, seed: 1, step }));
      for (let i = 0; i < out.length; i++) sum[i]! += out[i]!;
    }
    // Compare the LoRA branch part: its mean over masks should match the eval branch.
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < sum.length; i++) {
      worst = Math.max(worst, Math.abs(sum[i]! / n - evalOut[i]!));
      scale = Math.max(scale, Math.abs(evalOut[i]! - base[i]!));
    }
    console.info(`dropout: max |mean over ${n} masks − eval| = ${worst.toExponential(2)}, branch magnitude ${scale.toFixed(3)}`);
    expect(scale).toBeGreaterThan(0.05);
    expect(worst).toBeLessThan(0.15 * scale);
    done();
  });

  it('matches the explicit PEFT composition in eval mode', async () => {
    const { adapter, module, x, run, done } = await setup(0.5);
    const y = explicitLora(module.linear, x, module.A, module.B, adapter.scaling);
    expect(maxAbsDiff(await run(adapter.apply({ training: false })), await y.data())).toBeLessThan(1e-5);
    y.dispose();
    done();
  });
});

describe('gradients', () => {
  const lossFn = (model: CausalLM, apply: LinearApply, ids: tf.Tensor2D, targets: tf.Tensor2D) => () =>
    causalLmLoss(model.forward(ids, { linear: apply }), targets, null);

  function batch() {
    const tokens = utf8Bytes('Permission is hereby granted, free of charge, to any person');
    return {
      ids: tf.tensor2d([tokens.slice(0, -1)], undefined, 'int32'),
      targets: tf.tensor2d([tokens.slice(1)], undefined, 'int32'),
    };
  }

  it.each(ARCHS)('%s: at initialisation B gets gradients and A none (B = 0)', async (dir) => {
    const model = await loadModel(dir);
    const adapter = LoraAdapter.create(model, settings({ targetModules: 'all-linear' }), 5);
    const { ids, targets } = batch();
    const { value, grads } = tf.variableGrads(lossFn(model, adapter.apply({ training: false }), ids, targets), adapter.variables());
    for (const m of adapter.modules) {
      const gA = await grads[m.A.name]!.data();
      const gB = await grads[m.B.name]!.data();
      expect(gA.every((v) => v === 0)).toBe(true);
      expect(gB.every(Number.isFinite)).toBe(true);
      expect(gB.some((v) => v !== 0)).toBe(true);
    }
    tf.dispose([value, ...Object.values(grads), ids, targets]);
    adapter.dispose();
    model.dispose();
  });

  it.each(ARCHS)('%s: gradients of A and B match central differences and the explicit composition', async (dir) => {
    const model = await loadModel(dir);
    const adapter = await importFixture(model, dir);
    const vars = adapter.variables();
    const { ids, targets } = batch();
    const { value, grads } = tf.variableGrads(lossFn(model, adapter.apply({ training: false }), ids, targets), vars);

    // The same loss with LoRA written out by hand in the test, differentiated by tfjs autodiff.
    const byPath = new Map(adapter.modules.map((m) => [m.path, m]));
    const explicit: LinearApply = (linear, x) => {
      const m = byPath.get(linear.path);
      return m ? explicitLora(linear, x, m.A, m.B, adapter.scaling) : applyLinear(linear, x);
    };
    const ref = tf.variableGrads(lossFn(model, explicit, ids, targets), vars);
    let worstRef = 0;
    for (const v of vars) worstRef = Math.max(worstRef, maxAbsDiff(await grads[v.name]!.data(), await ref.grads[v.name]!.data()));
    expect(worstRef).toBeLessThan(1e-5);

    // Directional derivative along each matrix's own gradient direction vs a central difference.
    const evalLoss = (): number => tf.tidy(() => lossFn(model, adapter.apply({ training: false }), ids, targets)().dataSync()[0]!);
    const h = 1e-2;
    for (const v of [adapter.modules[0]!.A, adapter.modules[0]!.B, adapter.modules.at(-1)!.A, adapter.modules.at(-1)!.B]) {
      const g = grads[v.name]!;
      const norm = tf.tidy(() => tf.norm(g).dataSync()[0]!);
      expect(norm).toBeGreaterThan(1e-4);
      const original = v.clone();
      const dir1 = tf.div(g, norm);
      v.assign(tf.tidy(() => tf.add(original, tf.mul(dir1, h))) as tf.Tensor2D);
      const plus = evalLoss();
      v.assign(tf.tidy(() => tf.sub(original, tf.mul(dir1, h))) as tf.Tensor2D);
      const minus = evalLoss();
      v.assign(original);
      const numeric = (plus - minus) / (2 * h);
      console.info(`${dir} ${v.shape.join('×')}: analytic ${norm.toExponential(4)} numeric ${numeric.toExponential(4)}`);
      expect(Math.abs(numeric - norm) / norm).toBeLessThan(2e-2);
      tf.dispose([original, dir1]);
    }
    tf.dispose([value, ...Object.values(grads), ref.value, ...Object.values(ref.grads), ids, targets]);
    adapter.dispose();
    model.dispose();
  });

  it('rslora scales the branch by alpha/√r', async () => {
    const model = await loadModel('tiny-llama');
    const plain = await importFixture(model, 'tiny-llama');
    const rs = await importPeftAdapter(model, JSON.stringify({ ...adapterConfigJson('tiny-llama'), use_rslora: true }), adapterSource('tiny-llama'));
    expect(rs.scaling).toBe(4);
    // Doubling B of the plain adapter (scaling 2) gives the same model as rslora's scaling 4.
    const doubled = LoraAdapter.fromTensors(
      model,
      plain.settings,
      new Map<string, LoraModuleTensors>(
        await Promise.all(
          plain.modules.map(async (m) => [m.path, { A: (await m.A.data()) as Float32Array, B: ((await m.B.data()) as Float32Array).map((v) => 2 * v) }] as const),
        ),
      ),
    );
    const tokens = expectedOf('tiny-llama').tokens.slice(0, 50);
    const a = await logitsOf(model, tokens, rs.apply({ training: false }));
    const b = await logitsOf(model, tokens, doubled.apply({ training: false }));
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-4);
    expect(maxAbsDiff(a, await logitsOf(model, tokens, plain.apply({ training: false })))).toBeGreaterThan(1e-2);
    for (const x of [plain, rs, doubled]) x.dispose();
    model.dispose();
  });
});

describe('memory', () => {
  it.each(ARCHS)('%s: repeated training steps with dropout leak no tensors', async (dir) => {
    const model = await loadModel(dir);
    const adapter = LoraAdapter.create(model, settings({ targetModules: 'all-linear', dropout: 0.1 }), 0);
    const optimizer = tf.train.sgd(0.1);
    const { ids, targets } = (() => {
      const tokens = utf8Bytes('The quick brown fox jumps over the lazy dog');
      return { ids: tf.tensor2d([tokens.slice(0, -1)], undefined, 'int32'), targets: tf.tensor2d([tokens.slice(1)], undefined, 'int32') };
    })();
    const step = (i: number): number => {
      const loss = optimizer.minimize(
        () => causalLmLoss(model.forward(ids, { linear: adapter.apply({ training: true, seed: 9, step: i }) }), targets, null),
        true,
        adapter.variables(),
      )!;
      const v = loss.dataSync()[0]!;
      loss.dispose();
      return v;
    };
    const first = step(0);
    const before = tf.memory().numTensors;
    let last = first;
    for (let i = 1; i < 6; i++) last = step(i);
    expect(tf.memory().numTensors).toBe(before);
    // Training through the adapter moves the loss (B leaves zero).
    expect(last).not.toBe(first);
    expect((await adapter.modules[0]!.B.data()).some((v) => v !== 0)).toBe(true);
    const evalBefore = tf.memory().numTensors;
    await logitsOf(model, [1, 2, 3], adapter.apply({ training: false }));
    mergedWeights(model, adapter).forEach((t) => t.dispose());
    expect(tf.memory().numTensors).toBe(evalBefore);
    const owned = adapter.variables().length;
    adapter.dispose();
    expect(tf.memory().numTensors).toBe(evalBefore - owned);
    expect(() => adapter.apply({ training: false })).toThrow(/after dispose/);
    optimizer.dispose();
    tf.dispose([ids, targets]);
    model.dispose();
  });
});

describe('wasm backend', () => {
  afterAll(async () => {
    await tf.setBackend('cpu');
  });

  it.each(ARCHS)('%s: adapter logits, loss and gradients on wasm', async (dir) => {
    expect(await tf.setBackend('wasm')).toBe(true);
    const expected = expectedOf(dir);
    const model = await loadModel(dir);
    const adapter = await importFixture(model, dir);
    const err = maxAbsDiff(await logitsOf(model, expected.tokens, adapter.apply({ training: false })), expected.logits_with_adapter);
    console.info(`${dir} on wasm: max |logit error| with adapter = ${err.toExponential(2)}`);
    expect(err).toBeLessThan(TOL);
    const spec = expected.loss_with_adapter;
    const { loss } = await validationLoss(model, utf8Bytes(spec.text), spec.seq_len, adapter.apply({ training: false }));
    expect(Math.abs(loss - spec.loss)).toBeLessThan(TOL);

    const tokens = utf8Bytes('Permission is hereby granted');
    const ids = tf.tensor2d([tokens.slice(0, -1)], undefined, 'int32');
    const targets = tf.tensor2d([tokens.slice(1)], undefined, 'int32');
    const { value, grads } = tf.variableGrads(
      () => causalLmLoss(model.forward(ids, { linear: adapter.apply({ training: true, seed: 1, step: 0 }) }), targets, null),
      adapter.variables(),
    );
    for (const v of adapter.variables()) {
      const g = await grads[v.name]!.data();
      expect(g.every(Number.isFinite)).toBe(true);
      expect(g.some((x) => x !== 0)).toBe(true);
    }
    tf.dispose([value, ...Object.values(grads), ids, targets]);
    adapter.dispose();
    model.dispose();
  });
});
