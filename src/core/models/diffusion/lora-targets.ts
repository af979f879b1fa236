import type { LoraTargetable } from '../../lora/settings.js';
import type { Linear } from '../linear.js';

/**
 * A Stable Diffusion network as LoRA target resolution sees it: its projections under their diffusers module paths.
 * Neither network has an output head tied to an embedding, so every projection may be adapted.
 */
export function loraTargetsOf(network: { readonly linears: readonly Linear[] }, modelType: 'sd-unet' | 'sd-text-encoder'): LoraTargetable<Linear> {
  return { config: { modelType, tiedEmbeddings: false }, linears: network.linears };
}
