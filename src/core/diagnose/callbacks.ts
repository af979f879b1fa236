import type { StepMetrics, TrainerCallbacks } from '../train/trainer.js';
import { diagnose, shouldStop } from './index';
import type { CurvePoint, Finding, RunHistory, SkippedPoint } from './types';

export interface DiagnosisCallbacks extends TrainerCallbacks {
  /** The curves as seen so far, for the run's export. */
  history(): RunHistory;
  /** The latest findings (healthy until there is something to say). */
  findings(): Finding[];
}

/**
 * Diagnoses the curves live: after each logged step and each evaluation it re-reads the history and
 * reports the findings when they change; a divergence stops the run (the trainer keeps the last
 * good adapter). With log_steps 0 every step counts as logged, so the diagnosis still has a curve.
 */
export function diagnosisCallbacks(options: {
  totalSteps: number;
  logEveryStep: boolean;
  onFindings(findings: Finding[]): void | Promise<void>;
  /**
   * The curves before this point, for a run resumed from a checkpoint: the diagnosis goes on from them, and what
   * they already show is not reported again, as if the run had never stopped.
   */
  initial?: Omit<RunHistory, 'totalSteps'>;
}): DiagnosisCallbacks {
  const trainLoss: CurvePoint[] = [...(options.initial?.trainLoss ?? [])];
  const evalLoss: CurvePoint[] = [...(options.initial?.evalLoss ?? [])];
  const gradNorm: CurvePoint[] = [...(options.initial?.gradNorm ?? [])];
  const learningRate: CurvePoint[] = [...(options.initial?.learningRate ?? [])];
  const skippedUpdates: SkippedPoint[] = [...(options.initial?.skippedUpdates ?? [])];
  let latest: Finding[] = [];
  let latestKey = '';

  const history = (): RunHistory => ({ trainLoss, evalLoss, gradNorm, learningRate, skippedUpdates, totalSteps: options.totalSteps });
  // As the uninterrupted run last left it: diagnosed at its last point, or not at all before the first.
  if (trainLoss.length + evalLoss.length > 0) {
    latest = diagnose(history());
    latestKey = latest.map((f) => `${f.code}@${f.step}`).join(',');
  }

  async function update() {
    latest = diagnose(history());
    const key = latest.map((f) => `${f.code}@${f.step}`).join(',');
    if (key !== latestKey) {
      latestKey = key;
      await options.onFindings(latest);
    }
    return shouldStop(latest) ? ({ stop: 'diverged' } as const) : undefined;
  }

  function record(m: StepMetrics, loss: number) {
    trainLoss.push({ step: m.step, value: loss });
    gradNorm.push({ step: m.step, value: m.gradNorm });
    learningRate.push({ step: m.step, value: m.learningRate });
    return update();
  }

  return {
    onStepEnd: (m) => (options.logEveryStep ? record(m, m.loss) : undefined),
    onLog: (m) => (options.logEveryStep ? undefined : record(m, m.meanLoss)),
    // A skipped update adds no curve point; the trainer's stop after too many in a row is the diverged finding.
    onSkip: (s) => {
      skippedUpdates.push({ step: s.step, inRow: s.inRow, problem: s.problem });
      return update();
    },
    onEval: (e) => {
      evalLoss.push({ step: e.step, value: e.loss });
      return update();
    },
    history,
    findings: () => latest,
  };
}
