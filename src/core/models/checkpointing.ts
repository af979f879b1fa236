import * as tf from '@tensorflow/tfjs';
import { applyLinear, type Linear, type LinearApply } from './linear.js';
import { vjp } from './vjp.js';

/**
 * Gradient checkpointing (Hugging Face's `gradient_checkpointing`): a transformer block keeps none of
 * its activations for the backward pass, only its input; the backward pass runs the block again and
 * differentiates that. Activation memory goes from every block's intermediates to one block's plus
 * the blocks' inputs, for about one more forward pass of compute.
 *
 * In tfjs a block becomes one tf.customGrad op. Its forward runs inside the op, where tfjs records
 * nothing on the tape and tidies everything but the output. Its gradFunc recomputes the block on a
 * tape of its own (see vjp.ts) and returns the gradients for the op's inputs. A customGrad returns
 * gradients for its explicit inputs only, so the trainable tensors the block reads (LoRA's A and B)
 * are inputs of the op. tfjs hands a customGrad's inputs to its function as the very same objects,
 * and the recompute reads those objects again (through the same apply), so differentiating it with
 * respect to them gives their gradients; the gradFunc's saved copies would be other tensors, unknown
 * to the recompute's tape, and variables need no copy to outlive the forward pass.
 *
 * The block must compute the same function both times: the LinearApply's random draws (LoRA dropout)
 * are replayed (see CheckpointableApply), and tensors it reads that the forward pass made before it
 * (RoPE tables) are passed as `context`, kept by the op, because the forward pass's own tidy frees the
 * originals before the backward pass runs. Weights are closed over and stay alive with the model.
 */

/** A transformer block: hidden state in, hidden state out ([tokens, hidden] both), projections through `apply`. */
export type BlockFn = (h: tf.Tensor2D, apply: LinearApply, context: readonly tf.Tensor[]) => tf.Tensor2D;

/** Where a LinearApply's random draws stand; only the apply that made it knows what it holds. */
export type DrawMark = readonly number[];

/**
 * What a LinearApply offers so that blocks it runs can be checkpointed: LoRA's (see lora/adapter.ts).
 * A function that wraps one must pass these on (Object.assign), or checkpointing refuses it.
 */
export interface CheckpointableApply extends LinearApply {
  /** The trainable tensors `linear`'s projection reads through this apply: LoRA's A and B, or none. */
  trainables(linear: Linear): readonly tf.Variable[];
  /** Where the random draws stand now. */
  drawMark(): DrawMark;
  /** Runs `run` with the draws rewound to `mark`, so it draws what followed the mark again; then puts them back. */
  replayDraws<T>(mark: DrawMark, run: () => T): T;
}

export function isCheckpointable(apply: LinearApply): apply is CheckpointableApply {
  const a = apply as Partial<CheckpointableApply>;
  return typeof a.trainables === 'function' && typeof a.drawMark === 'function' && typeof a.replayDraws === 'function';
}

export interface BlockRun {
  /** How projections are computed; with checkpointing on, a trainable one must be a CheckpointableApply. */
  readonly apply: LinearApply;
  /** Every projection the block runs; the checkpoint passes their trainable tensors through its op. */
  readonly linears: readonly Linear[];
  /** Tensors the block reads that the forward pass made before it (RoPE tables); [] if none. */
  readonly context?: readonly tf.Tensor[];
  readonly checkpointing: boolean;
}

/** The model's block loop calls this once per block: the block as it is, or checkpointed. */
export function runBlock(block: BlockFn, h: tf.Tensor2D, run: BlockRun): tf.Tensor2D {
  const context = run.context ?? [];
  if (!run.checkpointing) return block(h, run.apply, context);
  const apply = guardLinears(run.apply, run.linears);
  if (isCheckpointable(run.apply)) {
    const ca = run.apply;
    const params = run.linears.flatMap((l) => ca.trainables(l));
    const mark = ca.drawMark();
    return checkpoint((x, ctx) => block(x, apply, ctx), h, params, context, (f) => ca.replayDraws(mark, f));
  }
  // Any other function might read trainable tensors that the op could not route, and lose their
  // gradients without a word; only the plain projection is known to read none (guardLinears refuses
  // trainable base weights).
  if (run.apply !== applyLinear) {
    throw new Error('gradient checkpointing needs a CheckpointableApply (the LoRA adapter\'s apply) or the plain projection');
  }
  return checkpoint((x, ctx) => block(x, apply, ctx), h, [], context, (f) => f());
}

/**
 * `block(h, context)` as one differentiable op that keeps only `h` (and `context`) for the backward
 * pass. `params`: the trainable tensors the block reads, which get their gradients through the op.
 * `replay` wraps the recompute so that it draws the same random values as the forward pass did.
 */
export function checkpoint(
  block: (h: tf.Tensor2D, context: readonly tf.Tensor[]) => tf.Tensor2D,
  h: tf.Tensor2D,
  params: readonly tf.Tensor[],
  context: readonly tf.Tensor[],
  replay: <T>(run: () => T) => T,
): tf.Tensor2D {
  const op = tf.customGrad((...inputs) => {
    const x = inputs[0] as tf.Tensor2D;
    const save = inputs[inputs.length - 1] as tf.GradSaveFunc;
    const out = block(x, context);
    // The op's tidy frees the block's intermediates; h and the context are kept for the recompute.
    save([x, ...context]);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => {
      const [sx, ...sContext] = saved as [tf.Tensor2D, ...tf.Tensor[]];
      return vjp(() => replay(() => block(sx, sContext)), [sx, ...params], dy);
    };
    return { value: out, gradFunc };
  });
  return op(h, ...params) as tf.Tensor2D;
}

/**
 * The apply the block sees. The op's gradients reach only the tensors routed through it, so anything
 * else trainable would be left without a gradient, silently; refused instead: a projection missing
 * from `linears`, and a projection whose own weight or bias is a trainable variable (a model trained
 * from scratch, which checkpointing does not serve).
 */
function guardLinears(apply: LinearApply, linears: readonly Linear[]): LinearApply {
  const known = new Set(linears);
  return (linear, x) => {
    if (!known.has(linear)) throw new Error(`gradient checkpointing: projection ${linear.path} runs in a block that did not list it`);
    if (isTrainableVariable(linear.weight) || isTrainableVariable(linear.bias)) {
      throw new Error(`gradient checkpointing: ${linear.path} has trainable base weights, which a checkpointed block cannot train`);
    }
    return apply(linear, x);
  };
}

function isTrainableVariable(t: unknown): boolean {
  return t instanceof tf.Variable && t.trainable;
}

/**
 * A block that reads several tensors the forward pass made before it, all of them differentiable: the
 * UNet's blocks read their activations and the time embedding or the text encoder's states, and a
 * LoRA on the time embedding or on the text encoder trains through those. `inputs[0]` is the running
 * activations; the block's result takes their place.
 */
export type MultiInputBlockFn<T extends tf.Tensor> = (inputs: readonly tf.Tensor[], apply: LinearApply) => T;

/**
 * runBlock for a MultiInputBlockFn: the block as it is, or checkpointed so that the backward pass
 * recomputes it from its inputs (kept) and returns gradients for every input as well as for the
 * trainable tensors of `run.linears`. The same rules as runBlock's apply: with checkpointing on, a
 * trainable projection's apply must be a CheckpointableApply (its dropout draws are replayed).
 */
export function runMultiInputBlock<T extends tf.Tensor>(block: MultiInputBlockFn<T>, inputs: readonly tf.Tensor[], run: Omit<BlockRun, 'context'>): T {
  if (!run.checkpointing) return block(inputs, run.apply);
  const apply = guardLinears(run.apply, run.linears);
  if (isCheckpointable(run.apply)) {
    const ca = run.apply;
    const params = run.linears.flatMap((l) => ca.trainables(l));
    const mark = ca.drawMark();
    return checkpointInputs((xs) => block(xs, apply), inputs, params, (f) => ca.replayDraws(mark, f));
  }
  if (run.apply !== applyLinear) {
    throw new Error('gradient checkpointing needs a CheckpointableApply (the LoRA adapter\'s apply) or the plain projection');
  }
  return checkpointInputs((xs) => block(xs, apply), inputs, [], (f) => f());
}

/**
 * `block(inputs)` as one differentiable op that keeps only its inputs for the backward pass, which
 * runs the block again on the kept copies and differentiates it with respect to each of them and to
 * `params` (as `checkpoint`, with every input differentiable rather than one).
 */
export function checkpointInputs<T extends tf.Tensor>(
  block: (inputs: readonly tf.Tensor[]) => T,
  inputs: readonly tf.Tensor[],
  params: readonly tf.Tensor[],
  replay: <R>(run: () => R) => R,
): T {
  const count = inputs.length;
  const op = tf.customGrad((...args) => {
    const xs = args.slice(0, count) as tf.Tensor[];
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const out = block(xs);
    save(xs);
    const gradFunc = (dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[] => vjp(() => replay(() => block(saved)), [...saved, ...params], dy);
    return { value: out, gradFunc };
  });
  return op(...inputs, ...params) as T;
}
