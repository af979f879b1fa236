import { diffusersPeftFiles } from '../export/diffusers-peft.js';
import { kohyaLoraFile, kohyaMetadata, type ExportLoraModule, type KohyaTrainingNotes } from '../export/kohya-lora.js';
import type { LoraAdapter } from '../lora/adapter.js';
import type { Unet } from '../models/diffusion/unet.js';

/** The trained UNet LoRA's matrices as the exporters take them (read back from the device). */
export async function unetModulesOf(adapter: LoraAdapter): Promise<ExportLoraModule[]> {
  const { rank, alpha } = adapter.settings;
  // Under rsLoRA the factor is alpha/√r; kohya's files and PEFT's alpha/r reader then need alpha' = alpha·√r.
  const storedAlpha = adapter.scaling * rank;
  return Promise.all(
    adapter.modules.map(async (m) => ({
      network: 'unet' as const,
      path: m.path,
      rank,
      alpha: adapter.settings.useRslora ? storedAlpha : alpha,
      A: ((await m.A.data()) as Float32Array).slice(),
      B: ((await m.B.data()) as Float32Array).slice(),
    })),
  );
}

/**
 * An image LoRA's output files: the kohya file image UIs load (`<run name>.safetensors`, with sd-scripts' ss_*
 * training notes) and the same weights as a diffusers/PEFT folder (adapter_config.json, adapter_model.safetensors).
 */
export async function imageAdapterFiles(
  modules: readonly ExportLoraModule[],
  opts: { readonly runName: string; readonly unet: Unet; readonly targetModules: readonly string[]; readonly baseModelName: string; readonly notes: KohyaTrainingNotes },
): Promise<Record<string, Uint8Array | string>> {
  const kind = { unetUseLinearProjection: opts.unet.config.useLinearProjection };
  const kohya = await kohyaLoraFile(modules, kohyaMetadata(opts.notes), kind);
  const first = modules[0];
  if (!first) throw new Error('an image LoRA without modules has nothing to export');
  const peft = diffusersPeftFiles(modules, { rank: first.rank, alpha: first.alpha, targetModules: opts.targetModules, baseModelName: opts.baseModelName, ...kind });
  return { [`${opts.runName}.safetensors`]: kohya, ...peft };
}
