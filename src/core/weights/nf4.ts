/**
 * The 4-bit NormalFloat code book of the QLoRA paper (Dettmers et al. 2023, appendix E): sixteen values
 * in [-1, 1] that are quantiles of a standard normal, with an exact zero, so that weights normalised by
 * their block's absolute maximum spread evenly over the codes. Ordered ascending; a code is an index.
 * shaders/packed_weight.wgsl holds the same table (a test keeps the two equal).
 */
export const NF4_CODE_BOOK: readonly number[] = Object.freeze([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);

/** Elements sharing one absmax scale: QLoRA's block size. */
export const NF4_BLOCK = 64;

/** Midpoints between neighbouring codes: a value below midpoint i is nearer code i than code i + 1. */
const MIDPOINTS = NF4_CODE_BOOK.slice(1).map((hi, i) => (NF4_CODE_BOOK[i]! + hi) / 2);

/** The index of the code nearest to `v` (v already divided by its block's absmax, so in [-1, 1]). */
export function nearestNf4Code(v: number): number {
  let lo = 0;
  let hi = MIDPOINTS.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (v > MIDPOINTS[mid]!) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
