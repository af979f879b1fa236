/** TensorBoard event files: write them as a run goes, read them back (ours or anyone's). */
export { crc32c, maskCrc, maskedCrc32c } from './crc32c';
export { decodeEvent, encodeEvent, encodeHistogram, encodeImage, FILE_VERSION } from './event';
export type { ImageColorspace, ScalarEncoding, SummaryImage, SummaryValue, TfEvent } from './event';
export { DEFAULT_BUCKET_LIMITS, histogramFromValues } from './histogram';
export type { Histogram } from './histogram';
export { DecodeError } from './protobuf';
export { frameRecord, readRecords } from './record';
export type { RecordSpan } from './record';
export { readEventFile, scalarSeries } from './reader';
export type { ScalarPoint } from './reader';
export { EventFileWriter, LORA_LAB_SOURCE_WRITER } from './writer';
export type { EventFileWriterOptions } from './writer';
