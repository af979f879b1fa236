import * as tf from '@tensorflow/tfjs';
import { adamwValues, allFinite } from '../kernels/optimizer.js';

export interface AdamWOptions {
  readonly beta1?: number;
  readonly beta2?: number;
  readonly epsilon?: number;
  /**
   * Decoupled weight decay. 0 by default: transformers' TrainingArguments.weight_decay defaults to
   * 0.0, and LoRA recipes rarely decay the adapter (unlike torch.optim.AdamW's own default, 0.01).
   */
  readonly weightDecay?: number;
  /**
   * Per variable, aligned with the constructor's variables: that variable's learning rate is `lr × scale`, for its
   * Adam step and its decay alike, as a PyTorch param group with its own lr that follows the same scheduler (kohya's
   * unet_lr and text_encoder_lr: LambdaLR scales every group's initial lr by one factor). Each scale must be finite
   * and ≥ 0; 0 leaves the variable as it is. Default: 1 for every variable. The moments and the step count do not
   * depend on it, so a checkpoint's optimizer state fits whatever scales the resumed run uses.
   */
  readonly learningRateScales?: readonly number[];
}

/** AdamW's state on the host (see AdamW.readState): the step count and, per variable in order, both moments. */
export interface AdamWState {
  readonly steps: number;
  readonly moments: readonly { readonly m: Float32Array; readonly v: Float32Array }[];
}

/** An update computed by AdamW.prepare, not yet applied. */
export interface PendingUpdate {
  /** 1 when every new parameter and moment value is finite, else 0. Released by commit/discard. */
  readonly finiteCheck: tf.Scalar;
  /** Applies the update (counts as one optimizer step). */
  commit(): void;
  /** Drops it; the optimizer and parameters stay as they were. Safe to call after commit. */
  discard(): void;
}

/**
 * AdamW with the update rule of torch.optim.AdamW (amsgrad off, maximize off):
 *
 *   p ← p·(1 − lr·wd)                        decoupled decay, before the Adam step
 *   m ← β1·m + (1 − β1)·g
 *   v ← β2·v + (1 − β2)·g²
 *   p ← p − (lr / (1 − β1ᵗ)) · m / (√v / √(1 − β2ᵗ) + ε)
 *
 * ε is added after √v is bias-corrected, as in PyTorch. tf.train.adam instead folds the correction
 * into the step size and adds ε to the raw √v (different results while v is small) and has no
 * decoupled decay, hence this class.
 *
 * The moments live in non-trainable tf.Variables next to the parameters, so the whole optimizer
 * stays on the device; only the step count and learning rate are host numbers.
 */
export class AdamW {
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly weightDecay: number;
  private readonly m: tf.Variable[];
  private readonly v: tf.Variable[];
  private readonly scales: readonly number[];
  private steps = 0;
  private disposed = false;

  constructor(
    private readonly params: readonly tf.Variable[],
    opts: AdamWOptions = {},
  ) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.epsilon = opts.epsilon ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0;
    for (const [name, value] of [
      ['beta1', this.beta1],
      ['beta2', this.beta2],
    ] as const) {
      if (!(value >= 0 && value < 1)) throw new RangeError(`AdamW ${name} must be in [0, 1), got ${value}`);
    }
    if (!(this.epsilon >= 0)) throw new RangeError(`AdamW epsilon must be ≥ 0, got ${this.epsilon}`);
    if (!(this.weightDecay >= 0)) throw new RangeError(`AdamW weight decay must be ≥ 0, got ${this.weightDecay}`);
    this.scales = learningRateScalesOf(params.length, opts.learningRateScales);
    this.m = params.map((p) => zerosVariable(p));
    this.v = params.map((p) => zerosVariable(p));
  }

  /** Optimizer steps taken so far (PyTorch's per-parameter `step` state). */
  get stepCount(): number {
    return this.steps;
  }

  /**
   * One update with learning rate `lr`. `grads` is either aligned with the variables given to the
   * constructor or keyed by variable name (what tf.variableGrads returns). The gradients are read,
   * never disposed: they stay the caller's.
   */
  step(grads: tf.NamedTensorMap | readonly tf.Tensor[], lr: number): void {
    this.prepare(grads, lr).commit();
  }

  /**
   * Computes the update of step() without applying it, so a caller can check it first: the
   * trainer reads `finiteCheck` in the same transfer as the loss and commits only a fully finite
   * update, so parameters and moments never become Inf/NaN. commit() or discard() releases it.
   */
  prepare(grads: tf.NamedTensorMap | readonly tf.Tensor[], lr: number): PendingUpdate {
    if (this.disposed) throw new Error('AdamW used after dispose()');
    const aligned = this.align(grads);
    const t = this.steps + 1;
    const { beta1: b1, beta2: b2, epsilon: eps } = this;
    const bc2Sqrt = Math.sqrt(1 - b2 ** t);
    const next = this.params.map((p, i) => {
      // A variable's own rate, as a param group's lr: both the step and the decay scale with it.
      const rate = lr * this.scales[i]!;
      const stepSize = rate / (1 - b1 ** t);
      const decay = 1 - rate * this.weightDecay;
      return adamwValues({ p, m: this.m[i]!, v: this.v[i]! }, aligned[i]!, { beta1: b1, beta2: b2, decay, stepSize, bc2Sqrt, eps });
    });
    const all = next.flatMap((n) => [n.p, n.m, n.v]);
    // A float32 flag rather than a bool, so it can share one readback with the loss.
    const finiteCheck = tf.tidy(() => {
      const perVariable = next.map((n) => allFinite(n));
      return perVariable.length === 1 ? perVariable[0]! : (tf.min(tf.stack(perVariable)) as tf.Scalar);
    });
    let settled = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      return true;
    };
    return {
      finiteCheck,
      commit: () => {
        if (!settle()) throw new Error('AdamW update already committed or discarded');
        try {
          if (this.disposed) throw new Error('AdamW used after dispose()');
          // assign() takes its own reference to the new values, so they can be released below.
          next.forEach((n, i) => {
            this.params[i]!.assign(n.p);
            this.m[i]!.assign(n.m);
            this.v[i]!.assign(n.v);
          });
          this.steps = t;
        } finally {
          tf.dispose([...all, finiteCheck]);
        }
      },
      discard: () => {
        if (settle()) tf.dispose([...all, finiteCheck]);
      },
    };
  }

  /**
   * The moments and step count, copied to the host: what a checkpoint needs so that a resumed run takes the
   * same updates (the bias corrections depend on the step count, the update on both moments).
   */
  async readState(): Promise<AdamWState> {
    if (this.disposed) throw new Error('AdamW used after dispose()');
    const moments: { m: Float32Array; v: Float32Array }[] = [];
    for (let i = 0; i < this.params.length; i++) {
      // slice(): a backend may hand out its own buffer; the state must not alias it.
      const m = ((await this.m[i]!.data()) as Float32Array).slice();
      const v = ((await this.v[i]!.data()) as Float32Array).slice();
      moments.push({ m, v });
    }
    return { steps: this.steps, moments };
  }

  /** Replaces the moments and step count with `state` (from readState), e.g. when resuming from a checkpoint. */
  restoreState(state: AdamWState): void {
    if (this.disposed) throw new Error('AdamW used after dispose()');
    if (!Number.isInteger(state.steps) || state.steps < 0) throw new RangeError(`AdamW state: step count ${state.steps} is not a count`);
    if (state.moments.length !== this.params.length) {
      throw new Error(`AdamW state: moments for ${state.moments.length} variables, the optimizer has ${this.params.length}`);
    }
    // Checked before anything is assigned, so a bad state leaves the optimizer as it was.
    state.moments.forEach(({ m, v }, i) => {
      const size = this.params[i]!.size;
      if (m.length !== size || v.length !== size) {
        throw new Error(`AdamW state: variable ${i} has ${size} values, its moments ${m.length} and ${v.length}`);
      }
    });
    state.moments.forEach(({ m, v }, i) => {
      const shape = this.params[i]!.shape;
      tf.tidy(() => {
        this.m[i]!.assign(tf.tensor(m, shape, 'float32'));
        this.v[i]!.assign(tf.tensor(v, shape, 'float32'));
      });
    });
    this.steps = state.steps;
  }

  /** Releases the moment variables; the parameters stay the caller's. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose([...this.m, ...this.v]);
  }

  private align(grads: tf.NamedTensorMap | readonly tf.Tensor[]): readonly tf.Tensor[] {
    const list = Array.isArray(grads)
      ? (grads as readonly tf.Tensor[])
      : this.params.map((p) => {
          const g = (grads as tf.NamedTensorMap)[p.name];
          if (g === undefined) throw new Error(`AdamW: no gradient for variable "${p.name}"`);
          return g;
        });
    if (list.length !== this.params.length) {
      throw new Error(`AdamW: ${list.length} gradients for ${this.params.length} variables`);
    }
    list.forEach((g, i) => {
      const p = this.params[i]!;
      if (!tf.util.arraysEqual(g.shape, p.shape)) {
        throw new Error(`AdamW: gradient [${g.shape.join(', ')}] does not match variable "${p.name}" [${p.shape.join(', ')}]`);
      }
    });
    return list;
  }
}

/** The per-variable learning-rate scales, checked: one finite scale ≥ 0 per variable, 1 each when none are given. */
function learningRateScalesOf(count: number, scales: readonly number[] | undefined): readonly number[] {
  if (scales === undefined) return new Array<number>(count).fill(1);
  if (scales.length !== count) throw new RangeError(`AdamW: ${scales.length} learning-rate scales for ${count} variables`);
  scales.forEach((s, i) => {
    if (!(s >= 0) || !Number.isFinite(s)) throw new RangeError(`AdamW: learning-rate scale ${s} of variable ${i} must be finite and ≥ 0`);
  });
  return [...scales];
}

/** A non-trainable zero variable shaped like `like`. */
function zerosVariable(like: tf.Tensor): tf.Variable {
  const zeros = tf.zerosLike(like);
  // The variable keeps its own reference to the data, so the temporary can go at once.
  const v = tf.variable(zeros, false);
  zeros.dispose();
  return v;
}
