/** Numbers as a person reads them: units and sensible precision. */

export function formatBytes(n: number): string {
  if (n < 1e3) return `${n} B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(1)} kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)} MB`;
  return `${(n / 1e9).toFixed(2)} GB`;
}

export function formatCount(n: number): string {
  if (n < 1e3) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(1)}k`;
  if (n < 1e9) return `${(n / 1e6).toFixed(1)}M`;
  return `${(n / 1e9).toFixed(2)}B`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '…';
  if (seconds < 1) return 'under a second';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

/** Rate and time left for a transfer, from its start time and bytes done so far. */
export function transferRate(done: number, total: number, startedAt: number, now: number): { perSecond: number; secondsLeft: number } {
  const elapsed = Math.max(1e-3, (now - startedAt) / 1000);
  const perSecond = done / elapsed;
  return { perSecond, secondsLeft: perSecond > 0 ? (total - done) / perSecond : Infinity };
}
