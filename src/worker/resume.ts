import { runConfigToYaml } from '../core/config';
import type { CurvePoint, RunHistory } from '../core/diagnose/types';
import { UserError } from '../core/errors';
import { EventFileWriter } from '../core/logging';
import type { MetricRow, RunData, StoredDataRef, StoredRun } from '../storage/db';
import type { DatasetRef } from './datasets';
import type { TrainRequest } from './training-run';

/**
 * What resuming an interrupted run needs besides its checkpoint: the request it was started with, rebuilt from its
 * record, and the state of the callbacks that lives outside the trainer (the diagnosis's curves, the open log file).
 */

/** The data of a run's request as its record keeps it (see StoredDataRef). */
export function storedDataOf(train: DatasetRef, val: DatasetRef | null): RunData {
  const one = (ref: DatasetRef): StoredDataRef => ('datasetId' in ref ? { datasetId: ref.datasetId } : { fileName: ref.name, blob: ref });
  return { train: one(train), val: val === null ? null : one(val) };
}

/** The request that started `run`, to train it again from its checkpoint. */
export function resumeRequestOf(run: StoredRun): TrainRequest {
  if (run.status !== 'interrupted') throw new UserError('run', `is ${run.status}, not interrupted: only an interrupted run can be resumed.`);
  if (!run.data) {
    throw new UserError('run', 'was started by an older version of LoRA Lab, which did not keep what it trained on.', 'Duplicate the run and train it again.');
  }
  const ref = (r: StoredDataRef): DatasetRef => ('datasetId' in r ? { datasetId: r.datasetId } : new File([r.blob], r.fileName));
  return { modelId: run.modelId, configYaml: runConfigToYaml(run.config), trainData: ref(run.data.train), valData: run.data.val === null ? null : ref(run.data.val) };
}

/**
 * The curves the diagnosis had seen by `step`, rebuilt from the stored rows the way diagnosisCallbacks records them:
 * every step's loss, gradient norm and learning rate (whatever log_steps was), and every evaluation, the one at
 * step 0 (before training) included. Rows after `step` belong to the steps the resumed run takes again.
 */
export function diagnosisHistoryOf(rows: readonly MetricRow[], step: number): Omit<RunHistory, 'totalSteps'> {
  const trainLoss: CurvePoint[] = [];
  const gradNorm: CurvePoint[] = [];
  const learningRate: CurvePoint[] = [];
  const evalLoss: CurvePoint[] = [];
  for (const row of [...rows].sort((a, b) => a.step - b.step)) {
    if (row.step > step) break;
    if (row.loss !== null) {
      trainLoss.push({ step: row.step, value: row.loss });
      if (row.gradNorm !== null) gradNorm.push({ step: row.step, value: row.gradNorm });
      if (row.learningRate !== null) learningRate.push({ step: row.step, value: row.learningRate });
    }
    if (row.evalLoss !== null) evalLoss.push({ step: row.step, value: row.evalLoss });
  }
  return { trainLoss, evalLoss, gradNorm, learningRate };
}

/**
 * A writer that goes on with an event file already stored, cut back to a checkpoint: that file begins with its
 * version record, so this writer's own is produced and dropped, never stored twice.
 */
export function continuingWriter(wallTime: number): EventFileWriter {
  const writer = new EventFileWriter();
  writer.writeFileVersion(wallTime);
  writer.takePending();
  return writer;
}
