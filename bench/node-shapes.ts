import { mkdtempSync, openAsBlob, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseRunConfigYaml, unwrapRunConfig } from '../src/core/config';
import { parseModelConfig } from '../src/core/models/config';
import { loadWeightsFromSafetensors } from '../src/core/models/load';
import { buildModel } from '../src/core/models/model';
import { blobSource } from '../src/core/safetensors';
import { BASE_QUANTIZATIONS } from '../src/core/weights/hold';
import { shapeConfig, writeSyntheticModel } from '../scripts/synthetic-model';
import { runConfigYaml, shapeHeading, type ShapeCase } from './shape-options';
import type { ShapeRow } from './shape-steps';
import { measureVariant } from './shape-variant';

// The real-size half of `npm run bench:node` / scripts/device-bench.sh: models at the widths people
// fine-tune, random weights, on the GPU in Node (Dawn), where there is no IndexedDB: the checkpoint is
// written to a temporary folder and read back by the app's safetensors loader.

/**
 * The device cases: GPT-2 124M with LoRA r 8 on c_attn at batch 8 × seq 128, and TinyLlama-1.1B
 * with r 8 on q_proj, v_proj at batch 1 × seq 512. `quick` cuts them to one layer and 4 tokens, which
 * SwiftShader (a CPU) gets through in minutes: a check that the path runs, not a speed.
 */
export function deviceCases(quick: boolean): ShapeCase[] {
  const common = { rank: 8, quantization: 'none', ...(quick ? { layers: 1, steps: 1, warmup: 1 } : { steps: 5, warmup: 2 }) } as const;
  return [
    { ...common, shape: 'gpt2', targets: ['c_attn'], ...(quick ? { batch: 1, seq: 4 } : { batch: 8, seq: 128 }) },
    { ...common, shape: 'tinyllama-1.1b', targets: ['q_proj', 'v_proj'], ...(quick ? { batch: 1, seq: 4 } : { batch: 1, seq: 512 }) },
  ];
}

/**
 * One case on the active (webgpu) backend: the plain tfjs composition once (float32 weights, as stock
 * tfjs needs whatever base_quantization says, so one row stands for all three), then LoRA Lab's
 * kernels with the weights held as none (BF16 packed, F32 as it is), int8 and nf4. Returns the
 * printed heading and the rows.
 */
export async function runDeviceCase(c: ShapeCase): Promise<{ heading: string[]; storedBytes: number; rows: ShapeRow[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-device-shape-'));
  try {
    const hfConfig = shapeConfig(c.shape, c.layers);
    const written = writeSyntheticModel(dir, hfConfig);
    const cfg = parseModelConfig(hfConfig);
    const file = join(dir, 'model.safetensors');
    const rows: ShapeRow[] = [];
    for (const [fused, quantization] of [[false, 'none'], ...BASE_QUANTIZATIONS.map((q) => [true, q] as const)] as const) {
      const config = unwrapRunConfig(parseRunConfigYaml(runConfigYaml({ ...c, quantization }), 'bench config')).config;
      rows.push(
        await measureVariant({
          fused,
          config,
          steps: c.steps,
          warmup: c.warmup,
          storedBytes: written.weightBytes,
          load: async (placement) => buildModel(cfg, await loadWeightsFromSafetensors(cfg, [blobSource(await openAsBlob(file), 'model.safetensors')], { placement })),
        }),
      );
    }
    return { heading: shapeHeading(c, hfConfig, written, BASE_QUANTIZATIONS.join(' / ')), storedBytes: written.weightBytes, rows };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
