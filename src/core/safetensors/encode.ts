import { PLATFORM_IS_LITTLE_ENDIAN, type Dtype } from './dtype';

/**
 * float32 → the little-endian bytes of `dtype`, rounding to nearest, ties to even (what PyTorch's `.to()`
 * does), so a weight written back in its checkpoint's own dtype is the closest value that dtype holds.
 * The inverse of toFloat32: for every F16/BF16 value v, fromFloat32(dtype, toFloat32(dtype, v)) gives v back.
 */
export function fromFloat32(dtype: Dtype, values: Float32Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(values.length * (dtype === 'F32' ? 4 : 2));
  if (dtype === 'F32') {
    if (PLATFORM_IS_LITTLE_ENDIAN) out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
    else {
      const view = new DataView(out.buffer);
      for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
    }
    return out;
  }
  // Float32Arrays are always 4-byte aligned, so their bits can be read in place.
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const view = new DataView(out.buffer);
  const encode = dtype === 'BF16' ? bf16Bits : f16Bits;
  for (let i = 0; i < values.length; i++) view.setUint16(i * 2, encode(bits[i]!), true);
  return out;
}

/** The top half of the float32, rounded to nearest even; NaN stays NaN (quieted so rounding cannot make it ±inf). */
export function bf16Bits(f32: number): number {
  if ((f32 & 0x7fffffff) > 0x7f800000) return ((f32 >>> 16) | 0x40) & 0xffff;
  return ((f32 + 0x7fff + ((f32 >>> 16) & 1)) >>> 16) & 0xffff;
}

/** IEEE binary16 from float32 bits, round to nearest even, with subnormals, overflow to ±inf, NaN kept NaN. */
export function f16Bits(f32: number): number {
  const sign = (f32 >>> 16) & 0x8000;
  const exp = (f32 >>> 23) & 0xff;
  const mant = f32 & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal (or zero) in half precision: shift the mantissa with its implicit 1 into place and round.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let h = m >>> shift;
    if (rest > half || (rest === half && (h & 1) === 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, and past the largest one gives inf: both are right.
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
  return sign | h;
}
