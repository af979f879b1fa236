/** A uniform value for `runWebGPUProgram`, in the backend's own format (its type is not exported). */
export interface ProgramUniform {
  type: 'float32' | 'int32';
  data: number[];
}

export type WgslConstants = Record<string, number | boolean>;

/**
 * Fills the `{{NAME}}` placeholders of a WGSL file with compile-time constants. Strict both ways: a
 * placeholder without a value or a value without a placeholder is a bug that would otherwise show up as
 * a silently failing pipeline (WebGPU reports WGSL errors only to an error scope).
 */
export function fillWgsl(code: string, constants: WgslConstants): string {
  const used = new Set<string>();
  const filled = code.replace(/\{\{(\w+)\}\}/g, (_, name: string) => {
    const value = constants[name];
    if (value === undefined) throw new Error(`WGSL placeholder {{${name}}} has no value`);
    used.add(name);
    return typeof value === 'boolean' ? String(value) : wgslNumber(value);
  });
  const unused = Object.keys(constants).filter((name) => !used.has(name));
  if (unused.length > 0) throw new Error(`WGSL constants without a placeholder: ${unused.join(', ')}`);
  return filled;
}

/**
 * The part of a shaderKey that names the baked constants. The backend caches pipelines by key, and two
 * programs with one key but different WGSL would silently share the first pipeline, so every constant
 * that reaches `fillWgsl` must also reach the key.
 */
export function constantsKey(constants: WgslConstants): string {
  return Object.keys(constants)
    .sort()
    .map((name) => `${name}=${String(constants[name])}`)
    .join(',');
}

function wgslNumber(value: number): string {
  if (!Number.isInteger(value)) throw new Error(`WGSL constant ${value} must be an integer`);
  return String(value);
}

/**
 * Ranks one workgroup accumulates at once: 4 for r ≤ 4, else 8 (registers and workgroup memory grow
 * with it). Two sizes rather than one per r keep the number of pipelines to compile down.
 */
export function rankBlockFor(rank: number): number {
  return rank <= 4 ? 4 : 8;
}
