import type { Finding } from '../diagnose/types';

/** One row of metrics.csv: a training step, with eval_loss where an evaluation ran. */
export interface MetricsCsvRow {
  readonly step: number;
  readonly epoch: number | null;
  readonly loss: number | null;
  readonly learningRate: number | null;
  readonly gradNorm: number | null;
  readonly evalLoss: number | null;
  readonly tokensPerSecond: number | null;
  /** Updates skipped so far for a non-finite loss or gradient (training rows); empty where not recorded. */
  readonly skippedSteps?: number | null;
  readonly custom?: Readonly<Record<string, number>>;
}

const COLUMNS = ['step', 'epoch', 'loss', 'learning_rate', 'grad_norm', 'eval_loss', 'tokens_per_second', 'skipped_steps'] as const;

/** metrics.csv: fixed columns first (empty where not measured), then custom metrics by name. */
export function metricsCsv(rows: readonly MetricsCsvRow[]): string {
  const custom = [...new Set(rows.flatMap((r) => Object.keys(r.custom ?? {})))].sort();
  const cell = (v: number | null | undefined) => (v === null || v === undefined ? '' : String(v));
  const lines = [[...COLUMNS, ...custom].join(',')];
  for (const r of [...rows].sort((a, b) => a.step - b.step)) {
    lines.push(
      [r.step, r.epoch, r.loss, r.learningRate, r.gradNorm, r.evalLoss, r.tokensPerSecond, r.skippedSteps, ...custom.map((k) => r.custom?.[k])]
        .map(cell)
        .join(','),
    );
  }
  return `${lines.join('\n')}\n`;
}

/** diagnosis.json: the findings as the app showed them at the end of the run. */
export function diagnosisJson(findings: readonly Finding[]): string {
  return `${JSON.stringify(findings.map(({ code, severity, step, message, suggestion, bestStep }) => ({ code, severity, step, message, suggestion, ...(bestStep === undefined ? {} : { bestStep }) })), null, 2)}\n`;
}
