import { UserError } from '../core/errors';
import type { LoraLabDb, StoredModel } from '../storage/db';
import { placementFor, samePlacement, type WeightPlacement } from '../core/weights/hold';
import { loadStoredModel, type RunnableModel } from '../storage/model-weights';
import { getModel } from '../storage/models';

export interface LoadedModel extends RunnableModel {
  readonly id: string;
  readonly name: string;
  /** How its weights are held (packed, quantized). */
  readonly placement: WeightPlacement;
}

/** Builds a stored model on the backend: storage/model-weights in the app, a stand-in in tests. */
export type ModelLoader = (
  db: LoraLabDb,
  stored: StoredModel,
  placement: WeightPlacement,
  onProgress?: (done: number, total: number) => void,
) => Promise<RunnableModel>;

/**
 * A training run's hold on the slot: while it lasts, the slot keeps this model and refuses to load another, to
 * free it, or to pin for a second run.
 */
export interface ModelPin {
  readonly modelId: string;
  /** The pinned model held as `placement` says (a run's base_quantization), loaded now if it is not already so. */
  load(db: LoraLabDb, placement: WeightPlacement, onProgress?: (done: number, total: number) => void): Promise<LoadedModel>;
  /** Ends the pin (the model stays loaded for the next request). Safe to call twice. */
  release(): void;
}

/**
 * The model on the backend: one at a time, since base weights are what fills GPU memory. Loading another model
 * frees the current one, so a run's model must not be swapped out under it: a run pins the slot, and while it is
 * pinned, requests that would free the model (another model in the Playground, deleting the model) are refused
 * with a message instead. The pin is also what makes a worker train one run at a time: there is one pin.
 *
 * The library is asked on every load (one small IndexedDB read), so a model deleted from another tab is never
 * run from this cache, and its weights are freed here. Loads run one after another: two overlapping loads would
 * each free what the other installed.
 */
export class ModelSlot {
  private current: LoadedModel | null = null;
  private pinned: { readonly modelId: string } | null = null;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly loader: ModelLoader = loadStoredModel) {}

  /** The model `id` for a request, loading it if needed; refused while a run is pinned to another model. */
  async use(db: LoraLabDb, id: string, onProgress?: (done: number, total: number) => void): Promise<LoadedModel> {
    this.refuseSwitch(id);
    // Checked again when the load's turn comes: a run may have pinned another model meanwhile.
    return this.serially(() => {
      this.refuseSwitch(id);
      return this.load(db, id, null, onProgress);
    });
  }

  /**
   * Pins `modelId` for a training run. Synchronous, so that of two `train` messages arriving together the
   * second is refused before either has awaited anything.
   */
  pin(modelId: string): ModelPin {
    if (this.pinned) {
      throw new UserError('training', 'is already running: LoRA Lab trains one run at a time.', 'Wait for the current run to end, or stop it first.');
    }
    const mine = { modelId };
    this.pinned = mine;
    return {
      modelId,
      load: (db, placement, onProgress) => this.serially(() => this.load(db, modelId, placement, onProgress)),
      release: () => {
        if (this.pinned === mine) this.pinned = null;
      },
    };
  }

  /** True while a run holds the slot. */
  get busy(): boolean {
    return this.pinned !== null;
  }

  /**
   * Frees the loaded language model for a run that trains something else (an image LoRA): its memory is the run's.
   * Only the holder of the slot's pin may ask, so nothing else is using the model.
   */
  async unloadFor(pin: ModelPin): Promise<void> {
    if (this.pinned?.modelId !== pin.modelId) throw new Error('unloadFor: the slot is not pinned by this pin');
    return this.serially(async () => this.release());
  }

  /** Before the model `id` is deleted: refused while a run trains on it; otherwise its weights are freed if loaded. */
  async evict(id: string): Promise<void> {
    if (this.pinned?.modelId === id) {
      throw new UserError('model', 'cannot be deleted while a run trains on it.', 'Stop the run, or wait for it to end, then delete the model.');
    }
    return this.serially(async () => {
      if (this.current?.id === id) this.release();
    });
  }

  private refuseSwitch(id: string): void {
    if (!this.pinned || this.pinned.modelId === id) return;
    const training = this.current?.id === this.pinned.modelId ? `"${this.current.name}"` : 'another model';
    throw new UserError(
      'model',
      `cannot be loaded while a run trains on ${training}: loading it would unload the weights the run is training.`,
      'Wait for the run to end, or stop it, or pick the model the run trains.',
    );
  }

  /**
   * Loads `id` held as `placement`; with null (a playground or eval request), the model as it is loaded
   * already, whatever its placement, or else unquantized.
   */
  private async load(
    db: LoraLabDb,
    id: string,
    placement: WeightPlacement | null,
    onProgress?: (done: number, total: number) => void,
  ): Promise<LoadedModel> {
    const stored = await getModel(db, id);
    if (!stored) {
      if (this.current?.id === id) this.release();
      throw new UserError('model', 'is not in the library any more (it was deleted).', 'Pick or import a model.');
    }
    if (this.current?.id === id && (placement === null || samePlacement(placement, this.current.placement))) return this.current;
    this.release();
    const wanted = placement ?? placementFor('none');
    this.current = { id, name: stored.name, placement: wanted, ...(await this.loader(db, stored, wanted, onProgress)) };
    return this.current;
  }

  private serially<T>(work: () => Promise<T>): Promise<T> {
    const turn = this.queue.then(work);
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  /** Frees the loaded model's weights (before loading another, or when it was deleted). */
  private release(): void {
    this.current?.model.dispose();
    this.current = null;
  }
}
