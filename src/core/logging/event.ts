/**
 * TensorBoard's `Event` message and the parts of `Summary` LoRA Lab writes and reads, encoded by hand.
 *
 * Field numbers come from TensorBoard's event.proto, summary.proto, tensor.proto, tensor_shape.proto
 * and histogram.proto. Encoding follows what TensorBoard's Python writer (upb) emits, so equal events give
 * equal bytes: fields in field-number order; proto3 scalars left out when their bits are all zero (so a
 * wall time of -0 is written, 0 is not); oneof members and sub-messages written whenever set, even when
 * zero or empty; repeated numbers packed.
 */
import type { Histogram } from './histogram';
import { DecodeError, ProtoReader, ProtoWriter, WIRE_I32, WIRE_I64, WIRE_LEN, WIRE_VARINT, decodeUtf8 } from './protobuf';

export type { Histogram } from './histogram';

/**
 * How a scalar is stored. `simple_value` is the legacy float32 field that every TensorBoard-reading
 * tool understands; the tensor forms are what TF2's tf.summary.scalar writes (a rank-0 tensor tagged
 * for the "scalars" plugin), kept so such files can be read and written back unchanged.
 */
export type ScalarEncoding = 'simple_value' | 'tensor_float' | 'tensor_double';

/** Summary.Image.colorspace: 1 grayscale, 2 grayscale + alpha, 3 RGB, 4 RGBA, 5 digital YUV, 6 BGRA. */
export type ImageColorspace = 1 | 2 | 3 | 4 | 5 | 6;

/**
 * The legacy Summary.Image that TensorBoard's Images tab shows: the encoded file (PNG for ours) with its pixel size
 * and channel layout. TensorBoard serves `encoded` as is, so height and width must describe it.
 */
export interface SummaryImage {
  readonly height: number;
  readonly width: number;
  readonly colorspace: ImageColorspace;
  /** The image file's bytes (encoded_image_string), e.g. a PNG. */
  readonly encoded: Uint8Array;
}

export type SummaryValue =
  | { tag: string; kind: 'scalar'; value: number; encoding?: ScalarEncoding }
  | { tag: string; kind: 'text'; text: string }
  | { tag: string; kind: 'histogram'; histogram: Histogram }
  | { tag: string; kind: 'image'; image: SummaryImage }
  /**
   * Anything else (audio, images of an unknown colorspace, other plugins' tensors, text that is not UTF-8). `raw` is the whole
   * serialized Summary.Value, so it is written back byte for byte; `what` says what it is, for messages.
   */
  | { tag: string; kind: 'other'; what: string; raw: Uint8Array };

export type TfEvent = { wallTime: number; step: number } & (
  /** `sourceWriter` is Event.source_metadata.writer: which program wrote the file. */
  | { kind: 'file_version'; fileVersion: string; sourceWriter?: string }
  | { kind: 'summary'; values: SummaryValue[] }
  /** Graphs, session logs, run metadata and the like; `raw` is the whole Event and is written back as is. */
  | { kind: 'other'; what: string; raw: Uint8Array }
);

/** Without this exact version string TensorBoard discards data whenever steps go backwards. */
export const FILE_VERSION = 'brain.Event:2';

// Event
const EV_WALL_TIME = 1;
const EV_STEP = 2;
const EV_FILE_VERSION = 3;
const EV_SUMMARY = 5;
const EV_SOURCE_METADATA = 10;
const EV_OTHER_PAYLOADS: Readonly<Record<number, string>> = {
  4: 'graph_def',
  6: 'log_message',
  7: 'session_log',
  8: 'tagged_run_metadata',
  9: 'meta_graph_def',
};
// SourceMetadata
const SM_WRITER = 1;
// Summary
const SU_VALUE = 1;
// Summary.Value
const SV_TAG = 1;
const SV_SIMPLE_VALUE = 2;
const SV_IMAGE = 4;
const SV_HISTO = 5;
const SV_TENSOR = 8;
const SV_METADATA = 9;
const SV_OTHER_PAYLOADS: Readonly<Record<number, string>> = { 3: 'old-style histogram', 6: 'audio' };
// Summary.Image
const IM_HEIGHT = 1;
const IM_WIDTH = 2;
const IM_COLORSPACE = 3;
const IM_ENCODED = 4;
// SummaryMetadata and its PluginData
const MD_PLUGIN_DATA = 1;
const PD_PLUGIN_NAME = 1;
// HistogramProto
const HI_MIN = 1;
const HI_MAX = 2;
const HI_NUM = 3;
const HI_SUM = 4;
const HI_SUM_SQUARES = 5;
const HI_BUCKET_LIMIT = 6;
const HI_BUCKET = 7;
// TensorProto, TensorShapeProto and its Dim
const TP_DTYPE = 1;
const TP_SHAPE = 2;
const TP_CONTENT = 4;
const TP_FLOAT_VAL = 5;
const TP_DOUBLE_VAL = 6;
const TP_STRING_VAL = 8;
const TS_DIM = 2;
const TS_UNKNOWN_RANK = 3;
const TD_SIZE = 1;
// DataType
const DT_FLOAT = 1;
const DT_DOUBLE = 2;
const DT_STRING = 7;

const SCALARS_PLUGIN = 'scalars';
const TEXT_PLUGIN = 'text';

/** proto3 leaves a number out when its bits are all zero; -0 has a sign bit, so it is written. */
const isDefault = (v: number): boolean => Object.is(v, 0);

// ---------------------------------------------------------------- encoding

function encodePluginMetadata(pluginName: string): Uint8Array {
  const pluginData = new ProtoWriter();
  pluginData.string(PD_PLUGIN_NAME, pluginName);
  const md = new ProtoWriter();
  md.bytes(MD_PLUGIN_DATA, pluginData.finish());
  return md.finish();
}

/** A rank-0 tensor; the empty shape message is still written, as the reference writer does. */
function encodeScalarTensor(dtype: number, fill: (w: ProtoWriter) => void): Uint8Array {
  const w = new ProtoWriter();
  w.uint(TP_DTYPE, dtype);
  w.bytes(TP_SHAPE, new Uint8Array(0));
  fill(w);
  return w.finish();
}

export function encodeHistogram(h: Histogram): Uint8Array {
  if (h.bucketLimits.length !== h.buckets.length) {
    throw new RangeError(`histogram has ${h.bucketLimits.length} bucket limits but ${h.buckets.length} buckets`);
  }
  const w = new ProtoWriter();
  if (!isDefault(h.min)) w.double(HI_MIN, h.min);
  if (!isDefault(h.max)) w.double(HI_MAX, h.max);
  if (!isDefault(h.num)) w.double(HI_NUM, h.num);
  if (!isDefault(h.sum)) w.double(HI_SUM, h.sum);
  if (!isDefault(h.sumSquares)) w.double(HI_SUM_SQUARES, h.sumSquares);
  if (h.bucketLimits.length > 0) w.packedDoubles(HI_BUCKET_LIMIT, h.bucketLimits);
  if (h.buckets.length > 0) w.packedDoubles(HI_BUCKET, h.buckets);
  return w.finish();
}

export function encodeImage(image: SummaryImage): Uint8Array {
  for (const [name, n] of [['height', image.height], ['width', image.width]] as const) {
    // int32 fields: a size TensorBoard could not hold is a caller's bug, not something to wrap silently.
    if (!Number.isInteger(n) || n < 1 || n > 0x7fffffff) throw new RangeError(`image ${name} ${n} is not a positive 32-bit integer`);
  }
  const w = new ProtoWriter();
  w.uint(IM_HEIGHT, image.height);
  w.uint(IM_WIDTH, image.width);
  w.uint(IM_COLORSPACE, image.colorspace);
  if (image.encoded.length > 0) w.bytes(IM_ENCODED, image.encoded);
  return w.finish();
}

function encodeValue(v: SummaryValue): Uint8Array {
  if (v.kind === 'other') return v.raw;
  const w = new ProtoWriter();
  if (v.tag !== '') w.string(SV_TAG, v.tag);
  switch (v.kind) {
    case 'scalar':
      switch (v.encoding ?? 'simple_value') {
        case 'simple_value':
          w.float(SV_SIMPLE_VALUE, v.value);
          break;
        case 'tensor_float':
          w.bytes(SV_TENSOR, encodeScalarTensor(DT_FLOAT, (t) => t.packedFloats(TP_FLOAT_VAL, [v.value])));
          w.bytes(SV_METADATA, encodePluginMetadata(SCALARS_PLUGIN));
          break;
        case 'tensor_double':
          w.bytes(SV_TENSOR, encodeScalarTensor(DT_DOUBLE, (t) => t.packedDoubles(TP_DOUBLE_VAL, [v.value])));
          w.bytes(SV_METADATA, encodePluginMetadata(SCALARS_PLUGIN));
          break;
      }
      break;
    case 'text':
      // The text plugin reads a DT_STRING tensor of UTF-8 (rendered as markdown), not a dedicated field.
      w.bytes(SV_TENSOR, encodeScalarTensor(DT_STRING, (t) => t.string(TP_STRING_VAL, v.text)));
      w.bytes(SV_METADATA, encodePluginMetadata(TEXT_PLUGIN));
      break;
    case 'histogram':
      w.bytes(SV_HISTO, encodeHistogram(v.histogram));
      break;
    case 'image':
      w.bytes(SV_IMAGE, encodeImage(v.image));
      break;
  }
  return w.finish();
}

/** Serializes one Event (without record framing). Throws RangeError for a step that is not a safe integer. */
export function encodeEvent(e: TfEvent): Uint8Array {
  if (e.kind === 'other') return e.raw;
  if (!Number.isSafeInteger(e.step)) throw new RangeError(`event step ${e.step} is not an integer`);
  const w = new ProtoWriter();
  if (!isDefault(e.wallTime)) w.double(EV_WALL_TIME, e.wallTime);
  if (e.step !== 0) w.int64(EV_STEP, e.step);
  if (e.kind === 'file_version') {
    w.string(EV_FILE_VERSION, e.fileVersion);
    if (e.sourceWriter !== undefined) {
      const sm = new ProtoWriter();
      if (e.sourceWriter !== '') sm.string(SM_WRITER, e.sourceWriter);
      w.bytes(EV_SOURCE_METADATA, sm.finish());
    }
  } else {
    const summary = new ProtoWriter();
    for (const v of e.values) summary.bytes(SU_VALUE, encodeValue(v));
    w.bytes(EV_SUMMARY, summary.finish());
  }
  return w.finish();
}

// ---------------------------------------------------------------- decoding

function decodeSourceWriter(bytes: Uint8Array): string {
  const r = new ProtoReader(bytes);
  let writer = '';
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === SM_WRITER) {
      r.expect(wire, WIRE_LEN, 'source_metadata.writer');
      writer = r.string('source_metadata.writer');
    } else r.skip(wire);
  }
  return writer;
}

function decodePluginName(bytes: Uint8Array): string {
  let name = '';
  const md = new ProtoReader(bytes);
  while (!md.done) {
    const { field, wire } = md.key();
    if (field !== MD_PLUGIN_DATA) {
      md.skip(wire);
      continue;
    }
    md.expect(wire, WIRE_LEN, 'summary metadata plugin_data');
    const pd = new ProtoReader(md.bytes());
    while (!pd.done) {
      const k = pd.key();
      if (k.field === PD_PLUGIN_NAME) {
        pd.expect(k.wire, WIRE_LEN, 'plugin_name');
        name = pd.string('plugin_name');
      } else pd.skip(k.wire);
    }
  }
  return name;
}

function decodeHistogram(bytes: Uint8Array, tag: string): Histogram {
  const h: Histogram = { min: 0, max: 0, num: 0, sum: 0, sumSquares: 0, bucketLimits: [], buckets: [] };
  const r = new ProtoReader(bytes);
  const dbl = (wire: number, name: string): number => {
    r.expect(wire, WIRE_I64, `histogram ${name}`);
    return r.double();
  };
  while (!r.done) {
    const { field, wire } = r.key();
    switch (field) {
      case HI_MIN: h.min = dbl(wire, 'min'); break;
      case HI_MAX: h.max = dbl(wire, 'max'); break;
      case HI_NUM: h.num = dbl(wire, 'num'); break;
      case HI_SUM: h.sum = dbl(wire, 'sum'); break;
      case HI_SUM_SQUARES: h.sumSquares = dbl(wire, 'sum_squares'); break;
      case HI_BUCKET_LIMIT: r.repeatedDouble(wire, h.bucketLimits, 'histogram bucket_limit'); break;
      case HI_BUCKET: r.repeatedDouble(wire, h.buckets, 'histogram bucket'); break;
      default: r.skip(wire);
    }
  }
  // Parallel arrays that disagree cannot be drawn correctly; TensorFlow refuses them too.
  if (h.bucketLimits.length !== h.buckets.length) {
    throw new DecodeError(`histogram "${tag}" has ${h.bucketLimits.length} bucket limits but ${h.buckets.length} buckets`);
  }
  return h;
}

/**
 * A Summary.Image, or null when it is not one we can write back as read: a size that is not positive, a colorspace
 * outside 1..6 (proto3 reads a missing one as 0), or a field given with another wire type.
 */
function decodeImage(bytes: Uint8Array): SummaryImage | null {
  const r = new ProtoReader(bytes);
  let height = 0;
  let width = 0;
  let colorspace = 0;
  let encoded = new Uint8Array(0);
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === IM_HEIGHT || field === IM_WIDTH || field === IM_COLORSPACE) {
      if (wire !== WIRE_VARINT) return null;
      const n = r.int64();
      if (field === IM_HEIGHT) height = n;
      else if (field === IM_WIDTH) width = n;
      else colorspace = n;
    } else if (field === IM_ENCODED) {
      if (wire !== WIRE_LEN) return null;
      encoded = r.bytes().slice();
    } else r.skip(wire);
  }
  const isColorspace = (c: number): c is ImageColorspace => Number.isInteger(c) && c >= 1 && c <= 6;
  if (height < 1 || width < 1 || height > 0x7fffffff || width > 0x7fffffff || !isColorspace(colorspace)) return null;
  return { height, width, colorspace, encoded };
}

interface TensorParts {
  dtype: number;
  /** null when the rank is unknown or a dimension is -1 */
  elements: number | null;
  content: Uint8Array | null;
  floats: number[];
  doubles: number[];
  strings: Uint8Array[];
}

function decodeElementCount(bytes: Uint8Array): number | null {
  const r = new ProtoReader(bytes);
  let count: number | null = 1;
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === TS_DIM) {
      r.expect(wire, WIRE_LEN, 'tensor shape dim');
      const d = new ProtoReader(r.bytes());
      let size = 0;
      while (!d.done) {
        const k = d.key();
        if (k.field === TD_SIZE) {
          d.expect(k.wire, WIRE_VARINT, 'tensor dim size');
          size = d.int64();
        } else d.skip(k.wire);
      }
      count = count === null || size < 0 ? null : count * size;
    } else if (field === TS_UNKNOWN_RANK) {
      r.expect(wire, WIRE_VARINT, 'tensor shape unknown_rank');
      if (r.varint() !== 0) count = null;
    } else r.skip(wire);
  }
  return count;
}

function decodeTensor(bytes: Uint8Array): TensorParts {
  const t: TensorParts = { dtype: 0, elements: 1, content: null, floats: [], doubles: [], strings: [] };
  const r = new ProtoReader(bytes);
  while (!r.done) {
    const { field, wire } = r.key();
    switch (field) {
      case TP_DTYPE:
        r.expect(wire, WIRE_VARINT, 'tensor dtype');
        t.dtype = r.varint();
        break;
      case TP_SHAPE:
        r.expect(wire, WIRE_LEN, 'tensor shape');
        t.elements = decodeElementCount(r.bytes());
        break;
      case TP_CONTENT:
        r.expect(wire, WIRE_LEN, 'tensor_content');
        t.content = r.bytes();
        break;
      case TP_FLOAT_VAL: r.repeatedFloat(wire, t.floats, 'tensor float_val'); break;
      case TP_DOUBLE_VAL: r.repeatedDouble(wire, t.doubles, 'tensor double_val'); break;
      case TP_STRING_VAL:
        r.expect(wire, WIRE_LEN, 'tensor string_val');
        t.strings.push(r.bytes());
        break;
      default: r.skip(wire);
    }
  }
  return t;
}

/**
 * The single number in a one-element float or double tensor, or null for any other tensor.
 * An empty value list means zero: TensorFlow fills tensors given no values with zeros.
 */
function scalarOf(t: TensorParts): { value: number; encoding: ScalarEncoding } | null {
  if (t.elements !== 1) return null;
  if (t.dtype === DT_FLOAT) {
    if (t.content !== null && t.content.length > 0) {
      if (t.content.length !== 4) return null;
      return { value: new DataView(t.content.buffer, t.content.byteOffset, 4).getFloat32(0, true), encoding: 'tensor_float' };
    }
    return t.floats.length <= 1 ? { value: t.floats[0] ?? 0, encoding: 'tensor_float' } : null;
  }
  if (t.dtype === DT_DOUBLE) {
    if (t.content !== null && t.content.length > 0) {
      if (t.content.length !== 8) return null;
      return { value: new DataView(t.content.buffer, t.content.byteOffset, 8).getFloat64(0, true), encoding: 'tensor_double' };
    }
    return t.doubles.length <= 1 ? { value: t.doubles[0] ?? 0, encoding: 'tensor_double' } : null;
  }
  return null;
}

/** Text is one UTF-8 string; PyTorch writes it with shape [1] rather than [], so any one-element shape is accepted. */
function textOf(t: TensorParts): string | null {
  if (t.dtype !== DT_STRING || t.elements !== 1 || t.strings.length !== 1) return null;
  return decodeUtf8(t.strings[0]!);
}

/**
 * Writers may attach plugin metadata only to the first value of each tag (TF1's FileWriter strips it
 * from later ones), so the plugin seen first for a tag is remembered in `tagPlugins` for the rest of the file.
 */
function decodeValue(bytes: Uint8Array, tagPlugins: Map<string, string>): SummaryValue {
  const r = new ProtoReader(bytes);
  let tag = '';
  let payload: { field: number; bytes: Uint8Array | null; simple: number } | null = null;
  let pluginName: string | null = null;
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === SV_TAG) {
      r.expect(wire, WIRE_LEN, 'summary value tag');
      tag = r.string('summary value tag');
    } else if (field === SV_SIMPLE_VALUE) {
      r.expect(wire, WIRE_I32, 'simple_value');
      payload = { field, bytes: null, simple: r.float() };
    } else if (field === SV_HISTO || field === SV_TENSOR || field === SV_IMAGE || field in SV_OTHER_PAYLOADS) {
      r.expect(wire, WIRE_LEN, SV_OTHER_PAYLOADS[field] ?? (field === SV_HISTO ? 'histo' : field === SV_IMAGE ? 'image' : 'tensor'));
      payload = { field, bytes: r.bytes(), simple: 0 };
    } else if (field === SV_METADATA) {
      r.expect(wire, WIRE_LEN, 'summary metadata');
      pluginName = decodePluginName(r.bytes());
    } else r.skip(wire);
  }
  if (pluginName !== null && pluginName !== '' && !tagPlugins.has(tag)) tagPlugins.set(tag, pluginName);
  const plugin = pluginName || tagPlugins.get(tag) || '';

  // A copy, so the value does not pin (or change with) the buffer of the whole file.
  const other = (what: string): SummaryValue => ({ tag, kind: 'other', what, raw: bytes.slice() });
  if (payload === null) return other('empty value');
  if (payload.field === SV_SIMPLE_VALUE) return { tag, kind: 'scalar', value: payload.simple, encoding: 'simple_value' };
  if (payload.field === SV_HISTO) return { tag, kind: 'histogram', histogram: decodeHistogram(payload.bytes!, tag) };
  if (payload.field === SV_IMAGE) {
    const image = decodeImage(payload.bytes!);
    return image ? { tag, kind: 'image', image } : other('image with an invalid size or colorspace');
  }
  if (payload.field === SV_TENSOR) {
    const t = decodeTensor(payload.bytes!);
    if (plugin === SCALARS_PLUGIN) {
      const s = scalarOf(t);
      if (s) return { tag, kind: 'scalar', ...s };
      return other('scalars-plugin tensor that is not a single float or double');
    }
    if (plugin === TEXT_PLUGIN) {
      const text = textOf(t);
      if (text !== null) return { tag, kind: 'text', text };
      return other('text-plugin tensor that is not a single UTF-8 string');
    }
    return other(plugin ? `tensor for the "${plugin}" plugin` : 'tensor without a plugin');
  }
  return other(SV_OTHER_PAYLOADS[payload.field]!);
}

function decodeSummary(bytes: Uint8Array, into: SummaryValue[], tagPlugins: Map<string, string>): void {
  const r = new ProtoReader(bytes);
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === SU_VALUE) {
      r.expect(wire, WIRE_LEN, 'summary value');
      into.push(decodeValue(r.bytes(), tagPlugins));
    } else r.skip(wire);
  }
}

/**
 * Parses one Event. Throws DecodeError when the bytes are not an Event. `tagPlugins` carries
 * each tag's plugin from earlier events of the same file; pass the same map for every event of a file.
 */
export function decodeEvent(bytes: Uint8Array, tagPlugins: Map<string, string> = new Map()): TfEvent {
  const r = new ProtoReader(bytes);
  let wallTime = 0;
  let step = 0;
  // Event's payload is a oneof: the last one present wins, as in any protobuf parser.
  let payload: string | null = null;
  let fileVersion = '';
  let sourceWriter: string | undefined;
  const values: SummaryValue[] = [];
  while (!r.done) {
    const { field, wire } = r.key();
    switch (field) {
      case EV_WALL_TIME:
        r.expect(wire, WIRE_I64, 'wall_time');
        wallTime = r.double();
        break;
      case EV_STEP:
        r.expect(wire, WIRE_VARINT, 'step');
        step = r.int64();
        break;
      case EV_FILE_VERSION:
        r.expect(wire, WIRE_LEN, 'file_version');
        fileVersion = r.string('file_version');
        payload = 'file_version';
        break;
      case EV_SUMMARY:
        r.expect(wire, WIRE_LEN, 'summary');
        // A message field seen twice is merged; for Summary that means its values are concatenated.
        decodeSummary(r.bytes(), values, tagPlugins);
        payload = 'summary';
        break;
      case EV_SOURCE_METADATA:
        r.expect(wire, WIRE_LEN, 'source_metadata');
        sourceWriter = decodeSourceWriter(r.bytes());
        break;
      default:
        if (field in EV_OTHER_PAYLOADS) payload = EV_OTHER_PAYLOADS[field]!;
        r.skip(wire);
    }
  }
  if (payload === 'file_version') {
    return sourceWriter === undefined
      ? { wallTime, step, kind: 'file_version', fileVersion }
      : { wallTime, step, kind: 'file_version', fileVersion, sourceWriter };
  }
  if (payload === 'summary') return { wallTime, step, kind: 'summary', values };
  return { wallTime, step, kind: 'other', what: payload ?? 'event without a payload', raw: bytes.slice() };
}
