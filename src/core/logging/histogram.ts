/**
 * Histograms from raw values, bucketed the way TensorFlow's C++ histogram (behind tf.summary.histogram
 * in TF1 and TensorBoard's legacy `histo` field) does it, so our histograms look like everyone else's.
 */

/** HistogramProto: bucket i counts values in [bucketLimits[i-1], bucketLimits[i]); bucket 0 starts at -infinity. */
export interface Histogram {
  min: number;
  max: number;
  num: number;
  sum: number;
  sumSquares: number;
  bucketLimits: number[];
  buckets: number[];
}

/**
 * Bucket edges: 0, then ±1e-12·1.1^k for every k with 1e-12·1.1^k < 1e20, then ±DBL_MAX.
 * Spacing grows by 10% away from zero, so relative resolution is the same for tiny LoRA deltas
 * and large activations, and one fixed set covers every float; built by repeated multiplication
 * (not pow) because that is how the reference computes them, and the limits are written to the file.
 */
export const DEFAULT_BUCKET_LIMITS: readonly number[] = (() => {
  const positive: number[] = [];
  for (let v = 1e-12; v < 1e20; v *= 1.1) positive.push(v);
  positive.push(Number.MAX_VALUE);
  const negative = positive.map((v) => -v).reverse();
  return [...negative, 0, ...positive];
})();

/** Index of the first limit strictly greater than v (values equal to a limit go to the next bucket up). */
function bucketIndex(limits: readonly number[], v: number): number {
  let lo = 0;
  let hi = limits.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (limits[mid]! > v) hi = mid;
    else lo = mid + 1;
  }
  // Only DBL_MAX itself is not below any limit; it belongs in the top bucket, not past the end.
  return Math.min(lo, limits.length - 1);
}

/**
 * Builds the histogram of `values` over the default limits, then writes runs of empty buckets as a
 * single zero bucket (ending at the run's last limit), as the reference encoder does: that keeps a
 * histogram of a few thousand weights to a few dozen buckets instead of 1551.
 *
 * Throws a RangeError on NaN or ±Infinity, as TensorFlow's histogram summary does: they have no
 * bucket, and a histogram that quietly dropped them would hide a diverged run.
 */
export function histogramFromValues(values: ArrayLike<number>, limits: readonly number[] = DEFAULT_BUCKET_LIMITS): Histogram {
  const counts = new Float64Array(limits.length);
  // An empty histogram keeps these sentinels; they are what the reference writes too.
  let min = limits[limits.length - 1]!;
  let max = -Number.MAX_VALUE;
  let sum = 0;
  let sumSquares = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) throw new RangeError(`histogram value ${i} is ${v}; only finite values can be bucketed`);
    counts[bucketIndex(limits, v)]! += 1;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
    sumSquares += v * v;
  }

  const bucketLimits: number[] = [];
  const buckets: number[] = [];
  for (let i = 0; i < counts.length; ) {
    let end = limits[i]!;
    const count = counts[i]!;
    i++;
    if (count <= 0) {
      while (i < counts.length && counts[i]! <= 0) end = limits[i++]!;
    }
    bucketLimits.push(end);
    buckets.push(count);
  }
  return { min, max, num: values.length, sum, sumSquares, bucketLimits, buckets };
}
