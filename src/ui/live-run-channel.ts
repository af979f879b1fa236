import type { Finding } from '../core/diagnose';
import type { ErrorDetail, RunEvent } from '../worker/protocol';

/**
 * One tab trains, the others show its run live, read-only. Each tab has its own engine worker, so only the tab that
 * started a run receives its events; it passes them on, as they come, on a BroadcastChannel of the origin. A tab that
 * opens mid-run asks who trains; the training tab answers with where the run stands, and the new tab reads the curve
 * so far from IndexedDB (see run-curves.ts) and follows the events from there on.
 */

/** The channel's name: every tab of the origin (same profile) with LoRA Lab open hears it. */
export const LIVE_RUN_CHANNEL = 'lora-lab/live-run';

/** What a tab that trains is doing (its TrainingSession's status while busy). */
export type LiveStatus = 'preparing' | 'running' | 'paused' | 'stopping';

/** Where the training tab's run stands, for a tab that joins it. */
export interface LiveRunSnapshot {
  /** Null while the run is still preparing (loading weights, reading the data): it is stored once it starts. */
  readonly runId: string | null;
  readonly modelId: string;
  readonly status: LiveStatus;
  readonly totalSteps: number;
  readonly trainableParameters: number;
  readonly latest: Extract<RunEvent, { kind: 'step' }> | null;
  readonly skippedSteps: number;
  readonly findings: readonly Finding[];
}

export type LiveRunMessage =
  /** A tab that just opened: does another tab train? Only a tab that trains answers, with `live`. */
  | { readonly type: 'ask' }
  /** The training tab's run as it stands: its answer to `ask`, and its first message when a run begins. */
  | { readonly type: 'live'; readonly run: LiveRunSnapshot }
  /** One of the run's events, passed on as the training tab's worker sent it. */
  | { readonly type: 'event'; readonly event: RunEvent }
  /** The run ended, however it ended (reason null: it failed, with `error`); watching tabs read the runs list again. */
  | { readonly type: 'ended'; readonly runId: string | null; readonly reason: string | null; readonly error: ErrorDetail | null };

/**
 * The typed channel. Messages a tab posts are not delivered to itself (BroadcastChannel's rule), so a tab is never
 * its own watcher. Where the browser has no BroadcastChannel, posting does nothing and nothing is heard.
 */
export class LiveRunChannel {
  private readonly channel: BroadcastChannel | null;

  constructor(onMessage: (message: LiveRunMessage) => void, name: string = LIVE_RUN_CHANNEL) {
    this.channel = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel(name);
    if (this.channel) this.channel.onmessage = (e: MessageEvent<LiveRunMessage>) => onMessage(e.data);
  }

  post(message: LiveRunMessage): void {
    // $state proxies cannot be cloned: what is posted is plain data (see snapshotOf in training.svelte.ts).
    this.channel?.postMessage(message);
  }

  close(): void {
    this.channel?.close();
  }
}
