import { runConfigToYaml } from '../core/config';
import type { CurvePoint, RunHistory } from '../core/diagnose/types';
import { UserError } from '../core/errors';
import type { MetricsCsvRow } from '../core/export/run-files';
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
  if (run.imageData) throw new Error(`resumeRequestOf: run ${run.id} is an image run; resumeImageRun continues it`);
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

/** What an interrupted image run is resumed from: the library model and image folders its record names. */
export interface ImageResumeInputs {
  readonly model: { readonly modelId: string };
  readonly train: { readonly datasetId: string };
  /** null: the run has no validation images. */
  readonly val: { readonly datasetId: string } | null;
}

/**
 * Why the image run `run` cannot be resumed, as the error to show; null when it can. Only the library's models and
 * image folders are stored: a run started from folders picked for it alone has nothing to read them from again.
 */
export function imageResumeProblem(run: StoredRun): UserError | null {
  const data = run.imageData;
  if (!data) return new UserError('run', 'is not an image run.');
  if (run.status !== 'interrupted') return new UserError('run', `is ${run.status}, not interrupted: only an interrupted run can be resumed.`);
  const picked = [
    ...(run.modelId === '' ? ['the model'] : []),
    ...(data.train === null ? ['the training images'] : []),
    ...(data.val === null && data.valPicked === true ? ['the validation images'] : []),
  ];
  if (picked.length > 0) {
    return new UserError(
      'run',
      `was started from folders picked for it (${joinWords(picked)}), which LoRA Lab does not store, so it cannot read them again.`,
      'Import the model and the image folders into the library (the image panel does so by default), then start the run again from them.',
    );
  }
  // Older records said null for a picked validation folder and for none alike.
  if (data.val === null && data.valPicked === undefined) {
    return new UserError('run', 'was started by an older version of LoRA Lab, which did not keep whether it had validation images.', 'Start the run again.');
  }
  return null;
}

/** The library model and image folders that `run` trained on, to train it again from its checkpoint; refuses as imageResumeProblem says. */
export function imageResumeInputsOf(run: StoredRun): ImageResumeInputs {
  const problem = imageResumeProblem(run);
  if (problem) throw problem;
  const data = run.imageData!;
  return { model: { modelId: run.modelId }, train: { datasetId: data.train! }, val: data.val === null ? null : { datasetId: data.val } };
}

/**
 * The stored curve rows of steps 0 … `step` as an image run handed them to its sink: storage merges an evaluation
 * into its step's training row (putMetric), the run's metrics.csv keeps them as two rows, training first.
 */
export function imageMetricRowsOf(rows: readonly MetricRow[], step: number): MetricsCsvRow[] {
  const out: MetricsCsvRow[] = [];
  for (const r of [...rows].sort((a, b) => a.step - b.step)) {
    if (r.step > step) break;
    if (r.loss !== null) {
      out.push({ step: r.step, epoch: r.epoch, loss: r.loss, learningRate: r.learningRate, gradNorm: r.gradNorm, evalLoss: null, tokensPerSecond: r.tokensPerSecond, skippedSteps: r.skippedSteps ?? null });
    }
    if (r.evalLoss !== null) out.push({ step: r.step, epoch: null, loss: null, learningRate: null, gradNorm: null, evalLoss: r.evalLoss, tokensPerSecond: null });
  }
  return out;
}

function joinWords(words: readonly string[]): string {
  return words.length <= 1 ? words.join('') : `${words.slice(0, -1).join(', ')} and ${words.at(-1)}`;
}
