import type { Finding } from '../core/diagnose';
import { WorkerError } from '../worker/client';
import type { ErrorDetail, Progress, Requests, RunControl, RunEvent } from '../worker/protocol';
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
  totalSteps = $state(0);
  trainableParameters = $state(0);
  latest = $state<Extract<RunEvent, { kind: 'step' }> | null>(null);
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

  async start(request: Requests['train']['payload']): Promise<void> {
    if (this.busy) return;
    this.status = 'preparing';
    this.runId = null;
    this.latest = null;
    this.findings = [];
    this.error = null;
    this.endReason = null;
    this.curves = emptyCurves();
    this.version++;
    try {
      const result = await engine.client.call('train', request, {
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
        void runs.refresh();
        break;
      case 'step': {
        this.latest = e;
        const c = this.curves;
        c.steps.push(e.step);
        c.loss.push(e.loss);
        c.learningRate.push(e.learningRate);
        c.gradNorm.push(e.gradNorm);
        c.tokensPerSecond.push(e.tokensPerSecond);
        this.version++;
        break;
      }
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

