import * as tf from '@tensorflow/tfjs';
import { UserError } from '../../errors.js';

/**
 * The forward (noising) process of diffusers' DDPMScheduler, read from `scheduler/scheduler_config.json`: the beta
 * schedule, ᾱ_t = ∏(1 − β), x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε, and the training target the config's prediction_type asks
 * for. Sampling (DDIM) builds on the same ᾱ table.
 */

export type PredictionType = 'epsilon' | 'v_prediction';

export interface NoiseSchedule {
  readonly numTrainTimesteps: number;
  readonly predictionType: PredictionType;
  /** ᾱ_t for t = 0 … numTrainTimesteps − 1, float32 as PyTorch holds it. */
  readonly alphasCumprod: Float32Array;
}

const FILE = 'scheduler/scheduler_config.json';
const f = Math.fround;

function fail(problem: string, fix = 'Use the scheduler_config.json that came with the model.'): never {
  throw new UserError(FILE, problem, fix);
}

/**
 * torch.linspace(start, end, steps, dtype=float32) as ATen's CPU kernel computes it: a float32 step, the first half
 * counted up from start and the second half down from end (so both ends are exact).
 */
function linspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f(start);
  const e = f(end);
  const step = f(f(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < halfway ? f(s + f(step * i)) : f(e - f(step * (steps - i - 1)));
  return out;
}

/** diffusers' betas_for_alpha_bar with the cosine ᾱ (squaredcos_cap_v2), max β 0.999. */
function cosineBetas(steps: number): Float32Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  return Float32Array.from({ length: steps }, (_, i) => Math.min(1 - alphaBar((i + 1) / steps) / alphaBar(i / steps), 0.999));
}

function betasOf(json: Readonly<Record<string, unknown>>, steps: number): Float32Array {
  const trained = json['trained_betas'];
  if (trained !== undefined && trained !== null) {
    if (!Array.isArray(trained) || trained.length !== steps || trained.some((b) => typeof b !== 'number' || !(b > 0 && b < 1))) {
      fail(`"trained_betas" must be a list of ${steps} numbers between 0 and 1.`);
    }
    return Float32Array.from(trained as number[]);
  }
  const schedule = json['beta_schedule'] ?? 'linear';
  const start = json['beta_start'] ?? 0.0001;
  const end = json['beta_end'] ?? 0.02;
  if (typeof start !== 'number' || typeof end !== 'number' || !(start > 0 && start < 1 && end > 0 && end < 1)) {
    fail(`"beta_start" and "beta_end" must be numbers between 0 and 1, but they are ${JSON.stringify(start)} and ${JSON.stringify(end)}.`);
  }
  switch (schedule) {
    case 'linear':
      return linspaceF32(start, end, steps);
    case 'scaled_linear': // Stable Diffusion's: linspace(√β0, √β1, T)².
      return linspaceF32(Math.sqrt(start), Math.sqrt(end), steps).map((b) => f(b * b));
    case 'squaredcos_cap_v2':
      return cosineBetas(steps);
    default:
      return fail(`"beta_schedule" is ${JSON.stringify(schedule)}, which LoRA Lab does not implement; it reads linear, scaled_linear and squaredcos_cap_v2.`);
  }
}

/** Parses a DDPMScheduler (or compatible: DDIM, PNDM, Euler… share these fields) scheduler_config.json. */
export function parseNoiseSchedule(json: Readonly<Record<string, unknown>>): NoiseSchedule {
  const steps = json['num_train_timesteps'] ?? 1000;
  if (typeof steps !== 'number' || !Number.isInteger(steps) || steps < 1) {
    fail(`"num_train_timesteps" must be a whole number of at least 1, but it is ${JSON.stringify(steps)}.`);
  }
  const prediction = json['prediction_type'] ?? 'epsilon';
  if (prediction !== 'epsilon' && prediction !== 'v_prediction') {
    fail(`"prediction_type" is ${JSON.stringify(prediction)}; LoRA Lab trains epsilon and v_prediction models.`);
  }
  if (json['rescale_betas_zero_snr'] === true) {
    fail('"rescale_betas_zero_snr" is true, which LoRA Lab does not implement yet.', 'Train this model with the schedule rescaling turned off.');
  }
  const betas = betasOf(json, steps);
  // torch.cumprod on CPU accumulates a float32 tensor in double and rounds each output.
  const alphasCumprod = new Float32Array(steps);
  let product = 1;
  betas.forEach((b, t) => {
    product *= f(1 - b);
    alphasCumprod[t] = product;
  });
  return { numTrainTimesteps: steps, predictionType: prediction, alphasCumprod };
}

function checkTimesteps(schedule: NoiseSchedule, timesteps: readonly number[], batch: number): void {
  if (timesteps.length !== batch) throw new Error(`${timesteps.length} timesteps for a batch of ${batch}`);
  for (const t of timesteps) {
    if (!Number.isInteger(t) || t < 0 || t >= schedule.numTrainTimesteps) {
      throw new Error(`timestep ${t} is outside 0..${schedule.numTrainTimesteps - 1}`);
    }
  }
}

/** Per-sample coefficients [batch, 1, 1, 1] (broadcast over the latent), float32 as diffusers computes them. */
function coefficient(schedule: NoiseSchedule, timesteps: readonly number[], of: (alphaBar: number) => number): tf.Tensor4D {
  const values = Float32Array.from(timesteps, (t) => of(schedule.alphasCumprod[t]!));
  return tf.tensor4d(values, [timesteps.length, 1, 1, 1]);
}

const signalScale = (a: number) => f(Math.sqrt(a));
const noiseScale = (a: number) => f(Math.sqrt(f(1 - a)));

/** x_t = √ᾱ_t·x0 + √(1 − ᾱ_t)·ε, per sample: diffusers' DDPMScheduler.add_noise. Latents [batch, c, h, w]. */
export function addNoise(schedule: NoiseSchedule, x0: tf.Tensor4D, noise: tf.Tensor4D, timesteps: readonly number[]): tf.Tensor4D {
  checkTimesteps(schedule, timesteps, x0.shape[0]);
  return tf.tidy(() =>
    tf.add(tf.mul(coefficient(schedule, timesteps, signalScale), x0), tf.mul(coefficient(schedule, timesteps, noiseScale), noise)),
  );
}

/** What the UNet is trained to predict: ε itself, or v = √ᾱ_t·ε − √(1 − ᾱ_t)·x0 (DDPMScheduler.get_velocity). */
export function denoisingTarget(schedule: NoiseSchedule, x0: tf.Tensor4D, noise: tf.Tensor4D, timesteps: readonly number[]): tf.Tensor4D {
  checkTimesteps(schedule, timesteps, x0.shape[0]);
  if (schedule.predictionType === 'epsilon') return tf.clone(noise);
  return tf.tidy(() =>
    tf.sub(tf.mul(coefficient(schedule, timesteps, signalScale), noise), tf.mul(coefficient(schedule, timesteps, noiseScale), x0)),
  );
}
