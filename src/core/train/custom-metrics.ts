import type { StepMetrics, TrainerCallbacks } from './trainer.js';

/**
 * A metric computed from each logged step: the extension point for numbers the built-in loggers do
 * not know. Each value reaches the charts, metrics.csv and the TensorBoard file under `name`.
 */
export interface CustomMetric {
  /** A TensorBoard tag, e.g. `train/perplexity`. */
  readonly name: string;
  compute(step: StepMetrics & { meanLoss: number }): number;
}

/** Where computed values go (the worker fans them out to the UI, IndexedDB and the event file). */
export type MetricSink = (value: { step: number; name: string; value: number }) => void | Promise<void>;

/** Perplexity of the logged mean loss: the first custom metric, built on the same API as any other. */
export const PERPLEXITY: CustomMetric = { name: 'train/perplexity', compute: (m) => Math.exp(m.meanLoss) };

/** Computes every metric at each log step and hands the finite values to the sink. */
export function customMetricCallbacks(metrics: readonly CustomMetric[], sink: MetricSink): TrainerCallbacks {
  return {
    async onLog(m) {
      for (const metric of metrics) {
        const value = metric.compute(m);
        if (Number.isFinite(value)) await sink({ step: m.step, name: metric.name, value });
      }
    },
  };
}
