import type { Finding } from '../core/diagnose';
import { WorkerError, type CallOptions } from '../worker/client';
import { openDatabase } from '../storage/db';
import { isLockHeld, lockName, platformLocks } from '../storage/locks';
import { getRun, markInterruptedRuns, readMetrics } from '../storage/runs';
import type { ErrorDetail, Progress, Requests, RunControl, RunEvent, TrainResult } from '../worker/protocol';
import { engine } from './engine.svelte';
import { LiveRunChannel, type LiveRunMessage, type LiveRunSnapshot } from './live-run-channel';
import { addLivePoint, addStoredRows, emptyCurves, type Curves } from './run-curves';
import { runs } from './runs.svelte';
import { anotherTabTrains } from '../worker/one-trainer';

export type { Curves } from './run-curves';

export type SessionStatus = 'idle' | 'preparing' | 'running' | 'paused' | 'stopping' | 'ended';

/** How often a tab that shows another tab's run checks that the training tab is still there (its lock held). */
const OWNER_CHECK_MS = 2000;

/**
 * The training run in progress (one at a time: the engine worker trains one adapter), or, read-only, the run another
 * tab of this browser trains (see live-run-channel.ts): this tab then shows its status, curves and diagnosis live.
 */
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
  /** Why the run paused itself (the disk is full: see worker/storage-full.ts); null when the person paused it. */
  pauseReason = $state<string | null>(null);
  endReason = $state<string | null>(null);
  /**
   * True while the run shown is another tab's: this tab only watches it (its own worker is free, so `busy` is false),
   * and starting a run here is refused until it ends.
   */
  inAnotherTab = $state(false);
  /** Bumped on every new point; the charts redraw from `curves` (kept outside $state for speed). */
  version = $state(0);
  curves: Curves = emptyCurves();
  private control: ((action: RunControl) => void) | null = null;
  private readonly channel = new LiveRunChannel((m) => this.hear(m));
  /** While watching: the stored rows still to be read once the first live step arrives (see watch()). */
  private refillOnFirstStep = false;
  private ownerCheck: ReturnType<typeof setInterval> | null = null;

  constructor() {
    // A tab that opens while another trains shows that run from the start.
    this.channel.post({ type: 'ask' });
  }

  /** This tab's worker trains (preparing, running, paused or stopping); false while only watching another tab's run. */
  get busy(): boolean {
    if (this.inAnotherTab) return false;
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
    if (this.inAnotherTab) {
      // The worker would refuse it too (one-trainer.ts); said here without disturbing the run on show.
      const refusal = anotherTabTrains();
      this.error = { message: refusal.message, subject: refusal.subject, fix: refusal.fix, userError: true };
      return;
    }
    this.reset(modelId);
    this.status = 'preparing';
    this.channel.post({ type: 'live', run: this.snapshot() });
    try {
      const result = await call({
        onProgress: (p) => (this.progress = p),
        onEvent: (e) => {
          this.receive(e);
          this.channel.post({ type: 'event', event: e });
        },
        onControl: (control) => (this.control = control),
      });
      this.endReason = result.reason;
    } catch (e) {
      this.error = e instanceof WorkerError ? e.detail : { message: (e as Error).message, userError: false };
    } finally {
      this.status = 'ended';
      this.progress = null;
      this.control = null;
      this.channel.post({ type: 'ended', runId: this.runId, reason: this.endReason, error: $state.snapshot(this.error) });
      await runs.refresh();
    }
  }

  private reset(modelId: string | null): void {
    this.runId = null;
    this.modelId = modelId;
    this.totalSteps = 0;
    this.trainableParameters = 0;
    this.latest = null;
    this.skippedSteps = 0;
    this.findings = [];
    this.progress = null;
    this.error = null;
    this.endReason = null;
    this.curves = emptyCurves();
    this.version++;
  }

  /** Where this tab's run stands, as plain data (a $state proxy cannot be posted). */
  private snapshot(): LiveRunSnapshot {
    return {
      runId: this.runId,
      modelId: this.modelId ?? '',
      status: this.status === 'idle' || this.status === 'ended' ? 'preparing' : this.status,
      totalSteps: this.totalSteps,
      trainableParameters: this.trainableParameters,
      latest: $state.snapshot(this.latest),
      skippedSteps: this.skippedSteps,
      findings: $state.snapshot(this.findings),
    };
  }

  private hear(m: LiveRunMessage): void {
    switch (m.type) {
      case 'ask':
        if (this.busy) this.channel.post({ type: 'live', run: this.snapshot() });
        return;
      case 'live':
        if (!this.busy) this.watch(m.run);
        return;
      case 'event':
        if (!this.inAnotherTab) return;
        if (m.event.kind === 'step' && this.refillOnFirstStep && this.runId) {
          // Rows up to the step before this one are stored by now (the worker stores a step before it trains the
          // next); the read when joining may have missed the last of them.
          this.refillOnFirstStep = false;
          void this.fillFromStorage(this.runId);
        }
        this.receive(m.event);
        return;
      case 'ended':
        if (this.inAnotherTab) this.stopWatching(m.reason, m.error === null ? null : { ...m.error, message: `In the other tab: ${m.error.message}` });
        return;
    }
  }

  /** Shows another tab's run from where it stands; its curve so far is read from storage. */
  private watch(run: LiveRunSnapshot): void {
    const sameRun = this.inAnotherTab && run.runId !== null && run.runId === this.runId;
    if (!sameRun) {
      this.reset(run.modelId);
      this.inAnotherTab = true;
      this.runId = run.runId;
      this.refillOnFirstStep = true;
      if (run.runId) void this.fillFromStorage(run.runId);
      this.checkOwner();
    }
    this.status = run.status;
    this.totalSteps = run.totalSteps;
    this.trainableParameters = run.trainableParameters;
    this.latest = run.latest;
    this.skippedSteps = run.skippedSteps;
    this.findings = [...run.findings];
  }

  /**
   * A training tab that is closed or crashes sends nothing more: its lock going away says it. The run's record then
   * tells how it ended (still running or paused in storage: it was interrupted, and is marked so here).
   */
  private checkOwner(): void {
    if (this.ownerCheck !== null) clearInterval(this.ownerCheck);
    let seenHeld = false;
    let checking = false;
    this.ownerCheck = setInterval(() => {
      if (checking) return;
      checking = true;
      void (async () => {
        const held = await isLockHeld(lockName.training);
        if (held) seenHeld = true;
        if (held || !seenHeld || !this.inAnotherTab) return;
        const db = await openDatabase();
        await markInterruptedRuns(db, platformLocks());
        const run = this.runId ? await getRun(db, this.runId) : undefined;
        if (this.inAnotherTab) this.stopWatching(run?.status ?? null, null);
      })()
        .catch(() => undefined)
        .finally(() => (checking = false));
    }, OWNER_CHECK_MS);
  }

  private stopWatching(reason: string | null, error: ErrorDetail | null): void {
    if (this.ownerCheck !== null) clearInterval(this.ownerCheck);
    this.ownerCheck = null;
    this.inAnotherTab = false;
    this.refillOnFirstStep = false;
    this.status = 'ended';
    this.endReason = reason;
    this.error = error;
    void runs.refresh();
  }

  /** The run's stored curve points, merged with those seen live (each step once). */
  private async fillFromStorage(runId: string, upTo = Number.POSITIVE_INFINITY): Promise<void> {
    const rows = (await readMetrics(await openDatabase(), runId)).filter((r) => r.step <= upTo);
    if (this.runId !== runId) return;
    addStoredRows(this.curves, rows);
    this.version++;
  }

  send(action: RunControl): void {
    if (this.inAnotherTab) return; // read-only: the controls are disabled too
    this.control?.(action);
    if (action === 'stop') this.status = 'stopping';
  }

  private receive(e: RunEvent): void {
    if (addLivePoint(this.curves, e)) this.version++;
    switch (e.kind) {
      case 'started':
        this.status = 'running';
        this.progress = null;
        this.runId = e.runId;
        this.totalSteps = e.totalSteps;
        this.trainableParameters = e.trainableParameters;
        // A resumed run's curve up to its checkpoint (the worker has already removed the rows after it).
        if (e.fromStep > 0) void this.fillFromStorage(e.runId, e.fromStep);
        void runs.refresh();
        break;
      case 'step':
        this.latest = e;
        this.skippedSteps = e.skippedSteps;
        break;
      case 'skipped':
        this.skippedSteps = e.skippedSteps;
        break;
      case 'diagnosis':
        this.findings = e.findings;
        break;
      case 'paused':
        this.status = 'paused';
        this.pauseReason = e.reason ?? null;
        break;
      case 'resumed':
        this.status = 'running';
        this.pauseReason = null;
        break;
    }
  }
}

export const training = new TrainingSession();
