/**
 * The little statistics the rules need. Medians rather than means wherever a single spike must not
 * move the answer; least-squares lines for trends, because a trend fitted over many points is far
 * less noisy than any difference of two points.
 */

/** Median of the values; NaN for none. Does not modify its input. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export interface Line {
  readonly slope: number;
  readonly intercept: number;
}

/** Least-squares line y = intercept + slope·x. A flat line through the mean when all x are equal. */
export function fitLine(xs: readonly number[], ys: readonly number[]): Line {
  const n = Math.min(xs.length, ys.length);
  if (n === 0) return { slope: 0, intercept: Number.NaN };
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += xs[i]!;
    my += ys[i]!;
  }
  mx /= n;
  my /= n;
  let sxx = 0;
  let sxy = 0;
  for (let i = 0; i < n; i++) {
    const dx = xs[i]! - mx;
    sxx += dx * dx;
    sxy += dx * (ys[i]! - my);
  }
  const slope = sxx > 0 ? sxy / sxx : 0;
  return { slope, intercept: my - slope * mx };
}

/**
 * A least-squares line that grows one point at a time, so a rule can ask "what did the fit say after
 * point k" for every k in one pass. Welford-style updates keep it accurate for long runs with large
 * step numbers, where the textbook sums of x² would cancel catastrophically.
 */
export class RunningLine {
  private n = 0;
  private mx = 0;
  private my = 0;
  private sxx = 0;
  private syy = 0;
  private sxy = 0;

  add(x: number, y: number): void {
    this.n++;
    const dx = x - this.mx;
    const dy = y - this.my;
    this.mx += dx / this.n;
    this.my += dy / this.n;
    // Using the old deviation on one side and the new on the other is the exact Welford update.
    this.sxx += dx * (x - this.mx);
    this.syy += dy * (y - this.my);
    this.sxy += dx * (y - this.my);
  }

  get count(): number {
    return this.n;
  }

  get slope(): number {
    return this.sxx > 0 ? this.sxy / this.sxx : 0;
  }

  /** The fitted value at x. */
  at(x: number): number {
    return this.my + this.slope * (x - this.mx);
  }

  /** Standard deviation of the points about the line (needs 3+ points). */
  get residualStd(): number {
    if (this.n < 3) return Number.POSITIVE_INFINITY;
    const explained = this.sxx > 0 ? (this.sxy * this.sxy) / this.sxx : 0;
    return Math.sqrt(Math.max(0, this.syy - explained) / (this.n - 2));
  }

  /** Standard error of the slope, from the scatter of the points about the line (needs 3+ points). */
  get slopeStdErr(): number {
    if (!(this.sxx > 0)) return Number.POSITIVE_INFINITY;
    return this.residualStd / Math.sqrt(this.sxx);
  }
}
