import * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../models/model.js';
import { heldTensors } from '../weights/row-blocks.js';

/**
 * What a run holds on the accelerator, in tfjs's own accounting of tensor data (whatever backend
 * holds it). Buffers a kernel makes and frees inside itself, and a backend's own caches (WebGPU's
 * buffer pool, XNNPACK's packed weights on wasm), are not tensors and not counted here.
 */

/** Bytes the given tensors hold on the backend: size × bytes per element of their dtype. */
export function heldBytes(tensors: Iterable<tf.Tensor>): number {
  let bytes = 0;
  for (const t of tensors) {
    if (t.dtype === 'string') continue; // no device bytes, and tfjs has no fixed size for them
    bytes += t.size * tf.util.bytesPerElement(t.dtype);
  }
  return bytes;
}

/**
 * The frozen base weights as the device holds them. Counted from the tensors themselves, so a weight
 * held in another dtype (packed halves as int32 words, int8 or NF4 codes plus their scales) counts
 * what it really takes: when the model's weights stop being one float32 tensor each, this is the one
 * place to list the tensors that hold each of them.
 */
export function baseWeightBytes(model: Pick<CausalLM, 'weights'>): number {
  return heldBytes([...model.weights.values()].flatMap((w) => heldTensors(w)));
}

export interface PeakWatch {
  /** The most bytes tfjs held in tensor data at any moment since the watch began. */
  peakBytes(): number;
  /** Ends the watch; peakBytes() keeps answering with the peak seen until then. */
  stop(): void;
}

interface EngineState {
  numBytes: number;
  /** One entry per live data buffer (tensors sharing data share it), set when made, deleted when freed. */
  tensorInfo: WeakMap<object, { bytes: number }>;
}

let active: PeakWatch | null = null;

/**
 * Watches the bytes of tensor data tfjs holds for their high-water mark.
 *
 * Sampled where? The peak of a training step is inside tf.variableGrads, at the end of the backward
 * pass, where no caller can look (the forward's saved tensors and every gradient are alive together,
 * and freed together before it returns); tf.memory() between steps misses it entirely, and tf.profile
 * would time every kernel. So the engine's own record of data buffers is observed as it changes: its
 * tensorInfo map gains an entry when a buffer is made and loses it when the backend frees it, and here
 * those two calls also keep a running total. That costs an addition per buffer, nothing on the device.
 *
 * Why not tf.memory().numBytes? It counts every tensor's size, so a reshape, a clone or a variable that
 * shares another tensor's data counts those bytes again: the tape's saved copies alone would double
 * it. Buffers are what memory holds. The count starts from numBytes as it is when the watch begins
 * (exact unless tensors alive then share data).
 *
 * One watch at a time: starting one ends the one before. Should tfjs replace its state
 * (tf.engine().reset()), the watch simply sees no more changes.
 */
export function watchPeakBytes(): PeakWatch {
  active?.stop();
  const state = (tf.engine() as unknown as { state: EngineState }).state;
  const buffers = state.tensorInfo;
  const { get, set } = WeakMap.prototype;
  const remove = WeakMap.prototype.delete;
  let live = state.numBytes;
  let peak = live;
  // Own properties shadow the prototype's methods on this one map; stop() deletes them again.
  Object.assign(buffers, {
    set(key: object, value: { bytes: number }) {
      live += value.bytes - ((get.call(buffers, key) as { bytes: number } | undefined)?.bytes ?? 0);
      if (live > peak) peak = live;
      return set.call(buffers, key, value);
    },
    delete(key: object) {
      live -= (get.call(buffers, key) as { bytes: number } | undefined)?.bytes ?? 0;
      return remove.call(buffers, key);
    },
  });
  let stopped = false;
  const watch: PeakWatch = {
    peakBytes: () => peak,
    stop() {
      if (stopped) return;
      stopped = true;
      if (active === watch) active = null;
      delete (buffers as Partial<Record<'set' | 'delete', unknown>>).set;
      delete (buffers as Partial<Record<'set' | 'delete', unknown>>).delete;
    },
  };
  active = watch;
  return watch;
}
