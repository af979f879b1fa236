// `npm run bench -- --shape NAME`, the Node half: writes a model folder with random weights at a real
// model's widths (scripts/synthetic-model.ts: nothing is downloaded), hands its files to the page as a
// person picking them would, and prints what the page measured (bench/shape-page.ts).
//
//   --shape NAME            gpt2, smollm2-135m, qwen2.5-0.5b-layer, llama3.2-1b-layer, tinyllama-1.1b
//   --layers N              keep N transformer blocks (default: the published count)
//   --quantization Q        base_quantization: none (default), int8 or nf4
//   --batch B --seq S       default 1 × 64: what SwiftShader can afford at real widths
//   --steps N               timed steps after one warm-up step (default 2)
//   --backend webgpu|wasm   one backend only (default both)
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { shapeConfig, writeSyntheticModel, type SyntheticModel } from '../scripts/synthetic-model';
import { shapeLines } from './report';
import { runConfigYaml, shapeCaseFromArgs, shapeHeading } from './shape-options';
import type { ShapeBenchOptions, ShapeBenchResult } from './shape-page';

/** The shared fixtures' byte-level tokenizer (257 ids): the import needs one, and no step reads text. */
const TOKENIZER_DIR = new URL('../../shared/fixtures/models/tiny-gpt2/', import.meta.url);

type PageCall = <T>(module: string, fn: string, arg: unknown) => Promise<T>;

export interface ShapeBench {
  /** Runs the page's half and prints its lines. */
  measure(page: Page, call: PageCall): Promise<void>;
  /** Removes the model folder. */
  dispose(): void;
}

/** Reads the options (throwing a one-line usage error before anything is written) and writes the model folder. */
export function prepareShapeBench(argv: readonly string[]): ShapeBench {
  const { case: c, backends } = shapeCaseFromArgs(argv);
  const dir = mkdtempSync(join(tmpdir(), 'lora-lab-bench-shape-'));
  const tokenizer = {
    json: readFileSync(new URL('tokenizer.json', TOKENIZER_DIR), 'utf8'),
    configJson: readFileSync(new URL('tokenizer_config.json', TOKENIZER_DIR), 'utf8'),
  };
  const config = shapeConfig(c.shape, c.layers);
  let model: SyntheticModel;
  try {
    model = writeSyntheticModel(dir, config, tokenizer);
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  return {
    async measure(page, call) {
      const inputId = 'bench-model-files';
      await page.evaluate((id) => {
        document.body.append(Object.assign(document.createElement('input'), { type: 'file', multiple: true, id, hidden: true }));
      }, inputId);
      await page.setInputFiles(`#${inputId}`, ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'].map((f) => join(dir, f)));
      const options: ShapeBenchOptions = { inputId, configYaml: runConfigYaml(c), steps: c.steps, warmup: c.warmup, backends };
      const result = await call<ShapeBenchResult>('/bench/shape-page.ts', 'runShapeBench', options);
      console.log(shapeLines(shapeHeading(c, config, model), result.storedBytes, result.importBytesPerSecond, result.rows).join('\n'));
    },
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}
