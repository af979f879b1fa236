import { UserError } from '../../errors.js';
import type { ProjectionShape } from '../../lora/settings.js';
import { readHeader, type TensorEntry } from '../../safetensors/index.js';
import { readComponentConfig, weightsSource, type DiffusersFolder } from './component.js';
import { parseUnetConfig } from './unet-config.js';

/**
 * The projections LoRA may adapt in a stored Stable Diffusion model, read from its safetensors headers and configs
 * alone, without loading a weight: what readKohyaLora / readPeftLora need to check an adapter file, so importing a
 * LoRA does not cost a UNet on the device. They are the projections buildUnet and buildClipTextModel make (same
 * paths, same in/out features), in the weights file's tensor order rather than module order; callers that need
 * module order (a run) take it from the built model.
 */
export interface DiffusionProjectionShapes {
  readonly unet: readonly ProjectionShape[];
  readonly textEncoder: readonly ProjectionShape[];
}

/**
 * UNet projections by the leaf of their module path: nn.Linear everywhere, except Transformer2DModel's proj_in and
 * proj_out, which SD 1.x holds as 1×1 convolutions ([out, in, 1, 1]) unless use_linear_projection (SD 2.x).
 */
const UNET_LINEAR = /(^time_embedding\.linear_[12]|\.time_emb_proj|\.attn[12]\.(to_q|to_k|to_v|to_out\.0)|\.ff\.net\.(0\.proj|2))$/;
const UNET_PROJ = /\.(proj_in|proj_out)$/;
/** CLIP text projections: each layer's self-attention q/k/v/out and MLP fc1/fc2 (embeddings are not projections). */
const CLIP_LINEAR = /^text_model\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])$/;

function shapeOf(path: string, entry: TensorEntry, conv1x1: boolean): ProjectionShape {
  const s = entry.shape;
  const ok = conv1x1 ? s.length === 4 && s[2] === 1 && s[3] === 1 : s.length === 2;
  if (!ok) {
    throw new UserError(
      entry.name,
      `has shape [${s.join(', ')}], but a ${conv1x1 ? '1×1 convolution [out, in, 1, 1]' : 'projection [out, in]'} is expected there.`,
      'Use the model files as diffusers wrote them.',
    );
  }
  return { path, inFeatures: s[1]!, outFeatures: s[0]! };
}

async function projections(folder: DiffusersFolder, name: 'unet' | 'text_encoder', pick: (path: string) => { conv1x1: boolean } | null): Promise<ProjectionShape[]> {
  const header = await readHeader(weightsSource(folder, name), { skipIntegerTensors: true });
  const out: ProjectionShape[] = [];
  for (const entry of header.tensors) {
    if (!entry.name.endsWith('.weight')) continue;
    const path = entry.name.slice(0, -'.weight'.length);
    const kind = pick(path);
    if (kind) out.push(shapeOf(path, entry, kind.conv1x1));
  }
  return out;
}

/** The UNet's and the text encoder's projections of a diffusers folder (a stored model's folder view). */
export async function diffusionProjectionShapes(folder: DiffusersFolder): Promise<DiffusionProjectionShapes> {
  const unetConfig = parseUnetConfig(await readComponentConfig(folder, 'unet'));
  const unet = await projections(folder, 'unet', (path) =>
    UNET_LINEAR.test(path) ? { conv1x1: false } : UNET_PROJ.test(path) && path.includes('.attentions.') ? { conv1x1: !unetConfig.useLinearProjection } : null,
  );
  const textEncoder = await projections(folder, 'text_encoder', (path) => (CLIP_LINEAR.test(path) ? { conv1x1: false } : null));
  return { unet, textEncoder };
}
