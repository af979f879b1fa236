import type { MetricRow } from '../storage/db';
import type { RunEvent } from '../worker/protocol';

/** Columnar curves for the charts: uPlot wants one array per series. */
export interface Curves {
  steps: number[];
  loss: number[];
  learningRate: number[];
  gradNorm: number[];
  tokensPerSecond: number[];
  evalSteps: number[];
  evalLoss: number[];
  /** Custom metrics by name (src/core/train/custom-metrics.ts), each with its own steps. */
  custom: Map<string, { steps: number[]; values: number[] }>;
}

export const emptyCurves = (): Curves => ({ steps: [], loss: [], learningRate: [], gradNorm: [], tokensPerSecond: [], evalSteps: [], evalLoss: [], custom: new Map() });

/**
 * Appends a live run event's point to the curves: a step's loss, learning rate, gradient norm and throughput, an
 * evaluation's loss, a custom metric's value. Returns whether it was such a point (the caller then bumps the
 * version its charts redraw on); other events change nothing.
 */
export function addLivePoint(c: Curves, e: RunEvent): boolean {
  switch (e.kind) {
    case 'step':
      c.steps.push(e.step);
      c.loss.push(e.loss);
      c.learningRate.push(e.learningRate);
      c.gradNorm.push(e.gradNorm);
      c.tokensPerSecond.push(e.tokensPerSecond);
      return true;
    case 'eval':
      c.evalSteps.push(e.step);
      c.evalLoss.push(e.loss);
      return true;
    case 'metric': {
      const series = c.custom.get(e.name) ?? { steps: [], values: [] };
      series.steps.push(e.step);
      series.values.push(e.value);
      c.custom.set(e.name, series);
      return true;
    }
    default:
      return false;
  }
}

/**
 * Adds a run's stored rows to curves that already hold the points seen live, in step order, each step once: a point
 * already there (it arrived live while the rows were being read) is kept and the row's copy of it dropped. This is
 * how a resumed run gets its curve up to the checkpoint and how a tab joining another tab's run gets the curve so
 * far, whichever of the stored rows and the live events came first.
 */
export function addStoredRows(c: Curves, rows: readonly MetricRow[]): void {
  const train = rows.filter((r) => r.loss !== null);
  const trainPoints = merge(
    c.steps.map((step, i) => ({ step, value: [c.loss[i]!, c.learningRate[i]!, c.gradNorm[i]!, c.tokensPerSecond[i]!] as const })),
    train.map((r) => ({ step: r.step, value: [r.loss!, r.learningRate ?? Number.NaN, r.gradNorm ?? Number.NaN, r.tokensPerSecond ?? Number.NaN] as const })),
  );
  c.steps = trainPoints.map((p) => p.step);
  c.loss = trainPoints.map((p) => p.value[0]);
  c.learningRate = trainPoints.map((p) => p.value[1]);
  c.gradNorm = trainPoints.map((p) => p.value[2]);
  c.tokensPerSecond = trainPoints.map((p) => p.value[3]);

  const evalPoints = merge(
    c.evalSteps.map((step, i) => ({ step, value: c.evalLoss[i]! })),
    rows.filter((r) => r.evalLoss !== null).map((r) => ({ step: r.step, value: r.evalLoss! })),
  );
  c.evalSteps = evalPoints.map((p) => p.step);
  c.evalLoss = evalPoints.map((p) => p.value);

  const names = new Set(rows.flatMap((r) => Object.keys(r.custom)));
  for (const name of names) {
    const series = c.custom.get(name) ?? { steps: [], values: [] };
    const points = merge(
      series.steps.map((step, i) => ({ step, value: series.values[i]! })),
      rows.filter((r) => r.custom[name] !== undefined).map((r) => ({ step: r.step, value: r.custom[name]! })),
    );
    c.custom.set(name, { steps: points.map((p) => p.step), values: points.map((p) => p.value) });
  }
}

/** The union by step of `live` and `stored`, sorted; on a step in both, the live point wins. */
function merge<T>(live: readonly { step: number; value: T }[], stored: readonly { step: number; value: T }[]): { step: number; value: T }[] {
  const byStep = new Map(stored.map((p) => [p.step, p]));
  for (const p of live) byStep.set(p.step, p);
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}
