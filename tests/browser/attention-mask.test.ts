import { expect, test } from 'vitest';
import { useWebGpuPage } from './support/webgpu-suite';
import type { MaskCacheResult } from './pages/attention-mask-checks';

// The stock-tfjs attention (the benchmarks' baseline, and what wasm trains with) keeps its [seq, seq]
// masks between calls instead of rebuilding them: the kept masks must give the rebuilt ones' results,
// and stay bounded and freed, or a long run would hold a mask per shape it ever saw.
const page = useWebGpuPage('/tests/browser/pages/attention-mask-checks.ts');

test('kept causal masks: same results, one tensor per key, at most two, freed when another backend takes over', async () => {
  const r = await page.call<MaskCacheResult>('checkMaskCache');
  for (const e of r.errors) expect(e).toBeLessThan(1e-5);
  // seq 13 full → kept; again → reused; window 5 → a second; full again → reused; seq 9 window 40 →
  // a third key frees the least recently used (window 5); window 5 again → rebuilt, freeing full.
  expect(r.kept).toEqual([1, 1, 2, 2, 2, 2]);
  // The cpu backend keeps none and frees none; wasm's first call frees webgpu's two and keeps its own,
  // and back on webgpu the same the other way.
  expect(r.keptAfterCpu).toBe(2);
  expect(r.keptAfterWasm).toBe(1);
  expect(r.keptAfterWebgpuAgain).toBe(1);
  expect(r.keptAfterRelease).toBe(0);
});

test('the page logged no errors', () => {
  expect(page.errors()).toEqual([]);
});
