import { BYTES_PER_ELEMENT, type Dtype } from './dtype';
import { fromFloat32 } from './encode';

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

/** A tensor to be laid out in a safetensors file before its data exists (the streaming writer's input). */
export interface TensorLayoutEntry {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
}

export interface SafetensorsLayout {
  /** The 8-byte length, the JSON header and its padding: everything before the first tensor's data. */
  readonly header: Uint8Array<ArrayBuffer>;
  /** The tensors in file order (sorted by UTF-8 name), with their byte spans relative to the data section. */
  readonly tensors: ReadonlyArray<TensorLayoutEntry & { readonly begin: number; readonly end: number }>;
  /** header.length + all tensor bytes: the size of the whole file. */
  readonly fileBytes: number;
}

/**
 * The layout of a safetensors file as the Python library (Rust `serialize`) writes it: compact JSON with
 * "__metadata__" first, tensors sorted by name, offsets contiguous from 0, and the header padded with spaces
 * so the data section starts 8-byte aligned. Needs only names, dtypes and shapes, so a writer can emit the
 * header first and then stream each tensor's bytes in `tensors` order without holding the file.
 * Invalid arguments are bugs in the caller (the app builds these tensors itself), so they throw plain Errors.
 */
export function safetensorsLayout(entries: ReadonlyArray<TensorLayoutEntry>, metadata?: Record<string, string>): SafetensorsLayout {
  const byName = new Map<string, TensorLayoutEntry>();
  for (const t of entries) {
    if (t.name === '__metadata__') throw new Error('writeSafetensors: "__metadata__" is reserved and cannot name a tensor');
    if (byName.has(t.name)) throw new Error(`writeSafetensors: duplicate tensor name ${JSON.stringify(t.name)}`);
    for (const d of t.shape) {
      if (!Number.isSafeInteger(d) || d < 0) {
        throw new Error(`writeSafetensors: tensor ${JSON.stringify(t.name)} has invalid shape [${t.shape.join(', ')}]`);
      }
    }
    byName.set(t.name, t);
  }

  // Built by hand rather than with JSON.stringify(object): JS objects put integer-like keys ("0", "12") first,
  // which would break the sorted order.
  const parts: string[] = [];
  if (metadata !== undefined) {
    const items = sortedByUtf8(Object.keys(metadata)).map((k) => {
      const v = metadata[k];
      if (typeof v !== 'string') throw new Error(`writeSafetensors: metadata ${JSON.stringify(k)} is not a string`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`"__metadata__":{${items.join(',')}}`);
  }
  const tensors: (TensorLayoutEntry & { begin: number; end: number })[] = [];
  let offset = 0;
  for (const k of sortedByUtf8([...byName.keys()])) {
    const t = byName.get(k)!;
    const begin = offset;
    offset += t.shape.reduce((n, d) => n * d, 1) * BYTES_PER_ELEMENT[t.dtype];
    parts.push(`${JSON.stringify(t.name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${begin},${offset}]}`);
    tensors.push({ name: t.name, dtype: t.dtype, shape: t.shape, begin, end: offset });
  }
  const json = utf8.encode(`{${parts.join(',')}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  const header = new Uint8Array(8 + headerLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(headerLength), true);
  header.set(json, 8);
  header.fill(0x20, 8 + json.length);
  return { header, tensors, fileBytes: header.length + offset };
}

/**
 * Writes an F32 safetensors file laid out exactly as the Python library does (see safetensorsLayout), so
 * exported adapters are byte-identical to what PEFT would save.
 *
 * Typed as backed by a plain ArrayBuffer so it can go straight into `new Blob([...])` for a download.
 */
export function writeSafetensors(
  tensors: ReadonlyArray<TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array<ArrayBuffer> {
  const layout = safetensorsLayout(tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: t.shape })), metadata);
  for (const t of tensors) {
    const elements = t.shape.reduce((n, d) => n * d, 1);
    if (elements !== t.data.length) {
      throw new Error(
        `writeSafetensors: tensor ${JSON.stringify(t.name)} has shape [${t.shape.join(', ')}] (${elements} elements) ` +
          `but ${t.data.length} values`,
      );
    }
  }
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const out = new Uint8Array(layout.fileBytes);
  out.set(layout.header, 0);
  for (const entry of layout.tensors) {
    out.set(fromFloat32('F32', byName.get(entry.name)!.data), layout.header.length + entry.begin);
  }
  return out;
}
