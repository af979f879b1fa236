// Draws the app icon (a diamond over two low-rank bars) as PNGs for the web app manifest.
// Run: node scripts/make-icons.mjs — writes public/icons/icon-{192,512}.png. No dependencies.
import { writeFileSync, mkdirSync } from 'node:fs';
import { deflateSync } from 'node:zlib';

const BG = [31, 41, 55];
const ACCENT = [129, 140, 248];
const LIGHT = [238, 242, 255];

function pixel(x, y) {
  // Coordinates in [-1, 1]; rounded-square background, a diamond, and two bars (A and B of LoRA).
  const ax = Math.abs(x), ay = Math.abs(y);
  if (Math.max(ax, ay) > 0.96) return null;
  if (Math.abs(x) + Math.abs(y + 0.12) < 0.52) return ACCENT;
  if (y > 0.55 && y < 0.68 && ax < 0.55) return LIGHT;
  if (y > 0.74 && y < 0.84 && ax < 0.2) return LIGHT;
  return BG;
}

function png(size) {
  const raw = Buffer.alloc((size * 4 + 1) * size);
  for (let y = 0; y < size; y++) {
    raw[y * (size * 4 + 1)] = 0;
    for (let x = 0; x < size; x++) {
      const c = pixel((2 * x + 1) / size - 1, (2 * y + 1) / size - 1);
      const o = y * (size * 4 + 1) + 1 + x * 4;
      if (c) raw.set([...c, 255], o);
    }
  }
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

function crc32(bytes) {
  let c = ~0;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

mkdirSync(new URL('../public/icons/', import.meta.url), { recursive: true });
for (const size of [192, 512]) writeFileSync(new URL(`../public/icons/icon-${size}.png`, import.meta.url), png(size));
