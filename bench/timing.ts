/** Medians of two runners, timed in alternation so that a change in machine load hits both alike. */
export async function medians(
  a: () => Promise<void>,
  b: () => Promise<void>,
  iterations: number,
  warmup: number,
): Promise<[number, number]> {
  for (let i = 0; i < warmup; i++) await a();
  for (let i = 0; i < warmup; i++) await b();
  const timesA: number[] = [];
  const timesB: number[] = [];
  const time = async (run: () => Promise<void>, into: number[]) => {
    const start = performance.now();
    await run();
    into.push(performance.now() - start);
  };
  for (let i = 0; i < iterations; i++) {
    await time(a, timesA);
    await time(b, timesB);
  }
  return [median(timesA), median(timesB)];
}

export function median(times: readonly number[]): number {
  const sorted = [...times].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
