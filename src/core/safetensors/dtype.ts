/**
 * Element types LoRA Lab can load, and their conversion to float32.
 *
 * Everything here assumes a little-endian platform for the fast paths (every browser and Node build we target
 * is); on a big-endian one `toFloat32` silently switches to a slower DataView decoder so results stay correct.
 */

export type Dtype = 'F32' | 'F16' | 'BF16';

export const BYTES_PER_ELEMENT: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2 };

export const SUPPORTED_DTYPES: readonly Dtype[] = ['F32', 'F16', 'BF16'];

export function isSupportedDtype(s: string): s is Dtype {
  return s === 'F32' || s === 'F16' || s === 'BF16';
}

/**
 * The other dtypes the safetensors format defines. Knowing them lets an error say "valid, but LoRA Lab cannot
 * use it" (a quantized or float64 model) rather than "this file is broken".
 */
export const OTHER_SAFETENSORS_DTYPES: ReadonlySet<string> = new Set([
  'BOOL', 'U8', 'I8', 'I16', 'U16', 'I32', 'U32', 'I64', 'U64', 'F64',
  'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4', 'C64',
]);

/** Typed arrays use the platform's byte order; the file is always little-endian. */
export const PLATFORM_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let f16Table: Float32Array | undefined;

/**
 * All 65536 half-precision values as float32. A table lookup is both the fastest decoder in JS (one load per
 * element, no branches) and trivially exact; 256 KB, built once on first use.
 */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const table = new Float32Array(65536);
  const bits = new Uint32Array(table.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = h >>> 15;
    const exp = (h >>> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) {
      // Zero and subnormals: mant * 2^-24 is exact in float32, and the sign multiply keeps -0.
      table[h] = (sign ? -1 : 1) * mant * 2 ** -24;
    } else if (exp === 0x1f) {
      // Built from bits, not from Infinity/NaN constants, so NaN payloads survive like they do for BF16.
      bits[h] = (sign << 31) | 0x7f800000 | (mant << 13);
    } else {
      // Rebias the exponent from 15 to 127 and widen the mantissa from 10 to 23 bits.
      bits[h] = (sign << 31) | ((exp - 15 + 127) << 23) | (mant << 13);
    }
  }
  f16Table = table;
  return table;
}

/** `bytes` as Uint16 elements, copying only when the offset is odd (typed array views must be aligned). */
function asUint16(bytes: Uint8Array): Uint16Array {
  const b = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
  return new Uint16Array(b.buffer, b.byteOffset, b.length / 2);
}

function checkLength(dtype: Dtype, bytes: Uint8Array): number {
  const size = BYTES_PER_ELEMENT[dtype];
  if (bytes.length % size !== 0) {
    // Callers get their bytes from readTensorBytes, which checks the length, so this is a bug, not a user error.
    throw new RangeError(`toFloat32: ${bytes.length} bytes is not a whole number of ${dtype} elements`);
  }
  return bytes.length / size;
}

/**
 * Converts raw little-endian bytes of `dtype` to float32. F16 and BF16 are exact (every half value is a float32),
 * including subnormals, ±inf, NaN and -0.
 *
 * For F32 the result SHARES MEMORY with `bytes` when `bytes` is 4-byte aligned (no copy for multi-GB models);
 * copy it first if the bytes must stay untouched. readTensorBytes always returns bytes the caller owns.
 */
export function toFloat32(dtype: Dtype, bytes: Uint8Array): Float32Array {
  const n = checkLength(dtype, bytes);
  if (!PLATFORM_IS_LITTLE_ENDIAN) return toFloat32Portable(dtype, bytes);
  switch (dtype) {
    case 'F32': {
      const b = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
      return new Float32Array(b.buffer, b.byteOffset, n);
    }
    case 'F16': {
      // Copied as integers: a float load/store would quiet signalling NaNs and so change their bits.
      const table = new Uint32Array(halfTable().buffer);
      const src = asUint16(bytes);
      const out = new Float32Array(n);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) outBits[i] = table[src[i]!]!;
      return out;
    }
    case 'BF16': {
      // BF16 is the top half of a float32, so widening is a shift; writing through Uint32 keeps NaN bits intact.
      const src = asUint16(bytes);
      const out = new Float32Array(n);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) outBits[i] = src[i]! << 16;
      return out;
    }
  }
}

/**
 * Byte-order independent decoder, written from the IEEE definitions rather than bit tricks. Used on big-endian
 * platforms, and by the tests as an independent oracle for the fast paths. NaN payloads are not preserved.
 */
export function toFloat32Portable(dtype: Dtype, bytes: Uint8Array): Float32Array {
  const n = checkLength(dtype, bytes);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(n);
  // BF16 bits become the high half of a big-endian float32 (low half zero), read back in the same order.
  const scratch = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < n; i++) {
    if (dtype === 'F32') {
      out[i] = view.getFloat32(i * 4, true);
    } else if (dtype === 'BF16') {
      scratch.setUint16(0, view.getUint16(i * 2, true));
      out[i] = scratch.getFloat32(0);
    } else {
      const h = view.getUint16(i * 2, true);
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const mant = h & 0x3ff;
      if (exp === 0) out[i] = sign * mant * 2 ** -24;
      else if (exp === 31) out[i] = mant ? NaN : sign * Infinity;
      else out[i] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
    }
  }
  return out;
}
