import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors.js';
import { parseNoiseSchedule, type NoiseSchedule } from './noise.js';

/**
 * Deterministic DDIM sampling (η = 0) as diffusers' DDIMScheduler runs it for Stable Diffusion 1.x: which training
 * timesteps the sampler visits (`timestep_spacing`, `steps_offset`), and the update from one timestep to the
 * previous one. The ᾱ table and prediction type are the training schedule's (noise.ts), read from the same
 * scheduler_config.json; a DDPM or PNDM config (what SD folders ship) is read with DDIMScheduler's defaults for
 * the keys it lacks, as `DDIMScheduler.from_pretrained(…, subfolder="scheduler")` does.
 */

/** How the inference timesteps are spread over the training ones (diffusers' `timestep_spacing`). */
export type TimestepSpacing = 'leading' | 'trailing' | 'linspace';

export interface DdimScheduler {
  readonly schedule: NoiseSchedule;
  readonly timestepSpacing: TimestepSpacing;
  /** Added to every 'leading' timestep (SD 1.5: 1, so 50 steps end at t = 1 rather than 0). */
  readonly stepsOffset: number;
  /** ᾱ after the last step: 1 (a clean sample) when `set_alpha_to_one`, else ᾱ_0 as SD 1.x's config asks. */
  readonly finalAlphaCumprod: number;
  /** `clip_sample_range` when `clip_sample` is on: the predicted x0 is clamped to ±this. Null when off. */
  readonly clipSampleRange: number | null;
}

/** One step of the sampler: the timestep the model sees, and the ᾱ it moves from and to. */
export interface DdimStep {
  readonly timestep: number;
  readonly alphaCumprod: number;
  readonly alphaCumprodPrev: number;
}

/** Predicts the model output (ε or v, as the schedule says) for latents `sample` at `timestep`. */
export type DenoiseFn = (sample: tf.Tensor4D, timestep: number) => tf.Tensor4D;

const FILE = 'scheduler/scheduler_config.json';
const f = Math.fround;

function fail(problem: string): never {
  throw new UserError(FILE, problem, 'Use the scheduler_config.json that came with the model.');
}

function flag(json: Readonly<Record<string, unknown>>, key: string, fallback: boolean): boolean {
  const v = json[key] ?? fallback;
  if (typeof v !== 'boolean') fail(`"${key}" must be true or false, but it is ${JSON.stringify(v)}.`);
  return v;
}

/** Parses the scheduler config for DDIM sampling; keys it lacks take DDIMScheduler's defaults. */
export function parseDdimScheduler(json: Readonly<Record<string, unknown>>): DdimScheduler {
  const schedule = parseNoiseSchedule(json);
  const spacing = json['timestep_spacing'] ?? 'leading';
  if (spacing !== 'leading' && spacing !== 'trailing' && spacing !== 'linspace') {
    fail(`"timestep_spacing" is ${JSON.stringify(spacing)}; DDIM spaces timesteps as "leading", "trailing" or "linspace".`);
  }
  const stepsOffset = json['steps_offset'] ?? 0;
  if (typeof stepsOffset !== 'number' || !Number.isInteger(stepsOffset) || stepsOffset < 0) {
    fail(`"steps_offset" must be a whole number of at least 0, but it is ${JSON.stringify(stepsOffset)}.`);
  }
  if (flag(json, 'thresholding', false)) {
    throw new UserError(FILE, '"thresholding" is true, which LoRA Lab does not implement (it is meant for pixel-space models).', 'Set "thresholding" to false for a latent-diffusion model such as Stable Diffusion.');
  }
  let clipSampleRange: number | null = null;
  if (flag(json, 'clip_sample', true)) {
    const range = json['clip_sample_range'] ?? 1;
    if (typeof range !== 'number' || !(range > 0)) fail(`"clip_sample_range" must be a positive number, but it is ${JSON.stringify(range)}.`);
    clipSampleRange = range;
  }
  const finalAlphaCumprod = flag(json, 'set_alpha_to_one', true) ? 1 : schedule.alphasCumprod[0]!;
  return { schedule, timestepSpacing: spacing, stepsOffset, finalAlphaCumprod, clipSampleRange };
}

/** numpy's round: halves go to the even neighbour (linspace(0, 999, 3) → 0, 500, 999). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * The training timesteps the sampler visits, noisiest first, as DDIMScheduler.set_timesteps computes them:
 * - leading: i·⌊T/n⌋ + steps_offset (SD 1.5, 50 steps: 981, 961, …, 1);
 * - trailing: round(T − i·T/n) − 1 (50 steps: 999, 979, …, 19). For some n, numpy's arange overshoots and
 *   diffusers gets n + 1 timesteps, the last −1; the n meant are taken here;
 * - linspace: round(i·(T − 1)/(n − 1)), reversed (20 steps: 999, 946, …, 53, 0).
 * Throws a UserError when `steps` is not a whole number in 1..T or the offset would pass the last timestep.
 */
export function ddimTimesteps(scheduler: DdimScheduler, steps: number): number[] {
  const T = scheduler.schedule.numTrainTimesteps;
  if (!Number.isInteger(steps) || steps < 1 || steps > T) {
    throw new UserError('Sampling steps', `must be a whole number from 1 to ${T}, but it is ${steps}.`, 'Pick between 20 and 30 steps, as SD 1.x samplers usually take.');
  }
  const index = Array.from({ length: steps }, (_, i) => i);
  switch (scheduler.timestepSpacing) {
    case 'leading': {
      const ratio = Math.floor(T / steps);
      const timesteps = index.map((i) => (steps - 1 - i) * ratio + scheduler.stepsOffset);
      if (timesteps[0]! >= T) {
        throw new UserError(
          'Sampling steps',
          `${steps} steps with the scheduler's "steps_offset" ${scheduler.stepsOffset} would start at timestep ${timesteps[0]}, past the model's last (${T - 1}).`,
          'Use fewer sampling steps.',
        );
      }
      return timesteps;
    }
    case 'trailing': {
      // np.arange(T, 0, −T/n) fills T + i·δ with δ = (T − T/n) − T as float64 rounds it, not −T/n itself.
      const delta = T - T / steps - T;
      return index.map((i) => roundHalfEven(T + i * delta) - 1);
    }
    case 'linspace': {
      if (steps === 1) return [0];
      // np.linspace: i·step with step = (T − 1)/(n − 1) in float64, and the end point exactly.
      const step = (T - 1) / (steps - 1);
      return index.map((i) => (i === steps - 1 ? T - 1 : roundHalfEven(i * step))).reverse();
    }
  }
}

/**
 * The sampler's steps. As diffusers' DDIMScheduler.step, each moves to t − ⌊T/n⌋ whatever the spacing (for
 * 'linspace' that is not always the next timestep visited), and below 0 to the final ᾱ.
 */
export function ddimSteps(scheduler: DdimScheduler, steps: number): DdimStep[] {
  const alphas = scheduler.schedule.alphasCumprod;
  const stride = Math.floor(scheduler.schedule.numTrainTimesteps / steps);
  return ddimTimesteps(scheduler, steps).map((timestep) => {
    const prev = timestep - stride;
    return { timestep, alphaCumprod: alphas[timestep]!, alphaCumprodPrev: prev >= 0 ? alphas[prev]! : scheduler.finalAlphaCumprod };
  });
}

/**
 * One DDIM update with η = 0: the model output gives x̂0 and ε̂ (for ε: x̂0 = (x − √(1−ᾱ)·ε)/√ᾱ; for v:
 * x̂0 = √ᾱ·x − √(1−ᾱ)·v and ε̂ = √ᾱ·v + √(1−ᾱ)·x), then x_prev = √ᾱ_prev·x̂0 + √(1−ᾱ_prev)·ε̂.
 * The caller disposes the result; the inputs are left alone.
 */
export function ddimStep(scheduler: DdimScheduler, step: DdimStep, modelOutput: tf.Tensor4D, sample: tf.Tensor4D): tf.Tensor4D {
  const a = step.alphaCumprod;
  const sqrtA = f(Math.sqrt(a));
  const sqrtB = f(Math.sqrt(f(1 - a)));
  return tf.tidy(() => {
    let x0: tf.Tensor4D;
    let eps: tf.Tensor4D;
    if (scheduler.schedule.predictionType === 'epsilon') {
      x0 = tf.div(tf.sub(sample, tf.mul(modelOutput, sqrtB)), sqrtA);
      eps = modelOutput;
    } else {
      x0 = tf.sub(tf.mul(sample, sqrtA), tf.mul(modelOutput, sqrtB));
      eps = tf.add(tf.mul(modelOutput, sqrtA), tf.mul(sample, sqrtB));
    }
    if (scheduler.clipSampleRange !== null) x0 = tf.clipByValue(x0, -scheduler.clipSampleRange, scheduler.clipSampleRange);
    const prev = step.alphaCumprodPrev;
    return tf.add(tf.mul(x0, f(Math.sqrt(prev))), tf.mul(eps, f(Math.sqrt(f(1 - prev)))));
  });
}

/**
 * Runs the sampler from `initial` (pure noise: DDIM's init_noise_sigma is 1, so it is not scaled) through every
 * step, calling `denoise` once per step (its result is disposed here) and awaiting `onStep` after each, which is
 * where a caller reports progress or lets its event loop breathe. `initial` is left alone; the caller disposes
 * the result.
 */
export async function ddimSample(
  scheduler: DdimScheduler,
  steps: number,
  initial: tf.Tensor4D,
  denoise: DenoiseFn,
  onStep?: (done: number, total: number) => void | Promise<void>,
): Promise<tf.Tensor4D> {
  const plan = ddimSteps(scheduler, steps);
  let x = tf.clone(initial);
  for (const [i, step] of plan.entries()) {
    try {
      const output = denoise(x, step.timestep);
      const next = ddimStep(scheduler, step, output, x);
      tf.dispose([output, x]);
      x = next;
      await onStep?.(i + 1, plan.length);
    } catch (e) {
      x.dispose();
      throw e;
    }
  }
  return x;
}
