import * as tf from '@tensorflow/tfjs';
import { applyLinear, type LinearApply } from '../models/linear.js';
import { causalLmLossFromHidden } from '../models/loss.js';
import type { CausalLM } from '../models/model.js';
import type { EvalLossFn, LossFn } from './batch.js';

/**
 * What the loss functions need from a LoRA adapter: its projection hook in training mode (dropout
 * drawn from seed and step) or inference mode. Structural, so this file does not depend on how
 * the adapter is built.
 */
export interface AdapterHook {
  apply(mode: { training: true; seed: number; step: number } | { training: false }): LinearApply;
}

export interface LossOptions {
  /** Recompute each transformer block in the backward pass instead of keeping its activations (run config `gradient_checkpointing`). */
  readonly gradientCheckpointing?: boolean;
  /** Bytes one chunk of the loss's logits may take; see causalLmLossFromHidden. */
  readonly maxLogitsChunkBytes?: number;
}

/**
 * The batch's mean loss from the model's final hidden states, the head run chunk by chunk so that a
 * large vocabulary's [tokens, vocab] logits never exist whole (see causalLmLossFromHidden).
 */
function lossOf(model: CausalLM, inputs: tf.Tensor2D, targets: tf.Tensor2D, mask: tf.Tensor2D, linear?: LinearApply, opts: LossOptions = {}): tf.Scalar {
  return tf.tidy(() => {
    const hidden = model.hidden(inputs, { linear, gradientCheckpointing: opts.gradientCheckpointing ?? false });
    return causalLmLossFromHidden(hidden, model.lmHead, linear ?? applyLinear, targets, mask, { maxChunkBytes: opts.maxLogitsChunkBytes });
  });
}

/**
 * Training loss through the adapter. Dropout is drawn from (seed, pass), where pass counts every
 * forward pass, so two micro-batches of one step never share a mask and a rerun draws the same ones.
 */
export function loraLossFn(model: CausalLM, adapter: AdapterHook, seed: number, opts: LossOptions = {}): LossFn {
  return (batch, ctx) =>
    lossOf(model, batch.inputs, batch.targets, batch.mask, adapter.apply({ training: true, seed, step: ctx.pass }), opts);
}

/** Evaluation loss through the adapter, without dropout. */
export function loraEvalLossFn(model: CausalLM, adapter: AdapterHook): EvalLossFn {
  return (batch) => lossOf(model, batch.inputs, batch.targets, batch.mask, adapter.apply({ training: false }));
}

/**
 * The model's own loss with no hook, for training the model's weights themselves (build the model
 * from tf.Variables and train those, e.g. pretraining a tiny base model) or evaluating a base model.
 * Serves as both a LossFn and an EvalLossFn since it has no randomness.
 */
export function modelLossFn(model: CausalLM): EvalLossFn & LossFn {
  return (batch) => lossOf(model, batch.inputs, batch.targets, batch.mask);
}
