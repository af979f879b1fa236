import { estimateSettingsOf, resolveTargetModules, type RunConfig } from '../core/config';
import { UserError } from '../core/errors';
import { resolveTargets } from '../core/lora/settings';
import { parseModelConfigText } from '../core/models/config';
import type { CausalLM } from '../core/models/model';
import { estimateRun, wasmMemoryProblem } from '../core/train/estimate';
import type { StoredModel } from '../storage/db';
import { projectionsOf } from './datasets';

/**
 * WebAssembly's memory has a hard ceiling, and tfjs-backend-wasm aborts its whole module when an
 * allocation would cross it: the run dies mid-step and the backend with it. So a wasm run is checked
 * against the ceiling before anything is loaded or stored, from the model's config and the run's
 * settings alone (the same estimate the Data panel shows), and refused in one line when it cannot fit.
 */
export function checkWasmFits(stored: StoredModel, config: RunConfig): void {
  const model = parseModelConfigText(stored.files.config);
  // resolveTargets reads only the projections' paths and sizes: a weightless stand-in is enough.
  const standIn = { config: model, linears: projectionsOf(model) } as unknown as CausalLM;
  const resolved = resolveTargets(standIn, resolveTargetModules(config, model.arch));
  if ('problem' in resolved) throw new UserError('target_modules', resolved.problem, resolved.fix);
  const estimate = estimateRun({
    model,
    targets: resolved.linears,
    ...estimateSettingsOf(config),
    trainTokens: 0, // memory does not depend on how much data there is
    fusedKernels: false, // wasm runs the stock-op composition
  });
  const problem = wasmMemoryProblem(estimate);
  if (problem) throw new UserError('backend', `this run ${problem.problem}`, problem.fix);
}

/**
 * What a failure during a wasm run means to the person. When an allocation fails, tfjs-backend-wasm
 * either aborts its emscripten module (`RuntimeError: Aborted(). Build with -sASSERTIONS…`) or, where
 * its JavaScript side gets a null pointer back, writes out of bounds (`RuntimeError: memory access out
 * of bounds`). In a training run either is memory the estimate did not foresee: it becomes one line
 * saying so. The module is unusable afterwards, hence the reload. Anything else is left as it is.
 */
export function runFailure(e: unknown): unknown {
  if (!isWasmTrap(e)) return e;
  return new UserError(
    'backend',
    `WebAssembly ran out of memory during training (${(e as Error).message.split('.')[0]}).`,
    'Lower batch_size or seq_len, or use WebGPU; reload the page before training again.',
  );
}

/** A trap or abort of a WebAssembly module (WebAssembly.RuntimeError, whatever realm made it). */
export function isWasmTrap(e: unknown): boolean {
  return e instanceof Error && (e.name === 'RuntimeError' || (typeof WebAssembly !== 'undefined' && e instanceof WebAssembly.RuntimeError));
}
