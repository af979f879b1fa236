/**
 * TFRecord framing, the container of an event file: each record is
 *   uint64 LE data length | uint32 LE masked CRC32C of those 8 bytes | data | uint32 LE masked CRC32C of data.
 * The length has its own CRC so a reader never trusts a corrupt length to skip or allocate.
 */
import { UserError } from '../errors';
import { crc32c, maskCrc } from './crc32c';

const HEADER_BYTES = 12;
const FOOTER_BYTES = 4;
const TWO_32 = 2 ** 32;

export function frameRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + data.length + FOOTER_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length % TWO_32, true);
  view.setUint32(4, Math.floor(data.length / TWO_32), true);
  view.setUint32(8, maskCrc(crc32c(out.subarray(0, 8))), true);
  out.set(data, HEADER_BYTES);
  view.setUint32(HEADER_BYTES + data.length, maskCrc(crc32c(data)), true);
  return out;
}

export interface RecordSpan {
  /** 0-based position of the record in the file */
  index: number;
  /** byte offset of the record's length field */
  offset: number;
  /** the record's data (a view into the file's bytes) */
  data: Uint8Array;
}

const hex = (n: number): string => `0x${n.toString(16).padStart(8, '0')}`;

const CORRUPT_FIX =
  'The file is damaged (changed after it was written, or copied incompletely); copy it again from where the run wrote it.';
const TRUNCATED_FIX =
  'The file ends in the middle of a record, usually because it was copied while the run was still writing it; copy it again after the run has finished.';

/**
 * Splits an event file into records, checking both CRCs of every record.
 * Throws UserError naming the file, the record and its byte offset, and what is wrong.
 */
export function readRecords(fileName: string, bytes: Uint8Array): RecordSpan[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: RecordSpan[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const index = records.length;
    const where = `record #${index} at byte ${offset}`;
    const remaining = bytes.length - offset;
    if (remaining < HEADER_BYTES) {
      throw new UserError(
        fileName,
        `${where}: truncated record: the file ends ${remaining} bytes into the 12-byte record header.`,
        TRUNCATED_FIX,
      );
    }

    const lengthBytes = bytes.subarray(offset, offset + 8);
    const lengthCrc = crc32c(lengthBytes);
    const storedLengthCrc = view.getUint32(offset + 8, true);
    if (storedLengthCrc !== maskCrc(lengthCrc)) {
      throw new UserError(fileName, `${where}: bad length CRC (${crcMismatch(storedLengthCrc, lengthCrc)}).`, CORRUPT_FIX);
    }

    const length = view.getUint32(offset, true) + view.getUint32(offset + 4, true) * TWO_32;
    const available = remaining - HEADER_BYTES - FOOTER_BYTES;
    if (length > available) {
      throw new UserError(
        fileName,
        `${where}: truncated record in data: it declares ${length} data bytes plus a 4-byte CRC, but only ${remaining - HEADER_BYTES} bytes remain.`,
        TRUNCATED_FIX,
      );
    }

    const dataStart = offset + HEADER_BYTES;
    const data = bytes.subarray(dataStart, dataStart + length);
    const dataCrc = crc32c(data);
    const storedDataCrc = view.getUint32(dataStart + length, true);
    if (storedDataCrc !== maskCrc(dataCrc)) {
      throw new UserError(fileName, `${where}: bad data CRC (${crcMismatch(storedDataCrc, dataCrc)}).`, CORRUPT_FIX);
    }

    records.push({ index, offset, data });
    offset = dataStart + length + FOOTER_BYTES;
  }
  return records;
}

/** A stored CRC equal to the plain CRC32C is not random damage but a writer that forgot to mask; saying so helps whoever wrote it. */
function crcMismatch(stored: number, crc: number): string {
  const base = `stored ${hex(stored)}, expected ${hex(maskCrc(crc))}`;
  return stored === crc ? `${base}; the stored value is the unmasked CRC32C, so the writer forgot to mask it` : base;
}
