import { crc32c } from '../logging/crc32c.js';
import { PLATFORM_IS_LITTLE_ENDIAN } from '../safetensors/dtype.js';
import type { BestEval, DataPosition, ParamState, TrainerCheckpoint, TrainingPlan } from './checkpoint.js';

/**
 * A checkpoint as one byte string, so storage can slice it like any other large value and a damaged copy is caught
 * before anything trains on it:
 *
 *   bytes  0..7   magic "LORACKPT"
 *          8..11  u32 format version (1)
 *         12..15  u32 H, the header's byte length (a multiple of 4, JSON padded with spaces)
 *         16..19  u32 CRC-32C of every byte from 20 to the end
 *         20..    the header: JSON of the checkpoint's plain fields and each parameter's shape
 *       20+H..    the data, little-endian: the window order (u32), then per parameter its value, m and v (f32)
 *
 * Section sizes follow from the header (order length, shapes), so the total length is checked exactly.
 */

const MAGIC = 'LORACKPT';
const VERSION = 1;
const PREFIX = 20;

interface Header {
  readonly step: number;
  readonly position: DataPosition;
  readonly plan: TrainingPlan;
  readonly optimizerSteps: number;
  readonly bestEval: BestEval | null;
  readonly pendingLogLosses: readonly number[];
  readonly trainSeconds: number;
  /** Absent in checkpoints written before updates were counted when skipped. */
  readonly skippedSteps?: number;
  readonly orderLength: number;
  readonly shapes: readonly (readonly number[])[];
}

export class CheckpointFormatError extends Error {
  override readonly name = 'CheckpointFormatError';
}

export function encodeCheckpoint(ck: TrainerCheckpoint): Uint8Array {
  requireLittleEndian();
  const header: Header = {
    step: ck.step,
    position: ck.position,
    plan: ck.plan,
    optimizerSteps: ck.optimizerSteps,
    bestEval: ck.bestEval,
    pendingLogLosses: ck.pendingLogLosses,
    trainSeconds: ck.trainSeconds,
    ...(ck.skippedSteps === undefined ? {} : { skippedSteps: ck.skippedSteps }),
    orderLength: ck.order.length,
    shapes: ck.params.map((p) => p.shape),
  };
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = Math.ceil(json.length / 4) * 4;
  const floats = ck.params.reduce((n, p) => n + 3 * p.value.length, 0);
  const out = new Uint8Array(PREFIX + headerBytes + 4 * (ck.order.length + floats));
  out.set(new TextEncoder().encode(MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(8, VERSION, true);
  view.setUint32(12, headerBytes, true);
  out.fill(0x20, PREFIX, PREFIX + headerBytes);
  out.set(json, PREFIX);
  let at = PREFIX + headerBytes;
  const put = (values: Uint32Array | Float32Array): void => {
    out.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), at);
    at += values.byteLength;
  };
  put(ck.order);
  for (const p of ck.params) {
    const size = p.shape.reduce((n, d) => n * d, 1);
    if (p.value.length !== size || p.m.length !== size || p.v.length !== size) {
      throw new Error(`encodeCheckpoint: a [${p.shape.join(', ')}] parameter with ${p.value.length}, ${p.m.length}, ${p.v.length} values`);
    }
    put(p.value);
    put(p.m);
    put(p.v);
  }
  view.setUint32(16, crc32c(out.subarray(PREFIX)), true);
  return out;
}

/** The checkpoint `bytes` hold; a CheckpointFormatError says what is wrong when they are not one, intact. */
export function decodeCheckpoint(bytes: Uint8Array): TrainerCheckpoint {
  requireLittleEndian();
  if (bytes.length < PREFIX || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) fail('it is not a LoRA Lab checkpoint');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== VERSION) fail(`format version ${version} is not one this version of the app reads (${VERSION})`);
  const headerBytes = view.getUint32(12, true);
  if (headerBytes % 4 !== 0 || PREFIX + headerBytes > bytes.length) fail('its header length is impossible');
  if (crc32c(bytes.subarray(PREFIX)) !== view.getUint32(16, true)) fail('its checksum does not match: it was damaged or cut short');
  let header: Header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(PREFIX, PREFIX + headerBytes))) as Header;
  } catch {
    fail('its header is not JSON');
  }
  checkHeader(header);
  const sizes = header.shapes.map((s) => s.reduce((n, d) => n * d, 1));
  const expected = PREFIX + headerBytes + 4 * (header.orderLength + 3 * sizes.reduce((n, s) => n + s, 0));
  if (expected !== bytes.length) fail(`it is ${bytes.length} bytes, its header describes ${expected}`);
  let at = PREFIX + headerBytes;
  // slice() copies into a fresh, aligned buffer: the result must not keep the whole byte string alive.
  const take = (n: number): ArrayBuffer => {
    const part = bytes.slice(at, at + 4 * n).buffer;
    at += 4 * n;
    return part;
  };
  const order = new Uint32Array(take(header.orderLength));
  const params: ParamState[] = header.shapes.map((shape, i) => ({
    shape,
    value: new Float32Array(take(sizes[i]!)),
    m: new Float32Array(take(sizes[i]!)),
    v: new Float32Array(take(sizes[i]!)),
  }));
  const { step, position, plan, optimizerSteps, bestEval, pendingLogLosses, trainSeconds, skippedSteps } = header;
  const skipped = skippedSteps === undefined ? {} : { skippedSteps };
  return { step, position, order, plan, params, optimizerSteps, bestEval, pendingLogLosses, trainSeconds, ...skipped };
}

function fail(problem: string): never {
  throw new CheckpointFormatError(`checkpoint: ${problem}.`);
}

function requireLittleEndian(): void {
  // Every platform a browser runs WebGPU or wasm on is little-endian; a copy of raw typed arrays relies on it.
  if (!PLATFORM_IS_LITTLE_ENDIAN) throw new Error('checkpoints are read and written on little-endian platforms only');
}

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
const isFiniteNumber = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x);
const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);

/** Every field a decoded header must have, with its type: a header that passes can be used without further checks. */
function checkHeader(h: unknown): asserts h is Header {
  const bad = (field: string): never => fail(`its header field ${field} is missing or malformed`);
  if (!isObject(h)) bad('(root)');
  const r = h as Record<string, unknown>;
  for (const k of ['step', 'optimizerSteps', 'orderLength'] as const) if (!isCount(r[k])) bad(k);
  if (!isFiniteNumber(r['trainSeconds'])) bad('trainSeconds');
  if (r['skippedSteps'] !== undefined && !isCount(r['skippedSteps'])) bad('skippedSteps');
  const pos = r['position'];
  if (!isObject(pos) || !isCount(pos['epoch']) || !isCount(pos['microBatch'])) bad('position');
  const plan = r['plan'];
  if (!isObject(plan) || typeof plan['dataFingerprint'] !== 'string') bad('plan');
  for (const k of ['seed', 'batchSize', 'gradAccumSteps', 'totalSteps', 'windows', 'seqLen'] as const) {
    if (!isCount((plan as Record<string, unknown>)[k])) bad(`plan.${k}`);
  }
  const best = r['bestEval'];
  if (best !== null && (!isObject(best) || !isCount(best['step']) || !isFiniteNumber(best['loss']) || !isCount(best['evalsSince']))) bad('bestEval');
  const pending = r['pendingLogLosses'];
  if (!Array.isArray(pending) || !pending.every(isFiniteNumber)) bad('pendingLogLosses');
  const shapes = r['shapes'];
  if (!Array.isArray(shapes) || !shapes.every((s) => Array.isArray(s) && s.every(isCount))) bad('shapes');
}
