import { UserError } from '../../errors';
import type { ByteSource } from '../../safetensors/source';
import { readExactly } from './utf8';

/**
 * Pre-tokenized token streams (.bin), as nanoGPT's prepare.py writes them: the ids back to back, little-endian,
 * uint16 unless told otherwise. The stream is one document; eos tokens are already inside it.
 *
 * The width comes from, first to last: the sibling `<name>.meta.json` (`{"dtype": "uint32"}`, or nanoGPT's meta
 * written as JSON, whose `vocab_size` above 65535 means uint32), then "uint32"/"u32" or "uint16"/"u16" in the file
 * name, then uint16.
 */

export type TokenWidth = 2 | 4;

const DTYPES: Readonly<Record<string, TokenWidth>> = {
  uint16: 2,
  u16: 2,
  u2: 2,
  '<u2': 2,
  uint32: 4,
  u32: 4,
  u4: 4,
  '<u4': 4,
};

/** Bytes per token id for `file`, and where that was learnt (for messages). */
export async function tokenWidth(file: string, meta: ByteSource | undefined): Promise<{ width: TokenWidth; from: string }> {
  if (meta !== undefined) {
    const fromMeta = await widthFromMeta(meta);
    if (fromMeta !== null) return { width: fromMeta, from: meta.name };
  }
  const name = file.toLowerCase();
  if (name.includes('uint32') || name.includes('u32')) return { width: 4, from: 'the file name' };
  if (name.includes('uint16') || name.includes('u16')) return { width: 2, from: 'the file name' };
  return { width: 2, from: 'the default (uint16)' };
}

async function widthFromMeta(meta: ByteSource): Promise<TokenWidth | null> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(await readExactly(meta, 0, meta.size)));
  } catch (e) {
    if (e instanceof UserError) throw e;
    throw new UserError(meta.name, `is not valid JSON (${(e as Error).message}).`, 'Write it as {"dtype": "uint16"} or {"dtype": "uint32"}.');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UserError(meta.name, 'must hold a JSON object.', 'Write it as {"dtype": "uint16"} or {"dtype": "uint32"}.');
  }
  const { dtype, vocab_size: vocabSize } = value as { dtype?: unknown; vocab_size?: unknown };
  if (dtype !== undefined) {
    const width = typeof dtype === 'string' ? DTYPES[dtype.trim().toLowerCase().replace(/^(np|numpy)\./, '')] : undefined;
    if (width === undefined) {
      throw new UserError(meta.name, `has dtype ${JSON.stringify(dtype)}, which LoRA Lab does not read.`, 'Token ids must be "uint16" or "uint32".');
    }
    return width;
  }
  if (typeof vocabSize === 'number') return vocabSize > 65535 ? 4 : 2;
  return null;
}

export interface BinOptions {
  meta?: ByteSource | undefined;
  /** Ids must be below this (the tokenizer's vocabulary size). */
  vocabSize: number;
  chunkBytes: number;
  signal?: AbortSignal | undefined;
  /** Called after each slice with the bytes read so far; may wait, so the page stays responsive. */
  progress(bytesDone: number): Promise<void>;
}

/** All token ids of the file, checked against the vocabulary. */
export async function readTokenIds(source: ByteSource, opts: BinOptions): Promise<number[]> {
  const { width, from } = await tokenWidth(source.name, opts.meta);
  const type = width === 2 ? 'uint16' : 'uint32';
  if (source.size % width !== 0) {
    throw new UserError(
      source.name,
      `is ${source.size} bytes, which is not a whole number of ${type} token ids (${width} bytes each; the width comes from ${from}).`,
      width === 2
        ? `If the ids are uint32, add ${metaName(source.name)} with {"dtype": "uint32"} or put "uint32" in the file name.`
        : 'The file may be cut short, or its ids may be uint16.',
    );
  }
  const ids: number[] = [];
  // Slices are a whole number of ids, so none is split between two reads.
  const step = Math.max(width, opts.chunkBytes - (opts.chunkBytes % width));
  for (let pos = 0; pos < source.size; pos += step) {
    opts.signal?.throwIfAborted();
    const bytes = await readExactly(source, pos, Math.min(source.size, pos + step));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const count = bytes.length / width;
    for (let k = 0; k < count; k++) {
      const id = width === 2 ? view.getUint16(k * width, true) : view.getUint32(k * width, true);
      if (id >= opts.vocabSize) {
        const position = pos / width + k;
        throw new UserError(
          source.name,
          `token ${position} (byte offset ${pos + k * width}) is id ${id}, but the tokenizer has only ${opts.vocabSize} ids (vocabulary mismatch).`,
          `Tokenize the data with this model's tokenizer, or check the id width (read as ${type}, from ${from}).`,
        );
      }
      ids.push(id);
    }
    await opts.progress(pos + bytes.length);
  }
  return ids;
}

/** The sibling meta file LoRA Lab looks for: train.bin → train.meta.json. */
export function metaName(binName: string): string {
  return binName.replace(/\.bin$/i, '') + '.meta.json';
}
