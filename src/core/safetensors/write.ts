import { PLATFORM_IS_LITTLE_ENDIAN } from './dtype';

export interface TensorToWrite {
  name: string;
  shape: readonly number[];
  data: Float32Array;
}

const utf8 = new TextEncoder();

/** Rust sorts Strings by their UTF-8 bytes; JS `<` compares UTF-16 units, which orders astral characters differently. */
function compareUtf8(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}

function sortedByUtf8(keys: readonly string[]): string[] {
  return keys
    .map((k) => ({ k, b: utf8.encode(k) }))
    .sort((x, y) => compareUtf8(x.b, y.b))
    .map((x) => x.k);
}

/**
 * Writes an F32 safetensors file laid out exactly as the Python library (Rust `serialize`) does, so exported adapters
 * are byte-identical to what PEFT would save: compact JSON with "__metadata__" first, tensors sorted by name, offsets
 * contiguous from 0, and the header padded with spaces so the data section starts 8-byte aligned.
 *
 * Typed as backed by a plain ArrayBuffer so it can go straight into `new Blob([...])` for a download.
 * Invalid arguments are bugs in the caller (the app builds these tensors itself), so they throw plain Errors.
 */
export function writeSafetensors(
  tensors: ReadonlyArray<TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array<ArrayBuffer> {
  const byName = new Map<string, TensorToWrite>();
  for (const t of tensors) {
    if (t.name === '__metadata__') throw new Error('writeSafetensors: "__metadata__" is reserved and cannot name a tensor');
    if (byName.has(t.name)) throw new Error(`writeSafetensors: duplicate tensor name ${JSON.stringify(t.name)}`);
    let elements = 1;
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new Error(`writeSafetensors: tensor ${JSON.stringify(t.name)} has invalid shape [${t.shape.join(', ')}]`);
      }
      elements *= d;
    }
    if (elements !== t.data.length) {
      throw new Error(
        `writeSafetensors: tensor ${JSON.stringify(t.name)} has shape [${t.shape.join(', ')}] (${elements} elements) ` +
          `but ${t.data.length} values`,
      );
    }
    byName.set(t.name, t);
  }

  // Built by hand rather than with JSON.stringify(object): JS objects put integer-like keys ("0", "12") first,
  // which would break the sorted order.
  const parts: string[] = [];
  if (metadata !== undefined) {
    const entries = sortedByUtf8(Object.keys(metadata)).map((k) => {
      const v = metadata[k];
      if (typeof v !== 'string') throw new Error(`writeSafetensors: metadata ${JSON.stringify(k)} is not a string`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${entries.join(',')}}`);
  }
  const ordered = sortedByUtf8([...byName.keys()]).map((k) => byName.get(k)!);
  let offset = 0;
  for (const t of ordered) {
    const begin = offset;
    offset += t.data.length * 4;
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"F32","shape":[${t.shape.join(',')}],"data_offsets":[${begin},${offset}]}`);
  }
  const json = utf8.encode(`{${parts.join(',')}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;

  const out = new Uint8Array(8 + headerLength + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(headerLength), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const t of ordered) {
    if (PLATFORM_IS_LITTLE_ENDIAN) {
      out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    } else {
      for (let i = 0; i < t.data.length; i++) view.setFloat32(at + i * 4, t.data[i]!, true);
    }
    at += t.data.byteLength;
  }
  return out;
}
