/**
 * Just enough of the protobuf wire format to write and read TensorBoard's Event messages by hand,
 * so the app needs no protobuf runtime or generated code. Which fields to write, and whether to skip
 * defaults, is decided by the message code in event.ts; these primitives always write what they're given.
 */

export const WIRE_VARINT = 0;
export const WIRE_I64 = 1;
export const WIRE_LEN = 2;
export const WIRE_I32 = 5;

/** The bytes are not a well-formed message of the expected type. Callers add which file and record. */
export class DecodeError extends Error {
  override readonly name = 'DecodeError';
}

const utf8Encoder = new TextEncoder();
// ignoreBOM keeps a leading U+FEFF in the string, so text read back is exactly the text written.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export function encodeUtf8(s: string): Uint8Array {
  return utf8Encoder.encode(s);
}

/** Returns null for bytes that are not UTF-8, so callers choose between failing and keeping the raw bytes. */
export function decodeUtf8(bytes: Uint8Array): string | null {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    return null;
  }
}

export class ProtoWriter {
  private buf = new Uint8Array(64);
  private view = new DataView(this.buf.buffer);
  private len = 0;

  private reserve(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  private rawVarint(n: number): void {
    this.reserve(10);
    // Division rather than shifts: JS shifts are 32-bit, and steps or lengths can be larger.
    while (n >= 0x80) {
      this.buf[this.len++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.buf[this.len++] = n;
  }

  private rawVarintBig(n: bigint): void {
    this.reserve(10);
    while (n >= 0x80n) {
      this.buf[this.len++] = Number(n & 0x7fn) | 0x80;
      n >>= 7n;
    }
    this.buf[this.len++] = Number(n);
  }

  private key(field: number, wire: number): void {
    this.rawVarint(field * 8 + wire);
  }

  /** For enums, sizes and other non-negative integers. */
  uint(field: number, n: number): void {
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`protobuf field ${field}: ${n} is not a non-negative integer`);
    this.key(field, WIRE_VARINT);
    this.rawVarint(n);
  }

  /** int64: negative values take the ten-byte two's-complement form, as every protobuf runtime writes them. */
  int64(field: number, n: number): void {
    if (!Number.isSafeInteger(n)) throw new RangeError(`protobuf field ${field}: ${n} is not a safe integer`);
    this.key(field, WIRE_VARINT);
    if (n >= 0) this.rawVarint(n);
    else this.rawVarintBig(BigInt.asUintN(64, BigInt(n)));
  }

  double(field: number, v: number): void {
    this.key(field, WIRE_I64);
    this.reserve(8);
    this.view.setFloat64(this.len, v, true);
    this.len += 8;
  }

  float(field: number, v: number): void {
    this.key(field, WIRE_I32);
    this.reserve(4);
    this.view.setFloat32(this.len, v, true);
    this.len += 4;
  }

  bytes(field: number, b: Uint8Array): void {
    this.key(field, WIRE_LEN);
    this.rawVarint(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  string(field: number, s: string): void {
    this.bytes(field, encodeUtf8(s));
  }

  packedDoubles(field: number, values: readonly number[]): void {
    this.key(field, WIRE_LEN);
    this.rawVarint(values.length * 8);
    this.reserve(values.length * 8);
    for (const v of values) {
      this.view.setFloat64(this.len, v, true);
      this.len += 8;
    }
  }

  packedFloats(field: number, values: readonly number[]): void {
    this.key(field, WIRE_LEN);
    this.rawVarint(values.length * 4);
    this.reserve(values.length * 4);
    for (const v of values) {
      this.view.setFloat32(this.len, v, true);
      this.len += 4;
    }
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

const WIRE_NAMES = ['varint', '64-bit', 'length-delimited', 'start-group', 'end-group', '32-bit'];

export class ProtoReader {
  private pos = 0;
  private readonly view: DataView;

  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  private need(n: number, what: string): void {
    if (this.pos + n > this.buf.length) {
      throw new DecodeError(`${what} at byte ${this.pos} runs past the end of the message`);
    }
  }

  /** Reads the next field key. Groups (wire types 3 and 4) never occur in TensorBoard's protos, so they count as corrupt. */
  key(): { field: number; wire: number } {
    const at = this.pos;
    const k = this.varint();
    const field = Math.floor(k / 8);
    const wire = k % 8;
    if (field === 0) throw new DecodeError(`field number 0 at byte ${at}`);
    if (wire !== WIRE_VARINT && wire !== WIRE_I64 && wire !== WIRE_LEN && wire !== WIRE_I32) {
      throw new DecodeError(`unsupported wire type ${wire} (${WIRE_NAMES[wire] ?? 'invalid'}) for field ${field} at byte ${at}`);
    }
    return { field, wire };
  }

  /** An unsigned varint that must fit a JS number exactly. */
  varint(): number {
    const at = this.pos;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      this.need(1, 'varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * scale;
      if ((b & 0x80) === 0) {
        if (result > Number.MAX_SAFE_INTEGER) throw new DecodeError(`varint at byte ${at} is too large (over 2^53)`);
        return result;
      }
      scale *= 0x80;
    }
    throw new DecodeError(`varint at byte ${at} is longer than 10 bytes`);
  }

  /** A signed int64, which must be a safe JS integer so it is never silently rounded. */
  int64(): number {
    const at = this.pos;
    let result = 0n;
    for (let i = 0; i < 10; i++) {
      this.need(1, 'varint');
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << BigInt(7 * i);
      if ((b & 0x80) === 0) {
        const signed = BigInt.asIntN(64, result);
        const n = Number(signed);
        if (!Number.isSafeInteger(n)) throw new DecodeError(`int64 ${signed} at byte ${at} is outside ±2^53`);
        return n;
      }
    }
    throw new DecodeError(`varint at byte ${at} is longer than 10 bytes`);
  }

  double(): number {
    this.need(8, 'double');
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  float(): number {
    this.need(4, 'float');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  /** A view into the message, not a copy. */
  bytes(): Uint8Array {
    const n = this.varint();
    this.need(n, `${n}-byte field`);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  string(what: string): string {
    const at = this.pos;
    const s = decodeUtf8(this.bytes());
    if (s === null) throw new DecodeError(`${what} at byte ${at} is not valid UTF-8`);
    return s;
  }

  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint64Skip();
        return;
      case WIRE_I64:
        this.need(8, 'double');
        this.pos += 8;
        return;
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_I32:
        this.need(4, 'float');
        this.pos += 4;
        return;
      default:
        throw new DecodeError(`cannot skip wire type ${wire}`);
    }
  }

  private varint64Skip(): void {
    const at = this.pos;
    for (let i = 0; i < 10; i++) {
      this.need(1, 'varint');
      if ((this.buf[this.pos++]! & 0x80) === 0) return;
    }
    throw new DecodeError(`varint at byte ${at} is longer than 10 bytes`);
  }

  /**
   * Repeated doubles may arrive packed (the proto3 default) or one per key (older writers);
   * parsers must accept both, so this reads either into `out`.
   */
  repeatedDouble(wire: number, out: number[], what: string): void {
    if (wire === WIRE_I64) {
      out.push(this.double());
      return;
    }
    this.expect(wire, WIRE_LEN, what);
    const body = this.bytes();
    if (body.length % 8 !== 0) throw new DecodeError(`${what}: packed doubles of ${body.length} bytes, not a multiple of 8`);
    const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
    for (let i = 0; i < body.length; i += 8) out.push(v.getFloat64(i, true));
  }

  repeatedFloat(wire: number, out: number[], what: string): void {
    if (wire === WIRE_I32) {
      out.push(this.float());
      return;
    }
    this.expect(wire, WIRE_LEN, what);
    const body = this.bytes();
    if (body.length % 4 !== 0) throw new DecodeError(`${what}: packed floats of ${body.length} bytes, not a multiple of 4`);
    const v = new DataView(body.buffer, body.byteOffset, body.byteLength);
    for (let i = 0; i < body.length; i += 4) out.push(v.getFloat32(i, true));
  }

  /** A known field with the wrong wire type means the bytes are not the message we think they are. */
  expect(actual: number, wanted: number, what: string): void {
    if (actual !== wanted) {
      throw new DecodeError(`${what} has wire type ${WIRE_NAMES[actual] ?? actual}, expected ${WIRE_NAMES[wanted]}`);
    }
  }
}
