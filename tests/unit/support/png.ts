import { crc32, inflateSync } from 'node:zlib';

/**
 * A small PNG decoder for tests, independent of the encoder under test: Node's zlib inflates and checks the CRC-32
 * of every chunk. 8-bit RGB and RGBA, non-interlaced, all five row filters. Throws on anything else or any damage.
 */
export interface DecodedPng {
  readonly width: number;
  readonly height: number;
  /** Returns [r, g, b] of pixel (x, y). */
  pixel(x: number, y: number): [number, number, number];
}

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

export function decodePng(bytes: Uint8Array): DecodedPng {
  SIGNATURE.forEach((b, i) => {
    if (bytes[i] !== b) throw new Error(`not a PNG: byte ${i} is ${bytes[i]}`);
  });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 8;
  let header: { width: number; height: number; channels: number } | null = null;
  const idat: Uint8Array[] = [];
  let ended = false;
  while (at < bytes.length) {
    const length = view.getUint32(at);
    const type = String.fromCharCode(...bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, at + 8 + length);
    const stored = view.getUint32(at + 8 + length);
    const computed = crc32(bytes.subarray(at + 4, at + 8 + length));
    if (stored !== computed) throw new Error(`chunk ${type}: CRC ${stored.toString(16)}, computed ${computed.toString(16)}`);
    if (type === 'IHDR') {
      const d = new DataView(data.buffer, data.byteOffset, data.byteLength);
      const [depth, colour, , , interlace] = [data[8], data[9], data[10], data[11], data[12]];
      if (depth !== 8 || (colour !== 2 && colour !== 6) || interlace !== 0) throw new Error(`unsupported PNG: depth ${depth}, colour type ${colour}, interlace ${interlace}`);
      header = { width: d.getUint32(0), height: d.getUint32(4), channels: colour === 2 ? 3 : 4 };
    } else if (type === 'IDAT') idat.push(data);
    else if (type === 'IEND') ended = true;
    at += 12 + length;
  }
  if (!header || !ended) throw new Error('PNG without IHDR or IEND');
  const { width, height, channels } = header;
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length !== height * (stride + 1)) throw new Error(`IDAT inflates to ${raw.length} bytes, expected ${height * (stride + 1)}`);
  const out = new Uint8Array(height * stride);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    for (let i = 0; i < stride; i++) {
      const x = raw[y * (stride + 1) + 1 + i]!;
      const a = i >= channels ? out[y * stride + i - channels]! : 0;
      const b = y > 0 ? out[(y - 1) * stride + i]! : 0;
      const c = i >= channels && y > 0 ? out[(y - 1) * stride + i - channels]! : 0;
      let predicted: number;
      if (filter === 0) predicted = 0;
      else if (filter === 1) predicted = a;
      else if (filter === 2) predicted = b;
      else if (filter === 3) predicted = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const [pa, pb, pc] = [Math.abs(p - a), Math.abs(p - b), Math.abs(p - c)];
        predicted = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else throw new Error(`row ${y}: unknown filter ${filter}`);
      out[y * stride + i] = (x + predicted) & 0xff;
    }
  }
  return {
    width,
    height,
    pixel(x, y) {
      const i = y * stride + x * channels;
      return [out[i]!, out[i + 1]!, out[i + 2]!];
    },
  };
}

/**
 * decodePng's pixels as width × height × 4 RGBA bytes (alpha 255), the shape an ImageDecoder returns. RGB PNGs
 * only: decodePng drops an alpha channel, so an RGBA PNG is refused rather than read as opaque.
 */
export function decodePngRgba(bytes: Uint8Array): { width: number; height: number; rgba: Uint8Array } {
  const png = decodePng(bytes);
  const colourType = bytes[25]; // IHDR's data starts at byte 16, and the colour type is its 10th byte
  if (colourType !== 2) throw new Error(`decodePngRgba reads RGB PNGs (colour type 2), not colour type ${colourType}`);
  const rgba = new Uint8Array(png.width * png.height * 4);
  for (let y = 0; y < png.height; y++) {
    for (let x = 0; x < png.width; x++) {
      rgba.set([...png.pixel(x, y), 255], (y * png.width + x) * 4);
    }
  }
  return { width: png.width, height: png.height, rgba };
}
