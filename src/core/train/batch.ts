import * as tf from '@tensorflow/tfjs';
import { gatherWindows, type WindowSet } from '../data/packing.js';

/** One batch on the device: [rows, seqLen] each. */
export interface Batch {
  /** int32 input ids. */
  readonly inputs: tf.Tensor2D;
  /** int32 target ids, inputs shifted by one token. */
  readonly targets: tf.Tensor2D;
  /** float32 0/1: which targets count in the loss. */
  readonly mask: tf.Tensor2D;
  readonly rows: number;
  /** Unmasked targets in the batch, counted on the host so weighting needs no readback. */
  readonly targetTokens: number;
}

/** Where a training forward pass sits in the run; loss functions draw dropout from it. */
export interface LossContext {
  /** The optimizer step being computed, 0-based. */
  readonly step: number;
  /** Index of the micro-batch within that step (gradient accumulation), 0-based. */
  readonly microBatch: number;
  /**
   * Counts every training forward pass from 0, so it differs between the micro-batches of one
   * step: the value to seed per-pass randomness (dropout masks) with.
   */
  readonly pass: number;
}

/**
 * Mean loss of a batch over what counts in it (its unmasked targets; its images), differentiable in the trained
 * variables. B is the batch kind: token windows by default.
 */
export type LossFn<B = Batch> = (batch: B, ctx: LossContext) => tf.Scalar;

/** The same without randomness (no dropout, fixed noise), for evaluation. */
export type EvalLossFn<B = Batch> = (batch: B) => tf.Scalar;

/** Uploads windows `indices` as one batch. Release it with disposeBatch. */
export function uploadBatch(windows: WindowSet, indices: readonly number[]): Batch {
  const { inputs, targets, mask, targetTokens } = gatherWindows(windows, indices);
  const shape: [number, number] = [indices.length, windows.seqLen];
  return {
    inputs: tf.tensor2d(inputs, shape, 'int32'),
    targets: tf.tensor2d(targets, shape, 'int32'),
    mask: tf.tensor2d(mask, shape, 'float32'),
    rows: indices.length,
    targetTokens,
  };
}

export function disposeBatch(batch: Batch): void {
  tf.dispose([batch.inputs, batch.targets, batch.mask]);
}
