import { BYTES_PER_ELEMENT, toFloat32, type Dtype } from '../safetensors/dtype.js';
import { fromFloat32 } from '../safetensors/encode.js';
import { safetensorsLayout, type SafetensorsLayout } from '../safetensors/write.js';
import type { LoraDeltas, LoraDelta } from '../lora/merge.js';

/**
 * A merged model folder (what PEFT's `merge_and_unload()` followed by `save_pretrained` gives): the base
 * checkpoint's tensors, in their own names and dtype, with scaling·B·A folded into the adapted ones, plus
 * config.json, the tokenizer files and generation_config.json. Written as a stream — one tensor read, merged
 * and written at a time, in slices — so merging a model needs one tensor and one slice of memory, never the model.
 */

/** One tensor of the base checkpoint, read only when its turn comes. */
export interface BaseTensor {
  /** The name to write (the checkpoint's own). */
  readonly name: string;
  /** The module path + `.weight` an adapter names (canonical Hugging Face `*ForCausalLM` name). */
  readonly canonicalName: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** The tensor's raw little-endian bytes in `dtype`; the result belongs to the caller. */
  read(): Promise<Uint8Array>;
}

/** The non-weight files of the folder, as the base model had them (null: the base had none). */
export interface MergedModelTextFiles {
  readonly config: string;
  readonly tokenizer: string | null;
  readonly tokenizerConfig: string | null;
  readonly generationConfig: string | null;
}

/** Where the folder goes: one file at a time, opened, written in slices, closed. Paths are relative (`model.safetensors`). */
export interface FolderSink {
  open(path: string): Promise<FileSink>;
}

export interface FileSink {
  /** Called with slices of at most `sliceBytes`; the sink may keep the bytes (they are not reused). */
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export interface MergedModelOptions {
  /** Largest shard in bytes (weights only) before splitting into model-0000i-of-0000N.safetensors; Hugging Face's 2 GB by default. */
  readonly maxShardBytes?: number;
  /** Largest slice handed to FileSink.write; 16 MiB by default, like the stored model chunks. */
  readonly sliceBytes?: number;
  /** After each tensor: bytes of weights written so far, of the total. */
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly signal?: AbortSignal;
}

export const DEFAULT_MAX_SHARD_BYTES = 2 * 1024 ** 3;
export const DEFAULT_SLICE_BYTES = 16 * 1024 * 1024;

export const SAFETENSORS_FILE = 'model.safetensors';
export const SAFETENSORS_INDEX_FILE = 'model.safetensors.index.json';

export interface MergedModelPlan {
  /** The shard files, in order, each with its tensors in file order. */
  readonly shards: ReadonlyArray<{ readonly file: string; readonly layout: SafetensorsLayout }>;
  /** model.safetensors.index.json's text when sharded, else null. */
  readonly index: string | null;
  readonly totalBytes: number;
}

/**
 * How the weights split into files, as transformers' save_pretrained splits them: tensors in name order, a new
 * shard whenever the next tensor would push the current one past `maxShardBytes` (a single larger tensor gets a
 * shard of its own), and the index's `total_size` as the sum of tensor bytes. One shard is named model.safetensors.
 */
export function planMergedModel(tensors: ReadonlyArray<Pick<BaseTensor, 'name' | 'dtype' | 'shape'>>, maxShardBytes = DEFAULT_MAX_SHARD_BYTES): MergedModelPlan {
  if (!Number.isSafeInteger(maxShardBytes) || maxShardBytes <= 0) throw new RangeError(`planMergedModel: maxShardBytes must be a positive integer, not ${maxShardBytes}`);
  const bytesOf = (t: Pick<BaseTensor, 'dtype' | 'shape'>): number => t.shape.reduce((n, d) => n * d, 1) * BYTES_PER_ELEMENT[t.dtype];
  const ordered = safetensorsLayout(tensors).tensors;
  const groups: (typeof ordered)[number][][] = [];
  let current: (typeof ordered)[number][] = [];
  let currentBytes = 0;
  for (const t of ordered) {
    const n = bytesOf(t);
    if (current.length > 0 && currentBytes + n > maxShardBytes) {
      groups.push(current);
      current = [];
      currentBytes = 0;
    }
    current.push(t);
    currentBytes += n;
  }
  if (current.length > 0 || groups.length === 0) groups.push(current);
  const totalBytes = ordered.reduce((n, t) => n + bytesOf(t), 0);
  const metadata = { format: 'pt' };
  if (groups.length === 1) {
    return { shards: [{ file: SAFETENSORS_FILE, layout: safetensorsLayout(groups[0]!, metadata) }], index: null, totalBytes };
  }
  const pad = (i: number): string => String(i).padStart(5, '0');
  const shards = groups.map((g, i) => ({ file: `model-${pad(i + 1)}-of-${pad(groups.length)}.safetensors`, layout: safetensorsLayout(g, metadata) }));
  const weightMap: Record<string, string> = {};
  for (const name of ordered.map((t) => t.name)) weightMap[name] = shards.find((s) => s.layout.tensors.some((t) => t.name === name))!.file;
  const index = `${JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: weightMap }, null, 2)}\n`;
  return { shards, index, totalBytes };
}

/**
 * Writes the merged model folder into `sink`: config.json, the weights (sharded with an index when above
 * maxShardBytes), and the tokenizer and generation config files the base had. Tensors no module of `deltas`
 * adapts are copied byte for byte; adapted ones are widened to float32, W + scaling·ΔW added (ΔW = B·A, or its
 * transpose for GPT-2's Conv1D weights stored [in, out]), and rounded back to the tensor's own dtype once.
 * Tied embeddings stay tied: the base's tensors are written, and nothing else.
 */
export async function writeMergedModel(
  base: { readonly tensors: readonly BaseTensor[]; readonly files: MergedModelTextFiles },
  deltas: LoraDeltas,
  sink: FolderSink,
  options: MergedModelOptions = {},
): Promise<MergedModelPlan> {
  const sliceBytes = options.sliceBytes ?? DEFAULT_SLICE_BYTES;
  if (!Number.isSafeInteger(sliceBytes) || sliceBytes <= 0) throw new RangeError(`writeMergedModel: sliceBytes must be a positive integer, not ${sliceBytes}`);
  const byName = new Map(base.tensors.map((t) => [t.name, t]));
  const deltaOf = deltasByWeight(base.tensors, deltas);
  const plan = planMergedModel(base.tensors, options.maxShardBytes);

  await writeText(sink, 'config.json', base.files.config);
  let done = 0;
  for (const shard of plan.shards) {
    const file = await sink.open(shard.file);
    await writeSliced(file, shard.layout.header, sliceBytes);
    for (const entry of shard.layout.tensors) {
      options.signal?.throwIfAborted();
      const tensor = byName.get(entry.name)!;
      const raw = await tensor.read();
      if (raw.length !== entry.end - entry.begin) {
        throw new Error(`writeMergedModel: tensor ${entry.name} read ${raw.length} bytes, expected ${entry.end - entry.begin}`);
      }
      const delta = deltaOf.get(entry.name);
      await writeSliced(file, delta ? mergedBytes(tensor, raw, delta, deltas.scaling) : raw, sliceBytes);
      done += raw.length;
      options.onProgress?.(done, plan.totalBytes);
    }
    await file.close();
  }
  if (plan.index !== null) await writeText(sink, SAFETENSORS_INDEX_FILE, plan.index);
  if (base.files.tokenizer !== null) await writeText(sink, 'tokenizer.json', base.files.tokenizer);
  if (base.files.tokenizerConfig !== null) await writeText(sink, 'tokenizer_config.json', base.files.tokenizerConfig);
  if (base.files.generationConfig !== null) await writeText(sink, 'generation_config.json', base.files.generationConfig);
  return plan;
}

/** Checks every delta against the tensor it changes before anything is written, so a bad pairing leaves no files. */
function deltasByWeight(tensors: readonly BaseTensor[], deltas: LoraDeltas): Map<string, LoraDelta> {
  const byCanonical = new Map(tensors.map((t) => [t.canonicalName, t]));
  const out = new Map<string, LoraDelta>();
  for (const d of deltas.modules) {
    const weight = byCanonical.get(`${d.path}.weight`);
    if (!weight) throw new Error(`writeMergedModel: the model has no weight ${d.path}.weight; is the adapter for another model?`);
    const want = d.layout === 'in_out' ? [d.inFeatures, d.outFeatures] : [d.outFeatures, d.inFeatures];
    if (weight.shape.length !== 2 || weight.shape[0] !== want[0] || weight.shape[1] !== want[1]) {
      throw new Error(`writeMergedModel: ${weight.name} is [${weight.shape.join(', ')}] but B·A is [${want.join(', ')}]`);
    }
    if (d.A.length !== d.rank * d.inFeatures || d.B.length !== d.outFeatures * d.rank) {
      throw new Error(`writeMergedModel: the adapter's A/B for ${d.path} do not have rank ${d.rank}`);
    }
    out.set(weight.name, d);
  }
  return out;
}

/**
 * W + scaling·B·A in the tensor's own dtype. Each element's ΔW is summed in double precision and added to the
 * weight before rounding to float32, so an F32 weight matches PEFT's float32 merge to float32 rounding; a BF16/F16
 * weight is then rounded once more to its own dtype (PEFT rounds ΔW to it first, then the sum: no more exact).
 */
function mergedBytes(tensor: BaseTensor, raw: Uint8Array, d: LoraDelta, scaling: number): Uint8Array {
  // toFloat32 may share memory with `raw` (F32); `raw` is ours, so changing it in place is fine.
  const w = toFloat32(tensor.dtype, raw);
  const { A, B, rank: r, inFeatures: nIn, outFeatures: nOut } = d;
  const inOut = d.layout === 'in_out';
  const row = new Float64Array(nIn);
  for (let o = 0; o < nOut; o++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const b = B[o * r + k]! * scaling;
      if (b === 0) continue;
      const a0 = k * nIn;
      for (let i = 0; i < nIn; i++) row[i]! += b * A[a0 + i]!;
    }
    if (inOut) for (let i = 0; i < nIn; i++) w[i * nOut + o] = w[i * nOut + o]! + row[i]!;
    else for (let i = 0, at = o * nIn; i < nIn; i++) w[at + i] = w[at + i]! + row[i]!;
  }
  return fromFloat32(tensor.dtype, w);
}

async function writeSliced(file: FileSink, bytes: Uint8Array, sliceBytes: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += sliceBytes) await file.write(bytes.subarray(at, Math.min(bytes.length, at + sliceBytes)));
}

async function writeText(sink: FolderSink, path: string, text: string): Promise<void> {
  const file = await sink.open(path);
  await file.write(new TextEncoder().encode(text));
  await file.close();
}
