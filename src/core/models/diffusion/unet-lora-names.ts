/**
 * kohya's LoRA module names (sd-scripts networks/lora.py): `<prefix>_<module path with every "." replaced by "_">`,
 * e.g. `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0` for the diffusers module
 * `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0`. The mapping cannot be undone by rule (module
 * names contain underscores themselves: `to_out`, `proj_in`, `transformer_blocks`), so names are matched against the
 * model's actual module paths instead.
 */

/** The kohya prefixes of the Stable Diffusion 1.x/2.x networks: the UNet and the (first) text encoder. */
export type KohyaPrefix = 'lora_unet' | 'lora_te';

/** Prefixes kohya writes for networks LoRA Lab does not load (SDXL's two text encoders); known so they are named, not misread. */
export const OTHER_KOHYA_PREFIXES: readonly string[] = ['lora_te1', 'lora_te2'];

export function kohyaModuleName(prefix: KohyaPrefix, modulePath: string): string {
  return `${prefix}_${modulePath.replaceAll('.', '_')}`;
}

/**
 * kohya module name → module path for every path given. Two paths with the same kohya name would make a kohya file
 * ambiguous for this model; no diffusers or transformers model has such a pair, so that is a bug here, not a user error.
 */
export function kohyaNameIndex(prefix: KohyaPrefix, modulePaths: readonly string[]): ReadonlyMap<string, string> {
  const index = new Map<string, string>();
  for (const path of modulePaths) {
    const name = kohyaModuleName(prefix, path);
    const clash = index.get(name);
    if (clash !== undefined && clash !== path) throw new Error(`modules ${clash} and ${path} share the kohya name ${name}`);
    index.set(name, path);
  }
  return index;
}
