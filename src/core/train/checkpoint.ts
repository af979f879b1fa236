import * as tf from '@tensorflow/tfjs';
import type { WindowSet } from '../data/packing.js';
import { UserError } from '../errors.js';
import { fmix32 } from '../random.js';
import type { AdamW } from './adamw.js';

/**
 * What a checkpoint holds: everything a new Trainer needs to continue a run after step `step` and take exactly the
 * updates the uninterrupted run would have taken. Plain data (typed arrays and JSON values), so it can be
 * structured-cloned into IndexedDB or encoded to bytes (checkpoint-codec.ts).
 *
 * Randomness: every random draw of a run comes from a counter-based stream (core/random.ts) keyed by numbers the
 * trainer derives from the step: the data order by (seed, epoch), each dropout mask by (seed, forward pass, module,
 * call) with pass = step · gradAccumSteps + micro-batch. No generator carries hidden state from one step to the
 * next, so the seed (in `plan`) and `step` are the whole RNG state; nothing else needs recording.
 *
 * A checkpoint is taken at a step boundary only, after that step's logging, evaluation and saving, so a resumed run
 * starts with the next step and repeats none of them.
 */
export interface TrainerCheckpoint {
  /** Optimizer steps done (1-based count). The resumed run's first step is `step + 1`; also the schedule's position. */
  readonly step: number;
  /** Where in the data the next step starts. */
  readonly position: DataPosition;
  /**
   * The window order of `position.epoch`, as the run drew it. Kept rather than redrawn so that a new version of the
   * app (the PWA updates itself between a crash and a resume) finishes the epoch in the order it began it.
   */
  readonly order: Uint32Array;
  /** What the run must still be for the checkpoint to apply to it (see checkResumable). */
  readonly plan: TrainingPlan;
  /** The trained variables, in the trainer's order, each with its AdamW moments. */
  readonly params: readonly ParamState[];
  /** AdamW's step count (its bias corrections depend on it). */
  readonly optimizerSteps: number;
  /** The lowest eval loss so far and the evaluations since it, what early stopping counts; null before any. */
  readonly bestEval: BestEval | null;
  /** Losses of the steps since the last onLog, so the next logged mean covers the same steps as without a break. */
  readonly pendingLogLosses: readonly number[];
  /** Seconds spent in training steps so far: keeps the time-left estimate after a resume. */
  readonly trainSeconds: number;
  /** Updates skipped so far for non-finite values, so metrics.csv's skipped_steps goes on from it. Absent in older checkpoints: 0. */
  readonly skippedSteps?: number;
}

export interface DataPosition {
  /** 0-based epoch of the next micro-batch. */
  readonly epoch: number;
  /** Index of the next micro-batch in that epoch's order (micro-batch k holds windows order[k·batchSize…]). */
  readonly microBatch: number;
}

export interface BestEval {
  readonly step: number;
  readonly loss: number;
  /** Evaluations after the best one, none of them lower. */
  readonly evalsSince: number;
}

export interface ParamState {
  readonly shape: readonly number[];
  readonly value: Float32Array;
  /** AdamW's first and second moments, shaped as the value. */
  readonly m: Float32Array;
  readonly v: Float32Array;
}

/**
 * The numbers that fix which updates a run takes. A checkpoint from a run with other numbers would continue a
 * different run, so resuming compares them (checkResumable) and refuses on any difference.
 */
export interface TrainingPlan {
  readonly seed: number;
  readonly batchSize: number;
  readonly gradAccumSteps: number;
  /** The schedule's length: the learning rate of every step depends on it. */
  readonly totalSteps: number;
  readonly windows: number;
  readonly seqLen: number;
  /** A hash of the training windows (inputs, targets, mask), so changed data is noticed, not silently trained on. */
  readonly dataFingerprint: string;
}

/**
 * A 64-bit hash (two 32-bit lanes, as hex) of the windows' tokens and mask. Not cryptographic: it tells whether the
 * data read back for a resume is the data the run started with.
 */
export function windowsFingerprint(w: WindowSet): string {
  let a = fmix32(0x243f6a88 ^ w.count);
  let b = fmix32(0x85a308d3 ^ w.seqLen);
  const mix = (x: number): void => {
    a = fmix32((a ^ x) + 0x9e3779b9);
    b = fmix32((b + Math.imul(x, 0x7feb352d)) ^ a);
  };
  for (let i = 0; i < w.inputs.length; i++) mix(w.inputs[i]!);
  for (let i = 0; i < w.targets.length; i++) mix(w.targets[i]!);
  for (let i = 0; i < w.mask.length; i++) mix(w.mask[i]!);
  return a.toString(16).padStart(8, '0') + b.toString(16).padStart(8, '0');
}

/** Names of the plan's fields as the run config calls them, for messages a person reads. */
const PLAN_FIELDS: Readonly<Record<keyof TrainingPlan, string>> = {
  seed: 'seed',
  batchSize: 'batch_size',
  gradAccumSteps: 'gradient_accumulation_steps',
  totalSteps: 'the number of steps (max_steps / epochs)',
  windows: 'the number of training windows',
  seqLen: 'seq_len',
  dataFingerprint: 'the training data',
};

/**
 * Refuses a checkpoint that does not belong to this run: another plan, other variables. Throws a UserError naming
 * every difference; returns nothing when the checkpoint applies.
 */
export function checkResumable(ck: TrainerCheckpoint, plan: TrainingPlan, variables: readonly tf.Variable[]): void {
  const differences = (Object.keys(PLAN_FIELDS) as (keyof TrainingPlan)[])
    .filter((k) => ck.plan[k] !== plan[k])
    .map((k) => (k === 'dataFingerprint' ? `${PLAN_FIELDS[k]} changed` : `${PLAN_FIELDS[k]} was ${ck.plan[k]}, is ${plan[k]}`));
  if (ck.params.length !== variables.length) {
    differences.push(`it holds ${ck.params.length} trained tensors, the adapter has ${variables.length}`);
  } else {
    ck.params.forEach((p, i) => {
      const shape = variables[i]!.shape;
      if (!tf.util.arraysEqual([...p.shape], shape)) differences.push(`trained tensor ${i} is [${p.shape.join(', ')}], the adapter's is [${shape.join(', ')}]`);
    });
  }
  if (ck.step > plan.totalSteps) differences.push(`it is at step ${ck.step}, past the run's ${plan.totalSteps} steps`);
  if (differences.length > 0) {
    throw new UserError('checkpoint', `does not fit this run: ${differences.join('; ')}.`, 'Resume with the config and data the run started with.');
  }
}

/** The variables' values and the optimizer's state at a step boundary, read back to the host. */
export async function readParams(variables: readonly tf.Variable[], optimizer: AdamW): Promise<{ params: ParamState[]; optimizerSteps: number }> {
  const state = await optimizer.readState();
  const params: ParamState[] = [];
  for (const [i, variable] of variables.entries()) {
    const { m, v } = state.moments[i]!;
    params.push({ shape: [...variable.shape], value: ((await variable.data()) as Float32Array).slice(), m, v });
  }
  return { params, optimizerSteps: state.steps };
}

/** Puts a checkpoint's values into the variables and the optimizer. Call checkResumable first. */
export function restoreParams(ck: TrainerCheckpoint, variables: readonly tf.Variable[], optimizer: AdamW): void {
  optimizer.restoreState({ steps: ck.optimizerSteps, moments: ck.params.map(({ m, v }) => ({ m, v })) });
  ck.params.forEach((p, i) => {
    const variable = variables[i]!;
    tf.tidy(() => variable.assign(tf.tensor(p.value, variable.shape, 'float32')));
  });
}
