import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { inject } from 'vitest';

/**
 * `npm run headless -- ARGS`, as a person runs it. `build: 'reuse'` hands the runner this suite's production
 * build (LORA_LAB_BUILT_APP) so it does not build the same app again; `'own'` lets it build as it does for a
 * person: for the one test of that path, and for refusals that must come before anything is built.
 */
export function runHeadless(args: readonly string[], options: { timeoutMs: number; build?: 'reuse' | 'own' }): SpawnSyncReturns<string> {
  const env = { ...process.env };
  if ((options.build ?? 'reuse') === 'reuse') env.LORA_LAB_BUILT_APP = inject('builtAppDir');
  else delete env.LORA_LAB_BUILT_APP;
  return spawnSync(process.execPath, ['scripts/headless.mjs', ...args], { encoding: 'utf8', timeout: options.timeoutMs, env });
}
