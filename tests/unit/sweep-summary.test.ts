import { describe, expect, it } from 'vitest';
import type { SweptValue } from '../../src/core/config/sweep';
import { diagnosisJson, metricsCsv, type MetricsCsvRow } from '../../src/core/export/run-files';
import { rankSweepRuns, sweepRunResult, sweepSummaryCsv, type SweepRunResult } from '../../src/core/export/sweep-summary';

function row(step: number, loss: number | null, evalLoss: number | null = null): MetricsCsvRow {
  return { step, epoch: step / 10, loss, learningRate: 1e-4, gradNorm: 1, evalLoss, tokensPerSecond: 100 };
}

function files(rows: MetricsCsvRow[], code: 'healthy' | 'lr_too_high' | 'diverged', tokensPerSecond: number | null) {
  return {
    metricsCsv: metricsCsv(rows),
    diagnosisJson: diagnosisJson([{ code, severity: code === 'healthy' ? 'info' : 'error', step: 1, message: 'm', suggestion: 's' }]),
    runSummaryJson: JSON.stringify({ tokens_per_second: tokensPerSecond, steps: rows.length }),
  };
}

const lr = (value: number): SweptValue[] => [{ key: 'learning_rate', value }];

describe('one run of a sweep, read from its exported files', () => {
  it('final train loss is the last logged one; best eval loss is the lowest, at its step (the first on a tie)', () => {
    const r = sweepRunResult('lr_1e-4', lr(1e-4), files([row(0, null, 3.5), row(1, 3.2), row(2, 2.9, 2.8), row(3, 2.7), row(4, 2.75, 2.8), row(5, 2.6, 2.9)], 'healthy', 812.5));
    expect(r).toEqual({ folder: 'lr_1e-4', values: lr(1e-4), finalTrainLoss: 2.6, bestEval: { loss: 2.8, step: 2 }, diagnosis: 'healthy', tokensPerSecond: 812.5 });
  });

  it('no evaluation gives no best eval; a diverged run keeps its NaN train loss', () => {
    const r = sweepRunResult('lr_1', lr(1), files([row(1, 3), row(2, Number.NaN)], 'diverged', null));
    expect(r.bestEval).toBeNull();
    expect(r.finalTrainLoss).toBeNaN();
    expect(r.diagnosis).toBe('diverged');
    expect(r.tokensPerSecond).toBeNull();
  });
});

describe('ranking and the CSV', () => {
  const result = (folder: string, value: number, finalTrainLoss: number | null, best: number | null): SweepRunResult => ({
    folder,
    values: lr(value),
    finalTrainLoss,
    bestEval: best === null ? null : { loss: best, step: 10 },
    diagnosis: 'healthy',
    tokensPerSecond: 100,
  });

  it('with evaluation: by best eval loss, runs without one or with NaN last, train loss breaking ties', () => {
    const runs = [result('a', 1, 2.0, 2.5), result('b', 2, 1.0, null), result('c', 3, 2.2, 2.1), result('d', 4, 1.9, 2.1), result('e', 5, Number.NaN, Number.NaN)];
    expect(rankSweepRuns(runs).map((r) => r.folder)).toEqual(['d', 'c', 'a', 'b', 'e']);
  });

  it('without evaluation: by final train loss, NaN last', () => {
    const runs = [result('a', 1, 2.0, null), result('b', 2, Number.NaN, null), result('c', 3, 1.5, null)];
    expect(rankSweepRuns(runs).map((r) => r.folder)).toEqual(['c', 'a', 'b']);
  });

  it('writes one ranked row per run with the swept values in their own columns', () => {
    const runs: SweepRunResult[] = [
      { folder: 'lr_1e-4_r_8', values: [{ key: 'learning_rate', value: 1e-4 }, { key: 'lora_rank', value: 8 }], finalTrainLoss: 2.5, bestEval: { loss: 2.4, step: 6 }, diagnosis: 'healthy', tokensPerSecond: 900 },
      { folder: 'lr_2e-4_r_8', values: [{ key: 'learning_rate', value: 2e-4 }, { key: 'lora_rank', value: 8 }], finalTrainLoss: 2.2, bestEval: { loss: 2.3, step: 4 }, diagnosis: 'lr_too_high', tokensPerSecond: 880.25 },
    ];
    expect(sweepSummaryCsv(['learning_rate', 'lora_rank'], runs)).toBe(
      [
        'rank,folder,learning_rate,lora_rank,final_train_loss,best_eval_loss,best_eval_step,diagnosis,tokens_per_second',
        '1,lr_2e-4_r_8,0.0002,8,2.2,2.3,4,lr_too_high,880.25',
        '2,lr_1e-4_r_8,0.0001,8,2.5,2.4,6,healthy,900',
        '',
      ].join('\n'),
    );
    const lists = sweepSummaryCsv(['target_modules'], [{ ...runs[0]!, values: [{ key: 'target_modules', value: ['c_attn', 'c_proj'] }], bestEval: null, tokensPerSecond: null }]);
    expect(lists.split('\n')[1]).toBe('1,lr_1e-4_r_8,c_attn+c_proj,2.5,,,healthy,');
  });
});
