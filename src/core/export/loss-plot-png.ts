import { encodePng } from '../image/png';
import type { MetricsCsvRow } from './run-files';

/**
 * The loss curves of a run as a PNG, for the model card: training loss as a line, evaluation loss as a line with a
 * dot at each evaluation, the same two curves the Train panel charts.
 *
 * Drawn by a tiny rasterizer into an RGB buffer and encoded as a PNG (image/png.ts), not on a canvas: the same
 * bytes then come out of the worker, the headless runner and Node tests (no OffscreenCanvas in Node, and no font
 * or anti-aliasing differences between browsers), and a test can look at the pixels it asserts on. The text is a
 * 5×7 bitmap font holding only the characters the plot writes.
 */

export interface LossPoint {
  readonly step: number;
  readonly loss: number;
}

export interface LossCurves {
  readonly train: readonly LossPoint[];
  readonly eval: readonly LossPoint[];
}

/** The finite losses of metrics.csv's rows, by step: training rows carry `loss`, evaluation rows `evalLoss`. */
export function lossCurvesOf(rows: readonly MetricsCsvRow[]): LossCurves {
  const sorted = [...rows].sort((a, b) => a.step - b.step);
  const pick = (value: (r: MetricsCsvRow) => number | null) =>
    sorted.flatMap((r) => {
      const loss = value(r);
      return loss !== null && Number.isFinite(loss) ? [{ step: r.step, loss }] : [];
    });
  return { train: pick((r) => r.loss), eval: pick((r) => r.evalLoss) };
}

type Rgb = readonly [number, number, number];

/** Where things are drawn, exported so tests can look at the plot area. */
export const LOSS_PLOT = {
  width: 640,
  height: 360,
  /** The plot area: curves are drawn inside it, axes on its left and bottom edges. */
  area: { left: 72, top: 32, right: 624, bottom: 320 },
  background: [255, 255, 255] as Rgb,
  ink: [64, 64, 64] as Rgb,
  grid: [232, 232, 232] as Rgb,
  train: [31, 119, 180] as Rgb,
  eval: [255, 127, 14] as Rgb,
} as const;

/** The PNG of the loss curves (640×360, 8-bit RGB). A run with no logged loss gets the empty axes. */
export function lossPlotPng(curves: LossCurves): Uint8Array {
  const { width, height, area } = LOSS_PLOT;
  const r = new Raster(width, height, LOSS_PLOT.background);
  const all = [...curves.train, ...curves.eval];
  const steps = all.map((p) => p.step);
  const losses = all.map((p) => p.loss);
  // Steps: the axis ends at the last step, ticks on whole steps. Losses: padded, ending on ticks.
  const x = axisRange(steps.length ? Math.min(0, ...steps) : 0, Math.max(1, ...steps), { pad: false, snap: false, minStep: 1 });
  const y = axisRange(losses.length ? Math.min(...losses) : 0, losses.length ? Math.max(...losses) : 1, { pad: true, snap: true, minStep: 0 });
  const px = (step: number) => area.left + ((step - x.min) / (x.max - x.min)) * (area.right - area.left);
  const py = (loss: number) => area.bottom - ((loss - y.min) / (y.max - y.min)) * (area.bottom - area.top);

  for (const t of y.ticks) {
    const yy = Math.round(py(t));
    r.fillRect(area.left, yy, area.right - area.left + 1, 1, LOSS_PLOT.grid);
    const label = tickLabel(t, y.step);
    r.text(area.left - 8 - textWidth(label), yy - 3, label, LOSS_PLOT.ink);
  }
  for (const t of x.ticks) {
    const xx = Math.round(px(t));
    r.fillRect(xx, area.top, 1, area.bottom - area.top, LOSS_PLOT.grid);
    r.fillRect(xx, area.bottom, 1, 5, LOSS_PLOT.ink);
    const label = tickLabel(t, x.step);
    r.text(xx - Math.floor(textWidth(label) / 2), area.bottom + 9, label, LOSS_PLOT.ink);
  }
  r.fillRect(area.left, area.top, 1, area.bottom - area.top + 1, LOSS_PLOT.ink);
  r.fillRect(area.left, area.bottom, area.right - area.left + 1, 1, LOSS_PLOT.ink);
  r.text(Math.round((area.left + area.right - textWidth('step')) / 2), area.bottom + 24, 'step', LOSS_PLOT.ink);

  const draw = (points: readonly LossPoint[], color: Rgb, dots: boolean) => {
    for (let i = 1; i < points.length; i++) r.line(px(points[i - 1]!.step), py(points[i - 1]!.loss), px(points[i]!.step), py(points[i]!.loss), color);
    if (dots || points.length === 1) for (const p of points) r.disc(px(p.step), py(p.loss), 3, color);
  };
  draw(curves.train, LOSS_PLOT.train, false);
  draw(curves.eval, LOSS_PLOT.eval, true);

  // Legend above the plot area, one entry per curve that has points.
  let lx = area.left;
  for (const [label, points, color] of [
    ['train loss', curves.train, LOSS_PLOT.train],
    ['eval loss', curves.eval, LOSS_PLOT.eval],
  ] as const) {
    if (points.length === 0) continue;
    r.fillRect(lx, 14, 18, 2, color);
    r.text(lx + 24, 11, label, LOSS_PLOT.ink);
    lx += 24 + textWidth(label) + 24;
  }
  return encodePng(width, height, r.pixels);
}

// ─── Axes ──────────────────────────────────────────────────────────────────────────────────────────

interface Axis {
  readonly min: number;
  readonly max: number;
  readonly step: number;
  readonly ticks: readonly number[];
}

/**
 * Ticks about five, 1, 2 or 5 × 10^k apart (at least `minStep`). `snap`: the range is widened to start and end on
 * ticks; otherwise it is [lo, hi] and the ticks are the multiples inside it.
 */
function axisRange(lo: number, hi: number, opts: { pad: boolean; snap: boolean; minStep: number }): Axis {
  if (hi - lo <= 0) {
    const half = Math.abs(lo) * 0.1 || 0.5;
    lo -= half;
    hi += half;
  } else if (opts.pad) {
    const margin = (hi - lo) * 0.05;
    lo -= margin;
    hi += margin;
  }
  const raw = (hi - lo) / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = Math.max(opts.minStep, [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude);
  const min = opts.snap ? Math.floor(lo / step) * step : lo;
  const max = opts.snap ? Math.ceil(hi / step) * step : hi;
  const ticks: number[] = [];
  for (let t = Math.ceil(min / step - 1e-9) * step; t <= max + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return { min, max, step, ticks };
}

/** As many decimals as the tick spacing needs, and no float noise (0.30000000000000004). */
function tickLabel(value: number, step: number): string {
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  if (decimals > 6) return value.toExponential(1);
  return value.toFixed(decimals);
}

// ─── Raster ────────────────────────────────────────────────────────────────────────────────────────

class Raster {
  readonly pixels: Uint8Array;

  constructor(
    readonly width: number,
    readonly height: number,
    background: Rgb,
  ) {
    this.pixels = new Uint8Array(width * height * 3);
    for (let i = 0; i < this.pixels.length; i += 3) this.pixels.set(background, i);
  }

  set(x: number, y: number, color: Rgb): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    this.pixels.set(color, (y * this.width + x) * 3);
  }

  fillRect(x: number, y: number, w: number, h: number, color: Rgb): void {
    for (let j = 0; j < h; j++) for (let i = 0; i < w; i++) this.set(x + i, y + j, color);
  }

  /** A 2-pixel-wide line (Bresenham, each point a 2×2 square). */
  line(x0: number, y0: number, x1: number, y1: number, color: Rgb): void {
    let [x, y] = [Math.round(x0), Math.round(y0)];
    const [xe, ye] = [Math.round(x1), Math.round(y1)];
    const dx = Math.abs(xe - x);
    const dy = -Math.abs(ye - y);
    const sx = x < xe ? 1 : -1;
    const sy = y < ye ? 1 : -1;
    let err = dx + dy;
    for (;;) {
      this.fillRect(x, y, 2, 2, color);
      if (x === xe && y === ye) return;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y += sy;
      }
    }
  }

  disc(cx: number, cy: number, radius: number, color: Rgb): void {
    const [x0, y0] = [Math.round(cx), Math.round(cy)];
    for (let j = -radius; j <= radius; j++) for (let i = -radius; i <= radius; i++) if (i * i + j * j <= radius * radius + 1) this.set(x0 + i, y0 + j, color);
  }

  /** Text in the 5×7 font, top-left at (x, y); characters the font lacks are left blank. */
  text(x: number, y: number, s: string, color: Rgb): void {
    for (const [k, ch] of [...s].entries()) {
      const glyph = FONT[ch];
      if (!glyph) continue;
      glyph.forEach((row, j) => {
        for (let i = 0; i < 5; i++) if (row[i] === '#') this.set(x + k * GLYPH_ADVANCE + i, y + j, color);
      });
    }
  }
}

const GLYPH_ADVANCE = 6;

function textWidth(s: string): number {
  return s.length * GLYPH_ADVANCE - 1;
}

/** 5×7 glyphs, rows top to bottom: the digits and the few letters the plot writes. */
const FONT: Readonly<Record<string, readonly string[]>> = {
  '0': ['.###.', '#...#', '#..##', '#.#.#', '##..#', '#...#', '.###.'],
  '1': ['..#..', '.##..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  '2': ['.###.', '#...#', '....#', '...#.', '..#..', '.#...', '#####'],
  '3': ['#####', '...#.', '..#..', '...#.', '....#', '#...#', '.###.'],
  '4': ['...#.', '..##.', '.#.#.', '#..#.', '#####', '...#.', '...#.'],
  '5': ['#####', '#....', '####.', '....#', '....#', '#...#', '.###.'],
  '6': ['..##.', '.#...', '#....', '####.', '#...#', '#...#', '.###.'],
  '7': ['#####', '....#', '...#.', '..#..', '.#...', '.#...', '.#...'],
  '8': ['.###.', '#...#', '#...#', '.###.', '#...#', '#...#', '.###.'],
  '9': ['.###.', '#...#', '#...#', '.####', '....#', '...#.', '.##..'],
  '.': ['.....', '.....', '.....', '.....', '.....', '.##..', '.##..'],
  '-': ['.....', '.....', '.....', '.###.', '.....', '.....', '.....'],
  '+': ['.....', '..#..', '..#..', '#####', '..#..', '..#..', '.....'],
  a: ['.....', '.....', '.###.', '....#', '.####', '#...#', '.####'],
  e: ['.....', '.....', '.###.', '#...#', '#####', '#....', '.###.'],
  i: ['..#..', '.....', '.##..', '..#..', '..#..', '..#..', '.###.'],
  l: ['.##..', '..#..', '..#..', '..#..', '..#..', '..#..', '.###.'],
  n: ['.....', '.....', '#.##.', '##..#', '#...#', '#...#', '#...#'],
  o: ['.....', '.....', '.###.', '#...#', '#...#', '#...#', '.###.'],
  p: ['.....', '.....', '####.', '#...#', '####.', '#....', '#....'],
  r: ['.....', '.....', '#.##.', '##..#', '#....', '#....', '#....'],
  s: ['.....', '.....', '.####', '#....', '.###.', '....#', '####.'],
  t: ['.#...', '.#...', '###..', '.#...', '.#...', '.#..#', '..##.'],
  v: ['.....', '.....', '#...#', '#...#', '#...#', '.#.#.', '..#..'],
};
