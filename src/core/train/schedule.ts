/** Learning-rate schedules, as Hugging Face transformers defines them. */

export type Scheduler = 'constant' | 'linear' | 'cosine';

export interface ScheduleOptions {
  /** The peak learning rate (TrainingArguments.learning_rate). */
  readonly base: number;
  readonly scheduler: Scheduler;
  readonly warmupSteps: number;
  /** Optimizer steps in the whole run; only linear and cosine use it. */
  readonly totalSteps: number;
}

/**
 * The learning rate for optimizer step `step` (0-based): base · lr_lambda(step), where lr_lambda is
 * the one of get_constant_schedule_with_warmup, get_linear_schedule_with_warmup or
 * get_cosine_schedule_with_warmup (num_cycles 0.5). HF's LambdaLR starts at lr_lambda(0) and is
 * advanced after each optimizer step, so step k really does use lr_lambda(k); with warmup the
 * first step therefore has learning rate 0, exactly as in transformers.
 */
export function learningRateAt(step: number, o: ScheduleOptions): number {
  return o.base * lrLambda(step, o);
}

function lrLambda(step: number, o: ScheduleOptions): number {
  const warmup = Math.max(0, o.warmupSteps);
  if (step < warmup) return step / Math.max(1, warmup);
  switch (o.scheduler) {
    case 'constant':
      return 1;
    case 'linear':
      return Math.max(0, (o.totalSteps - step) / Math.max(1, o.totalSteps - warmup));
    case 'cosine': {
      const progress = (step - warmup) / Math.max(1, o.totalSteps - warmup);
      const numCycles = 0.5;
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)));
    }
  }
}
