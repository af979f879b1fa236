import type { WindowSet } from '../data/packing.js';
import { disposeBatch, uploadBatch, type Batch } from './batch.js';
import { windowsFingerprint } from './checkpoint.js';

/**
 * The data a Trainer walks, whatever it is made of: `count` examples that it orders by seed and epoch, cuts into
 * micro-batches, and hands to the loss function as device batches of type B. Token windows of a language model
 * (windowExamples) and the cached latents of an image set (train/diffusion-examples.ts) are both one.
 */
export interface ExampleSet<B> {
  readonly count: number;
  /**
   * The size of one example, for the checkpoint plan and throughput: tokens per window, latent elements per image.
   * A resume with another size is another run.
   */
  readonly exampleSize: number;
  /** What throughput counts per example: tokens (the window's length) or images (1). */
  readonly throughputUnitsPerExample: number;
  /**
   * What the examples `indices` weigh in a mean over them: unmasked targets for windows (the token-weighted mean
   * Hugging Face's Trainer takes), 1 per image. 0 means nothing in them counts, and they are not run.
   */
  weightOf(indices: readonly number[]): number;
  /** The examples `indices` as one device batch; release it with `release`. */
  upload(indices: readonly number[]): B;
  release(batch: B): void;
  /** A hash of the examples' content: a checkpoint of a run on other data must not be resumed on this. */
  fingerprint(): string;
  /** Why an empty set cannot be trained on, for the person: the subject, problem and fix of a UserError. */
  readonly emptyProblem: { readonly subject: string; readonly problem: string; readonly fix: string };
}

/** A language model's packed token windows as the trainer's examples. */
export function windowExamples(windows: WindowSet): ExampleSet<Batch> {
  return {
    count: windows.count,
    exampleSize: windows.seqLen,
    throughputUnitsPerExample: windows.seqLen,
    weightOf: (indices) => targetTokensOf(windows, indices),
    upload: (indices) => uploadBatch(windows, indices),
    release: disposeBatch,
    fingerprint: () => windowsFingerprint(windows),
    emptyProblem: {
      subject: 'training data',
      problem: `has fewer than ${windows.seqLen + 1} tokens, not enough for a single training window.`,
      fix: 'Add more text or lower the sequence length.',
    },
  };
}

/** Unmasked targets in the windows `indices` (what gatherWindows counts, without building the batch). */
function targetTokensOf(windows: WindowSet, indices: readonly number[]): number {
  const s = windows.seqLen;
  let n = 0;
  for (const w of indices) for (let t = w * s; t < w * s + s; t++) n += windows.mask[t]!;
  return n;
}
