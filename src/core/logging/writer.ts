import { encodeEvent, FILE_VERSION, type SummaryValue, type TfEvent } from './event';
import { histogramFromValues } from './histogram';
import { frameRecord } from './record';

export interface EventFileWriterOptions {
  /**
   * Goes in the first event's source_metadata.writer, which tells readers what wrote the file.
   * TensorBoard's own writer puts 'tensorboard.summary.writer.event_file_writer' there; pass that to
   * produce files byte-identical to it.
   */
  sourceWriter?: string;
}

export const LORA_LAB_SOURCE_WRITER = 'lora-lab';

/**
 * Builds an event file in memory, one record per event. It never touches storage: the app calls
 * takePending() after a batch of events and appends those bytes to the file it keeps (IndexedDB),
 * so the stored log grows in whole records and is always readable.
 *
 * Wall times are seconds since the Unix epoch (Date.now() / 1000); they are arguments rather than
 * read from a clock so that runs can be replayed and tests are exact.
 */
export class EventFileWriter {
  private readonly sourceWriter: string;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private started = false;
  private written = 0;

  constructor(options: EventFileWriterOptions = {}) {
    this.sourceWriter = options.sourceWriter ?? LORA_LAB_SOURCE_WRITER;
  }

  /**
   * events.out.tfevents.<10-digit unix seconds>.<host>.<n>. TensorBoard only needs "tfevents" in the
   * name, but it orders a run's files by name, so the time comes first and is zero-padded; use a new
   * `n` for each file started within the same second. Characters that are unsafe in file names become '_'.
   */
  static fileName(unixSeconds: number, host: string, n: number): string {
    if (!Number.isFinite(unixSeconds) || unixSeconds < 0) throw new RangeError(`bad unix time ${unixSeconds}`);
    if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`bad file counter ${n}`);
    const time = String(Math.floor(unixSeconds)).padStart(10, '0');
    const safeHost = host.replace(/[^A-Za-z0-9._-]/g, '_') || 'localhost';
    return `events.out.tfevents.${time}.${safeHost}.${n}`;
  }

  /** Total bytes produced so far, taken or not: the size the file will have. */
  get bytesWritten(): number {
    return this.written;
  }

  /** Must come first: TensorBoard needs the "brain.Event:2" marker to keep out-of-order steps. */
  writeFileVersion(wallTime: number): void {
    if (this.started) throw new Error('EventFileWriter: writeFileVersion was already called for this file');
    this.started = true;
    this.append({ wallTime, step: 0, kind: 'file_version', fileVersion: FILE_VERSION, sourceWriter: this.sourceWriter });
  }

  /** Written as the legacy float32 simple_value, the form every TensorBoard reader understands. */
  addScalar(tag: string, value: number, step: number, wallTime: number): void {
    this.addValue({ tag, kind: 'scalar', value, encoding: 'simple_value' }, step, wallTime);
  }

  /** Markdown, shown by TensorBoard's Text tab. */
  addText(tag: string, text: string, step: number, wallTime: number): void {
    this.addValue({ tag, kind: 'text', text }, step, wallTime);
  }

  /**
   * A histogram of raw values (weights, LoRA deltas, gradients) over TensorFlow's default buckets:
   * limits at 0 and ±1e-12·1.1^k up to 1e20, then ±DBL_MAX, so every bucket is 10% wider than the one
   * nearer zero; runs of empty buckets are merged. See histogramFromValues. Throws RangeError on NaN or ±Infinity.
   */
  addHistogram(tag: string, values: Float32Array | readonly number[], step: number, wallTime: number): void {
    this.addValue({ tag, kind: 'histogram', histogram: histogramFromValues(values) }, step, wallTime);
  }

  /** Any event, e.g. a histogram with its own buckets, or events read from another file. */
  addEvent(e: TfEvent): void {
    if (e.kind === 'file_version') {
      if (this.started) throw new Error('EventFileWriter: a file_version event was already written to this file');
      this.started = true;
    }
    this.append(e);
  }

  /** The bytes produced since the last call, as whole records; concatenated in order they are the file. */
  takePending(): Uint8Array {
    const out = new Uint8Array(this.pendingBytes);
    let at = 0;
    for (const chunk of this.pending) {
      out.set(chunk, at);
      at += chunk.length;
    }
    this.pending = [];
    this.pendingBytes = 0;
    return out;
  }

  private addValue(value: SummaryValue, step: number, wallTime: number): void {
    this.append({ wallTime, step, kind: 'summary', values: [value] });
  }

  private append(e: TfEvent): void {
    if (!this.started) {
      throw new Error('EventFileWriter: call writeFileVersion before adding events, or TensorBoard may drop data');
    }
    const record = frameRecord(encodeEvent(e));
    this.pending.push(record);
    this.pendingBytes += record.length;
    this.written += record.length;
  }
}
