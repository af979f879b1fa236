import { toFloat32 } from '../safetensors/dtype.js';
import { NF4_BLOCK, NF4_CODE_BOOK, nearestNf4Code } from './nf4.js';
import { ELEMENTS_PER_WORD, type HostPackedMatrix } from './packed.js';

/**
 * Encoding and decoding of packed matrices in JavaScript: the loader packs with these once per tensor,
 * and tests decode with them to check what the WGSL kernels read.
 */

type Shape = readonly [number, number];

function wordsFor(format: HostPackedMatrix['format'], count: number): Int32Array {
  return new Int32Array(Math.ceil(count / ELEMENTS_PER_WORD[format]));
}

/** BF16/F16 checkpoint bytes as words, unchanged: two little-endian halves per word (the last padded). */
export function packHalves(format: 'bf16' | 'f16', shape: Shape, bytes: Uint8Array): HostPackedMatrix {
  const count = shape[0] * shape[1];
  if (bytes.length !== 2 * count) throw new Error(`packHalves: ${bytes.length} bytes for ${count} halves`);
  const words = wordsFor(format, count);
  new Uint8Array(words.buffer).set(bytes);
  return { format, shape, words };
}

/**
 * int8 with one absmax scale per output channel (LLM.int8's vector-wise quantization without the
 * outlier split): code = round(v / scale), scale = absmax / 127, so every channel's largest weight is
 * exact and codes span -127..127. A channel of zeros gets scale 0 (all codes decode to 0).
 */
export function quantizeInt8(values: Float32Array, shape: Shape, channelAxis: 0 | 1): HostPackedMatrix {
  const [rows, cols] = shape;
  const channels = channelAxis === 0 ? rows : cols;
  const absmax = new Float32Array(channels);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const ch = channelAxis === 0 ? r : c;
      absmax[ch] = Math.max(absmax[ch]!, Math.abs(values[r * cols + c]!));
    }
  }
  const scales = absmax.map((a) => a / 127);
  const words = wordsFor('int8', rows * cols);
  const codes = new Int8Array(words.buffer);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const s = scales[channelAxis === 0 ? r : c]!;
      const i = r * cols + c;
      codes[i] = s === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(values[i]! / s)));
    }
  }
  return { format: 'int8', shape, words, channelAxis, scales };
}

/** NF4 as QLoRA defines it: each block of 64 consecutive elements divided by its absmax, each value the nearest code. */
export function quantizeNf4(values: Float32Array, shape: Shape): HostPackedMatrix {
  const count = shape[0] * shape[1];
  const blocks = Math.ceil(count / NF4_BLOCK);
  const absmax = new Float32Array(blocks);
  const words = wordsFor('nf4', count);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(count, (b + 1) * NF4_BLOCK);
    let a = 0;
    for (let i = b * NF4_BLOCK; i < end; i++) a = Math.max(a, Math.abs(values[i]!));
    absmax[b] = a;
    for (let i = b * NF4_BLOCK; i < end; i++) {
      // An all-zero block stores code 7, the exact zero.
      const code = a === 0 ? 7 : nearestNf4Code(values[i]! / a);
      words[i >> 3] = words[i >> 3]! | (code << (4 * (i & 7)));
    }
  }
  return { format: 'nf4', shape, words, absmax };
}

/** Every element of a packed matrix as float32, row-major over its stored shape. */
export function unpackHost(m: HostPackedMatrix): Float32Array {
  const count = m.shape[0] * m.shape[1];
  switch (m.format) {
    case 'bf16':
      return toFloat32('BF16', new Uint8Array(m.words.buffer, m.words.byteOffset, 2 * count));
    case 'f16':
      return toFloat32('F16', new Uint8Array(m.words.buffer, m.words.byteOffset, 2 * count));
    case 'int8': {
      const codes = new Int8Array(m.words.buffer, m.words.byteOffset, count);
      const cols = m.shape[1];
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        const channel = m.channelAxis === 0 ? Math.floor(i / cols) : i % cols;
        out[i] = codes[i]! * m.scales[channel]!;
      }
      return out;
    }
    case 'nf4': {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        const code = (m.words[i >> 3]! >>> (4 * (i & 7))) & 0xf;
        out[i] = NF4_CODE_BOOK[code]! * m.absmax[Math.floor(i / NF4_BLOCK)]!;
      }
      return out;
    }
  }
}
