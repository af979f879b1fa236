import type { TfEvent } from './event';
import { ProtoReader, ProtoWriter, WIRE_LEN, WIRE_VARINT } from './protobuf';

/**
 * TensorBoard's rule for a run that restarted: an Event carrying `session_log { status: START }` at step S tells the
 * reader that the run went back to S, and TensorBoard (EventAccumulator, for files of version brain.Event:2) drops
 * every event it has read so far with step ≥ S, in every tag. Without it, a resumed run that logs steps again shows
 * each of them twice, because version-2 files keep out-of-order steps.
 *
 * LoRA Lab's own logs are also cut back to the checkpoint before a resume appends (storage/resume.ts), so readers
 * without this rule see each step once too; the START event is written all the same, as the record of the restart
 * that TensorBoard understands.
 */

// Event.session_log, SessionLog.status and its START value (tensorflow/core/util/event.proto).
const EV_WALL_TIME = 1;
const EV_STEP = 2;
const EV_SESSION_LOG = 7;
const SL_STATUS = 1;
const SL_START = 1;

/** The event that marks a restart at `step` (the first step the resumed run will log). */
export function sessionStartEvent(step: number, wallTime: number): TfEvent {
  const log = new ProtoWriter();
  log.uint(SL_STATUS, SL_START);
  const w = new ProtoWriter();
  if (wallTime !== 0) w.double(EV_WALL_TIME, wallTime);
  if (step !== 0) w.int64(EV_STEP, step);
  w.bytes(EV_SESSION_LOG, log.finish());
  return { wallTime, step, kind: 'other', what: 'session_log', raw: w.finish() };
}

/** Whether `e` is a session_log START (what decodeEvent returns for it: kind 'other', its raw bytes). */
export function isSessionStart(e: TfEvent): boolean {
  if (e.kind !== 'other' || e.what !== 'session_log') return false;
  const r = new ProtoReader(e.raw);
  let status = 0;
  while (!r.done) {
    const { field, wire } = r.key();
    if (field === EV_SESSION_LOG && wire === WIRE_LEN) {
      const log = new ProtoReader(r.bytes());
      while (!log.done) {
        const k = log.key();
        if (k.field === SL_STATUS && k.wire === WIRE_VARINT) status = log.int64();
        else log.skip(k.wire);
      }
    } else r.skip(wire);
  }
  return status === SL_START;
}

/** The events as TensorBoard keeps them: each session_log START drops the events before it with a step ≥ its own. */
export function applyRestarts(events: readonly TfEvent[]): TfEvent[] {
  let kept: TfEvent[] = [];
  for (const e of events) {
    if (isSessionStart(e)) kept = kept.filter((k) => k.kind === 'file_version' || k.step < e.step);
    kept.push(e);
  }
  return kept;
}
