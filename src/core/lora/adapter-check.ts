import { isMap, isScalar, parseDocument } from 'yaml';
import { isConfigKey, KEY_ALIASES } from '../config/aliases.js';
import type { RunConfig, RunConfigKey } from '../config/schema.js';
import { UserError } from '../errors.js';
import { resolveTargets, type LoraSettings, type ModelShape } from './settings.js';

/**
 * `init_adapter`: a run that starts from an adapter takes the adapter's r, lora_alpha, use_rslora and target
 * modules, since its A and B only fit those. A config that says otherwise was written for another adapter (or by
 * someone who expects their value to win), so it is refused naming both values rather than silently overridden.
 * Only keys the config actually writes count: a config that leaves lora_rank out gets the adapter's, not the
 * default 8.
 */

/** The canonical keys a YAML config writes (other tools' names mapped to ours); empty for text that is not a mapping. */
export function writtenConfigKeys(yamlText: string): Set<RunConfigKey> {
  const keys = new Set<RunConfigKey>();
  const doc = parseDocument(yamlText);
  if (!isMap(doc.contents)) return keys;
  for (const pair of doc.contents.items) {
    if (!isScalar(pair.key)) continue;
    const written = String(pair.key.value);
    const key = isConfigKey(written) ? written : KEY_ALIASES.get(written)?.to;
    if (key) keys.add(key);
  }
  return keys;
}

/** The adapter a run starts from, as far as the config is concerned. */
export interface InitAdapterSettings {
  /** As init_adapter names it, for messages. */
  readonly name: string;
  readonly settings: LoraSettings;
}

const showTargets = (t: LoraSettings['targetModules'] | readonly string[]): string => (t === 'all-linear' ? 'all-linear' : `[${t.join(', ')}]`);

/**
 * The run config with the adapter's LoRA shape in place of its own (lora_rank, lora_alpha, use_rslora,
 * target_modules), so the stored run, config.yaml and the exported adapter say what was trained. lora_dropout stays
 * the config's: it is how the further training runs, not part of what the adapter computes.
 * `written`: the keys the config text sets (writtenConfigKeys); those must agree with the adapter. target_modules
 * agrees when it selects the same projections of `model` (so `all-linear` and the list of every name are the same).
 */
export function configWithInitAdapter(config: RunConfig, written: ReadonlySet<RunConfigKey>, adapter: InitAdapterSettings, model: ModelShape): RunConfig {
  const s = adapter.settings;
  const refuse = (what: string, key: RunConfigKey, mine: string, theirs: string): never => {
    throw new UserError('init_adapter', `the adapter "${adapter.name}" has ${what} = ${theirs}, but ${key} is ${mine}.`, `Remove ${key} or set it to ${theirs}.`);
  };
  if (written.has('lora_rank') && config.lora_rank !== s.rank) refuse('r', 'lora_rank', String(config.lora_rank), String(s.rank));
  if (written.has('lora_alpha') && config.lora_alpha !== s.alpha) refuse('lora_alpha', 'lora_alpha', String(config.lora_alpha), String(s.alpha));
  if (written.has('use_rslora') && config.use_rslora !== s.useRslora) refuse('use_rslora', 'use_rslora', String(config.use_rslora), String(s.useRslora));
  // null is "the architecture's default", which says nothing about a given adapter.
  if (written.has('target_modules') && config.target_modules !== null) {
    const paths = (t: LoraSettings['targetModules']): string => {
      const r = resolveTargets(model, t);
      return 'problem' in r ? `?${showTargets(t)}` : r.linears.map((l) => l.path).join(',');
    };
    if (paths(config.target_modules) !== paths(s.targetModules)) {
      refuse('target_modules', 'target_modules', showTargets(config.target_modules), showTargets(s.targetModules));
    }
  }
  return {
    ...config,
    lora_rank: s.rank,
    lora_alpha: s.alpha,
    use_rslora: s.useRslora,
    target_modules: s.targetModules === 'all-linear' ? 'all-linear' : [...s.targetModules],
  };
}
