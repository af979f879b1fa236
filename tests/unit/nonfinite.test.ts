// Gives Node the IndexedDB globals the storage layer uses in the browser.
import 'fake-indexeddb/auto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deleteDB } from 'idb';
import { beforeEach, describe, expect, it } from 'vitest';
import { isUserError, type UserError } from '../../src/core/errors';
import { FiniteScan, firstNonFinite } from '../../src/core/safetensors/finite';
import { bytesSource, type ByteSource } from '../../src/core/safetensors/index';
import { closeDatabase, DB_NAME, openDatabase, type LoraLabDb } from '../../src/storage/db';
import { importModel } from '../../src/storage/import-model';
import { localLocks } from '../../src/storage/locks';
import { listModels } from '../../src/storage/models';

// A checkpoint whose weights hold NaN or ±Inf is refused at import, naming the tensor, with nothing stored.
// The scan reads exponent bits; the expected answers here come from decoding the values as numbers.

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

/** The float a 16-bit pattern stands for, decoded by arithmetic (IEEE half, or bfloat16 as the top of a float32). */
function decode16(dtype: 'F16' | 'BF16', bits: number): number {
  if (dtype === 'BF16') {
    const view = new DataView(new ArrayBuffer(4));
    view.setUint32(0, bits << 16);
    return view.getFloat32(0);
  }
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant ? Number.NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

const le16 = (bits: number) => new Uint8Array([bits & 0xff, bits >> 8]);
const f32Bytes = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

describe('firstNonFinite', () => {
  it.each(['F16', 'BF16'] as const)('%s: flags exactly the 16-bit patterns that decode to NaN or ±Inf (all 65536)', (dtype) => {
    let flagged = 0;
    for (let bits = 0; bits < 65536; bits++) {
      const expected = Number.isFinite(decode16(dtype, bits)) ? -1 : 0;
      if (firstNonFinite(dtype, le16(bits)) !== expected) throw new Error(`${dtype} 0x${bits.toString(16)}: wrong answer`);
      if (expected === 0) flagged++;
    }
    // 2 × 2^10 patterns in F16 (±, every mantissa), 2 × 2^7 in BF16.
    expect(flagged).toBe(dtype === 'F16' ? 2048 : 256);
  });

  it('F32: NaN, +Inf and -Inf are found; the largest finite values, subnormals and -0 are not', () => {
    const finite = [0, -0, 1.5, -3.4028234663852886e38, 3.4028234663852886e38, 1e-45, -1e-45];
    expect(firstNonFinite('F32', f32Bytes(finite))).toBe(-1);
    for (const bad of [Number.NaN, Infinity, -Infinity]) {
      expect(firstNonFinite('F32', f32Bytes([...finite, bad, 1]))).toBe(finite.length);
    }
    // A NaN with another payload (not the one JavaScript writes) is still NaN.
    const payload = new Uint8Array(4);
    new DataView(payload.buffer).setUint32(0, 0xffc00001, true);
    expect(firstNonFinite('F32', payload)).toBe(0);
  });

  it('reads misaligned slices (a view at an odd byte offset) correctly', () => {
    const backing = new Uint8Array(1 + 4 * 5);
    backing.set(f32Bytes([1, 2, 3, Number.NaN, 5]), 1);
    expect(firstNonFinite('F32', backing.subarray(1))).toBe(3);
  });
});

describe('FiniteScan over slices', () => {
  const values = Array.from({ length: 37 }, (_, i) => (i === 23 ? Number.NaN : i / 7 - 2));
  const bytes = f32Bytes(values);

  it.each(Array.from({ length: 20 }, (_, i) => i + 1))('slices of %i bytes: the bad element is reported once, at its index', (size) => {
    const scan = new FiniteScan('F32');
    const reports: number[] = [];
    for (let at = 0; at < bytes.length; at += size) {
      const found = scan.push(bytes.subarray(at, Math.min(bytes.length, at + size)));
      if (found >= 0) reports.push(found);
    }
    expect(reports).toEqual([23]);
    expect(scan.scanned).toBe(37);
  });

  it('a bf16 +Inf split across two slices is found in the second', () => {
    const scan = new FiniteScan('BF16');
    const data = new Uint8Array([0x80, 0x3f, 0x80, 0x7f]); // 1.0, +Inf (little-endian)
    expect(scan.push(data.subarray(0, 3))).toBe(-1);
    expect(scan.push(data.subarray(3))).toBe(1);
  });
});

// ─── At import ──────────────────────────────────────────────────────────────────────────────────────────────────

let db: LoraLabDb;

beforeEach(async () => {
  await closeDatabase();
  await deleteDB(DB_NAME);
  db = await openDatabase();
});

/** A fixture folder as the picker hands it over, with model.safetensors replaced by `weights`. */
function folder(dir: string, weights?: Uint8Array): ByteSource[] {
  return readdirSync(join(FIXTURES, dir)).map((name) => {
    const bytes = name === 'model.safetensors' && weights ? weights : new Uint8Array(readFileSync(join(FIXTURES, dir, name)));
    return bytesSource(`${dir}/${name}`, bytes);
  });
}

/** The file with element `index` of tensor `name` overwritten by `element` (bytes in the file's dtype), found by parsing the header here. */
function poisoned(dir: string, name: string, index: number, element: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(readFileSync(join(FIXTURES, dir, 'model.safetensors')));
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength))) as Record<string, { data_offsets: [number, number] }>;
  const [begin, end] = header[name]!.data_offsets;
  const at = 8 + headerLength + begin + index * element.length;
  expect(at + element.length).toBeLessThanOrEqual(8 + headerLength + end);
  bytes.set(element, at);
  return bytes;
}

async function refusal(promise: Promise<unknown>): Promise<UserError> {
  try {
    await promise;
  } catch (e) {
    if (isUserError(e)) return e;
    throw e;
  }
  throw new Error('expected the import to be refused');
}

async function expectNothingStored(): Promise<void> {
  expect(await db.count('models')).toBe(0);
  expect(await db.count('tensors')).toBe(0);
}

const TENSOR = 'transformer.h.0.attn.c_attn.weight';

describe('importModel refuses non-finite weights', () => {
  // With 1001-byte slices, F32 element 750 (bytes 3000..3003) and 16-bit element 500 (bytes 1000..1001) straddle a
  // slice boundary, so the bad value is only whole in the scan's carried bytes.
  it.each([
    ['tiny-gpt2', 'NaN', f32Bytes([Number.NaN]), 750],
    ['tiny-gpt2', '-Inf', f32Bytes([-Infinity]), 751],
    ['tiny-gpt2-f16', '+Inf', le16(0x7c00), 500],
    ['tiny-gpt2-bf16', 'NaN', le16(0x7fc0), 500],
  ] as const)('%s with a %s: refused, the tensor named, nothing stored', async (dir, _what, element, index) => {
    const e = await refusal(importModel(db, folder(dir, poisoned(dir, TENSOR, index, element)), { name: dir, chunkBytes: 1001, locks: localLocks() }));
    expect(e.subject).toBe(`${dir}/model.safetensors`);
    expect(e.message).toContain(`tensor ${TENSOR}`);
    expect(e.message).toContain(`element ${index}`);
    expect(e.message).toMatch(/NaN or infinite/);
    await expectNothingStored();
  });

  it('a whole tensor of NaN is refused at its first element; the untouched checkpoint imports', async () => {
    const nan = f32Bytes(Array.from({ length: 64 * 192 }, () => Number.NaN));
    const e = await refusal(importModel(db, folder('tiny-gpt2', poisoned('tiny-gpt2', TENSOR, 0, nan)), { name: 'nan', locks: localLocks() }));
    expect(e.message).toContain(`tensor ${TENSOR} (element 0 of 64×192)`);
    await expectNothingStored();

    const ok = await importModel(db, folder('tiny-gpt2'), { name: 'fine', locks: localLocks() });
    expect((await listModels(db)).map((m) => m.id)).toEqual([ok.id]);
  });
});
