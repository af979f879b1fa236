import type { RunConfig } from './schema';

export type PresetId = 'quick-try' | 'style' | 'instruction-tune';

export interface Preset {
  readonly id: PresetId;
  readonly label: string;
  readonly description: string;
  /** Applied over the current config; keys left out keep their current values (paths, seed, backend). */
  readonly values: Partial<RunConfig>;
}

/**
 * Starting points sized for the small models a browser can train (GPT-2 small, SmolLM-135M class).
 * None sets paths, so applying one never loses the chosen model or data.
 */
export const PRESETS: readonly Preset[] = Object.freeze([
  {
    id: 'quick-try',
    label: 'Quick try',
    description: 'A couple of minutes to see the loss move: 60 steps on short sequences, rank 4.',
    values: {
      lora_rank: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      target_modules: null,
      learning_rate: 3e-4,
      lr_scheduler: 'constant',
      warmup_steps: 0,
      epochs: 1,
      max_steps: 60,
      batch_size: 4,
      grad_accum_steps: 1,
      seq_len: 64,
      log_steps: 5,
      eval_steps: 0,
      early_stopping_patience: 0,
    },
  },
  {
    id: 'style',
    label: 'Writing style',
    description:
      'Learn the voice of a text corpus: 3 epochs over 256-token windows, 10% held out to stop early when it starts to overfit.',
    values: {
      lora_rank: 16,
      lora_alpha: 32,
      lora_dropout: 0.05,
      target_modules: null,
      learning_rate: 1e-4,
      lr_scheduler: 'cosine',
      warmup_steps: 20,
      epochs: 3,
      max_steps: 0,
      batch_size: 8,
      grad_accum_steps: 1,
      seq_len: 256,
      val_split: 0.1,
      log_steps: 10,
      eval_steps: 0,
      early_stopping_patience: 3,
    },
  },
  {
    id: 'instruction-tune',
    label: 'Instruction tune',
    description:
      'Teach a prompt/response format: LoRA on every linear layer, 512-token examples, effective batch 16, 2 epochs.',
    values: {
      lora_rank: 16,
      lora_alpha: 32,
      lora_dropout: 0.05,
      target_modules: 'all-linear',
      learning_rate: 2e-4,
      lr_scheduler: 'cosine',
      warmup_steps: 30,
      weight_decay: 0.01,
      epochs: 2,
      max_steps: 0,
      batch_size: 4,
      grad_accum_steps: 4,
      seq_len: 512,
      val_split: 0.05,
      log_steps: 10,
      eval_steps: 0,
      early_stopping_patience: 0,
    },
  },
]);
