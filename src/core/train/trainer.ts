import * as tf from '@tensorflow/tfjs';
import { batchOrder } from '../data/packing.js';
import { UserError } from '../errors.js';
import { AdamW, type PendingUpdate } from './adamw.js';
import type { Batch, EvalLossFn, LossContext, LossFn } from './batch.js';
import {
  checkResumable,
  readParams,
  restoreParams,
  type BestEval,
  type DataPosition,
  type TrainerCheckpoint,
  type TrainingPlan,
} from './checkpoint.js';
import { clipByGlobalNorm } from './clip.js';
import { evaluate } from './evaluate.js';
import type { ExampleSet } from './examples.js';
import { learningRateAt, type Scheduler } from './schedule.js';

export interface StepMetrics {
  /** Optimizer steps done, 1-based: the step these numbers describe. */
  readonly step: number;
  /** Fractional epochs done, like HF's train/epoch (micro-batches done / micro-batches per epoch). */
  readonly epoch: number;
  /** Loss of the step: the mean over every unmasked target of its micro-batches (token-weighted, as HF's Trainer). */
  readonly loss: number;
  /** The learning rate this step was taken with. */
  readonly learningRate: number;
  /** Global gradient norm before clipping. */
  readonly gradNorm: number;
  /**
   * Throughput over recent steps: input tokens per second for windows (padding-free, masked ones included), images
   * per second for an image set (ExampleSet.throughputUnitsPerExample).
   */
  readonly tokensPerSecond: number;
  /** Estimated from the mean step time so far; excludes evaluation and paused time. */
  readonly secondsLeft: number;
  /** Updates skipped so far because a loss or gradient was not finite (see SkippedUpdate); 0 in a healthy run. */
  readonly skippedSteps: number;
}

/**
 * One update the trainer skipped because the loss, the gradient norm or the update itself was not finite. The
 * variables and the optimizer state stay as they were, the step counter does not move (the next try is the same
 * step, with the schedule's same learning rate) and the data moves on, so one bad batch is passed over rather than
 * retried forever. MAX_SKIPPED_IN_ROW in a row end the run as 'diverged'.
 */
export interface SkippedUpdate {
  /** The step the update would have been (1-based): optimizer steps applied before it + 1. */
  readonly step: number;
  /** What was not finite, in words, e.g. "the loss was NaN". */
  readonly problem: string;
  /** Skipped so far in the run, this one included. */
  readonly skippedSteps: number;
  /** Skipped in a row, this one included; an applied update resets it. */
  readonly inRow: number;
}

/**
 * Skipped updates in a row that end the run as 'diverged'. One non-finite batch can be bad luck (an odd text, an
 * overflow in one micro-batch) and is worth passing over; five in a row mean the weights or the learning rate are
 * what is wrong, and more tries would only burn time. The diagnosis's divergeSkippedInRow is the same number.
 */
export const MAX_SKIPPED_IN_ROW = 5;

export type EndReason = 'completed' | 'stopped' | 'diverged' | 'early_stopped';
export type StopReason = Exclude<EndReason, 'completed'>;

export interface TrainEnd {
  /** Optimizer steps applied. */
  readonly step: number;
  readonly reason: EndReason;
  /** Why it ended when that is not obvious, e.g. which value was not finite. */
  readonly detail?: string;
  /** Updates skipped over the whole run (see SkippedUpdate); absent when there were none. */
  readonly skippedSteps?: number;
}

/**
 * What a callback may return to end training after the current step (early stopping, a
 * diagnosis that found divergence). Equivalent to calling Trainer.stop(reason).
 */
export interface StopRequest {
  readonly stop: StopReason;
}

type CallbackResult = void | StopRequest | Promise<void | StopRequest>;

/** Why a checkpoint was taken: every saveSteps steps, or because the loop is about to hold (pause) or end (stop). */
export type CheckpointReason = 'save' | 'pause' | 'stop';

export interface TrainerCallbacks {
  onStepEnd?(m: StepMetrics): CallbackResult;
  /** After an update was skipped (nothing applied, no onStepEnd); before the run ends if it was the last allowed in a row. */
  onSkip?(s: SkippedUpdate): CallbackResult;
  /** Every logSteps steps; meanLoss is the mean over those steps. */
  onLog?(m: StepMetrics & { meanLoss: number }): CallbackResult;
  onEval?(e: { step: number; loss: number }): CallbackResult;
  /** Every saveSteps steps; saving is the callback's job. */
  onSave?(s: { step: number }): CallbackResult;
  /**
   * The run's whole state at a step boundary (see checkpoint.ts): after onSave every saveSteps steps, before the
   * loop holds for a pause, and when a stop ends it (not 'diverged': the last good checkpoint is the one to keep).
   * At most one per step. Storing it is the callback's job; without this callback nothing is read back.
   */
  onCheckpoint?(c: TrainerCheckpoint, reason: CheckpointReason): CallbackResult;
  onTrainEnd?(r: TrainEnd): void | Promise<void>;
}

export interface TrainerOptions {
  /** Windows per micro-batch (per_device_train_batch_size). */
  readonly batchSize: number;
  /** Micro-batches per optimizer step; their gradients and losses are combined token-weighted (see accumulateGradients). Default 1. */
  readonly gradAccumSteps?: number;
  /** Passes over the training windows, may be fractional. Default 1; ignored when maxSteps > 0. */
  readonly epochs?: number;
  /** Total optimizer steps; > 0 overrides epochs. Default 0. */
  readonly maxSteps?: number;
  /** onLog every this many steps; 0 = never. Default 0. */
  readonly logSteps?: number;
  /** Evaluate every this many steps; 0 = at the end of each epoch (and of training). Default 0. */
  readonly evalSteps?: number;
  /**
   * Evaluate once before the first step, reported through onEval at step 0 (Hugging Face's eval_on_start): the
   * loss of the adapter as it starts (B = 0: the base model's; an imported adapter's own). Not repeated when a run
   * resumes past step 0. Default false.
   */
  readonly evalOnStart?: boolean;
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

export interface TrainerInit<B = Batch> {
  /** What the optimizer updates: LoRA A/B, or every weight of a model trained from scratch. */
  readonly variables: readonly tf.Variable[];
  /**
   * Per variable, aligned with `variables`: its learning rate is the schedule's times this (AdamWOptions.learningRateScales),
   * e.g. an image run's text-encoder LoRA at text_encoder_lr / unet_lr. Default: 1 for every variable. Not part of the
   * plan: a checkpoint's values and optimizer state do not depend on it.
   */
  readonly learningRateScales?: readonly number[];
  readonly lossFn: LossFn<B>;
  /** The training examples: token windows (windowExamples) or an image set's latents. */
  readonly train: ExampleSet<B>;
  /** Validation data; skipped when absent or when nothing in it counts (no example, no unmasked target). */
  readonly eval?: { readonly examples: ExampleSet<B>; readonly lossFn: EvalLossFn<B> } | null;
  readonly options: TrainerOptions;
  readonly callbacks?: TrainerCallbacks;
  /**
   * Continue a run from this checkpoint instead of from step 0: run() first checks that it fits (the same plan and
   * variable shapes, else a UserError), then puts its values into the variables and the optimizer.
   */
  readonly resumeFrom?: TrainerCheckpoint | null;
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
 * gradients combined token-weighted; global-norm clipped; the AdamW update computed; loss, norm and the update's
 * finiteness read back in one transfer; and the update applied only if all are finite. Anything
 * non-finite skips that update (counted, onSkip; see SkippedUpdate) with the variables and optimizer
 * state as they were; MAX_SKIPPED_IN_ROW skips in a row end the run as 'diverged' with the last good
 * values, and without a checkpoint of the end (the last one taken is the good one to keep).
 *
 * Stopping on request (stop(), or a callback returning { stop }) happens after the current step
 * and its callbacks, and never rolls anything back: a 'diverged' requested by a diagnosis keeps
 * the values of the last step taken.
 *
 * The trainer owns only its optimizer state, released when run() finishes; the variables, the
 * loss functions and what they close over stay the caller's.
 */
export class Trainer<B = Batch> {
  readonly stepsPerEpoch: number;
  readonly totalSteps: number;
  private readonly microBatchesPerEpoch: number;
  private readonly opts: Required<Omit<TrainerOptions, 'adamBeta1' | 'adamBeta2' | 'adamEpsilon'>> & TrainerOptions;
  private stateValue: TrainerState = 'ready';
  private stopReason: StopReason | null = null;
  private wake: (() => void) | null = null;
  private planValue: TrainingPlan | null = null;
  private best: BestEval | null = null;

  constructor(private readonly init: TrainerInit<B>) {
    const o = init.options;
    this.opts = {
      ...o,
      gradAccumSteps: o.gradAccumSteps ?? 1,
      epochs: o.epochs ?? 1,
      maxSteps: o.maxSteps ?? 0,
      logSteps: o.logSteps ?? 0,
      evalSteps: o.evalSteps ?? 0,
      evalOnStart: o.evalOnStart ?? false,
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
      const { subject, problem, fix } = init.train.emptyProblem;
      throw new UserError(subject, problem, fix);
    }
    // The last optimizer step of an epoch takes whatever micro-batches remain, so no window is
    // left out of an epoch.
    this.microBatchesPerEpoch = Math.ceil(init.train.count / p.batchSize);
    this.stepsPerEpoch = Math.ceil(this.microBatchesPerEpoch / p.gradAccumSteps);
    this.totalSteps = p.maxSteps > 0 ? p.maxSteps : Math.ceil(p.epochs * this.stepsPerEpoch);
  }

  get state(): TrainerState {
    return this.stateValue;
  }

  /** What a checkpoint of this run must match to resume it. Hashing the data is a pass over it, so done once, late. */
  get plan(): TrainingPlan {
    const p = this.opts;
    this.planValue ??= {
      seed: p.seed,
      batchSize: p.batchSize,
      gradAccumSteps: p.gradAccumSteps,
      totalSteps: this.totalSteps,
      windows: this.init.train.count,
      seqLen: this.init.train.exampleSize,
      dataFingerprint: this.init.train.fingerprint(),
    };
    return this.planValue;
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
      learningRateScales: this.init.learningRateScales,
    });
    let step = 0;
    let end: TrainEnd | null = null;
    let trainSeconds = 0;
    const recent: { tokens: number; seconds: number }[] = [];
    let lossesSinceLog: number[] = [];
    let skippedSteps = 0;
    let skippedInRow = 0;
    // Where the loop resumes: the checkpoint's position and its stored order for that epoch, or the start.
    const from = this.init.resumeFrom ?? null;
    const orderOf = (epoch: number): number[][] =>
      from !== null && epoch === from.position.epoch ? cutOrder(from.order, p.batchSize) : batchOrder(train.count, p.batchSize, epoch, p.seed);
    // The next micro-batch to take; what a checkpoint records as its position.
    let next: DataPosition = from?.position ?? { epoch: 0, microBatch: 0 };
    let checkpointedAt = -1;
    const checkpoint = async (reason: CheckpointReason): Promise<void> => {
      const onCheckpoint = this.init.callbacks?.onCheckpoint;
      if (!onCheckpoint || step === 0 || step === checkpointedAt) return;
      checkpointedAt = step;
      // A position past the epoch's last micro-batch is the next epoch's start, with that epoch's order.
      const position = next.microBatch >= this.microBatchesPerEpoch ? { epoch: next.epoch + 1, microBatch: 0 } : next;
      const { params, optimizerSteps } = await readParams(variables, optimizer);
      const ck: TrainerCheckpoint = {
        step,
        position,
        order: Uint32Array.from(orderOf(position.epoch).flat()),
        plan: this.plan,
        params,
        optimizerSteps,
        bestEval: this.best,
        pendingLogLosses: [...lossesSinceLog],
        trainSeconds,
        skippedSteps,
      };
      await this.call(onCheckpoint(ck, reason));
    };
    // How the run ended, with the skip count only when there is one to report.
    const ended = (reason: EndReason, detail?: string): TrainEnd => ({
      step,
      reason,
      ...(detail === undefined ? {} : { detail }),
      ...(skippedSteps > 0 ? { skippedSteps } : {}),
    });
    // Between steps (applied or skipped): let queued messages (pause, stop) in, then honour a pause.
    const boundary = async (): Promise<void> => {
      await new Promise<void>((resolve) => setTimeout(resolve, 0));
      if (this.holding()) await checkpoint('pause');
      while (this.holding()) {
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    };
    try {
      if (from !== null) {
        checkResumable(from, this.plan, variables);
        restoreParams(from, variables, optimizer);
        step = checkpointedAt = from.step;
        this.best = from.bestEval;
        lossesSinceLog = [...from.pendingLogLosses];
        trainSeconds = from.trainSeconds;
        // The total goes on (older checkpoints lack it: 0). The count in a row starts again: only a pause or stop right
        // after skips leaves some pending, and a resumed run then gets MAX_SKIPPED_IN_ROW fresh tries.
        skippedSteps = from.skippedSteps ?? 0;
      }
      // Before any update, so it measures the adapter as it starts; a resumed run (step > 0) has it already.
      if (p.evalOnStart && step === 0) await this.evaluateNow(0);
      const start = next;
      for (let epoch = start.epoch; end === null; epoch++) {
        const micro = orderOf(epoch);
        for (let first = epoch === start.epoch ? start.microBatch : 0; first < micro.length; first += p.gradAccumSteps) {
          next = { epoch, microBatch: first };
          if (this.stopReason !== null) {
            if (this.stopReason !== 'diverged') await checkpoint('stop');
            end = ended(this.stopReason);
            break;
          }
          if (step >= this.totalSteps) {
            end = ended('completed');
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
            // Nothing changed but the data position: the next try takes the next micro-batches for the same step.
            next = { epoch, microBatch: first + p.gradAccumSteps };
            skippedSteps++;
            skippedInRow++;
            await this.call(this.init.callbacks?.onSkip?.({ step: step + 1, problem: result.problem, skippedSteps, inRow: skippedInRow }));
            if (skippedInRow >= MAX_SKIPPED_IN_ROW) {
              const detail = `At step ${step + 1} ${result.problem}, the ${MAX_SKIPPED_IN_ROW}th update in a row that was not finite; none of them was applied.`;
              end = ended('diverged', detail);
              break;
            }
            await boundary();
            continue;
          }
          skippedInRow = 0;
          step++;
          next = { epoch, microBatch: first + p.gradAccumSteps };
          trainSeconds += seconds;
          recent.push({ tokens: group.reduce((n, b) => n + b.length, 0) * train.throughputUnitsPerExample, seconds });
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
            skippedSteps,
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

          if (p.saveSteps > 0 && step % p.saveSteps === 0) {
            await this.call(this.init.callbacks?.onSave?.({ step }));
            await checkpoint('save');
          }

          await boundary();
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
    if (!ev || ev.examples.count === 0) return;
    const { loss, weight } = await evaluate(ev.examples, ev.lossFn, this.opts.evalBatchSize);
    if (weight === 0) return;
    // Tracked here so a checkpoint carries it: early stopping after a resume counts from where it was.
    const improved = this.best === null || loss < this.best.loss;
    this.best = improved ? { step, loss, evalsSince: 0 } : { ...this.best!, evalsSince: this.best!.evalsSince + 1 };
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
 * The gradients of one optimizer step over the micro-batches `group` (lists of example indices), weighted as
 * Hugging Face's Trainer accumulates them (ExampleSet.weightOf: unmasked targets for windows, 1 per image): the step's loss is the sum of every unmasked target's loss over all
 * the micro-batches, divided by the number of those targets. Each micro-batch's loss is a mean over its own
 * targets, so it (and its gradient) is weighted by its share of the step's targets, n_i / N. That is the same as
 * one batch holding every window, whatever the masks; a plain mean of micro-batch means is not, when masks (chat
 * data) leave the micro-batches with different numbers of targets. A micro-batch with no target at all weighs
 * nothing, so it is not run; a step with no target anywhere has zero gradients and loss 0 (what causalLmLoss
 * gives an empty batch). With one micro-batch the weight is 1 and nothing is scaled.
 * `firstPass` numbers the forward passes for LossContext.pass (a skipped micro-batch keeps its number).
 * Returns new tensors, aligned with `variables`, for the caller to dispose.
 */
export function accumulateGradients<B>(
  variables: readonly tf.Variable[],
  lossFn: LossFn<B>,
  examples: ExampleSet<B>,
  group: readonly (readonly number[])[],
  step: number,
  firstPass: number,
): { grads: tf.Tensor[]; loss: tf.Scalar } {
  if (group.length === 0) throw new Error('accumulateGradients: no micro-batches');
  // Counted on the host from the masks, so the weights need no readback.
  const counts = group.map((indices) => examples.weightOf(indices));
  const total = counts.reduce((n, c) => n + c, 0);
  let sum: tf.Tensor[] | null = null;
  let lossSum: tf.Scalar | null = null;
  try {
    group.forEach((indices, microBatch) => {
      const weight = group.length === 1 ? 1 : counts[microBatch]! / total;
      if (weight === 0 || Number.isNaN(weight)) return;
      const batch = examples.upload(indices);
      try {
        const ctx: LossContext = { step, microBatch, pass: firstPass + microBatch };
        // variableGrads frees the forward pass's intermediates itself; only value and grads survive.
        const { value, grads } = tf.variableGrads(() => lossFn(batch, ctx), [...variables]);
        // A variable the loss does not reach gets no entry; its gradient is zero.
        const raw = variables.map((v) => grads[v.name] ?? tf.zerosLike(v));
        const weighted =
          weight === 1
            ? { list: raw, loss: value }
            : tf.tidy(() => ({ list: raw.map((g) => tf.mul(g, weight)), loss: tf.mul<tf.Scalar>(value, weight) }));
        if (weight !== 1) tf.dispose([...raw, value]);
        if (sum === null || lossSum === null) {
          sum = weighted.list;
          lossSum = weighted.loss;
        } else {
          const prev: tf.Tensor[] = sum;
          const prevLoss: tf.Scalar = lossSum;
          sum = tf.tidy(() => prev.map((g, i) => tf.add(g, weighted.list[i]!)));
          lossSum = tf.add<tf.Scalar>(prevLoss, weighted.loss);
          tf.dispose([...prev, prevLoss, ...weighted.list, weighted.loss]);
        }
      } finally {
        examples.release(batch);
      }
    });
    const grads = sum as tf.Tensor[] | null;
    const loss = lossSum as tf.Scalar | null;
    if (grads !== null && loss !== null) return { grads, loss };
    // Every micro-batch was fully masked: nothing to learn from in this step.
    return { grads: variables.map((v) => tf.zerosLike(v)), loss: tf.scalar(0) };
  } catch (e) {
    tf.dispose((sum as tf.Tensor[] | null) ?? []);
    if (lossSum) tf.dispose(lossSum as tf.Scalar);
    throw e;
  }
}

/** A flat window order cut into micro-batches of batchSize, as batchOrder cuts its own. */
function cutOrder(order: Uint32Array, batchSize: number): number[][] {
  const batches: number[][] = [];
  for (let i = 0; i < order.length; i += batchSize) batches.push(Array.from(order.subarray(i, i + batchSize)));
  return batches;
}

function now(): number {
  return globalThis.performance?.now() ?? Date.now();
}
