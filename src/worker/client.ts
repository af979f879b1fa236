import type { ErrorDetail, Progress, RequestName, Requests, Response, RunControl, RunEvent, ToWorker } from './protocol';

/** An error answered by the worker; `detail.userError` tells a bad input from a bug. */
export class WorkerError extends Error {
  override readonly name = 'WorkerError';
  constructor(readonly detail: ErrorDetail) {
    super(detail.message);
  }
}

export interface CallOptions {
  readonly onProgress?: (p: Progress) => void;
  readonly onEvent?: (e: RunEvent) => void;
  /** Receives a function that pauses, resumes or stops this (training) request. */
  readonly onControl?: (control: (action: RunControl) => void) => void;
  readonly signal?: AbortSignal;
}

interface Pending {
  resolve(result: unknown): void;
  reject(error: Error): void;
  onProgress?: (p: Progress) => void;
  onEvent?: (e: RunEvent) => void;
}

/** Typed calls into the worker: `await client.call('logits', {...})`. */
export class WorkerClient {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor() {
    this.worker = new Worker(new URL('./main.ts', import.meta.url), { type: 'module', name: 'lora-lab-engine' });
    this.worker.onmessage = (event: MessageEvent<Response>) => this.receive(event.data);
    this.worker.onerror = (event) => this.failAll(new Error(`The engine worker crashed: ${event.message}`));
  }

  call<K extends RequestName>(type: K, payload: Requests[K]['payload'], options: CallOptions = {}): Promise<Requests[K]['result']> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: unknown) => void, reject, onProgress: options.onProgress, onEvent: options.onEvent });
      options.onControl?.((action) => this.post({ type: 'control', id, action }));
      options.signal?.addEventListener('abort', () => this.post({ type: 'cancel', id }), { once: true });
      this.post({ id, type, payload } as ToWorker);
    });
  }

  terminate(): void {
    this.worker.terminate();
    this.failAll(new Error('The engine was restarted.'));
  }

  private post(message: ToWorker): void {
    this.worker.postMessage(message);
  }

  private receive(message: Response): void {
    const pending = this.pending.get(message.id);
    if (!pending) return;
    switch (message.type) {
      case 'progress':
        pending.onProgress?.(message.progress);
        return;
      case 'event':
        pending.onEvent?.(message.event);
        return;
      case 'result':
        this.pending.delete(message.id);
        pending.resolve(message.result);
        return;
      case 'error':
        this.pending.delete(message.id);
        pending.reject(new WorkerError(message.error));
        return;
    }
  }

  private failAll(error: Error): void {
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
  }
}
