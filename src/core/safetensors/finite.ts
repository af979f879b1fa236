import { BYTES_PER_ELEMENT, PLATFORM_IS_LITTLE_ENDIAN, type Dtype } from './dtype';

/**
 * Finds NaN and ±Inf in a tensor's raw bytes as they stream past, without converting anything to float32.
 *
 * In every float format LoRA Lab reads, a value is non-finite exactly when its exponent bits are all ones:
 * F32 0x7f800000 of 32 bits, F16 0x7c00 of 16, BF16 0x7f80 of 16. One AND and one compare per element, on the
 * bytes already in hand, so scanning costs little next to storing them.
 *
 * Slices may end anywhere, even inside an element (an import's slice size need not be a multiple of the element
 * size): the bytes of a split element are carried over to the next slice.
 */
export class FiniteScan {
  private readonly size: number;
  private readonly carry: Uint8Array;
  private carried = 0;
  /** Elements fully seen so far. */
  private elements = 0;

  constructor(readonly dtype: Dtype) {
    this.size = BYTES_PER_ELEMENT[dtype];
    this.carry = new Uint8Array(this.size);
  }

  /**
   * Scans the next slice of the tensor. Returns the index (from the tensor's first element) of the first
   * non-finite element completed by this slice, or -1 when all of them are finite.
   */
  push(bytes: Uint8Array): number {
    let start = 0;
    let split = -1;
    if (this.carried > 0) {
      start = Math.min(this.size - this.carried, bytes.length);
      this.carry.set(bytes.subarray(0, start), this.carried);
      this.carried += start;
      if (this.carried < this.size) return -1;
      this.carried = 0;
      if (firstNonFinite(this.dtype, this.carry) === 0) split = this.elements;
      this.elements++;
    }
    // The rest of the slice is scanned (and its tail carried) even after a find, so `scanned` stays exact.
    const whole = Math.floor((bytes.length - start) / this.size) * this.size;
    const found = firstNonFinite(this.dtype, bytes.subarray(start, start + whole));
    const base = this.elements;
    this.elements += whole / this.size;
    const rest = bytes.subarray(start + whole);
    this.carry.set(rest, 0);
    this.carried = rest.length;
    if (split >= 0) return split;
    return found < 0 ? -1 : base + found;
  }

  /** Elements fully scanned so far (a partial element at the end of the last slice is not counted). */
  get scanned(): number {
    return this.elements;
  }
}

/** Index of the first element of `bytes` (whole elements of `dtype`, little-endian) that is NaN or ±Inf, or -1. */
export function firstNonFinite(dtype: Dtype, bytes: Uint8Array): number {
  const size = BYTES_PER_ELEMENT[dtype];
  const count = Math.floor(bytes.length / size);
  if (!PLATFORM_IS_LITTLE_ENDIAN) return firstNonFiniteSlow(dtype, bytes, count);
  // Typed-array views must be aligned to their element size; copy the (rare) misaligned slice.
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice(0, count * size);
  if (dtype === 'F32') {
    const words = new Uint32Array(aligned.buffer, aligned.byteOffset, count);
    for (let i = 0; i < count; i++) if ((words[i]! & 0x7f800000) === 0x7f800000) return i;
    return -1;
  }
  const mask = dtype === 'F16' ? 0x7c00 : 0x7f80;
  const halves = new Uint16Array(aligned.buffer, aligned.byteOffset, count);
  for (let i = 0; i < count; i++) if ((halves[i]! & mask) === mask) return i;
  return -1;
}

/** The same through a DataView, for a big-endian platform (none that runs LoRA Lab today). */
function firstNonFiniteSlow(dtype: Dtype, bytes: Uint8Array, count: number): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < count; i++) {
    const nonFinite =
      dtype === 'F32'
        ? (view.getUint32(4 * i, true) & 0x7f800000) === 0x7f800000
        : (view.getUint16(2 * i, true) & (dtype === 'F16' ? 0x7c00 : 0x7f80)) === (dtype === 'F16' ? 0x7c00 : 0x7f80);
    if (nonFinite) return i;
  }
  return -1;
}
