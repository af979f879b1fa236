import { KOHYA_SETTING_NAMES } from './kohya-settings';
import { CONFIG_KEYS, type RunConfigKey } from './schema';

export type AliasSource = 'LLaMA-Factory' | 'kohya' | 'Hugging Face';

export interface KeyAlias {
  readonly to: RunConfigKey;
  /** The tool whose configs use this name, so the UI can say where a key came from. */
  readonly tool: AliasSource;
  /**
   * Turns the value as written into ours, for the alias that means the opposite of our key
   * (network_train_unet_only: true is train_text_encoder: false). Absent: the value carries over as is.
   */
  readonly read?: (value: unknown) => unknown;
}

/** true ↔ false; anything else unchanged, so the boolean check reports the value as written. */
const invert = (value: unknown): unknown => (typeof value === 'boolean' ? !value : value);

/**
 * Other tools' names for our keys, accepted so their configs load with few edits. Names the tools
 * share with us (learning_rate, seed, output_dir, warmup_steps, lora_rank, …) need no entry.
 * `gradient_accumulation_steps` is spelled the same in LLaMA-Factory and kohya.
 */
export const KEY_ALIASES: ReadonlyMap<string, KeyAlias> = new Map<string, KeyAlias>([
  ['num_train_epochs', { to: 'epochs', tool: 'LLaMA-Factory' }],
  ['per_device_train_batch_size', { to: 'batch_size', tool: 'LLaMA-Factory' }],
  ['gradient_accumulation_steps', { to: 'grad_accum_steps', tool: 'LLaMA-Factory' }],
  ['logging_steps', { to: 'log_steps', tool: 'LLaMA-Factory' }],
  ['lora_target', { to: 'target_modules', tool: 'LLaMA-Factory' }],
  ['cutoff_len', { to: 'seq_len', tool: 'LLaMA-Factory' }],
  ['val_size', { to: 'val_split', tool: 'LLaMA-Factory' }],
  ['lr_scheduler_type', { to: 'lr_scheduler', tool: 'LLaMA-Factory' }],
  ['model_name_or_path', { to: 'base_model', tool: 'LLaMA-Factory' }],
  ['network_dim', { to: 'lora_rank', tool: 'kohya' }],
  ['network_alpha', { to: 'lora_alpha', tool: 'kohya' }],
  ['network_dropout', { to: 'lora_dropout', tool: 'kohya' }],
  ['max_train_epochs', { to: 'epochs', tool: 'kohya' }],
  ['train_batch_size', { to: 'batch_size', tool: 'kohya' }],
  ['lr_warmup_steps', { to: 'warmup_steps', tool: 'kohya' }],
  ['max_train_steps', { to: 'max_steps', tool: 'kohya' }],
  ['save_every_n_steps', { to: 'save_steps', tool: 'kohya' }],
  ['sample_every_n_steps', { to: 'sample_steps', tool: 'kohya' }],
  ['pretrained_model_name_or_path', { to: 'base_model', tool: 'kohya' }],
  ['train_data_dir', { to: 'train_data', tool: 'kohya' }],
  // sd-scripts' original spelling, still accepted there.
  ['caption_extention', { to: 'caption_extension', tool: 'kohya' }],
  ['network_train_unet_only', { to: 'train_text_encoder', tool: 'kohya', read: invert }],
]);

const CANONICAL = new Set<string>(CONFIG_KEYS);

export function isConfigKey(key: string): key is RunConfigKey {
  return CANONICAL.has(key);
}

/**
 * Optimal string alignment distance: Levenshtein plus swapping two neighbours as one edit, because
 * transposed letters ("lora_rnak") are the commonest typo in a key.
 */
export function editDistance(a: string, b: string): number {
  const rows = a.length + 1;
  const cols = b.length + 1;
  const d: number[] = new Array<number>(rows * cols).fill(0);
  const at = (i: number, j: number): number => d[i * cols + j] ?? 0;
  for (let i = 0; i < rows; i++) d[i * cols] = i;
  for (let j = 0; j < cols; j++) d[j] = j;
  for (let i = 1; i < rows; i++) {
    for (let j = 1; j < cols; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(at(i - 1, j) + 1, at(i, j - 1) + 1, at(i - 1, j - 1) + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) best = Math.min(best, at(i - 2, j - 2) + 1);
      d[i * cols + j] = best;
    }
  }
  return at(rows - 1, cols - 1);
}

/**
 * The known key (canonical or alias) closest to an unknown one, or null when nothing is close enough
 * to be a typo rather than a different setting. Case is ignored: `Learning_Rate` suggests learning_rate.
 */
export function suggestKey(unknown: string): string | null {
  const typed = unknown.toLowerCase();
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const known of [...CONFIG_KEYS, ...KEY_ALIASES.keys(), ...KOHYA_SETTING_NAMES]) {
    const distance = editDistance(typed, known);
    if (distance < bestDistance) {
      best = known;
      bestDistance = distance;
    }
  }
  // A third of the length tolerates a couple of slips in long keys without pairing short unrelated
  // words (`lr` is not a typo of `seed`).
  return best !== null && bestDistance <= Math.max(2, Math.floor(typed.length / 3)) && bestDistance < typed.length
    ? best
    : null;
}
