import { UserError } from '../errors';
import { decodeEvent, type TfEvent } from './event';
import { DecodeError } from './protobuf';
import { readRecords } from './record';

/**
 * Reads a whole event file. Unlike TensorBoard, which silently stops at the first bad record (it
 * expects to be tailing a file that is still being written), this rejects the file: LoRA Lab reads
 * finished files, and a silently shortened chart would look like a real result.
 *
 * Values it does not model (images, audio, other plugins) come back as kind 'other', never guessed at.
 */
export function readEventFile(name: string, bytes: Uint8Array): TfEvent[] {
  const tagPlugins = new Map<string, string>();
  return readRecords(name, bytes).map(({ index, offset, data }) => {
    try {
      return decodeEvent(data, tagPlugins);
    } catch (e) {
      if (!(e instanceof DecodeError)) throw e;
      throw new UserError(
        name,
        `record #${index} at byte ${offset}: bad protobuf: its CRCs are right but its ${data.length} data bytes are not a TensorBoard Event (${e.message}).`,
        'The file was not written by a TensorBoard-compatible writer, or the writer has a bug; remove this file from the log directory.',
      );
    }
  });
}

export interface ScalarPoint {
  step: number;
  wallTime: number;
  value: number;
}

/** Every scalar by tag, in file order (steps can repeat or go backwards when a run was resumed). */
export function scalarSeries(events: readonly TfEvent[]): Map<string, ScalarPoint[]> {
  const series = new Map<string, ScalarPoint[]>();
  for (const e of events) {
    if (e.kind !== 'summary') continue;
    for (const v of e.values) {
      if (v.kind !== 'scalar') continue;
      let points = series.get(v.tag);
      if (!points) series.set(v.tag, (points = []));
      points.push({ step: e.step, wallTime: e.wallTime, value: v.value });
    }
  }
  return series;
}
