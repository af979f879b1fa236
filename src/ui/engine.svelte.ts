import { openDatabase } from '../storage/db';
import { listModels } from '../storage/models';
import type { StoredModel } from '../storage/db';
import { WorkerClient } from '../worker/client';
import type { BackendInfo, BackendPreference } from '../worker/protocol';

const BACKEND_KEY = 'lora-lab.backend';
const SELECTED_MODEL_KEY = 'lora-lab.selected-model';

/**
 * The app's shared state: the engine worker, the backend it runs on, and the model library.
 * Lists are read straight from IndexedDB; heavy work goes through the worker.
 */
class Engine {
  client = new WorkerClient();
  backendPreference = $state<BackendPreference>(readPreference());
  backend = $state<BackendInfo | null>(null);
  backendError = $state<string | null>(null);
  models = $state<StoredModel[]>([]);
  selectedModelId = $state<string | null>(localStorage.getItem(SELECTED_MODEL_KEY));
  storage = $state<{ usage: number; quota: number; persisted: boolean } | null>(null);

  readonly selectedModel = $derived(this.models.find((m) => m.id === this.selectedModelId) ?? null);

  async start(): Promise<void> {
    this.backend = null;
    this.backendError = null;
    try {
      this.backend = await this.client.call('init', { backend: this.backendPreference });
    } catch (e) {
      this.backendError = (e as Error).message;
    }
    await this.refreshModels();
  }

  async setBackendPreference(preference: BackendPreference): Promise<void> {
    this.backendPreference = preference;
    localStorage.setItem(BACKEND_KEY, preference);
    // tfjs keeps tensors per backend: a fresh worker is the clean way to switch.
    this.client.terminate();
    this.client = new WorkerClient();
    await this.start();
  }

  async refreshModels(): Promise<void> {
    this.models = await listModels(await openDatabase());
    if (this.selectedModelId && !this.models.some((m) => m.id === this.selectedModelId)) this.selectModel(null);
    if (!this.selectedModelId && this.models[0]) this.selectModel(this.models[0].id);
    await this.refreshStorage();
  }

  selectModel(id: string | null): void {
    this.selectedModelId = id;
    if (id) localStorage.setItem(SELECTED_MODEL_KEY, id);
    else localStorage.removeItem(SELECTED_MODEL_KEY);
  }

  /** Through the worker, which owns the loaded model: it refuses while a run trains on this one. */
  async deleteModel(id: string): Promise<void> {
    await this.client.call('deleteModel', { modelId: id });
    await this.refreshModels();
  }

  async refreshStorage(): Promise<void> {
    const estimate = await navigator.storage?.estimate?.();
    if (!estimate) return;
    this.storage = { usage: estimate.usage ?? 0, quota: estimate.quota ?? 0, persisted: (await navigator.storage.persisted?.()) ?? false };
  }

  /** Asks the browser not to evict stored models under storage pressure. */
  async requestPersistence(): Promise<void> {
    await navigator.storage?.persist?.();
    await this.refreshStorage();
  }
}

function readPreference(): BackendPreference {
  const saved = localStorage.getItem(BACKEND_KEY);
  return saved === 'webgpu' || saved === 'wasm' ? saved : 'auto';
}

export const engine = new Engine();
