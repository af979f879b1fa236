import { UserError } from '../errors';
import { BYTES_PER_ELEMENT, isSupportedDtype, OTHER_SAFETENSORS_DTYPES, SUPPORTED_DTYPES, type Dtype } from './dtype';
import type { ByteSource } from './source';

export interface TensorEntry {
  readonly name: string;
  readonly dtype: Dtype;
  readonly shape: readonly number[];
  /** absolute byte offsets in the file */
  readonly begin: number;
  readonly end: number;
}

export interface SafetensorsHeader {
  readonly file: string;
  /** Absolute offset of the data section (8 + header length); tensor offsets in the JSON are relative to it. */
  readonly dataStart: number;
  /** sorted by begin */
  readonly tensors: readonly TensorEntry[];
  readonly metadata: Readonly<Record<string, string>>;
  /** Integer and bool tensors passed over (only with `skipIntegerTensors`; otherwise they are refused): never loaded. */
  readonly skipped: readonly SkippedTensorEntry[];
}

/** An integer or bool tensor a header was read past, e.g. the I64 `position_ids` buffer of SD 1.x text encoders. */
export interface SkippedTensorEntry {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly begin: number;
  readonly end: number;
}

/** Bytes per element of the integer dtypes `skipIntegerTensors` passes over (they still must tile the data section). */
const INTEGER_DTYPE_BYTES: Readonly<Record<string, number>> = { BOOL: 1, U8: 1, I8: 1, I16: 2, U16: 2, I32: 4, U32: 4, I64: 8, U64: 8 };

/** Same limit as the reference implementation: a real header is kilobytes; more means garbage in the length. */
export const MAX_HEADER_BYTES = 100_000_000;

const NOT_SAFETENSORS = 'this is not a safetensors file or it is corrupted.';
const SUPPORTED_LIST = SUPPORTED_DTYPES.join(', ');

/** Reads exactly `end - begin` bytes or explains that the file is shorter than its header promised. */
async function readExact(source: ByteSource, begin: number, end: number, what: string): Promise<Uint8Array> {
  const bytes = await source.read(begin, end);
  if (bytes.length !== end - begin) {
    throw new UserError(
      source.name,
      `reading ${what} (bytes ${begin} to ${end}) returned only ${bytes.length} of ${end - begin} bytes; ` +
        'the file is truncated or changed while it was being read.',
      'Pick the file again; if this repeats, download it again.',
    );
  }
  return bytes;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  return `a ${typeof v}`;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isWholeNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Bad JSON values can be huge; keep messages short enough to read in a toast. */
function show(v: unknown): string {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function parseMetadata(file: string, raw: unknown): Record<string, string> {
  if (!isObject(raw)) {
    throw new UserError(file, `the "__metadata__" entry must be an object of strings, but it is ${describe(raw)}; ${NOT_SAFETENSORS}`);
  }
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'string') {
      throw new UserError(
        file,
        `the "__metadata__" value for ${JSON.stringify(key)} must be a string, but it is ${describe(value)}; ${NOT_SAFETENSORS}`,
      );
    }
    out[key] = value;
  }
  return out;
}

/** Validates one entry in isolation; `dataStart` turns its relative offsets into absolute ones. */
function parseTensor(file: string, name: string, raw: unknown, dataStart: number, skipIntegers: boolean): TensorEntry | SkippedTensorEntry {
  const t = `tensor ${JSON.stringify(name)}`;
  if (!isObject(raw)) {
    throw new UserError(file, `${t} must be an object with "dtype", "shape" and "data_offsets", but it is ${describe(raw)}; ${NOT_SAFETENSORS}`);
  }
  for (const field of ['dtype', 'shape', 'data_offsets']) {
    if (!(field in raw)) throw new UserError(file, `${t} has no "${field}"; ${NOT_SAFETENSORS}`);
  }
  const { dtype, shape, data_offsets: offsets } = raw;
  if (typeof dtype !== 'string') {
    throw new UserError(file, `${t} has a "dtype" that is ${describe(dtype)} instead of a string; ${NOT_SAFETENSORS}`);
  }
  // Checked before the shape and offsets: an unsupported dtype (a quantized model) is the likeliest real-world
  // problem, and its message tells the person what to do.
  const integerBytes = skipIntegers ? INTEGER_DTYPE_BYTES[dtype] : undefined;
  if (!isSupportedDtype(dtype) && integerBytes === undefined) {
    const known = OTHER_SAFETENSORS_DTYPES.has(dtype);
    throw new UserError(
      file,
      known
        ? `${t} has dtype ${dtype}, which is not supported by LoRA Lab (supported: ${SUPPORTED_LIST}).`
        : `${t} has dtype ${show(dtype)}, which is not a safetensors dtype; LoRA Lab supports ${SUPPORTED_LIST}.`,
      `Use a copy of the model saved in ${SUPPORTED_LIST} (quantized models cannot be fine-tuned here).`,
    );
  }
  if (!Array.isArray(shape)) {
    throw new UserError(file, `${t} has a "shape" that is ${describe(shape)} instead of a list of numbers; ${NOT_SAFETENSORS}`);
  }
  if (!shape.every(isWholeNumber)) {
    throw new UserError(file, `${t} has an invalid shape ${show(shape)}: every dimension must be a whole number 0 or larger; ${NOT_SAFETENSORS}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2) {
    throw new UserError(file, `${t} has "data_offsets" ${show(offsets)} instead of a list of two numbers [begin, end]; ${NOT_SAFETENSORS}`);
  }
  const [rb, re] = offsets as [unknown, unknown];
  if (!isWholeNumber(rb) || !isWholeNumber(re)) {
    throw new UserError(file, `${t} has invalid data_offsets ${show(offsets)}: both must be whole numbers 0 or larger; ${NOT_SAFETENSORS}`);
  }
  if (re < rb) {
    throw new UserError(file, `${t} has data_offsets [${rb}, ${re}] that end before they begin; ${NOT_SAFETENSORS}`);
  }
  let elements = 1;
  for (const d of shape) elements *= d;
  const needed = elements * (isSupportedDtype(dtype) ? BYTES_PER_ELEMENT[dtype] : integerBytes!);
  // An unsafe product cannot equal a real offset span, but say so explicitly rather than print a rounded number.
  if (!Number.isSafeInteger(needed)) {
    throw new UserError(file, `${t} has shape [${shape.join(', ')}], which is impossibly large; ${NOT_SAFETENSORS}`);
  }
  if (needed !== re - rb) {
    throw new UserError(
      file,
      `${t} has shape [${shape.join(', ')}] of dtype ${dtype}, which needs ${needed} bytes, ` +
        `but its data_offsets [${rb}, ${re}] span ${re - rb} bytes; ${NOT_SAFETENSORS}`,
    );
  }
  return { name, dtype, shape: Object.freeze(shape.slice()), begin: dataStart + rb, end: dataStart + re };
}

/**
 * Reads only the 8-byte length and the JSON header, and validates everything checkable without reading the data,
 * with the same strictness as the Python library (tensors must tile the data section exactly), so a file we accept
 * loads everywhere else too and a truncated download is caught before any training starts.
 */
export async function readHeader(source: ByteSource, opts?: { readonly skipIntegerTensors?: boolean }): Promise<SafetensorsHeader> {
  const file = source.name;
  if (source.size < 8) {
    throw new UserError(
      file,
      `the file is only ${source.size} bytes long, too short to be a safetensors file (the first 8 bytes alone give the header length).`,
      'Pick the model\'s .safetensors file; if it is the right file, download it again.',
    );
  }
  const prefix = await readExact(source, 0, 8, 'the header length');
  // uint64: read as BigInt so lengths past 2^53 are compared and reported exactly instead of rounded.
  const declared = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    throw new UserError(
      file,
      `the header length says ${declared} bytes, which is absurdly large (real headers are far below the 100 MB limit); ${NOT_SAFETENSORS}`,
    );
  }
  const headerLength = Number(declared);
  if (headerLength > source.size - 8) {
    throw new UserError(
      file,
      `the header says it is ${headerLength} bytes long but the file has only ${source.size} bytes; ` +
        'the file is truncated or not a safetensors file.',
      'If the download was interrupted, download the file again.',
    );
  }
  const dataStart = 8 + headerLength;
  const headerBytes = await readExact(source, 8, dataStart, 'the header');

  let text: string;
  try {
    // fatal: reject invalid UTF-8 instead of silently inserting U+FFFD into tensor names.
    // ignoreBOM: keep a BOM so JSON.parse rejects it, as the reference implementation does.
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(headerBytes);
  } catch {
    throw new UserError(file, `the header is not valid UTF-8 text; ${NOT_SAFETENSORS}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    const why = e instanceof Error ? ` (${e.message})` : '';
    throw new UserError(file, `the header is not valid JSON${why}; ${NOT_SAFETENSORS}`);
  }
  if (!isObject(json)) {
    throw new UserError(file, `the header is ${describe(json)} instead of a JSON object of tensors; ${NOT_SAFETENSORS}`);
  }

  let metadata: Record<string, string> = {};
  const tensors: (TensorEntry | SkippedTensorEntry)[] = [];
  for (const [name, raw] of Object.entries(json)) {
    if (name === '__metadata__') metadata = parseMetadata(file, raw);
    else tensors.push(parseTensor(file, name, raw, dataStart, opts?.skipIntegerTensors === true));
  }
  // Zero-size tensors share an offset with their neighbour; ordering ties by end then name keeps the result stable.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));

  const dataLength = source.size - dataStart;
  // Checked before overlaps and gaps: an interrupted download is by far the likeliest cause and deserves the
  // clearest message, even if the damaged file also fails the later checks.
  for (const t of tensors) {
    if (t.end > source.size) {
      throw new UserError(
        file,
        `tensor ${JSON.stringify(t.name)} ends at byte ${t.end - dataStart} of the data section but the file has only ` +
          `${dataLength} bytes of data; the file is truncated.`,
        'If the download was interrupted, download the file again.',
      );
    }
  }
  let cursor = dataStart;
  let previous: TensorEntry | SkippedTensorEntry | undefined;
  for (const t of tensors) {
    if (t.begin < cursor && previous) {
      throw new UserError(
        file,
        `tensors ${JSON.stringify(previous.name)} (bytes ${previous.begin - dataStart} to ${previous.end - dataStart}) and ` +
          `${JSON.stringify(t.name)} (bytes ${t.begin - dataStart} to ${t.end - dataStart}) overlap; ${NOT_SAFETENSORS}`,
      );
    }
    if (t.begin > cursor) {
      const where = previous
        ? `between tensors ${JSON.stringify(previous.name)} and ${JSON.stringify(t.name)}`
        : `before the first tensor ${JSON.stringify(t.name)}`;
      throw new UserError(
        file,
        `${t.begin - cursor} bytes ${where} belong to no tensor (a hole in the data section, which the safetensors ` +
          `format does not allow); ${NOT_SAFETENSORS}`,
      );
    }
    cursor = t.end;
    previous = t;
  }
  if (cursor < source.size) {
    const last = previous ? `after the last tensor ${JSON.stringify(previous.name)}` : 'in the data section, which has no tensors';
    throw new UserError(
      file,
      `${source.size - cursor} bytes at the end of the file ${last} belong to no tensor (the safetensors format does ` +
        `not allow left-over bytes); ${NOT_SAFETENSORS}`,
    );
  }

  return Object.freeze({
    file,
    dataStart,
    tensors: Object.freeze(tensors.filter((t): t is TensorEntry => isSupportedDtype(t.dtype)).map((t) => Object.freeze(t))),
    skipped: Object.freeze(tensors.filter((t) => !isSupportedDtype(t.dtype)).map((t) => Object.freeze(t))),
    metadata: Object.freeze(metadata),
  });
}

/** Reads one tensor's raw little-endian bytes in its original dtype; the result belongs to the caller. */
export async function readTensorBytes(source: ByteSource, entry: TensorEntry): Promise<Uint8Array> {
  if (entry.end > source.size) {
    // Only reachable with an entry from another file's header, or a file that shrank after readHeader.
    throw new UserError(
      source.name,
      `tensor ${JSON.stringify(entry.name)} ends at byte ${entry.end} but the file has only ${source.size} bytes; the file is truncated or changed.`,
      'Pick the file again; if this repeats, download it again.',
    );
  }
  return readExact(source, entry.begin, entry.end, `tensor ${JSON.stringify(entry.name)}`);
}
