import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isUserError, UserError } from '../../src/core/errors';
import {
  BYTES_PER_ELEMENT,
  blobSource,
  bytesSource,
  readHeader,
  readTensorBytes,
  toFloat32,
  writeSafetensors,
  type ByteSource,
  type Dtype,
  type SafetensorsHeader,
} from '../../src/core/safetensors';
import { toFloat32Portable } from '../../src/core/safetensors/dtype';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

/** A plain Uint8Array copy: Buffer.slice returns views, which would hide aliasing bugs. */
function fixture(rel: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array(readFileSync(join(FIXTURES, rel)));
}

async function open(rel: string): Promise<{ source: ByteSource; header: SafetensorsHeader; bytes: Uint8Array }> {
  const bytes = fixture(rel);
  const source = bytesSource(rel.split('/').pop()!, bytes);
  return { source, header: await readHeader(source), bytes };
}

async function tensor(source: ByteSource, header: SafetensorsHeader, name: string): Promise<Float32Array> {
  const entry = header.tensors.find((t) => t.name === name);
  if (!entry) throw new Error(`fixture has no ${name}`);
  return toFloat32(entry.dtype, await readTensorBytes(source, entry));
}

function u16le(values: number[]): Uint8Array {
  const out = new Uint8Array(values.length * 2);
  values.forEach((v, i) => {
    out[i * 2] = v & 0xff;
    out[i * 2 + 1] = v >>> 8;
  });
  return out;
}

function headerText(file: Uint8Array): string {
  const n = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  return new TextDecoder().decode(file.subarray(8, 8 + n));
}

describe('fixtures', () => {
  it('reads tiny-gpt2: names, shapes, layout and known values', async () => {
    const { source, header, bytes } = await open('tiny-gpt2/model.safetensors');
    expect(header.file).toBe('model.safetensors');
    expect(header.metadata).toEqual({ format: 'pt' });
    expect(header.dataStart).toBe(8 + 2624);
    expect(header.tensors).toHaveLength(28);
    const byName = new Map(header.tensors.map((t) => [t.name, t]));
    expect(byName.get('transformer.wte.weight')).toMatchObject({ dtype: 'F32', shape: [257, 64] });
    expect(byName.get('transformer.wpe.weight')).toMatchObject({ dtype: 'F32', shape: [128, 64] });
    expect(byName.get('transformer.h.1.attn.c_attn.weight')).toMatchObject({ dtype: 'F32', shape: [64, 192] });
    expect(byName.get('transformer.h.0.mlp.c_proj.weight')?.shape).toEqual([256, 64]);
    expect(byName.has('lm_head.weight')).toBe(false); // tied to wte, so not saved
    // Sorted by begin, tiling the data section exactly, with absolute offsets.
    expect(header.tensors[0]!.begin).toBe(header.dataStart);
    expect(header.tensors.at(-1)!.end).toBe(bytes.length);
    for (let i = 1; i < header.tensors.length; i++) expect(header.tensors[i]!.begin).toBe(header.tensors[i - 1]!.end);

    const wte = await tensor(source, header, 'transformer.wte.weight');
    expect(wte).toHaveLength(257 * 64);
    expect(Array.from(wte.subarray(0, 3))).toEqual([-0.1521483063697815, -0.10305647552013397, -0.15969054400920868]);
    expect(wte[wte.length - 1]).toBe(-0.1608303338289261);
    expect(wte.reduce((s, v) => s + v, 0)).toBeCloseTo(-1329.8544085769245, 6);
    const lnf = await tensor(source, header, 'transformer.ln_f.weight');
    expect(lnf[0]).toBe(1.131059169769287);
  });

  it('reads tiny-llama: GQA projections and an untied lm_head', async () => {
    const { source, header } = await open('tiny-llama/model.safetensors');
    expect(header.tensors).toHaveLength(21);
    const shape = (n: string) => header.tensors.find((t) => t.name === n)?.shape;
    expect(shape('lm_head.weight')).toEqual([257, 64]);
    expect(shape('model.embed_tokens.weight')).toEqual([257, 64]);
    expect(shape('model.layers.0.self_attn.k_proj.weight')).toEqual([32, 64]);
    expect(shape('model.layers.0.self_attn.v_proj.weight')).toEqual([32, 64]);
    expect(shape('model.layers.0.self_attn.q_proj.weight')).toEqual([64, 64]);
    expect(shape('model.layers.1.mlp.gate_proj.weight')).toEqual([176, 64]);
    expect(shape('model.layers.1.mlp.down_proj.weight')).toEqual([64, 176]);
    expect(shape('model.norm.weight')).toEqual([64]);
    const k = await tensor(source, header, 'model.layers.1.self_attn.k_proj.weight');
    expect(Array.from(k.subarray(0, 3))).toEqual([-0.012122442945837975, 0.08919152617454529, 0.11188982427120209]);
    expect(k[k.length - 1]).toBe(-0.047708846628665924);
  });

  it('reads both PEFT adapters', async () => {
    const gpt2 = await open('tiny-gpt2-adapter/adapter_model.safetensors');
    expect(gpt2.header.file).toBe('adapter_model.safetensors');
    expect(gpt2.header.tensors).toHaveLength(12);
    expect(gpt2.header.tensors[0]).toMatchObject({
      name: 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight',
      shape: [4, 64],
    });
    expect(gpt2.header.tensors.find((t) => t.name.endsWith('h.1.attn.c_attn.lora_B.weight'))?.shape).toEqual([192, 4]);

    const llama = await open('tiny-llama-adapter/adapter_model.safetensors');
    expect(llama.header.tensors.map((t) => t.name).filter((n) => n.includes('layers.0'))).toEqual([
      'base_model.model.model.layers.0.mlp.down_proj.lora_A.weight',
      'base_model.model.model.layers.0.mlp.down_proj.lora_B.weight',
      'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight',
      'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight',
      'base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight',
      'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight',
    ]);
    const b = await tensor(llama.source, llama.header, 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight');
    expect(b).toHaveLength(64 * 4);
    expect(Array.from(b.subarray(0, 3))).toEqual([-0.00898555014282465, 0.04375777766108513, 0.018827419728040695]);
    // B is non-zero in these fixtures; an all-zero read would mean we read the wrong bytes.
    expect(b.some((v) => v !== 0)).toBe(true);
  });

  for (const model of ['tiny-gpt2', 'tiny-llama']) {
    for (const [half, rel] of [['f16', 2 ** -11], ['bf16', 2 ** -8]] as const) {
      it(`${model}-${half} converts to within ${half} rounding of the F32 copy`, async () => {
        const full = await open(`${model}/model.safetensors`);
        const copy = await open(`${model}-${half}/model.safetensors`);
        expect(copy.header.tensors.map((t) => [t.name, t.shape])).toEqual(full.header.tensors.map((t) => [t.name, t.shape]));
        // f16 subnormals are spaced 2^-24 apart, so tiny weights can be off by half that in absolute terms.
        const abs = half === 'f16' ? 2 ** -24 : 2 ** -126;
        let differing = 0;
        let count = 0;
        for (const entry of copy.header.tensors) {
          expect(entry.dtype).toBe(half === 'f16' ? 'F16' : 'BF16');
          const h = toFloat32(entry.dtype, await readTensorBytes(copy.source, entry));
          const f = await tensor(full.source, full.header, entry.name);
          expect(h.length).toBe(f.length);
          for (let i = 0; i < f.length; i++) {
            const err = Math.abs(h[i]! - f[i]!);
            if (!(err <= rel * Math.abs(f[i]!) + abs)) {
              throw new Error(`${entry.name}[${i}]: ${h[i]} vs ${f[i]}`);
            }
            if (err > 0) differing++;
          }
          count += f.length;
        }
        // Most float32 weights are not representable in half precision; if nothing differs we compared a file to itself.
        expect(differing).toBeGreaterThan(count / 2);
      });
    }
  }

  it('bf16 fixture bits are exactly the round-to-nearest-even of the F32 weights', async () => {
    const full = await open('tiny-llama/model.safetensors');
    const copy = await open('tiny-llama-bf16/model.safetensors');
    for (const entry of copy.header.tensors) {
      const raw = await readTensorBytes(copy.source, entry);
      const bits16 = new Uint16Array(raw.buffer, raw.byteOffset, raw.length / 2);
      const f = await tensor(full.source, full.header, entry.name);
      const bits32 = new Uint32Array(Float32Array.from(f).buffer);
      for (let i = 0; i < bits32.length; i++) {
        const b = bits32[i]!;
        const rounded = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
        expect(bits16[i]).toBe(rounded);
      }
    }
  });

  it('decodes known half values from the F16 and BF16 copies', async () => {
    const f16 = await open('tiny-gpt2-f16/model.safetensors');
    const bf16 = await open('tiny-gpt2-bf16/model.safetensors');
    const a = await tensor(f16.source, f16.header, 'transformer.wte.weight');
    const b = await tensor(bf16.source, bf16.header, 'transformer.wte.weight');
    expect(Array.from(a.subarray(0, 3))).toEqual([-0.152099609375, -0.10302734375, -0.15966796875]);
    expect(Array.from(b.subarray(0, 3))).toEqual([-0.15234375, -0.10302734375, -0.16015625]);
  });

  it('blobSource reads the same header and bytes as bytesSource', async () => {
    const bytes = fixture('tiny-llama-f16/model.safetensors');
    const blob = blobSource(new Blob([bytes]), 'model.safetensors');
    expect(blob.size).toBe(bytes.length);
    const fromBlob = await readHeader(blob);
    const fromBytes = await readHeader(bytesSource('model.safetensors', bytes));
    expect(fromBlob).toEqual(fromBytes);
    for (const entry of fromBlob.tensors) {
      expect(await readTensorBytes(blob, entry)).toEqual(bytes.subarray(entry.begin, entry.end));
    }
  });

  it('blobSource takes the name of a File', () => {
    const file = new File([new Uint8Array(3)], 'picked.safetensors');
    expect(blobSource(file).name).toBe('picked.safetensors');
    expect(blobSource(file, 'other').name).toBe('other');
  });
});

describe('toFloat32', () => {
  it('decodes known F16 values', () => {
    const out = toFloat32(
      'F16',
      u16le([0x3c00, 0xc100, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x7c00, 0xfc00, 0x7e00, 0x8000, 0x0000, 0x3555, 0x8001]),
    );
    expect(Array.from(out.subarray(0, 8))).toEqual([1, -2.5, 65504, 2 ** -24, 1023 * 2 ** -24, 2 ** -14, Infinity, -Infinity]);
    expect(out[8]).toBeNaN();
    expect(Object.is(out[9], -0)).toBe(true);
    expect(Object.is(out[10], 0)).toBe(true);
    expect(out[11]).toBe(0.333251953125);
    expect(out[12]).toBe(-(2 ** -24));
  });

  it('decodes known BF16 values', () => {
    const out = toFloat32('BF16', u16le([0x3f80, 0xc020, 0x477f, 0x0001, 0x7f7f, 0x7f80, 0xff80, 0x7fc0, 0x8000, 0x3eab]));
    expect(Array.from(out.subarray(0, 7))).toEqual([1, -2.5, 65280, 2 ** -133, 3.3895313892515355e38, Infinity, -Infinity]);
    expect(out[7]).toBeNaN();
    expect(Object.is(out[8], -0)).toBe(true);
    expect(out[9]).toBe(0.333984375);
  });

  it('keeps NaN payload bits for both half types', () => {
    const bf = toFloat32('BF16', u16le([0x7f81, 0xffc1]));
    expect(Array.from(new Uint32Array(bf.buffer))).toEqual([0x7f810000, 0xffc10000]);
    const f = toFloat32('F16', u16le([0x7c01, 0xfe00]));
    expect(Array.from(new Uint32Array(f.buffer))).toEqual([0x7f802000, 0xffc00000]);
  });

  it('decodes F32 little-endian bytes', () => {
    const bytes = new Uint8Array([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0, 0x01, 0x00, 0x00, 0x00]);
    expect(Array.from(toFloat32('F32', bytes))).toEqual([1, -2.5, 2 ** -149]);
  });

  for (const dtype of ['F16', 'BF16'] as const) {
    it(`agrees with the portable decoder on all 65536 ${dtype} bit patterns`, () => {
      const all = new Uint16Array(65536).map((_, i) => i);
      const bytes = new Uint8Array(all.buffer);
      const fast = toFloat32(dtype, bytes);
      const slow = toFloat32Portable(dtype, bytes);
      for (let i = 0; i < 65536; i++) {
        if (!Object.is(fast[i], slow[i])) throw new Error(`${dtype} 0x${i.toString(16)}: ${fast[i]} vs ${slow[i]}`);
      }
      expect(fast[0x3c00]).toBe(dtype === 'F16' ? 1 : 2 ** -7);
    });
  }

  it('handles unaligned bytes by copying, and returns a view for aligned F32', () => {
    const values = new Float32Array([1.5, -3, 7.25, 1e-40]);
    const padded = new Uint8Array(1 + values.byteLength);
    padded.set(new Uint8Array(values.buffer), 1);
    const unaligned = padded.subarray(1);
    expect(Array.from(toFloat32('F32', unaligned))).toEqual(Array.from(values));

    const aligned = new Uint8Array(values.buffer);
    const view = toFloat32('F32', aligned);
    expect(view.buffer).toBe(values.buffer);
    expect(Array.from(view)).toEqual(Array.from(values));

    const half = u16le([0x3c00, 0xc100, 0x3555]);
    const odd = new Uint8Array(half.length + 1);
    odd.set(half, 1);
    for (const dtype of ['F16', 'BF16'] as const) {
      expect(Array.from(toFloat32(dtype, odd.subarray(1)))).toEqual(Array.from(toFloat32(dtype, half)));
    }
  });

  it('rejects a byte count that is not a whole number of elements', () => {
    expect(() => toFloat32('F32', new Uint8Array(6))).toThrow(RangeError);
    expect(() => toFloat32('BF16', new Uint8Array(3))).toThrow(/whole number of BF16 elements/);
  });

  it('exposes the element sizes', () => {
    expect(BYTES_PER_ELEMENT).toEqual({ F32: 4, F16: 2, BF16: 2 });
  });
});

describe('writeSafetensors', () => {
  const sample = [
    { name: 'b.weight', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
    { name: 'a.bias', shape: [3], data: new Float32Array([-0, NaN, Infinity]) },
    { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
    { name: 'scalar', shape: [], data: new Float32Array([0.1]) },
  ];

  it('round-trips data and metadata through readHeader, readTensorBytes and toFloat32', async () => {
    const file = writeSafetensors(sample, { format: 'pt', note: 'é ✓' });
    const source = bytesSource('adapter.safetensors', file);
    const header = await readHeader(source);
    expect(header.metadata).toEqual({ format: 'pt', note: 'é ✓' });
    expect(header.tensors.map((t) => t.name)).toEqual(['a.bias', 'b.weight', 'empty', 'scalar']);
    for (const t of sample) {
      const entry = header.tensors.find((e) => e.name === t.name)!;
      expect(entry.dtype).toBe('F32');
      expect(entry.shape).toEqual(t.shape);
      const back = toFloat32('F32', await readTensorBytes(source, entry));
      expect(back).toHaveLength(t.data.length);
      for (let i = 0; i < t.data.length; i++) expect(Object.is(back[i], t.data[i])).toBe(true);
    }
  });

  it('lays the file out like the Python library: sorted keys, compact JSON, contiguous offsets from 0', () => {
    const file = writeSafetensors(sample, { format: 'pt' });
    const text = headerText(file);
    expect(text.trimEnd()).toBe(
      '{"__metadata__":{"format":"pt"},' +
        '"a.bias":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},' +
        '"b.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[12,36]},' +
        '"empty":{"dtype":"F32","shape":[0,4],"data_offsets":[36,36]},' +
        '"scalar":{"dtype":"F32","shape":[],"data_offsets":[36,40]}}',
    );
    expect(file.length).toBe(8 + text.length + 40);
  });

  it('omits __metadata__ when none is given and writes {} for no tensors', async () => {
    expect(headerText(writeSafetensors(sample.slice(0, 1)))).toMatch(/^\{"b\.weight":/);
    const empty = writeSafetensors([]);
    expect(headerText(empty)).toBe('{}      ');
    expect(empty.length).toBe(16);
    const header = await readHeader(bytesSource('empty.safetensors', empty));
    expect(header.tensors).toEqual([]);
    expect(header.metadata).toEqual({});
  });

  it('pads the header with spaces to a multiple of 8 for every name length', async () => {
    for (let extra = 0; extra < 8; extra++) {
      const file = writeSafetensors([{ name: 'x'.repeat(extra + 1), shape: [1], data: new Float32Array([extra]) }]);
      const text = headerText(file);
      expect(text.length % 8).toBe(0);
      expect(text).toMatch(/^\{.*\} *$/);
      expect(text.length - text.trimEnd().length).toBeLessThan(8);
      const header = await readHeader(bytesSource('p.safetensors', file));
      expect(header.dataStart % 8).toBe(0);
    }
  });

  it('sorts names and metadata keys by UTF-8 bytes, as Rust does', () => {
    const one = (name: string) => ({ name, shape: [1], data: new Float32Array(1) });
    // "\u{FF5E}" < "\u{1F600}" in UTF-8 and code points, but not in UTF-16 code units.
    const file = writeSafetensors([one('\u{1F600}'), one('b.2'), one('\u{FF5E}'), one('b.10'), one('B')], { '9': 'x', '10': 'y', a: 'z' });
    const names = [...headerText(file).matchAll(/"([^"]+)":\{"dtype"/g)].map((m) => m[1]);
    expect(names).toEqual(['B', 'b.10', 'b.2', '\u{FF5E}', '\u{1F600}']);
    expect(headerText(file)).toMatch(/^\{"__metadata__":\{"10":"y","9":"x","a":"z"\},/);
  });

  for (const rel of [
    'tiny-gpt2/model.safetensors',
    'tiny-llama/model.safetensors',
    'tiny-gpt2-adapter/adapter_model.safetensors',
    'tiny-llama-adapter/adapter_model.safetensors',
  ]) {
    it(`rewrites ${rel} byte for byte as the Python library saved it`, async () => {
      const { source, header, bytes } = await open(rel);
      const tensors = [];
      // Reversed so the writer has to do the sorting itself.
      for (const entry of [...header.tensors].reverse()) {
        tensors.push({ name: entry.name, shape: entry.shape, data: toFloat32(entry.dtype, await readTensorBytes(source, entry)) });
      }
      const written = writeSafetensors(tensors, { ...header.metadata });
      expect(written.length).toBe(bytes.length);
      expect(headerText(written)).toBe(headerText(bytes));
      expect(Buffer.compare(written, bytes)).toBe(0);
    });
  }

  it('rejects arguments that are bugs in the caller', () => {
    const t = { name: 'w', shape: [2], data: new Float32Array(2) };
    expect(() => writeSafetensors([t, t])).toThrow(/duplicate tensor name "w"/);
    expect(() => writeSafetensors([{ ...t, shape: [3] }])).toThrow(/shape \[3\] \(3 elements\) but 2 values/);
    expect(() => writeSafetensors([{ ...t, shape: [-2] }])).toThrow(/invalid shape/);
    expect(() => writeSafetensors([{ ...t, name: '__metadata__' }])).toThrow(/reserved/);
  });
});

describe('readHeader rejects bad files', () => {
  const FILE = 'broken.safetensors';
  // a: [0,24), b: [24,40), c: [40,56) in a 56-byte data section.
  const base = writeSafetensors(
    [
      { name: 'a', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) },
      { name: 'b', shape: [4], data: new Float32Array([7, 8, 9, 10]) },
      { name: 'c', shape: [2, 2], data: new Float32Array([11, 12, 13, 14]) },
    ],
    { format: 'pt' },
  );
  const baseHeaderLength = Number(new DataView(base.buffer).getBigUint64(0, true));
  const baseData = base.subarray(8 + baseHeaderLength);

  function assemble(header: string, data: Uint8Array = baseData): Uint8Array {
    const json = new TextEncoder().encode(header);
    const padded = Math.ceil(json.length / 8) * 8;
    const out = new Uint8Array(8 + padded + data.length).fill(0x20, 8, 8 + padded);
    new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
    out.set(json, 8);
    out.set(data, 8 + padded);
    return out;
  }

  // Tests poke arbitrary JSON into the header, so the parsed header is deliberately untyped.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  function edit(change: (h: any) => void, data: Uint8Array = baseData): Uint8Array {
    const h: unknown = JSON.parse(headerText(base));
    change(h);
    return assemble(JSON.stringify(h), data);
  }

  function withLength(file: Uint8Array, length: bigint): Uint8Array {
    const copy = file.slice();
    new DataView(copy.buffer).setBigUint64(0, length, true);
    return copy;
  }

  async function rejects(bytes: Uint8Array, pattern: RegExp): Promise<UserError> {
    const error: unknown = await readHeader(bytesSource(FILE, bytes)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(UserError);
    expect(isUserError(error)).toBe(true);
    const ue = error as UserError;
    expect(ue.subject).toBe(FILE);
    expect(ue.message.startsWith(`${FILE}: `)).toBe(true);
    expect(ue.message).toMatch(pattern);
    return ue;
  }

  it('accepts the untouched base file (so every failure below is caused by its corruption)', async () => {
    const header = await readHeader(bytesSource(FILE, base));
    expect(header.tensors.map((t) => [t.name, t.begin - header.dataStart, t.end - header.dataStart])).toEqual([
      ['a', 0, 24],
      ['b', 24, 40],
      ['c', 40, 56],
    ]);
    await expect(readHeader(bytesSource(FILE, assemble(headerText(base).trimEnd())))).resolves.toBeTruthy();
  });

  it('a file shorter than 8 bytes', async () => {
    await rejects(base.subarray(0, 7), /only 7 bytes long, too short to be a safetensors file/);
    await rejects(new Uint8Array(0), /only 0 bytes long/);
  });

  it('a header length longer than the file', async () => {
    await rejects(withLength(base, 123456n), new RegExp(`header says it is 123456 bytes long but the file has only ${base.length} bytes; the file is truncated`));
    await rejects(withLength(base, BigInt(base.length - 7)), /bytes long but the file has only .* truncated or not a safetensors file/);
    // The limit itself is allowed; this small file is merely too short for it.
    await rejects(withLength(base, 100_000_000n), /header says it is 100000000 bytes long/);
  });

  it('an absurd header length, reported exactly even beyond 2^53', async () => {
    await rejects(withLength(base, 100_000_001n), /100000001 bytes, which is absurdly large/);
    await rejects(withLength(base, 2n ** 60n + 1n), /1152921504606846977 bytes, which is absurdly large/);
    await rejects(withLength(base, 2n ** 64n - 1n), /18446744073709551615 bytes/);
  });

  it('a header that is not UTF-8', async () => {
    const bytes = base.slice();
    const at = headerText(base).indexOf('"a"') + 1;
    bytes[8 + at] = 0xff;
    await rejects(bytes, /header is not valid UTF-8/);
  });

  it('a header that is not JSON', async () => {
    const bytes = base.slice();
    bytes[8] = 'x'.charCodeAt(0);
    await rejects(bytes, /header is not valid JSON/);
    await rejects(assemble('{"a": {"dtype": "F32"'), /header is not valid JSON/);
    // Headers must be padded with spaces; NUL padding is not JSON whitespace.
    await rejects(assemble(headerText(base).trimEnd() + '\0'), /header is not valid JSON/);
    // A UTF-8 byte order mark is not JSON either; the reference implementation rejects it too.
    await rejects(assemble('\uFEFF' + headerText(base).trimEnd()), /header is not valid JSON/);
  });

  it('a header that is JSON but not an object', async () => {
    await rejects(assemble('[]', new Uint8Array(0)), /header is an array instead of a JSON object/);
    await rejects(assemble('null', new Uint8Array(0)), /header is null instead of a JSON object/);
    await rejects(assemble('42', new Uint8Array(0)), /header is a number instead of a JSON object/);
    await rejects(assemble('"{}"', new Uint8Array(0)), /header is a string instead of a JSON object/);
  });

  it('a tensor entry that is not an object', async () => {
    await rejects(edit((h) => (h.b = 5)), /tensor "b" must be an object with "dtype", "shape" and "data_offsets", but it is a number/);
    await rejects(edit((h) => (h.b = [])), /tensor "b" must be an object.* but it is an array/);
  });

  it('a tensor entry missing dtype, shape or data_offsets', async () => {
    for (const field of ['dtype', 'shape', 'data_offsets']) {
      await rejects(
        edit((h) => delete h.b[field]),
        new RegExp(`tensor "b" has no "${field}"`),
      );
    }
  });

  it('fields of the wrong type', async () => {
    await rejects(edit((h) => (h.a.dtype = 32)), /tensor "a" has a "dtype" that is a number instead of a string/);
    await rejects(edit((h) => (h.a.shape = '2x3')), /tensor "a" has a "shape" that is a string instead of a list/);
    await rejects(edit((h) => (h.a.data_offsets = [0])), /tensor "a" has "data_offsets" \[0\] instead of a list of two numbers/);
    await rejects(edit((h) => (h.a.data_offsets = '0,24')), /tensor "a" has "data_offsets" "0,24" instead of a list of two/);
    await rejects(edit((h) => (h.a.data_offsets = [0, 24, 48])), /tensor "a" has "data_offsets" \[0,24,48\] instead/);
  });

  it('negative, fractional or non-numeric shape dimensions', async () => {
    await rejects(edit((h) => (h.a.shape = [2, -3])), /tensor "a" has an invalid shape \[2,-3\]: every dimension must be a whole number/);
    await rejects(edit((h) => (h.a.shape = [2, 1.5])), /tensor "a" has an invalid shape \[2,1\.5\]/);
    await rejects(edit((h) => (h.a.shape = [2, '3'])), /tensor "a" has an invalid shape \[2,"3"\]/);
    await rejects(edit((h) => (h.a.shape = [2, null])), /tensor "a" has an invalid shape \[2,null\]/);
  });

  it('negative, fractional or non-numeric data offsets', async () => {
    await rejects(edit((h) => (h.b.data_offsets = [-8, 8])), /tensor "b" has invalid data_offsets \[-8,8\]: both must be whole numbers/);
    await rejects(edit((h) => (h.b.data_offsets = [24, 40.5])), /tensor "b" has invalid data_offsets \[24,40\.5\]/);
    await rejects(edit((h) => (h.b.data_offsets = ['24', 40])), /tensor "b" has invalid data_offsets/);
    // Past 2^53 JSON numbers are rounded, so they cannot be trusted as offsets.
    await rejects(assemble(headerText(base).replace('[24,40]', '[24,18446744073709551616]')), /tensor "b" has invalid data_offsets/);
  });

  it('dtypes LoRA Lab does not support, naming the tensor, the dtype and the supported ones', async () => {
    for (const dtype of ['I8', 'I32', 'F64', 'BOOL', 'U8', 'F8_E4M3']) {
      const e = await rejects(
        edit((h) => (h.c.dtype = dtype)),
        new RegExp(`tensor "c" has dtype ${dtype}, which is not supported by LoRA Lab \\(supported: F32, F16, BF16\\)`),
      );
      expect(e.fix).toMatch(/F32, F16, BF16/);
    }
    await rejects(edit((h) => (h.c.dtype = 'Q4_K')), /tensor "c" has dtype "Q4_K", which is not a safetensors dtype; LoRA Lab supports F32, F16, BF16/);
    await rejects(edit((h) => (h.c.dtype = 'f32')), /dtype "f32", which is not a safetensors dtype/);
  });

  it('data_offsets that end before they begin', async () => {
    await rejects(edit((h) => (h.b.data_offsets = [40, 24])), /tensor "b" has data_offsets \[40, 24\] that end before they begin/);
  });

  it('a byte length that does not match shape and dtype', async () => {
    await rejects(
      edit((h) => (h.a.shape = [2, 2])),
      /tensor "a" has shape \[2, 2\] of dtype F32, which needs 16 bytes, but its data_offsets \[0, 24\] span 24 bytes/,
    );
    await rejects(edit((h) => (h.a.dtype = 'F16')), /tensor "a" has shape \[2, 3\] of dtype F16, which needs 12 bytes.* span 24 bytes/);
    await rejects(edit((h) => (h.a.shape = [2 ** 40, 2 ** 40])), /tensor "a" has shape .* impossibly large/);
  });

  it('a truncated file whose tensors run past its end', async () => {
    const e = await rejects(base.subarray(0, base.length - 8), /tensor "c" ends at byte 56 of the data section but the file has only 48 bytes of data; the file is truncated/);
    expect(e.fix).toMatch(/download/);
    // Cut inside the second tensor: "b" is the first one reported.
    await rejects(base.subarray(0, base.length - 20), /tensor "b" ends at byte 40 .* only 36 bytes of data; the file is truncated/);
    await rejects(base.subarray(0, 8 + baseHeaderLength), /tensor "a" ends at byte 24 .* only 0 bytes of data/);
  });

  it('overlapping tensors, naming both', async () => {
    await rejects(
      edit((h) => {
        h.b.data_offsets = [16, 32];
        h.c.data_offsets = [32, 48];
      }, baseData.subarray(0, 48)),
      /tensors "a" \(bytes 0 to 24\) and "b" \(bytes 16 to 32\) overlap/,
    );
    // Two tensors over exactly the same bytes.
    await rejects(
      edit((h) => {
        h.c.shape = [4];
        h.c.data_offsets = [24, 40];
      }, baseData.subarray(0, 40)),
      /tensors "b" .* and "c" .* overlap/,
    );
  });

  it('holes between tensors or before the first one', async () => {
    const gap = new Uint8Array(64);
    gap.set(baseData.subarray(0, 24), 0);
    gap.set(baseData.subarray(24), 32);
    await rejects(
      edit((h) => {
        h.b.data_offsets = [32, 48];
        h.c.data_offsets = [48, 64];
      }, gap),
      /8 bytes between tensors "a" and "b" belong to no tensor/,
    );
    const shifted = new Uint8Array(64);
    shifted.set(baseData, 8);
    await rejects(
      edit((h) => {
        for (const k of ['a', 'b', 'c']) h[k].data_offsets = h[k].data_offsets.map((o: number) => o + 8);
      }, shifted),
      /8 bytes before the first tensor "a" belong to no tensor/,
    );
  });

  it('bytes left over after the last tensor', async () => {
    const longer = new Uint8Array(base.length + 4);
    longer.set(base);
    await rejects(longer, /4 bytes at the end of the file after the last tensor "c" belong to no tensor/);
    await rejects(assemble('{}', new Uint8Array(3)), /3 bytes at the end of the file in the data section, which has no tensors/);
  });

  it('a __metadata__ that is not an object of strings', async () => {
    await rejects(edit((h) => (h.__metadata__ = 'pt')), /"__metadata__" entry must be an object of strings, but it is a string/);
    await rejects(edit((h) => (h.__metadata__ = ['pt'])), /"__metadata__" entry must be an object of strings, but it is an array/);
    await rejects(edit((h) => (h.__metadata__ = null)), /"__metadata__" entry .* but it is null/);
    await rejects(edit((h) => (h.__metadata__ = { format: 'pt', step: 3 })), /"__metadata__" value for "step" must be a string, but it is a number/);
  });

  it('a fixture with one byte of its data missing', async () => {
    const bytes = fixture('tiny-gpt2-bf16/model.safetensors');
    const error = await readHeader(bytesSource('model.safetensors', bytes.subarray(0, bytes.length - 1))).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).toMatch(/^model\.safetensors: tensor "transformer\.wte\.weight" ends at byte \d+ .* truncated/);
  });
});

describe('readTensorBytes', () => {
  const file = writeSafetensors([{ name: 'w', shape: [4], data: new Float32Array([1, 2, 3, 4]) }]);

  it('returns bytes the caller owns', async () => {
    const source = bytesSource('w.safetensors', file);
    const [entry] = (await readHeader(source)).tensors;
    const bytes = await readTensorBytes(source, entry!);
    bytes.fill(0);
    expect(Array.from(toFloat32('F32', await readTensorBytes(source, entry!)))).toEqual([1, 2, 3, 4]);
  });

  it('rejects a short read (a file that changed after its header was read)', async () => {
    const real = bytesSource('w.safetensors', file);
    const [entry] = (await readHeader(real)).tensors;
    const shrinking: ByteSource = {
      name: 'w.safetensors',
      size: file.length,
      read: async (begin, end) => (await real.read(begin, end)).subarray(0, Math.max(0, end - begin - 4)),
    };
    const error = await readTensorBytes(shrinking, entry!).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as UserError).subject).toBe('w.safetensors');
    expect((error as UserError).message).toMatch(/tensor "w" .* returned only 12 of 16 bytes; the file is truncated or changed/);
  });

  it('rejects an entry that lies beyond the end of the source', async () => {
    const [entry] = (await readHeader(bytesSource('w.safetensors', file))).tensors;
    const small = bytesSource('other.safetensors', file.subarray(0, file.length - 1));
    const error = await readTensorBytes(small, entry!).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as Error).message).toMatch(/^other\.safetensors: tensor "w" ends at byte \d+ but the file has only \d+ bytes/);
  });

  it('turns an unreadable File into a UserError asking to pick it again', async () => {
    const gone = {
      size: 64,
      name: 'moved.safetensors',
      slice: () => ({ arrayBuffer: () => Promise.reject(new DOMException('The file could not be read', 'NotReadableError')) }),
    } as unknown as Blob;
    const error = await readHeader(blobSource(gone)).catch((e: unknown) => e);
    expect(isUserError(error)).toBe(true);
    expect((error as UserError).subject).toBe('moved.safetensors');
    expect((error as UserError).message).toMatch(/could not be read .*moved, changed or deleted/);
    expect((error as UserError).fix).toMatch(/Pick the file again/);
  });
});

describe('metadata in fixture files', () => {
  it('is frozen so callers cannot corrupt a shared header', async () => {
    const { header } = await open('tiny-llama-adapter/adapter_model.safetensors');
    expect(Object.isFrozen(header.metadata)).toBe(true);
    expect(Object.isFrozen(header.tensors)).toBe(true);
    expect(Object.isFrozen(header.tensors[0]!.shape)).toBe(true);
    const dtypes = new Set<Dtype>(header.tensors.map((t) => t.dtype));
    expect([...dtypes]).toEqual(['F32']);
  });
});
