import * as tf from '@tensorflow/tfjs';
import { batchOrder, type WindowSet } from '../data/packing.js';
import { UserError } from '../errors.js';
import { AdamW, type PendingUpdate } from './adamw.js';
import { disposeBatch, uploadBatch, type EvalLossFn, type LossContext, type LossFn } from './batch.js';
import { clipByGlobalNorm } from './clip.js';
import { evaluate } from './evaluate.js';
import { learningRateAt, type Scheduler } from './schedule.js';

export interface StepMetrics {
  /** Optimizer steps done, 1-based: the step these numbers describe. */
  readonly step: number;
  /** Fractional epochs done, like HF's train/epoch (micro-batches done / micro-batches per epoch). */
  readonly epoch: number;
  /** Mean loss of the step's micro-batches. */
  readonly loss: number;
  /** The learning rate this step was taken with. */
  readonly learningRate: number;
  /** Global gradient norm before clipping. */
  readonly gradNorm: number;
  /** Input tokens (padding-free windows, masked ones included) per second over recent steps. */
  readonly tokensPerSecond: number;
  /** Estimated from the mean step time so far; excludes evaluation and paused time. */
  readonly secondsLeft: number;
}

export type EndReason = 'completed' | 'stopped' | 'diverged' | 'early_stopped';
export type StopReason = Exclude<EndReason, 'completed'>;

export interface TrainEnd {
  /** Optimizer steps applied. */
  readonly step: number;
  readonly reason: EndReason;
  /** Why it ended when that is not obvious, e.g. which value was not finite. */
  readonly detail?: string;
}

/**
 * What a callback may return to end training after the current step (early stopping, a
 * diagnosis that found divergence). Equivalent to calling Trainer.stop(reason).
 */
export interface StopRequest {
  readonly stop: StopReason;
}

type CallbackResult = void | StopRequest | Promise<void | StopRequest>;

export interface TrainerCallbacks {
  onStepEnd?(m: StepMetrics): CallbackResult;
  /** Every logSteps steps; meanLoss is the mean over those steps. */
  onLog?(m: StepMetrics & { meanLoss: number }): CallbackResult;
  onEval?(e: { step: number; loss: number }): CallbackResult;
  /** Every saveSteps steps; saving is the callback's job. */
  onSave?(s: { step: number }): CallbackResult;
  onTrainEnd?(r: TrainEnd): void | Promise<void>;
}

export interface TrainerOptions {
  /** Windows per micro-batch (per_device_train_batch_size). */
  readonly batchSize: number;
  /** Micro-batches per optimizer step; their gradients and losses are averaged. Default 1. */
  readonly gradAccumSteps?: number;
  /** Passes over the training windows, may be fractional. Default 1; ignored when maxSteps > 0. */
  readonly epochs?: number;
  /** Total optimizer steps; > 0 overrides epochs. Default 0. */
  readonly maxSteps?: number;
  /** onLog every this many steps; 0 = never. Default 0. */
  readonly logSteps?: number;
  /** Evaluate every this many steps; 0 = at the end of each epoch (and of training). Default 0. */
  readonly evalSteps?: number;
  /** Windows per evaluation batch. Default batchSize. */
  readonly evalBatchSize?: number;
  /** onSave every this many steps; 0 = never. Default 0. */
  readonly saveSteps?: number;
  readonly learningRate: number;
  /** Default 'linear', as TrainingArguments.lr_scheduler_type. */
  readonly scheduler?: Scheduler;
  readonly warmupSteps?: number;
  /** AdamW decoupled weight decay. Default 0. */
  readonly weightDecay?: number;
  /** Global-norm clipping threshold; 0 = off. Default 1.0, as TrainingArguments.max_grad_norm. */
  readonly maxGradNorm?: number;
  readonly adamBeta1?: number;
  readonly adamBeta2?: number;
  readonly adamEpsilon?: number;
  /** Seeds the batch order; loss functions carry their own seed for dropout. */
  readonly seed: number;
}

export interface TrainerInit {
  /** What the optimizer updates: LoRA A/B, or every weight of a model trained from scratch. */
  readonly variables: readonly tf.Variable[];
  readonly lossFn: LossFn;
  readonly train: WindowSet;
  /** Validation data; skipped when absent or without a single window. */
  readonly eval?: { readonly windows: WindowSet; readonly lossFn: EvalLossFn } | null;
  readonly options: TrainerOptions;
  readonly callbacks?: TrainerCallbacks;
}

export type TrainerState = 'ready' | 'running' | 'paused' | 'ended';

/** Steps whose timing feeds tokensPerSecond: recent enough to follow changes, enough to smooth. */
const THROUGHPUT_WINDOW = 10;

/**
 * Runs AdamW over `variables` to minimise `lossFn` on the training windows.
 *
 * The loop is async and yields to the event loop between steps, so in a worker the pause/stop
 * messages that arrive mid-run are handled at the next step boundary. Each step:
 * per micro-batch, tf.variableGrads of the loss (every intermediate freed right after); the
 * gradients averaged; global-norm clipped; the AdamW update computed; loss, norm and the update's
 * finiteness read back in one transfer; and the update applied only if all are finite. Anything
 * non-finite ends the run as 'diverged' with the variables (and optimizer state) as they were
 * before that step, the last good values.
 *
 * Stopping on request (stop(), or a callback returning { stop }) happens after the current step
 * and its callbacks, and never rolls anything back: a 'diverged' requested by a diagnosis keeps
 * the values of the last step taken.
 *
 * The trainer owns only its optimizer state, released when run() finishes; the variables, the
 * loss functions and what they close over stay the caller's.
 */
export class Trainer {
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  private readonly microBatchesPerEpoch: number;
  private readonly opts: Required<Omit<TrainerOptions, 'adamBeta1' | 'adamBeta2' | 'adamEpsilon'>> & TrainerOptions;
  private stateValue: TrainerState = 'ready';
  private stopReason: StopReason | null = null;
  private wake: (() => void) | null = null;

  constructor(private readonly init: TrainerInit) {
    const o = init.options;
    this.opts = {
      ...o,
      gradAccumSteps: o.gradAccumSteps ?? 1,
      epochs: o.epochs ?? 1,
      maxSteps: o.maxSteps ?? 0,
      logSteps: o.logSteps ?? 0,
      evalSteps: o.evalSteps ?? 0,
      evalBatchSize: o.evalBatchSize ?? o.batchSize,
      saveSteps: o.saveSteps ?? 0,
      scheduler: o.scheduler ?? 'linear',
      warmupSteps: o.warmupSteps ?? 0,
      weightDecay: o.weightDecay ?? 0,
      maxGradNorm: o.maxGradNorm ?? 1,
    };
    const p = this.opts;
    for (const [name, value, min] of [
      ['batchSize', p.batchSize, 1],
      ['gradAccumSteps', p.gradAccumSteps, 1],
      ['evalBatchSize', p.evalBatchSize, 1],
      ['maxSteps', p.maxSteps, 0],
      ['logSteps', p.logSteps, 0],
      ['evalSteps', p.evalSteps, 0],
      ['saveSteps', p.saveSteps, 0],
      ['warmupSteps', p.warmupSteps, 0],
    ] as const) {
      if (!Number.isInteger(value) || value < min) throw new RangeError(`${name} must be an integer ≥ ${min}, got ${value}`);
    }
    if (!(p.epochs > 0) && p.maxSteps === 0) throw new RangeError(`epochs must be > 0 when maxSteps is 0, got ${p.epochs}`);
    if (!(p.learningRate >= 0) || !Number.isFinite(p.learningRate)) throw new RangeError(`learningRate must be finite and ≥ 0, got ${p.learningRate}`);
    if (init.variables.length === 0) throw new Error('Trainer needs at least one variable to train');
    if (init.train.count === 0) {
      throw new UserError(
        'training data',
        `has fewer than ${init.train.seqLen + 1} tokens, not enough for a single training window.`,
        'Add more text or lower the sequence length.',
      );
    }
    // The last optimizer step of an epoch averages whatever micro-batches remain, so no window is
    // left out of an epoch.
    this.microBatchesPerEpoch = Math.ceil(init.train.count / p.batchSize);
    this.stepsPerEpoch = Math.ceil(this.microBatchesPerEpoch / p.gradAccumSteps);
    this.totalSteps = p.maxSteps > 0 ? p.maxSteps : Math.ceil(p.epochs * this.stepsPerEpoch);
  }

  get state(): TrainerState {
    return this.stateValue;
  }

  /** Holds the loop at the next step boundary until resume() or stop(). */
  pause(): void {
    if (this.stateValue === 'running') this.stateValue = 'paused';
  }

  resume(): void {
    if (this.stateValue !== 'paused') return;
    this.stateValue = 'running';
    this.wakeUp();
  }

  /**
   * Ends training once the current step (and its callbacks) is done. The first request wins, so a
   * later plain stop() does not relabel a divergence. A no-op once training has ended.
   */
  stop(reason: StopReason = 'stopped'): void {
    if (this.stateValue === 'ended') return;
    this.stopReason ??= reason;
    this.wakeUp();
  }

  /**
   * Trains to the end (or until stopped); resolves with the value also passed to onTrainEnd.
   * Rejects, without calling onTrainEnd, if a loss function or callback throws; the optimizer state
   * is released either way.
   */
  async run(): Promise<TrainEnd> {
    if (this.stateValue !== 'ready') throw new Error('Trainer.run() can only be called once');
    this.stateValue = 'running';
    const p = this.opts;
    const { train, variables } = this.init;
    const optimizer = new AdamW(variables, {
      beta1: p.adamBeta1,
      beta2: p.adamBeta2,
      epsilon: p.adamEpsilon,
      weightDecay: p.weightDecay,
    });
    let step = 0;
    let end: TrainEnd | null = null;
    let trainSeconds = 0;
    const recent: { tokens: number; seconds: number }[] = [];
    let lossesSinceLog: number[] = [];
    try {
      for (let epoch = 0; end === null; epoch++) {
        const micro = batchOrder(train.count, p.batchSize, epoch, p.seed);
        for (let first = 0; first < micro.length; first += p.gradAccumSteps) {
          if (this.stopReason !== null) {
            end = { step, reason: this.stopReason };
            break;
          }
          if (step >= this.totalSteps) {
            end = { step, reason: 'completed' };
            break;
          }
          const group = micro.slice(first, first + p.gradAccumSteps);
          const learningRate = learningRateAt(step, {
            base: p.learningRate,
            scheduler: p.scheduler,
            warmupSteps: p.warmupSteps,
            totalSteps: this.totalSteps,
          });
          const started = now();
          const result = await this.step(group, step, learningRate, optimizer);
          const seconds = (now() - started) / 1000;
          if (!result.applied) {
            end = { step, reason: 'diverged', detail: `At step ${step + 1} ${result.problem}; that update was not applied.` };
            break;
          }
          step++;
          trainSeconds += seconds;
          recent.push({ tokens: group.reduce((n, b) => n + b.length, 0) * train.seqLen, seconds });
          if (recent.length > THROUGHPUT_WINDOW) recent.shift();
          const recentSeconds = recent.reduce((s, r) => s + r.seconds, 0);
          const metrics: StepMetrics = {
            step,
            epoch: epoch + (first + group.length) / micro.length,
            loss: result.loss,
            learningRate,
            gradNorm: result.gradNorm,
            tokensPerSecond: recentSeconds > 0 ? recent.reduce((s, r) => s + r.tokens, 0) / recentSeconds : 0,
            secondsLeft: (trainSeconds / step) * (this.totalSteps - step),
          };
          await this.call(this.init.callbacks?.onStepEnd?.(metrics));

          lossesSinceLog.push(result.loss);
          if (p.logSteps > 0 && step % p.logSteps === 0) {
            const meanLoss = lossesSinceLog.reduce((s, x) => s + x, 0) / lossesSinceLog.length;
            lossesSinceLog = [];
            await this.call(this.init.callbacks?.onLog?.({ ...metrics, meanLoss }));
          }

          const epochDone = first + p.gradAccumSteps >= micro.length;
          const due = p.evalSteps > 0 ? step % p.evalSteps === 0 : epochDone || step === this.totalSteps;
          if (due) await this.evaluateNow(step);

          if (p.saveSteps > 0 && step % p.saveSteps === 0) await this.call(this.init.callbacks?.onSave?.({ step }));

          // Let queued messages (pause, stop) in before the next step; then honour a pause.
          await new Promise<void>((resolve) => setTimeout(resolve, 0));
          while (this.holding()) {
            await new Promise<void>((resolve) => (this.wake = resolve));
          }
        }
        // Falling out of an epoch goes on to the next, whose first iteration checks for the end.
      }
    } finally {
      optimizer.dispose();
      this.stateValue = 'ended';
      this.wakeUp();
    }
    await this.init.callbacks?.onTrainEnd?.(end);
    return end;
  }

  /** Paused with no stop pending. A method, so the loop rereads state that pause() changes. */
  private holding(): boolean {
    return this.stateValue === 'paused' && this.stopReason === null;
  }

  private async evaluateNow(step: number): Promise<void> {
    const ev = this.init.eval;
    if (!ev || ev.windows.count === 0 || ev.windows.targetTokens === 0) return;
    const { loss } = await evaluate(ev.windows, ev.lossFn, this.opts.evalBatchSize);
    await this.call(this.init.callbacks?.onEval?.({ step, loss }));
  }

  private async call(result: CallbackResult | undefined): Promise<void> {
    const value = await result;
    if (value && typeof value === 'object' && 'stop' in value) this.stop(value.stop);
  }

  private wakeUp(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  /**
   * One optimizer step over the micro-batches `group`. Only the readback awaits; every tensor made
   * around it is released in the finally, whatever happens.
   */
  private async step(
    group: readonly (readonly number[])[],
    step: number,
    lr: number,
    optimizer: AdamW,
  ): Promise<{ applied: true; loss: number; gradNorm: number } | { applied: false; problem: string }> {
    const { variables, train, lossFn } = this.init;
    const { grads, loss: meanLoss } = accumulateGradients(variables, lossFn, train, group, step, step * this.opts.gradAccumSteps);
    let clipped: tf.Tensor[] = [];
    let norm: tf.Scalar | null = null;
    let update: PendingUpdate | null = null;
    try {
      const c = clipByGlobalNorm(grads, this.opts.maxGradNorm);
      clipped = c.grads;
      norm = c.norm;
      // The update is computed before knowing whether it is wanted, so that the loss, the norm and
      // the update's finiteness come back in one transfer: on WebGPU each readback is a round trip.
      update = optimizer.prepare(clipped, lr);
      const checks = tf.stack([meanLoss, norm, update.finiteCheck]);
      const [loss, gradNorm, check] = (await checks.data()) as Float32Array;
      checks.dispose();
      if (!Number.isFinite(loss!)) return { applied: false, problem: `the loss was ${loss}` };
      if (!Number.isFinite(gradNorm!)) return { applied: false, problem: `the gradient norm was ${gradNorm}` };
      if (check !== 1) return { applied: false, problem: 'the update would have made weights non-finite' };
      update.commit();
      return { applied: true, loss: loss!, gradNorm: gradNorm! };
    } finally {
      update?.discard();
      // When clipping is off `clipped` holds the same tensors as `grads`; disposing twice is a no-op.
      tf.dispose([...grads, ...clipped, meanLoss]);
      if (norm) norm.dispose();
    }
  }
}

/**
 * The gradients of one optimizer step: for each micro-batch of `group` (lists of window indices),
 * tf.variableGrads of `lossFn`, averaged over the micro-batches, with the mean of their losses.
 * Averaging the micro-batch means is what HF's gradient accumulation does (each micro-batch loss
 * scaled by 1/steps), so with equal token counts per micro-batch, 2 × 4 windows gives the
 * gradients of one batch of 8. `firstPass` numbers the forward passes for LossContext.pass.
 * Returns new tensors, aligned with `variables`, for the caller to dispose.
 */
export function accumulateGradients(
  variables: readonly tf.Variable[],
  lossFn: LossFn,
  windows: WindowSet,
  group: readonly (readonly number[])[],
  step: number,
  firstPass: number,
): { grads: tf.Tensor[]; loss: tf.Scalar } {
  if (group.length === 0) throw new Error('accumulateGradients: no micro-batches');
  let sum: tf.Tensor[] | null = null;
  let lossSum: tf.Scalar | null = null;
  try {
    group.forEach((indices, microBatch) => {
      const batch = uploadBatch(windows, indices);
      try {
        const ctx: LossContext = { step, microBatch, pass: firstPass + microBatch };
        // variableGrads frees the forward pass's intermediates itself; only value and grads survive.
        const { value, grads } = tf.variableGrads(() => lossFn(batch, ctx), [...variables]);
        // A variable the loss does not reach gets no entry; its gradient is zero.
        const list = variables.map((v) => grads[v.name] ?? tf.zerosLike(v));
        if (sum === null || lossSum === null) {
          sum = list;
          lossSum = value;
        } else {
          const prev: tf.Tensor[] = sum;
          const prevLoss: tf.Scalar = lossSum;
          sum = tf.tidy(() => prev.map((g, i) => tf.add(g, list[i]!)));
          lossSum = tf.add<tf.Scalar>(prevLoss, value);
          tf.dispose([...prev, prevLoss, ...list, value]);
        }
      } finally {
        disposeBatch(batch);
      }
    });
    const total = sum as tf.Tensor[] | null;
    const totalLoss = lossSum as tf.Scalar | null;
    if (total === null || totalLoss === null) throw new Error('unreachable: no micro-batch ran');
    if (group.length === 1) return { grads: total, loss: totalLoss };
    const scale = 1 / group.length;
    return tf.tidy(() => ({ grads: total.map((g) => tf.mul(g, scale)), loss: tf.mul<tf.Scalar>(totalLoss, scale) }));
  } finally {
    // After a single micro-batch these are the returned tensors themselves.
    if (group.length > 1) {
      tf.dispose((sum as tf.Tensor[] | null) ?? []);
      if (lossSum) tf.dispose(lossSum as tf.Scalar);
    }
  }
}

function now(): number {
  return globalThis.performance?.now() ?? Date.now();
}
