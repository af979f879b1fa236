import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildModel, loadWeightsFromSafetensors, parseModelConfig } from '../../src/core/models/index';
import { bytesSource, readHeader } from '../../src/core/safetensors/index';
import { baseWeightBytes, heldBytes, watchPeakBytes, type PeakWatch } from '../../src/core/train/device-memory';

const FIXTURES = fileURLToPath(new URL('../../../shared/fixtures/models/', import.meta.url));

beforeAll(async () => {
  await tf.setBackend('cpu');
});

let watch: PeakWatch | null = null;
afterEach(() => watch?.stop());

describe('watchPeakBytes: the high-water mark of tensor data', () => {
  it('sees a peak that is gone before anyone could sample it, counting shared data once', () => {
    const before = tf.memory().numBytes;
    watch = watchPeakBytes();
    tf.tidy(() => {
      const x = tf.zeros([1000]); // 4000 bytes
      const y = x.reshape([10, 100]); // shares x's data
      const z = tf.clone(y); // cpu's Identity shares too
      const w = tf.add(z, 1); // a new 4000-byte buffer
      const b = tf.cast(w, 'bool'); // 1000 bytes
      return [x, y, z, w, b];
    }).forEach((t) => t.dispose());
    // Everything is freed again, so a sample taken now sees nothing of it.
    expect(tf.memory().numBytes).toBe(before);
    expect(watch.peakBytes() - before).toBe(4000 + 4000 + 1000);
  });

  it('counts the peak inside a backward pass, where tf.memory() cannot look', () => {
    const v = tf.variable(tf.ones([256, 256]));
    const x = tf.ones([64, 256]);
    const before = tf.memory().numBytes;
    watch = watchPeakBytes();
    const { value, grads } = tf.variableGrads(() => tf.sum(tf.matMul(x, v)) as tf.Scalar, [v]);
    const afterBytes = tf.memory().numBytes;
    tf.dispose([value, ...Object.values(grads)]);
    // At least the product [64, 256] and the gradient [256, 256] were alive at once, on top of what
    // survives the call (value and gradient): more than any sample before or after shows.
    expect(watch.peakBytes() - before).toBeGreaterThanOrEqual(64 * 256 * 4 + 256 * 256 * 4);
    expect(watch.peakBytes()).toBeGreaterThan(afterBytes);
    tf.dispose([v, x]);
  });

  it('stops counting when stopped, and a new watch ends the old one', () => {
    watch = watchPeakBytes();
    const start = watch.peakBytes();
    watch.stop();
    tf.zeros([1000]).dispose();
    expect(watch.peakBytes()).toBe(start);

    const first = watchPeakBytes();
    const second = watchPeakBytes();
    watch = second;
    tf.zeros([500]).dispose();
    expect(first.peakBytes()).toBe(start);
    expect(second.peakBytes()).toBe(start + 2000);
    // tfjs's own counter is untouched by all of this.
    expect(tf.memory().numBytes).toBe(start);
  });
});

describe('bytes the base weights hold', () => {
  it('heldBytes multiplies each tensor size by its dtype width', () => {
    const ts = [tf.zeros([3, 5]), tf.zeros([7], 'int32'), tf.zeros([11], 'bool')];
    expect(heldBytes(ts)).toBe(15 * 4 + 7 * 4 + 11);
    tf.dispose(ts);
  });

  it('baseWeightBytes of the tiny GPT-2 is its float32 checkpoint, tensor by tensor (tied head counted once)', async () => {
    const dir = join(FIXTURES, 'tiny-gpt2');
    const cfg = parseModelConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as unknown);
    const bytes = new Uint8Array(readFileSync(join(dir, 'model.safetensors')));
    const model = buildModel(cfg, await loadWeightsFromSafetensors(cfg, [bytesSource('model.safetensors', bytes)]));
    // Independently: the F32 file's header says how many bytes each tensor's data takes.
    const header = await readHeader(bytesSource('model.safetensors', bytes));
    const fileBytes = header.tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1) * 4, 0);
    expect(header.tensors.every((t) => t.dtype === 'F32')).toBe(true);
    expect(baseWeightBytes(model)).toBe(fileBytes);
    expect(fileBytes).toBeGreaterThan(0);
    model.dispose();
  });
});
