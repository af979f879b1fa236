import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { describe, expect, test } from 'vitest';
import { parseModelConfig, parseModelConfigText } from '../../src/core/models/config';
import { loadWeightsFromSafetensors } from '../../src/core/models/load';
import { buildModel } from '../../src/core/models/model';
import { bytesSource } from '../../src/core/safetensors';
import { disposeWeights, holdWeight } from '../../src/core/weights/hold';
import { heldBytes, heldFormat, type BaseQuantization, type HeldFormat } from '../../src/core/weights/holding';
import { heldTensors, isRowBlocks } from '../../src/core/weights/row-blocks';
import { packHalves, quantizeInt8, quantizeNf4, unpackHost } from '../../src/core/weights/host';
import { NF4_BLOCK, NF4_CODE_BOOK, nearestNf4Code } from '../../src/core/weights/nf4';

function values(count: number, seed: number): Float32Array {
  const v = new Float32Array(count);
  let s = seed;
  for (let i = 0; i < count; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    v[i] = (s / 2147483648 - 0.5) * (1 + (i % 7));
  }
  return v;
}

describe('BF16/F16 halves are kept as stored', () => {
  test('two halves per word, low half first, an odd count padded', () => {
    const halves = new Uint16Array([0x3f80, 0xc000, 0x4040]); // bf16 1, -2, 3
    const m = packHalves('bf16', [1, 3], new Uint8Array(halves.buffer));
    expect(m.words.length).toBe(2);
    expect(m.words[0]! >>> 0).toBe(0xc0003f80);
    expect(Array.from(unpackHost(m))).toEqual([1, -2, 3]);
    const f16 = packHalves('f16', [3, 1], new Uint8Array(new Uint16Array([0x3c00, 0xbc00, 0x3800]).buffer));
    expect(Array.from(unpackHost(f16))).toEqual([1, -1, 0.5]);
  });
});

describe('int8: one absmax scale per output channel', () => {
  test.each([[0], [1]] as const)('channel axis %i', (axis) => {
    const [rows, cols] = [13, 21];
    const v = values(rows * cols, 7 + axis);
    const m = quantizeInt8(v, [rows, cols], axis);
    if (m.format !== 'int8') throw new Error('format');
    const back = unpackHost(m);
    expect(m.scales.length).toBe(axis === 0 ? rows : cols);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        const scale = m.scales[axis === 0 ? r : c]!;
        // Rounding to the nearest code: never more than half a step away.
        expect(Math.abs(back[i]! - v[i]!)).toBeLessThanOrEqual(scale / 2 + 1e-7);
      }
    }
    // Each channel's largest magnitude is code ±127, hence exact up to float32 rounding.
    const channels = axis === 0 ? rows : cols;
    for (let ch = 0; ch < channels; ch++) {
      let best = 0;
      let at = 0;
      for (let k = 0; k < (axis === 0 ? cols : rows); k++) {
        const i = axis === 0 ? ch * cols + k : k * cols + ch;
        if (Math.abs(v[i]!) > best) [best, at] = [Math.abs(v[i]!), i];
      }
      expect(Math.abs(back[at]! - v[at]!)).toBeLessThan(1e-6 * best);
    }
  });

  test('a channel of zeros decodes to zeros', () => {
    const back = unpackHost(quantizeInt8(new Float32Array([0, 0, 1, -2]), [2, 2], 0));
    expect([back[0], back[1], back[3]]).toEqual([0, 0, -2]);
    expect(back[2]).toBeCloseTo(64 * (2 / 127), 6); // 1 lies between codes 63 and 64 of step 2/127
  });
});

describe('NF4: QLoRA code book, blocks of 64', () => {
  test('the code book: 16 ascending values from -1 to 1 with an exact zero, the same in the shader', () => {
    expect(NF4_CODE_BOOK.length).toBe(16);
    for (let i = 1; i < 16; i++) expect(NF4_CODE_BOOK[i]!).toBeGreaterThan(NF4_CODE_BOOK[i - 1]!);
    expect([NF4_CODE_BOOK[0], NF4_CODE_BOOK[7], NF4_CODE_BOOK[15]]).toEqual([-1, 0, 1]);
    const wgsl = readFileSync(new URL('../../shaders/packed_weight.wgsl', import.meta.url), 'utf8');
    const table = /array<f32, 16>\(([^)]*)\)/.exec(wgsl)![1]!.split(',').map((s) => Number(s.trim()));
    expect(table).toEqual([...NF4_CODE_BOOK]);
  });

  test('nearest code by brute force', () => {
    for (let k = 0; k <= 2000; k++) {
      const v = -1 + k / 1000;
      let best = 0;
      for (let i = 1; i < 16; i++) if (Math.abs(NF4_CODE_BOOK[i]! - v) < Math.abs(NF4_CODE_BOOK[best]! - v)) best = i;
      expect(Math.abs(NF4_CODE_BOOK[nearestNf4Code(v)]! - v)).toBeCloseTo(Math.abs(NF4_CODE_BOOK[best]! - v), 12);
    }
  });

  test('each block scaled by its own absmax; error within half the widest code gap', () => {
    const count = 5 * NF4_BLOCK + 17; // a partial last block
    const v = values(count, 3);
    const m = quantizeNf4(v, [1, count]);
    if (m.format !== 'nf4') throw new Error('format');
    expect(m.absmax.length).toBe(6);
    expect(m.words.length).toBe(Math.ceil(count / 8));
    const back = unpackHost(m);
    const widestGap = Math.max(...NF4_CODE_BOOK.slice(1).map((c, i) => c - NF4_CODE_BOOK[i]!));
    for (let i = 0; i < count; i++) {
      const absmax = m.absmax[Math.floor(i / NF4_BLOCK)]!;
      expect(Math.abs(back[i]! - v[i]!)).toBeLessThanOrEqual((widestGap / 2) * absmax + 1e-6);
    }
    for (let b = 0; b < 6; b++) {
      const block = v.subarray(b * NF4_BLOCK, Math.min(count, (b + 1) * NF4_BLOCK));
      expect(m.absmax[b]).toBe(Math.fround(Math.max(...Array.from(block, Math.abs))));
    }
  });
});

describe('how each weight is held, and what it costs', () => {
  const cfg = parseModelConfig({
    model_type: 'llama', vocab_size: 50, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 24, max_position_embeddings: 32,
  });
  const bf16Bytes = (count: number) => new Uint8Array(new Uint16Array(count).fill(0x3f80).buffer);
  const cases: [string, number[], BaseQuantization, boolean, HeldFormat][] = [
    ['model.layers.0.mlp.up_proj.weight', [24, 16], 'nf4', true, 'nf4'],
    ['model.layers.0.mlp.up_proj.weight', [24, 16], 'int8', true, 'int8'],
    ['model.layers.0.mlp.down_proj.weight', [16, 24], 'int8', true, 'int8'],
    ['model.layers.0.mlp.up_proj.weight', [24, 16], 'none', true, 'bf16'],
    ['model.layers.0.mlp.up_proj.weight', [24, 16], 'nf4', false, 'f32'],
    // Embeddings and norms keep their stored precision whatever the quantization.
    ['model.embed_tokens.weight', [50, 16], 'nf4', true, 'bf16'],
    ['model.layers.0.input_layernorm.weight', [16], 'nf4', true, 'f32'],
  ];
  test.each(cases)('%s %j, %s, packed %s → %s', (name, shape, quantization, packed, format) => {
    const placement = { packed, quantization };
    expect(heldFormat(name, 'BF16', shape, placement)).toBe(format);
    const held = holdWeight(cfg, name, 'BF16', shape, bf16Bytes(shape[0]! * (shape[1] ?? 1)), placement);
    try {
      expect(heldTensors(held).reduce((n, t) => n + 4 * t.size, 0)).toBe(heldBytes(format, shape, 0));
      if (!(held instanceof tf.Tensor) && !isRowBlocks(held)) expect(held.format).toBe(format);
    } finally {
      disposeWeights([held]);
    }
  });

  test('unpacked, a quantized weight holds the quantized values as float32', async () => {
    const values = new Float32Array(24 * 16).map((_, i) => Math.sin(i));
    const bytes = new Uint8Array(values.buffer);
    const held = holdWeight(cfg, 'model.layers.0.mlp.up_proj.weight', 'F32', [24, 16], bytes, { packed: false, quantization: 'nf4' });
    expect(held instanceof tf.Tensor).toBe(true);
    expect(Array.from((await (held as tf.Tensor).data()) as Float32Array)).toEqual(Array.from(unpackHost(quantizeNf4(values, [24, 16]))));
    disposeWeights([held]);
  });
});

describe('matrices past the binding limit are held as row blocks', () => {
  const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));
  test.each(['tiny-gpt2', 'tiny-llama'])('%s with a 10 kB limit gives PyTorch\'s logits', async (dir) => {
    const cfg = parseModelConfigText(readFileSync(join(FIXTURES, dir, 'config.json'), 'utf8'));
    const source = bytesSource('model.safetensors', new Uint8Array(readFileSync(join(FIXTURES, dir, 'model.safetensors'))));
    const weights = await loadWeightsFromSafetensors(cfg, [source], { placement: { packed: false, quantization: 'none', maxBindingBytes: 10_000 } });
    const blocked = [...weights].filter(([, w]) => !(w instanceof tf.Tensor) && isRowBlocks(w));
    // GPT-2: wte, wpe and every block's Conv1D [in, out] (split along its inputs); Llama: the embedding, the
    // head and every projection [out, in] but k and v ([32, 64], 8 kB), split along their outputs.
    expect(blocked.length).toBe(cfg.arch === 'gpt2' ? 2 + 4 * cfg.numLayers : 2 + 5 * cfg.numLayers);
    for (const [, w] of blocked) {
      for (const t of heldTensors(w)) expect(4 * t.size).toBeLessThanOrEqual(10_000);
    }
    const model = buildModel(cfg, weights);
    const expected = JSON.parse(readFileSync(join(FIXTURES, `${dir}.expected.json`), 'utf8')) as { tokens: number[]; logits_base: number[][] };
    const logits = model.forward(tf.tensor2d(expected.tokens, [1, expected.tokens.length], 'int32'));
    const got = (await logits.data()) as Float32Array;
    const vocab = expected.logits_base[0]!.length;
    let maxDiff = 0;
    expected.logits_base.forEach((row, i) => row.forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(got[i * vocab + j]! - v)))));
    expect(maxDiff).toBeLessThan(1e-4);
    logits.dispose();
    model.dispose();
  });
});
