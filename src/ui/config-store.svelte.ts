import { DEFAULT_CONFIG, PRESETS, parseRunConfig, runConfigToYaml, type RunConfig } from '../core/config';

const KEY = 'lora-lab.run-config';

/** The config being edited: the form and the YAML view edit this one object; it survives reloads. */
class ConfigStore {
  value = $state<RunConfig>(load());
  readonly yaml = $derived(runConfigToYaml(this.value));

  set(change: Partial<RunConfig>): void {
    const result = parseRunConfig({ ...this.value, ...change });
    if (!result.ok) return;
    this.value = result.config;
    localStorage.setItem(KEY, JSON.stringify(this.value));
  }

  replace(config: RunConfig): void {
    this.value = config;
    localStorage.setItem(KEY, JSON.stringify(config));
  }
}

function load(): RunConfig {
  try {
    const saved = localStorage.getItem(KEY);
    if (saved) {
      const result = parseRunConfig(JSON.parse(saved) as Record<string, unknown>);
      if (result.ok) return result.config;
    }
  } catch {
    // A corrupt saved config falls back to the starting preset.
  }
  const start = parseRunConfig({ ...DEFAULT_CONFIG, ...PRESETS[0]!.values });
  return start.ok ? start.config : DEFAULT_CONFIG;
}

export const runConfig = new ConfigStore();
