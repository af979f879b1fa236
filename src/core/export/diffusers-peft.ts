import { moduleMatches } from '../lora/settings.js';
import { writeSafetensors } from '../safetensors/index.js';
import { loraFactorShapes, type ExportLoraModule, type LoraNetwork, type UnetProjectionKind } from './kohya-lora.js';
import { peftTensorName } from './peft.js';

/**
 * A UNet LoRA as a PEFT adapter folder, what `PeftModel.save_pretrained` writes for a diffusers UNet wrapped by
 * `get_peft_model`: `adapter_model.safetensors` with `base_model.model.<diffusers module path>.lora_A.weight` /
 * `lora_B.weight` in F32 and `{"format": "pt"}` metadata, and `adapter_config.json`. (Not diffusers' single-file
 * `pytorch_lora_weights.safetensors` with `unet.`-prefixed keys.) PEFT keeps one r and one lora_alpha for all
 * modules (rank_pattern and alpha_pattern stay empty), so every module must have them.
 */

export interface DiffusersPeftOptions extends UnetProjectionKind {
  /** The network the folder holds: PEFT keeps one model's adapter per folder (the text encoder's goes in its own). */
  readonly network: LoraNetwork;
  readonly rank: number;
  readonly alpha: number;
  /** LoraConfig.target_modules: module names (`to_q`, `to_out.0`) or full paths, matched as PEFT does (exact or `.suffix`). */
  readonly targetModules: readonly string[];
  /** base_model_name_or_path, e.g. `runwayml/stable-diffusion-v1-5`. */
  readonly baseModelName: string;
}

export interface DiffusersPeftFiles {
  readonly 'adapter_config.json': string;
  readonly 'adapter_model.safetensors': Uint8Array<ArrayBuffer>;
}

/**
 * The two files of a PEFT LoRA of one network (the UNet, or the text encoder). Modules of another network, a rank or alpha other than the config's, or a
 * module the target list does not select are bugs in the caller (PEFT could not load the result), so they throw.
 */
export function diffusersPeftFiles(modules: readonly ExportLoraModule[], options: DiffusersPeftOptions): DiffusersPeftFiles {
  if (modules.length === 0) throw new Error('PEFT export: no modules to save');
  const tensors = modules.flatMap((m) => {
    if (m.network !== options.network) throw new Error(`PEFT export: module ${m.path} is in the ${m.network}; this folder holds the ${options.network}'s adapter`);
    if (m.rank !== options.rank || m.alpha !== options.alpha) {
      throw new Error(`PEFT export: module ${m.path} has rank ${m.rank} and alpha ${m.alpha}, not the config's ${options.rank} and ${options.alpha}`);
    }
    if (!options.targetModules.some((t) => moduleMatches(m.path, t))) {
      throw new Error(`PEFT export: module ${m.path} is not selected by target_modules ${JSON.stringify(options.targetModules)}`);
    }
    const shapes = loraFactorShapes(m, options);
    return [
      { name: peftTensorName(m.path, 'A'), shape: shapes.A, data: m.A },
      { name: peftTensorName(m.path, 'B'), shape: shapes.B, data: m.B },
    ];
  });
  return {
    'adapter_config.json': `${JSON.stringify(unetLoraConfig(options), null, 2)}\n`,
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  };
}

/**
 * LoraConfig for a UNet, keys sorted as PEFT's to_json_file writes them. task_type is null (a UNet is no
 * transformers task); fan_in_fan_out is false (nn.Linear and Conv2d store [out, in]); target_modules is PEFT's set,
 * saved as a list, which we sort.
 */
function unetLoraConfig(options: DiffusersPeftOptions): Record<string, unknown> {
  const config: Record<string, unknown> = {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: options.baseModelName,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: options.alpha,
    lora_dropout: 0.0,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    peft_type: 'LORA',
    r: options.rank,
    rank_pattern: {},
    revision: null,
    target_modules: [...new Set(options.targetModules)].sort(),
    task_type: null,
    use_dora: false,
    use_rslora: false,
  };
  return config;
}
