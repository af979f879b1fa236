import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** ../shared/fixtures/models, read in place (never copied into the repo). */
export const MODELS_DIR = fileURLToPath(new URL('../../../../shared/fixtures/models/', import.meta.url));

/** ../shared/fixtures/sd: the tiny Stable Diffusion 1.x pipeline and its captioned image sets. */
export const SD_DIR = fileURLToPath(new URL('../../../../shared/fixtures/sd/', import.meta.url));

export interface ExpectedOutputs {
  readonly text: string;
  readonly tokens: number[];
  readonly logits_base: number[][];
  readonly logits_with_adapter?: number[][];
  /** The validation loss of `loss_base.text` as LoRA Lab defines it (see the fixtures' README). */
  readonly loss_base: { readonly text: string; readonly seq_len: number; readonly windows: number; readonly loss: number };
}

export function expectedOutputs(model: string): ExpectedOutputs {
  return JSON.parse(readFileSync(`${MODELS_DIR}${model}.expected.json`, 'utf8')) as ExpectedOutputs;
}

export function maxAbsDiff(actual: ArrayLike<number>, expected: readonly number[][]): number {
  const width = expected[0]!.length;
  let max = 0;
  expected.forEach((row, i) => row.forEach((v, j) => (max = Math.max(max, Math.abs(actual[i * width + j]! - v)))));
  return max;
}
