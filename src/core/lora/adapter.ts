import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import { loraLinear } from '../kernels/lora_linear.js';
import { applyLinear, type Linear, type LinearApply } from '../models/linear.js';
import type { CheckpointableApply, DrawMark } from '../models/checkpointing.js';
import { dropoutMaskArray, streamKey, uniformArray } from '../random.js';
import { isRowBlocks } from '../weights/row-blocks.js';
import { loraScaling, selectTargets, validateLoraSettings, type LoraSettings, type LoraTargetable } from './settings.js';

/** One adapted projection: y = base(x) + scaling · (dropout(x)·Aᵀ)·Bᵀ, shapes as PEFT stores them. */
export interface LoraModule {
  /** The HF module path, e.g. `transformer.h.0.attn.c_attn`; PEFT's tensor names are built from it. */
  readonly path: string;
  readonly linear: Linear;
  /** lora_A.weight, [r, in]. */
  readonly A: tf.Variable<tf.Rank.R2>;
  /** lora_B.weight, [out, r]. */
  readonly B: tf.Variable<tf.Rank.R2>;
}

/** The raw values of one module's matrices, row-major: A [r, in], B [out, r]. */
export interface LoraModuleTensors {
  readonly A: Float32Array;
  readonly B: Float32Array;
}

export type LoraMode = { readonly training: true; readonly seed: number; readonly step: number } | { readonly training: false };

// Distinct first key parts keep the initialisation and dropout streams apart even for equal seeds.
const INIT_STREAM = 1;
const DROPOUT_STREAM = 2;

/**
 * A LoRA adapter on a model's projections (a CausalLM, a Stable Diffusion UNet or text encoder), as Hugging Face
 * PEFT defines it: for each targeted projection a trainable A [r, in] and B [out, r], added to the frozen base as
 * `scaling · B·A·dropout(x)`.
 * The adapter owns its variables (dispose() releases them), never the model's weights.
 */
export class LoraAdapter {
  readonly scaling: number;
  private readonly byPath: ReadonlyMap<string, { readonly module: LoraModule; readonly index: number }>;
  private disposed = false;

  private constructor(
    readonly settings: LoraSettings,
    readonly modules: readonly LoraModule[],
  ) {
    this.scaling = loraScaling(settings);
    this.byPath = new Map(modules.map((module, index) => [module.path, { module, index }]));
  }

  /**
   * A fresh adapter with PEFT's default initialisation (init_lora_weights=True): A from
   * kaiming_uniform_(a=√5), which for a [r, in] matrix is U(-1/√in, 1/√in), and B = 0, so the
   * adapted model starts out computing exactly the base model. Same seed, same A.
   */
  static create(model: LoraTargetable<Linear>, settings: LoraSettings, seed: number): LoraAdapter {
    validateLoraSettings(settings);
    if (!Number.isSafeInteger(seed)) throw new Error(`LoraAdapter.create: seed ${seed} is not a safe integer`);
    const targets = selectTargets(model, settings.targetModules);
    const r = settings.rank;
    return LoraAdapter.build(
      settings,
      targets.map((linear, i) => ({
        linear,
        // kaiming_uniform_ with a = √5: gain √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√fan_in, fan_in = in.
        A: uniformArray(streamKey(INIT_STREAM, seed, i), r * linear.inFeatures, 1 / Math.sqrt(linear.inFeatures)),
        B: new Float32Array(linear.outFeatures * r),
      })),
    );
  }

  /**
   * An adapter with given values (an imported PEFT adapter, a restored checkpoint). `tensors` must
   * hold exactly the modules `settings.targetModules` selects, keyed by module path.
   */
  static fromTensors(model: LoraTargetable<Linear>, settings: LoraSettings, tensors: ReadonlyMap<string, LoraModuleTensors>): LoraAdapter {
    validateLoraSettings(settings);
    const targets = selectTargets(model, settings.targetModules);
    const r = settings.rank;
    const wanted = new Set(targets.map((l) => l.path));
    for (const path of tensors.keys()) {
      if (!wanted.has(path)) {
        throw new UserError('adapter weights', `hold weights for module ${path}, which the target modules do not select.`);
      }
    }
    return LoraAdapter.build(
      settings,
      targets.map((linear) => {
        const t = tensors.get(linear.path);
        if (!t) throw new UserError('adapter weights', `have no weights for module ${linear.path}.`);
        if (t.A.length !== r * linear.inFeatures || t.B.length !== linear.outFeatures * r) {
          throw new UserError(
            'adapter weights',
            `for module ${linear.path} have ${t.A.length} and ${t.B.length} values, but rank ${r} on a ` +
              `${linear.inFeatures} → ${linear.outFeatures} projection needs ${r * linear.inFeatures} and ${linear.outFeatures * r}.`,
          );
        }
        return { linear, A: t.A, B: t.B };
      }),
    );
  }

  private static build(
    settings: LoraSettings,
    parts: readonly { linear: Linear; A: Float32Array; B: Float32Array }[],
  ): LoraAdapter {
    const r = settings.rank;
    const modules: LoraModule[] = [];
    try {
      for (const { linear, A, B } of parts) {
        modules.push({
          path: linear.path,
          linear,
          A: variableFrom(A, [r, linear.inFeatures]),
          B: variableFrom(B, [linear.outFeatures, r]),
        });
      }
    } catch (e) {
      for (const m of modules) tf.dispose([m.A, m.B]);
      throw e;
    }
    return new LoraAdapter({ ...settings, targetModules: copyTargets(settings.targetModules) }, modules);
  }

  /** A and B of every module, in module order: the trainable parameters. */
  variables(): tf.Variable[] {
    this.assertLive();
    return this.modules.flatMap((m) => [m.A, m.B]);
  }

  /**
   * The LinearApply to pass to model.forward. Targeted projections run the LoRA linear, the rest the
   * plain one. Training mode applies inverted dropout (p = settings.dropout) to the LoRA branch's input,
   * with masks drawn from a stream keyed by (seed, step, module index, call number): the same seed and
   * step give the same masks, so a run is reproducible, and calling a projection twice through the same
   * LinearApply (several micro-batches) draws fresh masks. Eval mode uses no dropout.
   * It is also a CheckpointableApply, so a model can checkpoint the blocks it runs (ForwardOptions.gradientCheckpointing).
   */
  apply(mode: LoraMode): CheckpointableApply {
    this.assertLive();
    const p = this.settings.dropout;
    if (mode.training && (!Number.isSafeInteger(mode.seed) || !Number.isSafeInteger(mode.step))) {
      throw new Error(`LoraAdapter.apply: seed ${mode.seed} and step ${mode.step} must be safe integers`);
    }
    const calls = new Array<number>(this.modules.length).fill(0);
    const project: LinearApply = (linear, x) => {
      const hit = this.byPath.get(linear.path);
      if (!hit) return applyLinear(linear, x);
      this.assertLive();
      const { module, index } = hit;
      let dropoutMask: tf.Tensor2D | null = null;
      if (mode.training && p > 0) {
        const call = calls[index]!;
        calls[index] = call + 1;
        const [tokens, inFeatures] = x.shape;
        const values = dropoutMaskArray(streamKey(DROPOUT_STREAM, mode.seed, mode.step, index, call), tokens * inFeatures, p);
        dropoutMask = tf.tensor2d(values, [tokens, inFeatures], 'float32');
      }
      if (isRowBlocks(linear.weight)) {
        throw new Error(`LoRA on ${linear.path}: its weight is split into row blocks (larger than one GPU binding), which the LoRA kernels do not take`);
      }
      return loraLinear({
        x,
        weight: linear.weight,
        layout: linear.layout,
        bias: linear.bias,
        loraA: module.A,
        loraB: module.B,
        scaling: this.scaling,
        dropoutMask,
      });
    };
    // What gradient checkpointing needs (models/checkpointing.ts): the variables a projection reads, and
    // the call counters (the only state the dropout draws depend on) to rewind for a block's recompute.
    return Object.assign(project, {
      trainables: (linear: Linear): readonly tf.Variable[] => {
        const hit = this.byPath.get(linear.path);
        return hit ? [hit.module.A, hit.module.B] : [];
      },
      drawMark: (): DrawMark => calls.slice(),
      replayDraws: <T>(mark: DrawMark, run: () => T): T => {
        const now = calls.slice();
        calls.splice(0, calls.length, ...mark);
        try {
          return run();
        } finally {
          calls.splice(0, calls.length, ...now);
        }
      },
    });
  }

  /** Trainable parameters: r·(in + out) per module. */
  parameterCount(): number {
    return this.modules.reduce((n, m) => n + this.settings.rank * (m.linear.inFeatures + m.linear.outFeatures), 0);
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const m of this.modules) tf.dispose([m.A, m.B]);
  }

  private assertLive(): void {
    if (this.disposed) throw new Error('LoraAdapter used after dispose()');
  }
}

function variableFrom(values: Float32Array, shape: [number, number]): tf.Variable<tf.Rank.R2> {
  const t = tf.tensor2d(values, shape, 'float32');
  // The variable takes a reference to t's data, so t itself can go at once.
  const v = tf.variable(t, true);
  t.dispose();
  return v;
}

/** Settings are kept by the adapter; a private copy of the list stops later edits by the caller from leaking in. */
function copyTargets(t: LoraSettings['targetModules']): LoraSettings['targetModules'] {
  return t === 'all-linear' ? t : Object.freeze([...t]);
}
