import { adapterInfo, deleteAdapter, listAdapters, type AdapterInfo } from '../storage/adapters';
import { openDatabase } from '../storage/db';
import type { RunConfig } from '../core/config';
import { engine } from './engine.svelte';

/**
 * Adapters stored with each model (storage/adapters.ts), for the model library, the run config's "Start from
 * adapter" and the Playground. Lists are read straight from IndexedDB; checking and storing an adapter goes through
 * the worker (`importAdapter`), which has the model's shape at hand.
 */

/** An adapter the Playground (or anything else) can run: a stored adapter of a model, named as the library lists it. */
export interface StoredAdapterSource {
  readonly kind: 'stored';
  readonly modelId: string;
  readonly name: string;
}

class AdapterStore {
  /** Model id → its adapters, newest first; a model not read yet has no entry. */
  byModel = $state<Record<string, readonly AdapterInfo[]>>({});

  /** The adapters of a model as last read (empty until refresh(modelId) has run once). */
  forModel(modelId: string | null): readonly AdapterInfo[] {
    return modelId === null ? [] : (this.byModel[modelId] ?? []);
  }

  /** The stored adapters of `modelId` as sources, for a picker of "what to run on this model". */
  sourcesFor(modelId: string | null): StoredAdapterSource[] {
    return this.forModel(modelId).map((a) => ({ kind: 'stored', modelId: a.modelId, name: a.name }));
  }

  async refresh(modelId: string): Promise<void> {
    const list = (await listAdapters(await openDatabase(), modelId)).map(adapterInfo);
    this.byModel = { ...this.byModel, [modelId]: list };
  }

  /** Checks the folder's files against the model in the worker and stores them; refused files leave nothing behind. */
  async importFolder(modelId: string, name: string, files: readonly File[], signal?: AbortSignal): Promise<AdapterInfo> {
    const { adapter } = await engine.client.call('importAdapter', { modelId, name, files: [...files] }, signal ? { signal } : {});
    await this.refresh(modelId);
    await engine.refreshStorage();
    return adapter;
  }

  async remove(modelId: string, name: string): Promise<void> {
    await deleteAdapter(await openDatabase(), modelId, name);
    await this.refresh(modelId);
  }
}

export const storedAdapters = new AdapterStore();

/**
 * What the run config says to start from `adapter`: init_adapter names it, and its r, lora_alpha, use_rslora and
 * target modules replace the form's (the worker refuses a run whose config disagrees with its adapter).
 */
export function configFromAdapter(adapter: AdapterInfo): Partial<RunConfig> {
  const s = adapter.settings;
  return {
    init_adapter: adapter.name,
    lora_rank: s.rank,
    lora_alpha: s.alpha,
    use_rslora: s.useRslora,
    target_modules: s.targetModules === 'all-linear' ? 'all-linear' : [...s.targetModules],
  };
}
