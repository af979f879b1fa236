import type { Finding } from '../core/diagnose';
import { WorkerError, type CallOptions } from '../worker/client';
import { openDatabase } from '../storage/db';
import { readMetrics } from '../storage/runs';
import type { ErrorDetail, Progress, Requests, RunControl, RunEvent, TrainResult } from '../worker/protocol';
import { engine } from './engine.svelte';
import { runs } from './runs.svelte';

export type SessionStatus = 'idle' | 'preparing' | 'running' | 'paused' | 'stopping' | 'ended';

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

const emptyCurves = (): Curves => ({ steps: [], loss: [], learningRate: [], gradNorm: [], tokensPerSecond: [], evalSteps: [], evalLoss: [], custom: new Map() });

/** The training run in progress (one at a time: the engine worker trains one adapter). */
class TrainingSession {
  status = $state<SessionStatus>('idle');
  runId = $state<string | null>(null);
  /** The model this session trains; while busy, the worker refuses to unload or delete it (the UI disables those). */
  modelId = $state<string | null>(null);
  totalSteps = $state(0);
  trainableParameters = $state(0);
  latest = $state<Extract<RunEvent, { kind: 'step' }> | null>(null);
  /** Updates skipped for a non-finite loss or gradient; kept apart from `latest`, since a skip sends no step. */
  skippedSteps = $state(0);
  findings = $state<Finding[]>([]);
  progress = $state<Progress | null>(null);
  error = $state<ErrorDetail | null>(null);
  endReason = $state<string | null>(null);
  /** Bumped on every new point; the charts redraw from `curves` (kept outside $state for speed). */
  version = $state(0);
  curves: Curves = emptyCurves();
  private control: ((action: RunControl) => void) | null = null;

  get busy(): boolean {
    return this.status === 'preparing' || this.status === 'running' || this.status === 'paused' || this.status === 'stopping';
  }

  start(request: Requests['train']['payload']): Promise<void> {
    return this.session(request.modelId, (handlers) => engine.client.call('train', request, handlers));
  }

  /** Continues an interrupted run from its last checkpoint; the curves up to it come from storage. */
  resume(runId: string, modelId: string): Promise<void> {
    return this.session(modelId, (handlers) => engine.client.call('resumeRun', { runId, modelId }, handlers));
  }

  private async session(
    modelId: string,
    call: (handlers: CallOptions) => Promise<TrainResult>,
  ): Promise<void> {
    if (this.busy) return;
    this.status = 'preparing';
    this.runId = null;
    this.modelId = modelId;
    this.latest = null;
    this.skippedSteps = 0;
    this.findings = [];
    this.error = null;
    this.endReason = null;
    this.curves = emptyCurves();
    this.version++;
    try {
      const result = await call({
        onProgress: (p) => (this.progress = p),
        onEvent: (e) => this.receive(e),
        onControl: (control) => (this.control = control),
      });
      this.endReason = result.reason;
    } catch (e) {
      this.error = e instanceof WorkerError ? e.detail : { message: (e as Error).message, userError: false };
    } finally {
      this.status = 'ended';
      this.progress = null;
      this.control = null;
      await runs.refresh();
    }
  }

  /**
   * A resumed run's curves up to its checkpoint, read from storage (the worker has already removed the rows after
   * it) and put before the points that arrived meanwhile, which are all later.
   */
  private async prefill(runId: string, fromStep: number): Promise<void> {
    const rows = (await readMetrics(await openDatabase(), runId)).filter((r) => r.step <= fromStep);
    if (this.runId !== runId) return;
    const c = this.curves;
    const train = rows.filter((r) => r.loss !== null);
    c.steps.unshift(...train.map((r) => r.step));
    c.loss.unshift(...train.map((r) => r.loss!));
    c.learningRate.unshift(...train.map((r) => r.learningRate ?? Number.NaN));
    c.gradNorm.unshift(...train.map((r) => r.gradNorm ?? Number.NaN));
    c.tokensPerSecond.unshift(...train.map((r) => r.tokensPerSecond ?? Number.NaN));
    const evals = rows.filter((r) => r.evalLoss !== null);
    c.evalSteps.unshift(...evals.map((r) => r.step));
    c.evalLoss.unshift(...evals.map((r) => r.evalLoss!));
    for (const r of rows) {
      for (const [name, value] of Object.entries(r.custom)) {
        const series = c.custom.get(name) ?? { steps: [], values: [] };
        const at = series.steps.findIndex((s) => s > r.step);
        const i = at === -1 ? series.steps.length : at;
        series.steps.splice(i, 0, r.step);
        series.values.splice(i, 0, value);
        c.custom.set(name, series);
      }
    }
    this.version++;
  }

  send(action: RunControl): void {
    this.control?.(action);
    if (action === 'stop') this.status = 'stopping';
  }

  private receive(e: RunEvent): void {
    switch (e.kind) {
      case 'started':
        this.status = 'running';
        this.progress = null;
        this.runId = e.runId;
        this.totalSteps = e.totalSteps;
        this.trainableParameters = e.trainableParameters;
        if (e.fromStep > 0) void this.prefill(e.runId, e.fromStep);
        void runs.refresh();
        break;
      case 'step': {
        this.latest = e;
        this.skippedSteps = e.skippedSteps;
        const c = this.curves;
        c.steps.push(e.step);
        c.loss.push(e.loss);
        c.learningRate.push(e.learningRate);
        c.gradNorm.push(e.gradNorm);
        c.tokensPerSecond.push(e.tokensPerSecond);
        this.version++;
        break;
      }
      case 'skipped':
        this.skippedSteps = e.skippedSteps;
        break;
      case 'eval':
        this.curves.evalSteps.push(e.step);
        this.curves.evalLoss.push(e.loss);
        this.version++;
        break;
      case 'diagnosis':
        this.findings = e.findings;
        break;
      case 'paused':
        this.status = 'paused';
        break;
      case 'resumed':
        this.status = 'running';
        break;
      case 'metric': {
        const series = this.curves.custom.get(e.name) ?? { steps: [], values: [] };
        series.steps.push(e.step);
        series.values.push(e.value);
        this.curves.custom.set(e.name, series);
        this.version++;
        break;
      }
    }
  }
}

export const training = new TrainingSession();

