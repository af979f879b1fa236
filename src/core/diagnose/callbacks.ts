import type { StepMetrics, TrainerCallbacks } from '../train/trainer.js';
import { diagnose, shouldStop } from './index';
import type { CurvePoint, Finding, LossKind, RunHistory, SkippedPoint } from './types';

export interface DiagnosisCallbacks extends TrainerCallbacks {
  /** The curves as seen so far, for the run's export. */
  history(): RunHistory;
  /** The findings on every point so far (healthy until there is something to say). */
  findings(): Finding[];
}

/**
 * How many training-loss points may arrive between two diagnoses: 1 (every step) for the first
 * JUDGE_EVERY_STEP_UNTIL points, then about 1/JUDGE_SPAN of the history. Each diagnosis replays the
 * whole history (O(points × window)), so judging every step of a 20,000-step run would cost minutes;
 * this keeps the total linear in the run's length while a short run is judged at every step. The
 * rules' answer for the first k points never depends on later points, so judging less often only
 * delays a report, never changes it or its step.
 */
const JUDGE_EVERY_STEP_UNTIL = 400;
const JUDGE_SPAN = 200;

/**
 * Diagnoses the curves live, from every step's training loss (never the means logged every log_steps:
 * log_steps only decides what goes into the event file, and a 60-step run logged every 10 steps would
 * otherwise give the rules 6 points), every skipped update and every evaluation (an evaluation at step 0,
 * before training, is the untrained model's loss). It re-reads the history after each, reports the findings
 * when they change, and a divergence stops the run (the trainer keeps the last good adapter).
 */
export function diagnosisCallbacks(options: {
  totalSteps: number;
  onFindings(findings: Finding[]): void | Promise<void>;
  /**
   * The curves before this point, for a run resumed from a checkpoint (see diagnosisHistoryOf): the diagnosis
   * goes on from them, and what they already show is not reported again, as if the run had never stopped.
   */
  initial?: Omit<RunHistory, 'totalSteps'>;
  /** What the loss measures: 'denoising' for a diffusion run, whose noisy per-step loss gets its own rules (default 'causal_lm'). */
  loss?: LossKind;
}): DiagnosisCallbacks {
  const loss: LossKind = options.loss ?? options.initial?.loss ?? 'causal_lm';
  const trainLoss: CurvePoint[] = [...(options.initial?.trainLoss ?? [])];
  const evalLoss: CurvePoint[] = [...(options.initial?.evalLoss ?? [])];
  const gradNorm: CurvePoint[] = [...(options.initial?.gradNorm ?? [])];
  const learningRate: CurvePoint[] = [...(options.initial?.learningRate ?? [])];
  const skippedUpdates: SkippedPoint[] = [...(options.initial?.skippedUpdates ?? [])];
  let latest: Finding[] = [];
  let latestKey = '';
  /** The findings as last reported, to report the final ones at the end when only their words changed. */
  let reportedJson = '[]';
  let judgedAt = trainLoss.length;

  const history = (): RunHistory => ({ trainLoss, evalLoss, gradNorm, learningRate, skippedUpdates, totalSteps: options.totalSteps, loss });
  const judge = () => {
    latest = diagnose(history());
    judgedAt = trainLoss.length;
  };
  // As the uninterrupted run last left it: diagnosed at its last point, or not at all before the first.
  if (trainLoss.length + evalLoss.length > 0) {
    judge();
    latestKey = keyOf(latest);
    reportedJson = JSON.stringify(latest);
  }

  async function report() {
    reportedJson = JSON.stringify(latest);
    await options.onFindings(latest);
  }

  async function update() {
    judge();
    const key = keyOf(latest);
    if (key !== latestKey) {
      latestKey = key;
      await report();
    }
    return shouldStop(latest) ? ({ stop: 'diverged' } as const) : undefined;
  }

  function record(m: StepMetrics) {
    trainLoss.push({ step: m.step, value: m.loss });
    gradNorm.push({ step: m.step, value: m.gradNorm });
    learningRate.push({ step: m.step, value: m.learningRate });
    const due = trainLoss.length <= JUDGE_EVERY_STEP_UNTIL || trainLoss.length - judgedAt >= trainLoss.length / JUDGE_SPAN || !Number.isFinite(m.loss) || m.step === options.totalSteps;
    return due ? update() : undefined;
  }

  return {
    onStepEnd: (m) => record(m),
    // A skipped update adds no curve point; the trainer's stop after too many in a row is the diverged finding.
    onSkip: (s) => {
      skippedUpdates.push({ step: s.step, inRow: s.inRow, problem: s.problem });
      return update();
    },
    onEval: (e) => {
      evalLoss.push({ step: e.step, value: e.loss });
      return update();
    },
    // The run's last word: a healthy run's message ("fell from 2.57 nats to 2.52 nats") changes with every step
    // without being reported each time, so the final one is reported once here.
    onTrainEnd: async () => {
      judge();
      if (JSON.stringify(latest) !== reportedJson) await report();
    },
    history,
    // Up to date even when the run ended between two diagnoses (stopped, early-stopped).
    findings: () => {
      if (judgedAt !== trainLoss.length) judge();
      return latest;
    },
  };
}

/**
 * What makes findings news: a problem, and the step it was first seen at. `healthy` carries the latest step, which
 * would make every step news (an event, a stored record and a TensorBoard text per step), so it counts once.
 */
function keyOf(findings: readonly Finding[]): string {
  return findings.map((f) => (f.code === 'healthy' ? f.code : `${f.code}@${f.step}`)).join(',');
}
