import type { StepMetrics, TrainerCallbacks } from '../train/trainer.js';
import { diagnose, shouldStop } from './index';
import type { CurvePoint, Finding, RunHistory } from './types';

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
}): DiagnosisCallbacks {
  const trainLoss: CurvePoint[] = [];
  const evalLoss: CurvePoint[] = [];
  const gradNorm: CurvePoint[] = [];
  const learningRate: CurvePoint[] = [];
  let latest: Finding[] = [];
  let latestKey = '';

  const history = (): RunHistory => ({ trainLoss, evalLoss, gradNorm, learningRate, totalSteps: options.totalSteps });

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
    onEval: (e) => {
      evalLoss.push({ step: e.step, value: e.loss });
      return update();
    },
    history,
    findings: () => latest,
  };
}
