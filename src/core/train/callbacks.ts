import type { TrainerCheckpoint } from './checkpoint.js';
import type { CheckpointReason, SkippedUpdate, StepMetrics, StopRequest, TrainEnd, TrainerCallbacks } from './trainer.js';

/**
 * Several callback sets as one. Each hook runs the sets in order and awaits each; the first stop
 * request wins. The built-in logger, diagnosis and checkpointing are such sets, and so is anything a
 * user adds (a custom metric, say), so they all see the same events in the same order.
 */
export function composeCallbacks(...sets: readonly TrainerCallbacks[]): TrainerCallbacks {
  const each = async <A>(hook: (c: TrainerCallbacks, arg: A) => unknown, arg: A): Promise<void | StopRequest> => {
    let stop: StopRequest | undefined;
    for (const set of sets) {
      const result = (await hook(set, arg)) as void | StopRequest;
      if (result && 'stop' in result) stop ??= result;
    }
    return stop;
  };
  return {
    onStepEnd: (m: StepMetrics) => each((c, a: StepMetrics) => c.onStepEnd?.(a), m),
    onSkip: (s: SkippedUpdate) => each((c, a: SkippedUpdate) => c.onSkip?.(a), s),
    onLog: (m: StepMetrics & { meanLoss: number }) => each((c, a: StepMetrics & { meanLoss: number }) => c.onLog?.(a), m),
    onEval: (e: { step: number; loss: number }) => each((c, a: { step: number; loss: number }) => c.onEval?.(a), e),
    onSave: (s: { step: number }) => each((c, a: { step: number }) => c.onSave?.(a), s),
    onCheckpoint: (ck: TrainerCheckpoint, reason: CheckpointReason) => each((c, a: TrainerCheckpoint) => c.onCheckpoint?.(a, reason), ck),
    onTrainEnd: async (r: TrainEnd) => {
      for (const set of sets) await set.onTrainEnd?.(r);
    },
  };
}

/**
 * Callbacks for a Trainer whose callbacks need the trainer itself (its totalSteps, its plan): each hook forwards to
 * what `current()` returns when the hook runs, so the real set can be built after the trainer is.
 */
export function lateCallbacks(current: () => TrainerCallbacks): TrainerCallbacks {
  return {
    onStepEnd: (m) => current().onStepEnd?.(m),
    onSkip: (s) => current().onSkip?.(s),
    onLog: (m) => current().onLog?.(m),
    onEval: (e) => current().onEval?.(e),
    onSave: (s) => current().onSave?.(s),
    onCheckpoint: (c, reason) => current().onCheckpoint?.(c, reason),
    onTrainEnd: (r) => current().onTrainEnd?.(r),
  };
}
