import { diffusersPeftFiles } from '../export/diffusers-peft.js';
import { kohyaLoraFile, kohyaMetadata, type ExportLoraModule, type KohyaTrainingNotes, type LoraNetwork } from '../export/kohya-lora.js';
import type { LoraAdapter } from '../lora/adapter.js';
import type { Unet } from '../models/diffusion/unet.js';

/** A trained LoRA's matrices as the exporters take them (read back from the device), under the network it adapts. */
export async function exportModulesOf(adapter: LoraAdapter, network: LoraNetwork): Promise<ExportLoraModule[]> {
  const { rank, alpha } = adapter.settings;
  // Under rsLoRA the factor is alpha/√r; kohya's files and PEFT's alpha/r reader then need alpha' = alpha·√r.
  const storedAlpha = adapter.scaling * rank;
  return Promise.all(
    adapter.modules.map(async (m) => ({
      network,
      path: m.path,
      rank,
      alpha: adapter.settings.useRslora ? storedAlpha : alpha,
      A: ((await m.A.data()) as Float32Array).slice(),
      B: ((await m.B.data()) as Float32Array).slice(),
    })),
  );
}

/** One trained network's LoRA: its modules (all of that network) and the target list that selected them. */
export interface TrainedNetwork {
  readonly modules: readonly ExportLoraModule[];
  /** LoraConfig.target_modules of its PEFT folder: module names (`to_q`, `q_proj`) or full paths. */
  readonly targetModules: readonly string[];
}

/** What an image run trained: the UNet's LoRA always, the text encoder's when train_text_encoder was on. */
export interface ImageLoraNetworks {
  readonly unet: TrainedNetwork;
  /** null: the text encoder stayed frozen. */
  readonly textEncoder: TrainedNetwork | null;
}

/** Where the text encoder's PEFT adapter goes in the output folder, beside the UNet's at the top. */
export const TEXT_ENCODER_PEFT_DIR = 'text_encoder';

/**
 * An image LoRA's output files: the kohya file image UIs load (`<run name>.safetensors`: `lora_unet_…` modules, and
 * `lora_te_…` ones when the text encoder was trained, with sd-scripts' ss_* training notes) and the same weights as
 * PEFT folders. A PEFT adapter wraps one model, and diffusers keeps the UNet and the text encoder apart (as the
 * pipeline folder does), so the UNet's adapter is at the top (adapter_config.json, adapter_model.safetensors) and
 * the text encoder's in `text_encoder/` with the same two files, keyed `base_model.model.text_model.…`:
 * `PeftModel.from_pretrained(pipe.text_encoder, "<folder>/text_encoder")` loads it.
 */
export async function imageAdapterFiles(
  networks: ImageLoraNetworks,
  opts: { readonly runName: string; readonly unet: Unet; readonly baseModelName: string; readonly notes: KohyaTrainingNotes },
): Promise<Record<string, Uint8Array | string>> {
  const { unet, textEncoder } = networks;
  checkNetwork(unet, 'unet');
  if (textEncoder) checkNetwork(textEncoder, 'text_encoder');
  const kind = { unetUseLinearProjection: opts.unet.config.useLinearProjection };
  const kohya = await kohyaLoraFile([...unet.modules, ...(textEncoder?.modules ?? [])], kohyaMetadata(opts.notes), kind);
  const files: Record<string, Uint8Array | string> = { [`${opts.runName}.safetensors`]: kohya, ...peftFolder(unet, 'unet', opts.baseModelName, kind) };
  if (textEncoder) {
    for (const [name, bytes] of Object.entries(peftFolder(textEncoder, 'text_encoder', opts.baseModelName, kind))) files[`${TEXT_ENCODER_PEFT_DIR}/${name}`] = bytes;
  }
  return files;
}

function peftFolder(network: TrainedNetwork, name: LoraNetwork, baseModelName: string, kind: { readonly unetUseLinearProjection: boolean }): Record<string, Uint8Array | string> {
  const first = network.modules[0]!;
  return { ...diffusersPeftFiles(network.modules, { network: name, rank: first.rank, alpha: first.alpha, targetModules: network.targetModules, baseModelName, ...kind }) };
}

/** A network's modules are all its own, and there is at least one: anything else is a bug in the run. */
function checkNetwork(network: TrainedNetwork, name: LoraNetwork): void {
  if (network.modules.length === 0) throw new Error(`an image LoRA without ${name} modules has nothing to export for it`);
  const stray = network.modules.find((m) => m.network !== name);
  if (stray) throw new Error(`LoRA export: module ${stray.path} of the ${stray.network} was given as the ${name}'s`);
}
