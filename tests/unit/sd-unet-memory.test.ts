import * as tf from '@tensorflow/tfjs';
// The wasm backend runs these convolutions several times faster than cpu (see sd-unet.test.ts).
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LoraAdapter, selectTargets, type LoraModuleTensors, type LoraSettings } from '../../src/core/lora/index';
import { loadDiffusersComponent, type DiffusersComponent } from '../../src/core/models/diffusion/component';
import { loraTargetsOf } from '../../src/core/models/diffusion/lora-targets';
import { buildUnet, type Unet } from '../../src/core/models/diffusion/unet';
import type { Linear } from '../../src/core/models/linear';
import { unpackHost } from '../../src/core/weights/host';
import { isPacked, type FrozenMatrix } from '../../src/core/weights/packed';
import type { WeightPlacement } from '../../src/core/weights/holding';
import { uniformArray } from '../../src/core/random';
import { watchPeakBytes } from '../../src/core/train/device-memory';
import { diffusersFolderFromDisk, readSdFixtureJson } from './support/diffusers-folder';

interface UnetForwardFixture {
  tolerance: number;
  inputs: { latents: number[][][][]; timesteps: number[] };
  outputs: { text_last_hidden_state: number[][][]; unet_sample: number[][][][] };
}

const folder = diffusersFolderFromDisk();
const fixture = readSdFixtureJson<UnetForwardFixture>('expected/unet_forward_seed0.json');

let unet: Unet;

beforeAll(async () => {
  expect(await tf.setBackend('wasm')).toBe(true);
  unet = buildUnet(await loadDiffusersComponent(folder, 'unet'));
});

afterAll(() => unet?.dispose());

/**
 * A LoRA on every UNet projection (the time embedding, the ResNets' time projections and every Transformer2D
 * linear) with random A and B: a fresh adapter's B is zero, which would leave every A gradient zero.
 */
function randomAdapter(dropout: number): LoraAdapter {
  const settings: LoraSettings = { rank: 4, alpha: 4, dropout, targetModules: 'all-linear', useRslora: false };
  const model = loraTargetsOf(unet, 'sd-unet');
  const tensors = new Map<string, LoraModuleTensors>();
  selectTargets(model, settings.targetModules).forEach((l, i) => {
    tensors.set(l.path, { A: uniformArray(3000 + i, 4 * l.inFeatures, 0.2), B: uniformArray(4000 + i, l.outFeatures * 4, 0.2) });
  });
  return LoraAdapter.fromTensors(model, settings, tensors);
}

/**
 * The gradients of Σ forward·probe with respect to every LoRA A and B and to the text states (which a text-encoder
 * LoRA trains through), for one training pass: a fresh apply, so the dropout draws start from the same place.
 */
function gradients(adapter: LoraAdapter, latents: tf.Tensor4D, context: tf.Tensor3D, gradientCheckpointing: boolean) {
  const probe = tf.randomNormal(latents.shape, 0, 1, 'float32', 7);
  const linear = adapter.apply({ training: true, seed: 5, step: 3 });
  // The variables are passed as the very tensors the adapter reads, so their gradients come back with the context's.
  const { value, grads } = tf.valueAndGrads((ctx: tf.Tensor) => {
    const out = unet.forward(latents, fixture.inputs.timesteps, ctx as tf.Tensor3D, { linear, gradientCheckpointing });
    return tf.sum(tf.mul(out, probe));
  })([context, ...adapter.variables()]);
  probe.dispose();
  return { value, contextGrad: grads[0]!, variableGrads: grads.slice(1) };
}

function maxAbs(t: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(t)).dataSync()[0]!);
}

function maxAbsDiff(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

describe('UNet gradient checkpointing', () => {
  for (const dropout of [0, 0.25]) {
    it(`gives the LoRA and the text states the same gradients as the plain backward pass (dropout ${dropout})`, () => {
      const adapter = randomAdapter(dropout);
      const latents = tf.tensor4d(fixture.inputs.latents);
      const context = tf.tensor3d(fixture.outputs.text_last_hidden_state);
      const before = tf.memory().numTensors;
      const plain = gradients(adapter, latents, context, false);
      const checkpointed = gradients(adapter, latents, context, true);

      expect(Math.abs(plain.value.dataSync()[0]! - checkpointed.value.dataSync()[0]!)).toBeLessThan(1e-4);
      expect(plain.variableGrads.length).toBe(adapter.variables().length);
      let largest = 0;
      let worst = 0;
      plain.variableGrads.forEach((g, i) => {
        largest = Math.max(largest, maxAbs(g));
        worst = Math.max(worst, maxAbsDiff(g, checkpointed.variableGrads[i]!));
      });
      console.log(`dropout ${dropout}: max |plain − checkpointed| over ${plain.variableGrads.length} LoRA gradients ${worst.toExponential(2)} (largest |g| ${largest.toFixed(3)})`);
      expect(worst).toBeLessThan(1e-5);
      // The gradients are not all zero (the comparison says something), and reach the time embedding's LoRA, which
      // trains only through the time embedding each checkpointed ResNet receives as an input.
      expect(largest).toBeGreaterThan(1e-2);
      const timeA = adapter.variables().findIndex((v) => v === adapter.modules.find((m) => m.path === 'time_embedding.linear_1')!.A);
      expect(maxAbs(plain.variableGrads[timeA]!)).toBeGreaterThan(1e-4);
      expect(maxAbsDiff(plain.contextGrad, checkpointed.contextGrad)).toBeLessThan(1e-5);
      expect(maxAbs(plain.contextGrad)).toBeGreaterThan(1e-3);

      for (const r of [plain, checkpointed]) tf.dispose([r.value, r.contextGrad, ...r.variableGrads]);
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose([latents, context]);
      adapter.dispose();
    });
  }

  it('with dropout, differs from a pass whose masks are drawn afresh (the replayed draws are what make them equal)', () => {
    const adapter = randomAdapter(0.25);
    const latents = tf.tensor4d(fixture.inputs.latents);
    const context = tf.tensor3d(fixture.outputs.text_last_hidden_state);
    const a = gradients(adapter, latents, context, true);
    const vars = adapter.variables();
    // Another step of the same run draws other masks: its gradients must differ, or the test above could not fail.
    const other = tf.variableGrads(() => {
      const out = unet.forward(latents, fixture.inputs.timesteps, context, { linear: adapter.apply({ training: true, seed: 5, step: 4 }), gradientCheckpointing: true });
      return tf.sum(tf.mul(out, tf.randomNormal(latents.shape, 0, 1, 'float32', 7)));
    }, vars);
    const differs = vars.some((v, i) => maxAbsDiff(a.variableGrads[i]!, other.grads[v.name]!) > 1e-3);
    expect(differs).toBe(true);
    tf.dispose([a.value, a.contextGrad, ...a.variableGrads, other.value, ...Object.values(other.grads)]);
    tf.dispose([latents, context]);
    adapter.dispose();
  });

  it('holds fewer bytes at the peak of the backward pass', () => {
    // 16×16 latents (four times the fixture's positions), so that activations, not weights, decide the peak.
    const adapter = randomAdapter(0.1);
    const latents = tf.randomNormal([2, 4, 16, 16], 0, 1, 'float32', 11) as tf.Tensor4D;
    const context = tf.tensor3d(fixture.outputs.text_last_hidden_state);
    const peakOf = (gradientCheckpointing: boolean): number => {
      const base = tf.memory().numBytes;
      const watch = watchPeakBytes();
      const { value, grads } = tf.variableGrads(
        () => tf.mean(tf.square(unet.forward(latents, fixture.inputs.timesteps, context, { linear: adapter.apply({ training: true, seed: 1, step: 0 }), gradientCheckpointing }))),
        adapter.variables(),
      );
      watch.stop();
      tf.dispose([value, ...Object.values(grads)]);
      return watch.peakBytes() - base;
    };
    const plain = peakOf(false);
    const checkpointed = peakOf(true);
    console.log(`UNet backward peak above the weights: plain ${(plain / 1e6).toFixed(2)} MB, checkpointed ${(checkpointed / 1e6).toFixed(2)} MB`);
    expect(checkpointed).toBeLessThan(0.6 * plain);
    tf.dispose([latents, context]);
    adapter.dispose();
  });
});

/** The fixture UNet's component with every tensor's values mapped on the host (to make them exact halves). */
async function componentWith(map: (v: number) => number): Promise<DiffusersComponent> {
  const c = await loadDiffusersComponent(folder, 'unet');
  const weights = new Map<string, tf.Tensor>();
  for (const [name, t] of c.weights) {
    weights.set(name, tf.tensor(Float32Array.from(t.dataSync(), map), t.shape, 'float32'));
    t.dispose();
  }
  return { ...c, weights };
}

/** A weight as float32 [in, out], decoding packed words on the host (weights/host.ts, what the WGSL kernels are tested against). */
function valuesOf(m: FrozenMatrix): Float32Array {
  if (!isPacked(m)) return m.dataSync() as Float32Array;
  const host = { ...m, words: m.words.dataSync() as Int32Array } as Parameters<typeof unpackHost>[0];
  if (m.format === 'int8') Object.assign(host, { scales: m.scales.dataSync() });
  if (m.format === 'nf4') Object.assign(host, { absmax: m.absmax.dataSync() });
  return unpackHost(host);
}

/** The PyTorch-layout [out, in] values of a projection, as the float32 UNet holds them transposed. */
function torchValues(reference: Unet, path: string): { values: Float32Array; inF: number; outF: number } {
  const l = reference.linears.find((x) => x.path === path)!;
  const held = (l.weight as tf.Tensor2D).dataSync() as Float32Array;
  const values = new Float32Array(held.length);
  for (let i = 0; i < l.inFeatures; i++) for (let o = 0; o < l.outFeatures; o++) values[o * l.inFeatures + i] = held[i * l.outFeatures + o]!;
  return { values, inF: l.inFeatures, outF: l.outFeatures };
}

describe('UNet projection weights held by placement', () => {
  const unpackedInt8: WeightPlacement = { packed: false, quantization: 'int8', maxBindingBytes: null };

  it("with quantization 'none' unpacked, holds float32 and predicts exactly what the default build does", async () => {
    const other = buildUnet(await loadDiffusersComponent(folder, 'unet'), { placement: { packed: false, quantization: 'none', maxBindingBytes: null } });
    const latents = tf.tensor4d(fixture.inputs.latents);
    const context = tf.tensor3d(fixture.outputs.text_last_hidden_state);
    const a = unet.forward(latents, fixture.inputs.timesteps, context);
    const b = other.forward(latents, fixture.inputs.timesteps, context);
    expect(other.linears.every((l) => !isPacked(l.weight as FrozenMatrix))).toBe(true);
    expect(maxAbsDiff(a, b)).toBe(0);
    tf.dispose([latents, context, a, b]);
    other.dispose();
  });

  it('with int8, holds each projection within half a step of its channel scale (largest weight exact) and predicts the noise close to float32', async () => {
    const q = buildUnet(await loadDiffusersComponent(folder, 'unet'), { placement: unpackedInt8 });
    // Every output channel (a column of the [in, out] weight): scale = max|w|/127, |held − w| ≤ scale/2, held/scale an
    // integer. Counted, then asserted once (an expect per weight would take most of the test's time).
    let faults = 0;
    for (const l of q.linears) {
      const { values, inF, outF } = torchValues(unet, l.path);
      const held = valuesOf(l.weight as FrozenMatrix);
      for (let o = 0; o < outF; o++) {
        let absmax = 0;
        let heldMax = 0;
        for (let i = 0; i < inF; i++) {
          absmax = Math.max(absmax, Math.abs(values[o * inF + i]!));
          heldMax = Math.max(heldMax, Math.abs(held[i * outF + o]!));
        }
        const scale = absmax / 127;
        if (Math.abs(heldMax - absmax) > absmax * 1e-6) faults++;
        for (let i = 0; i < inF; i++) {
          const h = held[i * outF + o]!;
          if (Math.abs(h - values[o * inF + i]!) > scale / 2 + absmax * 1e-6) faults++;
          if (scale > 0 && Math.abs(h / scale - Math.round(h / scale)) >= 1e-3) faults++;
        }
      }
    }
    expect(faults).toBe(0);
    const latents = tf.tensor4d(fixture.inputs.latents);
    const context = tf.tensor3d(fixture.outputs.text_last_hidden_state);
    const full = unet.forward(latents, fixture.inputs.timesteps, context);
    const int8 = q.forward(latents, fixture.inputs.timesteps, context);
    const diff = maxAbsDiff(full, int8);
    console.log(`int8 UNet noise prediction: max |int8 − float32| = ${diff.toExponential(3)} (prediction max |x| ${maxAbs(full).toFixed(3)})`);
    expect(diff).toBeGreaterThan(0);
    expect(diff).toBeLessThan(2e-2);
    tf.dispose([latents, context, full, int8]);
    q.dispose();
  });

  it('packed, holds F16 words when every value is exactly a half, BF16 when only BF16 fits, and float32 otherwise', async () => {
    const packed: WeightPlacement = { packed: true, quantization: 'none', maxBindingBytes: null };
    const check = async (map: (v: number) => number, format: 'f16' | 'bf16' | 'f32') => {
      const built = buildUnet(await componentWith(map), { placement: packed });
      const linears: readonly Linear[] = built.linears;
      for (const l of linears) {
        const w = l.weight as FrozenMatrix;
        expect(isPacked(w) ? w.format : 'f32').toBe(format);
        const want = torchValues(unet, l.path);
        const held = valuesOf(w);
        let wrong = 0;
        for (let o = 0; o < want.outF; o++) {
          for (let i = 0; i < want.inF; i++) if (held[i * want.outF + o] !== map(want.values[o * want.inF + i]!)) wrong++;
        }
        expect(wrong, l.path).toBe(0);
      }
      built.dispose();
    };
    // Multiples of 2⁻¹⁰ below 1 in magnitude have at most 10 significant bits: exact halves.
    await check((v) => Math.max(-1023, Math.min(1023, Math.round(v * 1024))) / 1024, 'f16');
    // Scaled past the F16 range (65504) and truncated to BF16's 8 significant bits.
    const bf16 = (v: number) => {
      const bits = new Uint32Array(new Float32Array([v * 1e6]).buffer);
      bits[0] = bits[0]! & 0xffff0000;
      return new Float32Array(bits.buffer)[0]!;
    };
    await check(bf16, 'bf16');
    await check((v) => v, 'f32');
  });
});
