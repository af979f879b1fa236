import { lrFacts, type LrFacts } from './format';
import type { CurvePoint, RunHistory, SkippedPoint, Thresholds } from './types';

/** The history as the rules read it: curves in step order, one point per step, plus derived facts. */
export interface Context {
  readonly train: readonly CurvePoint[];
  readonly evalLoss: readonly CurvePoint[];
  readonly grad: readonly CurvePoint[];
  readonly skipped: readonly SkippedPoint[];
  readonly lr: LrFacts;
  readonly totalSteps: number;
  readonly t: Thresholds;
}

export function makeContext(history: RunHistory, t: Thresholds): Context {
  return {
    train: inStepOrder(history.trainLoss),
    evalLoss: inStepOrder(history.evalLoss),
    grad: inStepOrder(history.gradNorm),
    skipped: history.skippedUpdates ?? [],
    lr: lrFacts(inStepOrder(history.learningRate)),
    totalSteps: Number.isFinite(history.totalSteps) && history.totalSteps > 0 ? history.totalSteps : 0,
    t,
  };
}

/**
 * Points sorted by step, keeping the last one logged for a repeated step: a resumed run logs the
 * steps after its checkpoint again, and the newer values are the ones that describe the weights.
 * Already-ordered input (the usual case, once per logged step) is returned as is, without copying.
 */
export function inStepOrder(points: readonly CurvePoint[]): readonly CurvePoint[] {
  let ordered = true;
  for (let i = 1; i < points.length && ordered; i++) ordered = points[i]!.step > points[i - 1]!.step;
  if (ordered) return points;
  const byStep = new Map<number, CurvePoint>();
  for (const p of points) byStep.set(p.step, p);
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

/** Index of the first non-finite value, or -1. */
export function firstNonFinite(points: readonly CurvePoint[]): number {
  return points.findIndex((p) => !Number.isFinite(p.value));
}
