import { samplePromptsOf, type ResolvedSamplePrompt } from '../config/sample-prompts.js';
import type { RunConfig } from '../config/index.js';
import { encodePng } from '../image/png.js';
import type { LinearApply } from '../models/linear.js';
import { sampleImages, type SamplingPipeline } from '../models/diffusion/sample.js';

/** One sample image of a run: where it goes in the output folder, and what TensorBoard's Images tab shows. */
export interface RunSample {
  readonly step: number;
  /** The prompt's index in sample_prompts. */
  readonly index: number;
  readonly prompt: string;
  readonly width: number;
  readonly height: number;
  readonly png: Uint8Array;
}

/** `samples/<step>_<n>.png`, kohya-like: one file per prompt per sampling step. */
export const samplePath = (step: number, index: number): string => `samples/${step}_${index}.png`;

/** The TensorBoard tag of prompt n's images: one slider per prompt, stepping through the run. */
export const sampleTag = (index: number): string => `samples/${index}`;

/**
 * Makes the run's sample images: each prompt with its own size, seed, guidance and DDIM steps (kohya's
 * `--w --h --d --l --s`, else the run config's sample_* keys), through the adapter's projection hook.
 */
export function sampler(pipeline: SamplingPipeline, config: RunConfig): { readonly prompts: readonly ResolvedSamplePrompt[]; sample(step: number, linear: LinearApply): Promise<RunSample[]> } {
  const prompts = samplePromptsOf(config);
  return {
    prompts,
    async sample(step, linear) {
      const out: RunSample[] = [];
      for (const [index, p] of prompts.entries()) {
        const [image] = await sampleImages(pipeline, [p.prompt], {
          steps: p.steps,
          guidanceScale: p.guidanceScale,
          seed: p.seed,
          negativePrompt: p.negativePrompt,
          width: p.width,
          height: p.height,
          linear,
        });
        out.push({ step, index, prompt: p.prompt, width: image!.width, height: image!.height, png: encodePng(image!.width, image!.height, image!.rgb) });
      }
      return out;
    },
  };
}
