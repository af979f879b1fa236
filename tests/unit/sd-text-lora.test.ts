import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildClipTextModel, type ClipTextModel } from '../../src/core/models/diffusion/clip-text';
import { disposeComponent, loadDiffusersComponent } from '../../src/core/models/diffusion/component';
import { isUserError } from '../../src/core/errors';
import { applyLoadedLora, readKohyaLora, type LoadedLora, type LoraModuleWeights } from '../../src/core/models/diffusion/unet-lora';
import { kohyaModuleName } from '../../src/core/models/diffusion/unet-lora-names';
import { loraLinear } from '../../src/core/kernels/lora_linear';
import { applyLinear, type LinearApply } from '../../src/core/models/linear';
import { bytesSource, readHeader, readTensorBytes, toFloat32, writeSafetensors } from '../../src/core/safetensors/index';
import { diffusersFolderFromDisk, readSdFixtureJson } from './support/diffusers-folder';

/**
 * Text-encoder LoRA on the CLIP text model: every projection is a Linear under its transformers module path, a
 * LoRA's LinearApply substitutes the adapted ones, kohya's `lora_te_…` names find them, and a LoRA on it trains
 * (tf.variableGrads through the whole encoder agrees with finite differences).
 */

const fixture = readSdFixtureJson<{ inputs: { input_ids: number[][] } }>('expected/unet_forward_seed0.json');
const inputIds = fixture.inputs.input_ids;
const folder = diffusersFolderFromDisk();
const loadModel = async () => buildClipTextModel(await loadDiffusersComponent(folder, 'text_encoder'));

/** The fixture's text-encoder tensors read straight from the file, as float64 host arrays: the reference's weights. */
async function fileTensor(name: string): Promise<Float64Array> {
  const source = folder.get('text_encoder/model.safetensors')!;
  const entry = (await readHeader(source)).tensors.find((t) => t.name === name)!;
  return Float64Array.from(toFloat32(entry.dtype, await readTensorBytes(source, entry)));
}

/** mulberry32: a small seeded generator, so the LoRA factors are the same on every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function uniform(n: number, random: () => number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (random() - 0.5) * scale);
}

/** A hand-made kohya-style LoRA: one module, A [rank, in], B [out, rank], scaling alpha / rank. */
function oneModuleLora(module: LoraModuleWeights): LoadedLora {
  return { format: 'kohya', modules: new Map([[module.path, module]]), skippedModules: [], metadata: {} };
}

const Q0 = 'text_model.encoder.layers.0.self_attn.q_proj';
const FC1_0 = 'text_model.encoder.layers.0.mlp.fc1';

let model: ClipTextModel;

beforeAll(async () => {
  await tf.setBackend('cpu');
  model = await loadModel();
});

describe('CLIP text encoder projections as Linear hooks', () => {
  it("lists every projection under transformers' module path, which kohya names as sd-scripts does", () => {
    expect(model.linears.map((l) => kohyaModuleName('lora_te', l.path))).toEqual([
      'lora_te_text_model_encoder_layers_0_self_attn_q_proj',
      'lora_te_text_model_encoder_layers_0_self_attn_k_proj',
      'lora_te_text_model_encoder_layers_0_self_attn_v_proj',
      'lora_te_text_model_encoder_layers_0_self_attn_out_proj',
      'lora_te_text_model_encoder_layers_0_mlp_fc1',
      'lora_te_text_model_encoder_layers_0_mlp_fc2',
      'lora_te_text_model_encoder_layers_1_self_attn_q_proj',
      'lora_te_text_model_encoder_layers_1_self_attn_k_proj',
      'lora_te_text_model_encoder_layers_1_self_attn_v_proj',
      'lora_te_text_model_encoder_layers_1_self_attn_out_proj',
      'lora_te_text_model_encoder_layers_1_mlp_fc1',
      'lora_te_text_model_encoder_layers_1_mlp_fc2',
    ]);
    // hidden 32, intermediate 128 (text_encoder/config.json).
    const fc1 = model.linears.find((l) => l.path === FC1_0)!;
    expect([fc1.inFeatures, fc1.outFeatures, fc1.layout]).toEqual([32, 128, 'in_out']);
  });

  it('a missing tensor is a UserError naming it, and the failed build leaves no re-laid-out weight behind', async () => {
    const component = await loadDiffusersComponent(folder, 'text_encoder');
    const partial = new Map(component.weights);
    partial.delete('text_model.final_layer_norm.weight');
    const before = tf.memory().numTensors;
    let thrown: unknown;
    try {
      buildClipTextModel({ ...component, weights: partial });
    } catch (e) {
      thrown = e;
    }
    expect(isUserError(thrown)).toBe(true);
    expect(String(thrown)).toContain('"text_model.final_layer_norm.weight" is missing');
    // The 12 projection originals were released when re-laid out; their [in, out] copies went with the failed build.
    const released = [...partial.values()].filter((t) => t.isDisposed).length;
    expect(released).toBe(12);
    expect(tf.memory().numTensors).toBe(before - released);
    disposeComponent(component);
  });

  it('a kohya file with lora_te_ modules resolves to those projections', async () => {
    const fc2 = 'text_model.encoder.layers.1.mlp.fc2';
    const bytes = writeSafetensors([
      { name: 'lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight', shape: [2, 32], data: new Float32Array(64).fill(0.1) },
      { name: 'lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight', shape: [32, 2], data: new Float32Array(64).fill(0.1) },
      { name: 'lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha', shape: [], data: Float32Array.of(1) },
      { name: 'lora_te_text_model_encoder_layers_1_mlp_fc2.lora_down.weight', shape: [4, 128], data: new Float32Array(512).fill(0.1) },
      { name: 'lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight', shape: [32, 4], data: new Float32Array(128).fill(0.1) },
      { name: 'lora_unet_mid_block_attentions_0_proj_in.lora_down.weight', shape: [4, 64], data: new Float32Array(256).fill(0.1) },
    ]);
    const lora = await readKohyaLora(bytesSource('te.safetensors', bytes), [{ prefix: 'lora_te', linears: model.linears }]);
    expect([...lora.modules.keys()]).toEqual([Q0, fc2]);
    expect(lora.modules.get(Q0)!.scaling).toBe(0.5);
    expect(lora.modules.get(fc2)!.scaling).toBe(1);
    expect(lora.skippedModules).toEqual(['lora_unet_mid_block_attentions_0_proj_in']);
  });

  it("a LoRA on layer 0's q_proj gives x·Wᵀ + b + s·(x·Aᵀ)·Bᵀ there, as a float64 host matmul of the file's W, b", async () => {
    const random = seeded(7);
    const rank = 4;
    const scaling = 8 / rank;
    const A = uniform(rank * 32, random);
    const B = uniform(32 * rank, random);
    const before = tf.memory().numTensors;
    const applied = applyLoadedLora(oneModuleLora({ path: Q0, rank, A, B, scaling }));
    let seen: { x: number[][]; y: number[][] } | null = null;
    const recording: LinearApply = (linear, x) => {
      const y = applied.linear(linear, x);
      if (linear.path === Q0) seen = { x: x.arraySync(), y: y.arraySync() };
      return y;
    };
    const { lastHiddenState, pooled } = model.forward(inputIds, { linear: recording });
    tf.dispose([lastHiddenState, pooled]);
    applied.dispose();
    expect(tf.memory().numTensors).toBe(before);

    const { x, y } = seen! as { x: number[][]; y: number[][] };
    expect(x).toHaveLength(2 * 77);
    const W = await fileTensor(`${Q0}.weight`); // [out, in]
    const b = await fileTensor(`${Q0}.bias`);
    let worst = 0;
    let loraSize = 0;
    for (let t = 0; t < x.length; t++) {
      const xa = Array.from({ length: rank }, (_, r) => x[t]!.reduce((s, v, i) => s + v * A[r * 32 + i]!, 0));
      for (let o = 0; o < 32; o++) {
        const base = b[o]! + x[t]!.reduce((s, v, i) => s + v * W[o * 32 + i]!, 0);
        const delta = scaling * xa.reduce((s, v, r) => s + v * B[o * rank + r]!, 0);
        worst = Math.max(worst, Math.abs(y[t]![o]! - (base + delta)));
        loraSize = Math.max(loraSize, Math.abs(delta));
      }
    }
    expect(worst).toBeLessThan(1e-5);
    // The LoRA term is far above the tolerance, so a hook that ignored it would fail.
    expect(loraSize).toBeGreaterThan(0.1);
  });

  it('with B = 0 on every projection, the hidden states and pooled output equal the base model', () => {
    const random = seeded(11);
    const modules = new Map(
      model.linears.map((l) => [l.path, { path: l.path, rank: 2, A: uniform(2 * l.inFeatures, random), B: new Float32Array(l.outFeatures * 2), scaling: 3 }]),
    );
    const applied = applyLoadedLora({ format: 'peft', modules, skippedModules: [], metadata: {} });
    const base = model.forward(inputIds);
    const adapted = model.forward(inputIds, { linear: applied.linear });
    const diff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
    expect(diff(adapted.lastHiddenState, base.lastHiddenState)).toBeLessThan(1e-6);
    expect(diff(adapted.pooled, base.pooled)).toBeLessThan(1e-6);
    // And a non-zero B on the last fc2 does move them (the comparison above can fail).
    const moved = applyLoadedLora(oneModuleLora({ path: 'text_model.encoder.layers.1.mlp.fc2', rank: 2, A: uniform(256, random), B: uniform(64, random), scaling: 1 }));
    const other = model.forward(inputIds, { linear: moved.linear });
    expect(diff(other.lastHiddenState, base.lastHiddenState)).toBeGreaterThan(1e-3);
    tf.dispose([base.lastHiddenState, base.pooled, adapted.lastHiddenState, adapted.pooled, other.lastHiddenState, other.pooled]);
    applied.dispose();
    moved.dispose();
  });

  it('trains: tf.variableGrads of a loss through the encoder gives d/dA and d/dB of a LoRA on fc1 that finite differences confirm', () => {
    const random = seeded(3);
    const rank = 2;
    const scaling = 0.5;
    const A0 = uniform(rank * 32, random);
    const B0 = uniform(128 * rank, random);
    // loss = Σ lastHiddenState · R + Σ pooled · P, fixed random R and P: every output element matters.
    const R = uniform(2 * 77 * 32, random);
    const P = uniform(2 * 32, random);
    const lossOf = (out: { lastHiddenState: tf.Tensor; pooled: tf.Tensor }) =>
      tf.tidy(() => tf.add(tf.sum(tf.mul(out.lastHiddenState, tf.tensor3d(R, [2, 77, 32]))), tf.sum(tf.mul(out.pooled, tf.tensor2d(P, [2, 32])))) as tf.Scalar);

    const A = tf.variable(tf.tensor2d(A0, [rank, 32]), true, 'te_lora_A');
    const B = tf.variable(tf.tensor2d(B0, [128, rank]), true, 'te_lora_B');
    const trainable: LinearApply = (linear, x) =>
      linear.path === FC1_0
        ? loraLinear({ x, weight: linear.weight as tf.Tensor2D, layout: linear.layout, bias: linear.bias, loraA: A, loraB: B, scaling, dropoutMask: null })
        : applyLinear(linear, x);
    const before = tf.memory().numTensors;
    const { value, grads } = tf.variableGrads(() => {
      const out = model.forward(inputIds, { linear: trainable });
      return lossOf(out);
    }, [A, B]);
    const gradA = grads['te_lora_A']!.dataSync();
    const gradB = grads['te_lora_B']!.dataSync();
    tf.dispose([value, ...Object.values(grads)]);
    expect(tf.memory().numTensors).toBe(before);

    /** The loss with the LoRA factors given, through the frozen-LoRA apply (no autodiff involved). */
    const lossAt = (a: Float32Array, b: Float32Array): number => {
      const applied = applyLoadedLora(oneModuleLora({ path: FC1_0, rank, A: a, B: b, scaling }));
      const out = model.forward(inputIds, { linear: applied.linear });
      const loss = lossOf(out);
      const v = loss.dataSync()[0]!;
      tf.dispose([loss, out.lastHiddenState, out.pooled]);
      applied.dispose();
      return v;
    };
    const h = 1e-2;
    const central = (which: 'A' | 'B', i: number): number => {
      const bump = (d: number) => {
        const a = Float32Array.from(A0);
        const b = Float32Array.from(B0);
        (which === 'A' ? a : b)[i]! += d;
        return lossAt(a, b);
      };
      return (bump(h) - bump(-h)) / (2 * h);
    };
    for (const [which, grad, picks] of [
      ['A', gradA, [0, 17, 40, 63]],
      ['B', gradB, [0, 55, 128, 255]],
    ] as const) {
      for (const i of picks) {
        const fd = central(which, i);
        // Measured: within 3e-4 (float32 losses differenced over 2h); gradients here are 0.1 to 2.
        expect(Math.abs(grad[i]! - fd)).toBeLessThan(1e-3 * (1 + Math.abs(fd)));
      }
      expect(Math.max(...Array.from(grad, Math.abs))).toBeGreaterThan(1e-2);
    }
    tf.dispose([A, B]);
  });
});
