import * as tf from '@tensorflow/tfjs';

/**
 * The vector-Jacobian product of `f` at `xs`: the gradients of `f()` seeded with `dy` (same shape as
 * f's result), one per x, zeros for an x that f does not reach. Everything f's ops saved for their
 * gradients is released before this returns.
 *
 * For gradient functions that run their forward pass again (a checkpointed transformer block, one
 * chunk of the chunked loss): call it from a customGrad's gradFunc, with f reading the tensors the
 * forward saved.
 *
 * Why not tf.grads: tfjs has one tape per engine. Called while an outer backward pass is running (as
 * inside a gradFunc), a gradient computation starts a new tape over the outer one and, when it is
 * done, sets the engine's tape to null, after which the outer pass throws at its own clean-up (and its
 * saved tensors leak). So the outer tape is put back here. This is the one place that touches the
 * engine's tape; the recomputation itself is ordinary differentiation.
 */
export function vjp(f: () => tf.Tensor, xs: readonly tf.Tensor[], dy: tf.Tensor): tf.Tensor[] {
  const engine = tf.engine();
  const outerTape = engine.state.activeTape;
  let result: { value: tf.Tensor; grads: tf.Tensor[] };
  try {
    // allowNoGradients: an x that f does not reach (a LoRA matrix of an unused module) gets zeros below.
    result = engine.gradients(f, [...xs], dy, true);
  } finally {
    engine.state.activeTape = outerTape;
  }
  result.value.dispose();
  return xs.map((x, i) => result.grads[i] ?? tf.zerosLike(x));
}
