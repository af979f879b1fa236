import type { DiffusersComponentName, DiffusersFolder } from '../core/models/diffusion/component';
import type { SingleFileCheckpoint } from '../core/models/diffusion/single-file';
import { bytesSource, type ByteSource } from '../core/safetensors/source';

/**
 * A single-file SD 1.x checkpoint (LDM names) seen as a diffusers folder, without copying a byte: each component's
 * weights file is a virtual safetensors file, a header written here under the diffusers names (openSingleFile's
 * mapping, with its reshapes), followed by the checkpoint's own byte ranges of those tensors. So everything that
 * loads a diffusers folder (loadSamplingPipeline, readComponentConfig) loads a stored single file unchanged, and
 * the checkpoint is stored once, as it came.
 */

/** Where each component's weights sit in the folder view; the names diffusers and transformers write. */
const WEIGHT_PATHS: Readonly<Record<DiffusersComponentName, string>> = {
  unet: 'unet/diffusion_pytorch_model.safetensors',
  vae: 'vae/diffusion_pytorch_model.safetensors',
  text_encoder: 'text_encoder/model.safetensors',
};

/**
 * The folder view of `checkpoint` (its configs as config.json files, its components as virtual safetensors) plus
 * the tokenizer files, which a single file does not hold (keyed `tokenizer/vocab.json` and so on).
 */
export function singleFileFolder(checkpoint: SingleFileCheckpoint, tokenizer: ReadonlyMap<string, ByteSource>): DiffusersFolder {
  const folder = new Map<string, ByteSource>(tokenizer);
  const json = (path: string, value: unknown) => folder.set(path, bytesSource(path, new TextEncoder().encode(JSON.stringify(value))));
  json('model_index.json', { _class_name: 'StableDiffusionPipeline' });
  json('unet/config.json', checkpoint.configs.unet);
  json('vae/config.json', checkpoint.configs.vae);
  json('text_encoder/config.json', checkpoint.configs.text_encoder);
  json('scheduler/scheduler_config.json', checkpoint.configs.scheduler);
  for (const name of ['unet', 'vae', 'text_encoder'] as const) folder.set(WEIGHT_PATHS[name], componentFile(checkpoint, name));
  return folder;
}

interface Piece {
  /** Offset in the virtual file. */
  readonly at: number;
  readonly length: number;
  /** Offset in the checkpoint; null: the header bytes. */
  readonly from: number | null;
}

/** One component's tensors as a safetensors file: a fresh header, then the checkpoint's ranges in the same order. */
function componentFile(checkpoint: SingleFileCheckpoint, name: DiffusersComponentName): ByteSource {
  const { names, reshapes } = checkpoint.mapping.components[name];
  const entries = new Map(checkpoint.header.tensors.map((t) => [t.name, t]));
  const header: Record<string, { dtype: string; shape: readonly number[]; data_offsets: [number, number] }> = {};
  const ranges: { begin: number; length: number }[] = [];
  let offset = 0;
  for (const [ldm, diffusers] of names) {
    const entry = entries.get(ldm)!;
    const length = entry.end - entry.begin;
    header[diffusers] = { dtype: entry.dtype, shape: reshapes.get(diffusers) ?? entry.shape, data_offsets: [offset, offset + length] };
    ranges.push({ begin: entry.begin, length });
    offset += length;
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - ((8 + new TextEncoder().encode(text).byteLength) % 8)) % 8); // data starts 8-aligned, as writers do
  const json = new TextEncoder().encode(text);
  const head = new Uint8Array(8 + json.byteLength);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.byteLength), true);
  head.set(json, 8);
  const pieces: Piece[] = [{ at: 0, length: head.byteLength, from: null }];
  let at = head.byteLength;
  for (const r of ranges) {
    pieces.push({ at, length: r.length, from: r.begin });
    at += r.length;
  }
  const size = at;
  const path = WEIGHT_PATHS[name];
  return {
    name: `${checkpoint.source.name} (${name})`,
    size,
    async read(begin: number, end: number): Promise<Uint8Array> {
      if (!Number.isSafeInteger(begin) || !Number.isSafeInteger(end) || begin < 0 || end < begin || end > size) {
        throw new RangeError(`${path}: read(${begin}, ${end}) is outside 0..${size}`);
      }
      const out = new Uint8Array(end - begin);
      for (const p of pieces) {
        const from = Math.max(begin, p.at);
        const to = Math.min(end, p.at + p.length);
        if (from >= to) continue;
        const bytes = p.from === null ? head.subarray(from, to) : await checkpoint.source.read(p.from + from - p.at, p.from + to - p.at);
        out.set(bytes, from - begin);
      }
      return out;
    },
  };
}
