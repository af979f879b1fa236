import * as tf from '@tensorflow/tfjs';
import { UserError } from '../core/errors';
import { importPeftAdapter, PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE } from '../core/export/peft';
import { MAX_ADAPTER_SCALE, scaledAdapter, type LoraAdapter } from '../core/lora';
import { generateScored, type ScoredToken } from '../core/models/generate';
import type { CausalLM } from '../core/models/model';
import { bytesSource } from '../core/safetensors';
import type { LoraLabDb, StoredModel } from '../storage/db';
import { artifactBytes, getRun } from '../storage/runs';
import type { RunnableModel } from '../storage/model-weights';
import { loadStoredAdapter } from './stored-adapters';

/** Which adapter the playground puts next to the base model: a finished run's output, or one stored with the model. */
export type PlaygroundAdapter = { readonly kind: 'run'; readonly runId: string } | { readonly kind: 'stored'; readonly name: string };

export interface CompareRequest {
  readonly modelId: string;
  readonly adapter: PlaygroundAdapter;
  /** 0 = the base model, 1 = as trained, up to 2. */
  readonly scale: number;
  readonly prompt: string;
  readonly maxNewTokens: number;
  readonly temperature: number;
  readonly seed: number;
  /** Alternatives listed per generated token. */
  readonly topK: number;
}

/** A generated token as the playground shows it: text, its probability and the top alternatives (with text). */
export interface ShownToken {
  readonly id: number;
  readonly text: string;
  readonly prob: number;
  readonly top: readonly { readonly id: number; readonly text: string; readonly prob: number }[];
}

export interface CompareResult {
  readonly promptTokens: number;
  readonly base: readonly ShownToken[];
  readonly adapted: readonly ShownToken[];
}

/** The adapter on the loaded model (the caller disposes it). A run's adapter is read from its output folder. */
export async function loadPlaygroundAdapter(db: LoraLabDb, stored: StoredModel, model: CausalLM, source: PlaygroundAdapter): Promise<LoraAdapter> {
  if (source.kind === 'stored') return loadStoredAdapter(db, stored, model, source.name);
  const run = await getRun(db, source.runId);
  if (!run) throw new UserError('run', 'is not stored any more.');
  if (run.modelId !== stored.id) throw new UserError(`run ${run.name}`, `trained an adapter for ${run.modelName}, not for ${stored.name}.`, `Pick ${run.modelName} to try this run.`);
  const [config, weights] = await Promise.all([db.get('artifacts', [run.id, PEFT_CONFIG_FILE]), db.get('artifacts', [run.id, PEFT_WEIGHTS_FILE])]);
  if (!config || !weights) throw new UserError(`run ${run.name}`, 'has no finished adapter yet.', 'Try a run that completed or was stopped.');
  return importPeftAdapter(model, new TextDecoder().decode(await artifactBytes(config)), bytesSource(PEFT_WEIGHTS_FILE, await artifactBytes(weights)));
}

/**
 * Runs `fn` with the adapter scaled by `scale` (its LinearApply), or with none at scale 0, and releases the
 * adapters it loaded. The base model stays loaded and untouched.
 */
export async function withScaledAdapter<T>(
  db: LoraLabDb,
  stored: StoredModel,
  model: CausalLM,
  source: PlaygroundAdapter,
  scale: number,
  fn: (adapter: LoraAdapter | null) => Promise<T>,
): Promise<T> {
  if (!(scale >= 0 && scale <= MAX_ADAPTER_SCALE)) throw new UserError('adapter scale', `must be from 0 to ${MAX_ADAPTER_SCALE}, not ${scale}.`);
  const trained = await loadPlaygroundAdapter(db, stored, model, source);
  let scaled: LoraAdapter | null = null;
  try {
    scaled = scale === 1 ? trained : await scaledAdapter(model, trained, scale);
    return await fn(scaled);
  } finally {
    if (scaled !== trained) scaled?.dispose();
    trained.dispose();
  }
}

/** One prompt through the base model and base + scaled adapter, with the same seed and sampling settings. */
export async function compareSideBySide(db: LoraLabDb, stored: StoredModel, loaded: RunnableModel, request: CompareRequest): Promise<CompareResult> {
  const { model, tokenizer } = loaded;
  const ids = tokenizer.encode(request.prompt);
  if (ids.length === 0 && tokenizer.eosId !== null) ids.push(tokenizer.eosId);
  if (ids.length === 0) throw new UserError('prompt', 'is empty.', 'Type a prompt first.');
  const options = { maxNewTokens: request.maxNewTokens, temperature: request.temperature, seed: request.seed, topK: request.topK };
  const shown = (tokens: readonly ScoredToken[]): ShownToken[] =>
    tokens.map((t) => ({ id: t.id, text: tokenizer.tokenText(t.id), prob: t.prob, top: t.top.map((a) => ({ ...a, text: tokenizer.tokenText(a.id) })) }));
  const base = shown(await generateScored(model, ids, options));
  const adapted = await withScaledAdapter(db, stored, model, request.adapter, request.scale, async (adapter) =>
    shown(await generateScored(model, ids, adapter ? { ...options, forward: { linear: adapter.apply({ training: false }) } } : options)),
  );
  return { promptTokens: ids.length, base, adapted };
}

/** Raw logits of `tokens` through the model with the scaled adapter (the parity checks of the playground's numbers). */
export async function adaptedLogits(db: LoraLabDb, stored: StoredModel, model: CausalLM, tokens: readonly number[], source: PlaygroundAdapter, scale: number): Promise<Float32Array> {
  return withScaledAdapter(db, stored, model, source, scale, async (adapter) => {
    const out = tf.tidy(() => model.forward(tf.tensor2d([...tokens], [1, tokens.length], 'int32'), adapter ? { linear: adapter.apply({ training: false }) } : undefined));
    try {
      return (await out.data()) as Float32Array;
    } finally {
      out.dispose();
    }
  });
}
