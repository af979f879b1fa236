import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TINY_SD } from './diffusers-folder';

/**
 * tiny-sd rewritten as a single-file LDM checkpoint (as image UIs keep SD 1.x), for the tests of the single-file
 * mapping and of storing such files: the tests' own diffusers → LDM name table (independent of
 * src/core/models/diffusion/single-file.ts) and a minimal safetensors reader/writer that also writes I64.
 */

// ----- The test's own diffusers → LDM table for tiny-sd (layers_per_block 2; down CrossAttn, Down; up Up, CrossAttn; VAE 3 levels). -----

const RESNET_LDM: Record<string, string> = {
  norm1: 'in_layers.0',
  conv1: 'in_layers.2',
  time_emb_proj: 'emb_layers.1',
  norm2: 'out_layers.0',
  conv2: 'out_layers.3',
  conv_shortcut: 'skip_connection',
};
const resnetPart = (rest: string) => {
  const [module, param] = [rest.slice(0, rest.lastIndexOf('.')), rest.slice(rest.lastIndexOf('.') + 1)];
  return `${RESNET_LDM[module]!}.${param}`;
};
/** Up blocks with attentions in tiny-sd (their upsampler sits after the attention, at index 2). */
const UP_HAS_ATTENTION = [false, true];

export function unetLdm(name: string): string {
  const rules: [RegExp, (...m: string[]) => string][] = [
    [/^time_embedding\.linear_1\.(.+)$/, (p) => `time_embed.0.${p}`],
    [/^time_embedding\.linear_2\.(.+)$/, (p) => `time_embed.2.${p}`],
    [/^conv_in\.(.+)$/, (p) => `input_blocks.0.0.${p}`],
    [/^conv_norm_out\.(.+)$/, (p) => `out.0.${p}`],
    [/^conv_out\.(.+)$/, (p) => `out.2.${p}`],
    [/^down_blocks\.(\d)\.resnets\.(\d)\.(.+)$/, (i, j, r) => `input_blocks.${1 + 3 * +i! + +j!}.0.${resnetPart(r!)}`],
    [/^down_blocks\.(\d)\.attentions\.(\d)\.(.+)$/, (i, j, r) => `input_blocks.${1 + 3 * +i! + +j!}.1.${r}`],
    [/^down_blocks\.(\d)\.downsamplers\.0\.conv\.(.+)$/, (i, p) => `input_blocks.${3 + 3 * +i!}.0.op.${p}`],
    [/^mid_block\.resnets\.(\d)\.(.+)$/, (k, r) => `middle_block.${2 * +k!}.${resnetPart(r!)}`],
    [/^mid_block\.attentions\.0\.(.+)$/, (r) => `middle_block.1.${r}`],
    [/^up_blocks\.(\d)\.resnets\.(\d)\.(.+)$/, (i, j, r) => `output_blocks.${3 * +i! + +j!}.0.${resnetPart(r!)}`],
    [/^up_blocks\.(\d)\.attentions\.(\d)\.(.+)$/, (i, j, r) => `output_blocks.${3 * +i! + +j!}.1.${r}`],
    [/^up_blocks\.(\d)\.upsamplers\.0\.conv\.(.+)$/, (i, p) => `output_blocks.${3 * +i! + 2}.${UP_HAS_ATTENTION[+i!] ? 2 : 1}.conv.${p}`],
  ];
  for (const [re, to] of rules) {
    const m = re.exec(name);
    if (m) return `model.diffusion_model.${to(...m.slice(1))}`;
  }
  throw new Error(`test table has no LDM name for UNet tensor ${name}`);
}

const VAE_ATTENTION_LDM: Record<string, string> = { group_norm: 'norm', to_q: 'q', to_k: 'k', to_v: 'v', 'to_out.0': 'proj_out' };
const VAE_LEVELS = 3;

export function vaeLdm(name: string): string {
  const rules: [RegExp, (...m: string[]) => string][] = [
    [/^(encoder|decoder)\.conv_norm_out\.(.+)$/, (c, p) => `${c}.norm_out.${p}`],
    [/^encoder\.down_blocks\.(\d)\.resnets\.(\d)\.(.+)$/, (i, j, r) => `encoder.down.${i}.block.${j}.${r!.replace('conv_shortcut', 'nin_shortcut')}`],
    [/^encoder\.down_blocks\.(\d)\.downsamplers\.0\.conv\.(.+)$/, (i, p) => `encoder.down.${i}.downsample.conv.${p}`],
    [/^decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.+)$/, (i, j, r) => `decoder.up.${VAE_LEVELS - 1 - +i!}.block.${j}.${r!.replace('conv_shortcut', 'nin_shortcut')}`],
    [/^decoder\.up_blocks\.(\d)\.upsamplers\.0\.conv\.(.+)$/, (i, p) => `decoder.up.${VAE_LEVELS - 1 - +i!}.upsample.conv.${p}`],
    [/^(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)$/, (c, k, r) => `${c}.mid.block_${+k! + 1}.${r!.replace('conv_shortcut', 'nin_shortcut')}`],
    [/^(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.+)$/, (c, part, p) => `${c}.mid.attn_1.${VAE_ATTENTION_LDM[part!]}.${p}`],
    [/^(.+)$/, (rest) => rest!], // conv_in, conv_out, quant_conv, post_quant_conv keep their names
  ];
  for (const [re, to] of rules) {
    const m = re.exec(name);
    if (m) return `first_stage_model.${to(...m.slice(1))}`;
  }
  throw new Error(`unreachable: ${name}`);
}

// ----- Reading the fixture's diffusers files and writing an LDM single file (own minimal safetensors writer: it also writes I64). -----

export interface RawTensor {
  name: string;
  dtype: 'F32' | 'I64';
  shape: number[];
  bytes: Uint8Array;
}

export function readRawSafetensors(path: string): RawTensor[] {
  const file = readFileSync(path);
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: 'F32'; shape: number[]; data_offsets: [number, number] }>;
  return Object.entries(header)
    .filter(([name]) => name !== '__metadata__')
    .map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape, bytes: new Uint8Array(file.subarray(8 + headerLength + t.data_offsets[0], 8 + headerLength + t.data_offsets[1])) }));
}

export function writeRawSafetensors(tensors: readonly RawTensor[]): Uint8Array {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.length] };
    offset += t.bytes.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + json.length) % 8)) % 8);
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(new TextEncoder().encode(json), 8);
  let at = 8 + json.length;
  for (const t of tensors) {
    out.set(t.bytes, at);
    at += t.bytes.length;
  }
  return out;
}

const f32 = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

/** tiny-sd as one LDM-named file, with the extras real SD 1.x files carry: an I64 position_ids, the EMA bookkeeping, a schedule buffer. */
export function ldmSingleFile(textModelPrefix = true): Uint8Array {
  const unet = readRawSafetensors(join(TINY_SD, 'unet/diffusion_pytorch_model.safetensors')).map((t) => ({ ...t, name: unetLdm(t.name) }));
  const vae = readRawSafetensors(join(TINY_SD, 'vae/diffusion_pytorch_model.safetensors')).map((t) => {
    // LDM's VAE attention projections are 1×1 convolutions.
    const conv = /mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(t.name);
    return { ...t, name: vaeLdm(t.name), shape: conv ? [...t.shape, 1, 1] : t.shape };
  });
  const clip = readRawSafetensors(join(TINY_SD, 'text_encoder/model.safetensors')).map((t) => ({
    ...t,
    name: `cond_stage_model.transformer.${textModelPrefix ? t.name : t.name.replace(/^text_model\./, '')}`,
  }));
  const positionIds = new Uint8Array(77 * 8);
  for (let i = 0; i < 77; i++) new DataView(positionIds.buffer).setBigInt64(i * 8, BigInt(i), true);
  const extras: RawTensor[] = [
    { name: 'cond_stage_model.transformer.text_model.embeddings.position_ids', dtype: 'I64', shape: [1, 77], bytes: positionIds },
    { name: 'model_ema.decay', dtype: 'F32', shape: [], bytes: f32([0.9999]) },
    { name: 'alphas_cumprod', dtype: 'F32', shape: [3], bytes: f32([0.99, 0.98, 0.97]) },
  ];
  return writeRawSafetensors([...clip, ...extras, ...vae, ...unet]);
}
