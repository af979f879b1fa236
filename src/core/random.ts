/**
 * Seeded randomness for everything that must be reproducible from a run's seed: LoRA's
 * initialisation and dropout masks, the data order, validation splits and sampling.
 *
 * Counter-based seeding:
 * Every draw gets its own stream keyed by the numbers that identify it (seed, step, module index, ...),
 * rather than all draws sharing one generator, so that a draw does not depend on how many draws came
 * before it: the mask of step 7 is the same whether the run was resumed at step 5 or not, and adding
 * a module does not change the others' initialisation.
 */

/** Finalizer of MurmurHash3: a bijection on 32 bits with full avalanche, so nearby keys give unrelated streams. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Hashes a tuple of integers to a 32-bit stream key. Both halves of each part are mixed in, so seeds
 * beyond 2³² still differ. Parts must be safe integers (they name draws; a fraction is a bug).
 */
export function streamKey(...parts: readonly number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    if (!Number.isSafeInteger(p)) throw new Error(`streamKey: ${p} is not a safe integer`);
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = fmix32(h ^ fmix32(lo + 0x7f4a7c15));
    h = fmix32(h ^ fmix32(hi + 0x165667b1));
  }
  return h;
}

/** Mulberry32: tiny and fast, ample for initialisation and dropout. Returns uint32 values. */
export function uint32Stream(key: number): () => number {
  let state = key >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Uniform floats in [0, 1) from a seed: for shuffles and sampling (Math.random cannot be seeded). */
export function seededRandom(seed: number): () => number {
  const next = uint32Stream(seed);
  return () => next() / 4294967296;
}

/** `n` draws from U[-bound, bound) as float32. */
export function uniformArray(key: number, n: number, bound: number): Float32Array {
  const next = uint32Stream(key);
  const out = new Float32Array(n);
  const scale = (2 * bound) / 4294967296;
  for (let i = 0; i < n; i++) out[i] = next() * scale - bound;
  return out;
}

/**
 * An inverted-dropout mask: each element is 0 with probability p, else 1/(1-p), so the expected value
 * of mask ⊙ x is x and evaluation needs no rescaling (what torch.nn.Dropout does in training mode).
 */
export function dropoutMaskArray(key: number, n: number, p: number): Float32Array {
  if (!(p >= 0 && p < 1)) throw new Error(`dropoutMaskArray: p = ${p} is outside [0, 1)`);
  const next = uint32Stream(key);
  const out = new Float32Array(n);
  // Compare raw uint32 draws with p·2³² instead of converting each draw to a float.
  const threshold = p * 4294967296;
  const keep = 1 / (1 - p);
  for (let i = 0; i < n; i++) out[i] = next() >= threshold ? keep : 0;
  return out;
}

/**
 * `n` standard normal draws as float32 (Box–Muller on two uniform draws each; the uniform is shifted off 0 so the
 * logarithm stays finite): diffusion noise, sample latents. Same key, same values.
 */
export function normalArray(key: number, n: number): Float32Array {
  const next = uint32Stream(key);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u1 = (next() + 0.5) / 4294967296;
    const u2 = next() / 4294967296;
    const radius = Math.sqrt(-2 * Math.log(u1));
    out[i] = radius * Math.cos(2 * Math.PI * u2);
    if (i + 1 < n) out[i + 1] = radius * Math.sin(2 * Math.PI * u2);
  }
  return out;
}
