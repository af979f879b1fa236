import type { Finding } from '../core/diagnose';
import { WorkerError } from '../worker/client';
import type { PickedFolder } from '../worker/image-run';
import type { ImageFolderPreview } from '../worker/image-preview';
import type { ErrorDetail, Progress, RunControl, RunEvent } from '../worker/protocol';
import { engine } from './engine.svelte';
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

/**
 * A folder picked with a folder input (webkitdirectory), as the worker reads it: the files by their path inside the
 * folder. Browsers give each file's path from the picked folder's parent, so the first component is the folder's name.
 */
export function pickedFolder(files: readonly File[]): PickedFolder | null {
  if (files.length === 0) return null;
  const first = files[0]!.webkitRelativePath || files[0]!.name;
  const name = first.includes('/') ? first.slice(0, first.indexOf('/')) : 'folder';
  return {
    name,
    files: files.map((file) => {
      const rel = file.webkitRelativePath || file.name;
      return { path: rel.startsWith(`${name}/`) ? rel.slice(name.length + 1) : rel, file };
    }),
  };
}

/**
 * The image LoRA run of this tab: the picked model and image folders, the folder's preview, and the run's live
 * curves, diagnosis and sample gallery. The worker trains one run at a time, text or image; `training.busy` and
 * this session's `busy` keep the two Start buttons honest.
 */
class ImageRunSession {
  // Raw, not deep state: the folders hold File objects that go to the worker as they are (a proxy cannot be cloned).
  model = $state.raw<PickedFolder | null>(null);
  train = $state.raw<PickedFolder | null>(null);
  val = $state.raw<PickedFolder | null>(null);
  preview = $state.raw<ImageFolderPreview | null>(null);
  previewing = $state(false);
  status = $state<ImageRunStatus>('idle');
  runId = $state<string | null>(null);
  totalSteps = $state(0);
  latest = $state<Extract<RunEvent, { kind: 'step' }> | null>(null);
  findings = $state<Finding[]>([]);
  samples = $state<ShownSample[]>([]);
  progress = $state<Progress | null>(null);
  error = $state<ErrorDetail | null>(null);
  endReason = $state<string | null>(null);
  /** Bumped on every new point; the chart redraws from the arrays below (kept outside $state for speed). */
  version = $state(0);
  readonly curves = { steps: [] as number[], loss: [] as number[], evalSteps: [] as number[], evalLoss: [] as number[] };
  private control: ((action: RunControl) => void) | null = null;

  get busy(): boolean {
    return this.status === 'preparing' || this.status === 'running' || this.status === 'paused' || this.status === 'stopping';
  }

  /** The images' rows and warnings, read in the worker with the model's tokenizer. */
  async refreshPreview(resolution: number, captionExtension: string): Promise<void> {
    this.preview = null;
    if (!this.model || !this.train) return;
    this.previewing = true;
    this.error = null;
    try {
      this.preview = await engine.client.call('previewImageFolder', { folder: this.train, model: this.model, resolution, captionExtension }, { onProgress: (p) => (this.progress = p) });
    } catch (e) {
      this.error = describe(e);
    } finally {
      this.previewing = false;
      this.progress = null;
    }
  }

  async start(configYaml: string): Promise<void> {
    if (this.busy || training.busy || !this.model || !this.train) return;
    this.reset();
    this.status = 'preparing';
    try {
      const result = await engine.client.call(
        'trainImages',
        { model: this.model, train: this.train, val: this.val, configYaml },
        {
          onProgress: (p) => (this.progress = p),
          onEvent: (e) => this.receive(e),
          onControl: (control) => (this.control = control),
        },
      );
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
    for (const list of Object.values(this.curves)) list.length = 0;
    this.version++;
  }

  private receive(e: RunEvent): void {
    switch (e.kind) {
      case 'started':
        this.runId = e.runId;
        this.totalSteps = e.totalSteps;
        this.status = 'running';
        this.progress = null;
        break;
      case 'step':
        this.latest = e;
        this.curves.steps.push(e.step);
        this.curves.loss.push(e.loss);
        this.version++;
        break;
      case 'eval':
        this.curves.evalSteps.push(e.step);
        this.curves.evalLoss.push(e.loss);
        this.version++;
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
