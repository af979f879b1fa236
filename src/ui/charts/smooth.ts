/**
 * TensorBoard's scalar smoothing: an exponential moving average with debiasing, so the first points
 * are not dragged towards zero. weight 0 = raw; 0.99 = very smooth. Non-finite values pass through
 * unchanged and do not disturb the average (as in TensorBoard).
 */
export function smoothEma(values: ArrayLike<number>, weight: number): number[] {
  const out = new Array<number>(values.length);
  let last = 0;
  let count = 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) {
      out[i] = v;
      continue;
    }
    last = last * weight + (1 - weight) * v;
    count++;
    const debias = weight === 1 ? 1 : 1 - weight ** count;
    out[i] = last / debias;
  }
  return out;
}
