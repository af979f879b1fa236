import type { StepMetrics, TrainerCallbacks } from '../train/trainer.js';
import { EventFileWriter } from './writer';

/** What the logger needs of an adapter: its matrices by module path, for histograms. */
export interface LoggedMatrices {
  matrices(): Promise<{ path: string; A: Float32Array; B: Float32Array }[]>;
}

export interface TensorBoardLoggerOptions {
  readonly writer: EventFileWriter;
  /** Persists the bytes written since the last flush (IndexedDB in the app). */
  readonly flush: (bytes: Uint8Array) => Promise<void>;
  readonly adapter?: LoggedMatrices;
  /** Seconds since the epoch; injectable so tests can compare bytes. */
  readonly clock?: () => number;
}

/**
 * Writes what Hugging Face Trainer writes, under its tag names, so TensorBoard users see familiar
 * charts: train/loss (mean over the log window), train/learning_rate, train/grad_norm, train/epoch,
 * train/tokens_per_second every log_steps; eval/loss and histograms of every LoRA matrix at each
 * evaluation. Each batch of events is flushed at once, so a closed tab loses at most the last step.
 * The caller writes the file version and the config (step 0) before training starts.
 */
export function tensorBoardCallbacks(options: TensorBoardLoggerOptions): TrainerCallbacks & { addScalar(tag: string, value: number, step: number): Promise<void>; addText(tag: string, text: string, step: number): Promise<void> } {
  const { writer, flush, adapter } = options;
  const now = options.clock ?? (() => Date.now() / 1000);
  const flushPending = () => flush(writer.takePending());

  return {
    async onLog(m: StepMetrics & { meanLoss: number }) {
      const t = now();
      writer.addScalar('train/loss', m.meanLoss, m.step, t);
      writer.addScalar('train/learning_rate', m.learningRate, m.step, t);
      writer.addScalar('train/grad_norm', m.gradNorm, m.step, t);
      writer.addScalar('train/epoch', m.epoch, m.step, t);
      writer.addScalar('train/tokens_per_second', m.tokensPerSecond, m.step, t);
      await flushPending();
    },
    async onEval(e) {
      const t = now();
      writer.addScalar('eval/loss', e.loss, e.step, t);
      for (const { path, A, B } of (await adapter?.matrices()) ?? []) {
        // A diverged adapter holds NaN; TensorBoard refuses such histograms, and the loss says it all.
        if (A.every(Number.isFinite)) writer.addHistogram(`lora/${path}/A`, A, e.step, t);
        if (B.every(Number.isFinite)) writer.addHistogram(`lora/${path}/B`, B, e.step, t);
      }
      await flushPending();
    },
    async addScalar(tag, value, step) {
      writer.addScalar(tag, value, step, now());
      await flushPending();
    },
    async addText(tag, text, step) {
      writer.addText(tag, text, step, now());
      await flushPending();
    },
  };
}
