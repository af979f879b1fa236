import type { Finding } from '../core/diagnose';
import { openDatabase } from '../storage/db';
import { readMetrics } from '../storage/runs';
import { WorkerError, type CallOptions } from '../worker/client';
import type { ImageDatasetPreview } from '../storage/image-datasets';
import type { ImageTrainRequest } from '../worker/image-run';
import type { ErrorDetail, Progress, RunControl, RunEvent, TrainResult } from '../worker/protocol';
import { engine } from './engine.svelte';
import { addLivePoint, addStoredRows, emptyCurves, type Curves } from './run-curves';
import { runs } from './runs.svelte';
import { training } from './training.svelte';

export type ImageRunStatus = 'idle' | 'preparing' | 'running' | 'paused' | 'stopping' | 'ended';

/** One sample image on screen: its step, its prompt, and an object URL of its PNG. */
export interface ShownSample {
  readonly step: number;
  readonly index: number;
  readonly prompt: string;
  readonly url: string;
}

/** The training folder's preview as the grid shows it: the worker's rows and warnings, and a URL per thumbnail. */
export interface ShownPreview {
  readonly datasetId: string;
  readonly preview: ImageDatasetPreview;
  /** Object URLs of the stored thumbnails by image path (revoked when another preview replaces this one). */
  readonly thumbnails: ReadonlyMap<string, string>;
}

/** A library run: the stored model and image folders (latents cached per model and folder, so the run resumes). */
export type LibraryImageRun = ImageTrainRequest & { readonly model: { readonly modelId: string }; readonly train: { readonly datasetId: string }; readonly val: { readonly datasetId: string } | null };

/**
 * The image LoRA run of this tab: the preview of the chosen training folder, and the run's live curves, diagnosis
 * and sample gallery. What it trains on is chosen in the image library (image-library.svelte.ts). The worker trains
 * one run at a time, text or image; `training.busy` and this session's `busy` keep the two Start buttons honest.
 */
class ImageRunSession {
  preview = $state.raw<ShownPreview | null>(null);
  previewing = $state(false);
  /**
   * The progress phases of the last run's preparation that read or encoded images (e.g. "Encoding training images"),
   * as the worker reported them. Empty once the run started: every latent came from the cache.
   */
  encodingPhases = $state.raw<readonly string[]>([]);
  private shownProgress = $state<Progress | null>(null);
  status = $state<ImageRunStatus>('idle');
  runId = $state<string | null>(null);
  totalSteps = $state(0);
  latest = $state<Extract<RunEvent, { kind: 'step' }> | null>(null);
  findings = $state<Finding[]>([]);
  samples = $state<ShownSample[]>([]);
  error = $state<ErrorDetail | null>(null);
  endReason = $state<string | null>(null);
  /** Bumped on every new point; the chart redraws from the arrays below (kept outside $state for speed). */
  version = $state(0);
  curves: Curves = emptyCurves();
  private control: ((action: RunControl) => void) | null = null;
  private previewTicket = 0;

  /** What the worker reports while the run prepares; a new run's or a resumed one's alike. */
  get progress(): Progress | null {
    return this.shownProgress;
  }

  set progress(p: Progress | null) {
    this.shownProgress = p;
    // Reading and encoding images happens only on a latent-cache miss (worker/image-library.ts imageSetOf).
    if (p && /^Encoding /.test(p.phase) && !this.encodingPhases.includes(p.phase)) this.encodingPhases = [...this.encodingPhases, p.phase];
  }

  get busy(): boolean {
    return this.status === 'preparing' || this.status === 'running' || this.status === 'paused' || this.status === 'stopping';
  }

  /**
   * A stored image folder's rows, warnings and thumbnails (token counts with the model's tokenizer when one is
   * chosen), as a run at `resolution` with `captionExtension` would read it. Null clears the preview.
   */
  async refreshPreview(datasetId: string | null, modelId: string | null, resolution: number, captionExtension: string): Promise<void> {
    if (datasetId === null) {
      this.previewTicket++;
      this.showPreview(null);
      return;
    }
    // Only the latest request's answer is shown: choosing another folder meanwhile makes an earlier one stale.
    const ticket = ++this.previewTicket;
    this.previewing = true;
    this.error = null;
    try {
      const preview = await engine.client.call('previewImageDataset', { datasetId, ...(modelId === null ? {} : { modelId }), resolution, captionExtension });
      if (ticket !== this.previewTicket) return;
      const thumbnails = new Map(preview.thumbnails.map(({ path, png }) => [path, URL.createObjectURL(new Blob([png as Uint8Array<ArrayBuffer>], { type: 'image/png' }))]));
      this.showPreview({ datasetId, preview, thumbnails });
    } catch (e) {
      if (ticket !== this.previewTicket) return;
      this.showPreview(null);
      this.error = describe(e);
    } finally {
      if (ticket === this.previewTicket) this.previewing = false;
    }
  }

  private showPreview(next: ShownPreview | null): void {
    this.preview?.thumbnails.forEach((url) => URL.revokeObjectURL(url));
    this.preview = next;
  }

  /** Trains a new image run on the library's model and folders. */
  start(request: LibraryImageRun): Promise<void> {
    return this.session((handlers) => engine.client.call('trainImages', request, handlers));
  }

  /**
   * Continues an interrupted image run of the library from its last checkpoint (the Runs panel's Resume): the curve
   * up to the checkpoint is read from storage and the rest arrives live, as for a resumed text run (training.svelte.ts).
   */
  continueInterrupted(runId: string): Promise<void> {
    return this.session((handlers) => engine.client.call('resumeImageRun', { runId }, handlers));
  }

  /** One run in the worker, start to end: its progress, events and controls shown here, the runs list refreshed after. */
  private async session(call: (handlers: CallOptions) => Promise<TrainResult>): Promise<void> {
    if (this.busy || training.busy) return;
    this.reset();
    this.status = 'preparing';
    try {
      const result = await call({
        onProgress: (p) => (this.progress = p),
        onEvent: (e) => this.receive(e),
        onControl: (control) => (this.control = control),
      });
      this.endReason = result.reason;
    } catch (e) {
      this.error = describe(e);
    } finally {
      this.status = 'ended';
      this.progress = null;
      this.control = null;
      await runs.refresh();
    }
  }

  /** A resumed run's curve up to its checkpoint: the worker has removed the rows after it when it says 'started'. */
  private async showStored(runId: string, upTo: number): Promise<void> {
    const rows = (await readMetrics(await openDatabase(), runId)).filter((r) => r.step <= upTo);
    if (this.runId !== runId) return;
    addStoredRows(this.curves, rows);
    this.version++;
  }

  pause(): void {
    this.control?.('pause');
  }

  resume(): void {
    this.control?.('resume');
  }

  stop(): void {
    if (!this.control) return;
    this.status = 'stopping';
    this.control('stop');
  }

  private reset(): void {
    for (const s of this.samples) URL.revokeObjectURL(s.url);
    this.samples = [];
    this.runId = null;
    this.totalSteps = 0;
    this.latest = null;
    this.findings = [];
    this.error = null;
    this.endReason = null;
    this.encodingPhases = [];
    this.curves = emptyCurves();
    this.version++;
  }

  private receive(e: RunEvent): void {
    if (addLivePoint(this.curves, e)) this.version++;
    switch (e.kind) {
      case 'started':
        this.runId = e.runId;
        this.totalSteps = e.totalSteps;
        this.status = 'running';
        this.progress = null;
        if (e.fromStep > 0) void this.showStored(e.runId, e.fromStep);
        break;
      case 'step':
        this.latest = e;
        break;
      case 'diagnosis':
        this.findings = e.findings;
        break;
      case 'sample': {
        const url = URL.createObjectURL(new Blob([e.png as Uint8Array<ArrayBuffer>], { type: 'image/png' }));
        this.samples = [...this.samples, { step: e.step, index: e.index, prompt: e.prompt, url }];
        break;
      }
      case 'paused':
        this.status = 'paused';
        break;
      case 'resumed':
        this.status = 'running';
        break;
      default:
        break;
    }
  }
}

function describe(e: unknown): ErrorDetail {
  return e instanceof WorkerError ? e.detail : { message: (e as Error).message, userError: false };
}

export const imageRun = new ImageRunSession();
