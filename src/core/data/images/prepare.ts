import type { DecodedImage } from './decode';

/**
 * A decoded image → the square RGB bytes the VAE encodes (`pixelsFromBytes` maps them to [-1, 1]), the way kohya
 * prepares an image without buckets: scale so the short side is `resolution`, cut the centre square, flip it
 * when asked.
 *
 * - Alpha is composited on white first. What a file stores under transparent pixels is arbitrary (often black,
 *   and a browser canvas, which keeps premultiplied colour, returns 0,0,0 there whatever the file says), so
 *   dropping alpha would train on colours nobody sees and that differ between decoders; on white, the picture
 *   is what an image viewer shows, and it is the same whichever decoder read it. Compositing before resampling
 *   also keeps the hidden colours from bleeding into visible edges.
 * - Shrinking averages areas (OpenCV's INTER_AREA, which kohya uses): every source pixel counts by how much of
 *   the output pixel it covers, so fine detail (stripes, text, noise) averages out instead of aliasing as it does
 *   when only a few source pixels are sampled. Enlarging is bilinear (pixel centres aligned, edges clamped):
 *   area averaging would make each source pixel a flat block, and a wider kernel (Lanczos) would ring around the
 *   sharp edges small images tend to have.
 * - Sizes and the crop follow resize-then-crop: the long side becomes round(long × resolution / short) pixels
 *   and the crop starts floor((that − resolution) / 2) pixels in; each axis is resampled for the output pixels
 *   only, so a large photo never needs a full-size float copy.
 *
 * Pure arithmetic on numbers in a fixed order: the same bytes in every browser and in Node.
 */

export interface PrepareImageOptions {
  /** Side of the square output in pixels (512 for SD 1.x). */
  readonly resolution: number;
  /** Mirror left–right (kohya's flip_aug), after the crop as kohya does. */
  readonly flip: boolean;
}

/** [resolution, resolution, 3] RGB bytes, rows top to bottom (HWC). */
export function prepareImage(image: DecodedImage, opts: PrepareImageOptions): Uint8Array {
  const { width, height, rgba } = image;
  const res = opts.resolution;
  if (!Number.isSafeInteger(res) || res < 1) throw new RangeError(`prepareImage: resolution must be a positive whole number, got ${res}`);
  if (rgba.length !== width * height * 4) throw new RangeError(`prepareImage: ${rgba.length} bytes for ${width}×${height} RGBA`);

  const short = Math.min(width, height);
  const scaledWidth = width === short ? res : Math.max(res, Math.round((width * res) / short));
  const scaledHeight = height === short ? res : Math.max(res, Math.round((height * res) / short));
  const columns = axisTaps(width, scaledWidth, Math.floor((scaledWidth - res) / 2), res);
  const rows = axisTaps(height, scaledHeight, Math.floor((scaledHeight - res) / 2), res);

  // Source rows the output needs, each resampled across to `res` columns of composited RGB.
  const firstRow = rows.first;
  const rowCount = rows.last - rows.first + 1;
  const across = new Float64Array(rowCount * res * 3);
  for (let r = 0; r < rowCount; r++) {
    const src = (firstRow + r) * width * 4;
    for (let x = 0; x < res; x++) {
      let red = 0;
      let green = 0;
      let blue = 0;
      for (let t = columns.start[x]!; t < columns.start[x + 1]!; t++) {
        const i = src + columns.index[t]! * 4;
        const w = columns.weight[t]!;
        const alpha = rgba[i + 3]!;
        // On white: c·a/255 + 255·(1 − a/255), written so that a = 255 gives c exactly.
        const white = 255 - alpha;
        red += w * ((rgba[i]! * alpha + 255 * white) / 255);
        green += w * ((rgba[i + 1]! * alpha + 255 * white) / 255);
        blue += w * ((rgba[i + 2]! * alpha + 255 * white) / 255);
      }
      const o = (r * res + x) * 3;
      across[o] = red;
      across[o + 1] = green;
      across[o + 2] = blue;
    }
  }

  const out = new Uint8Array(res * res * 3);
  for (let y = 0; y < res; y++) {
    for (let x = 0; x < res; x++) {
      const target = (y * res + (opts.flip ? res - 1 - x : x)) * 3;
      for (let c = 0; c < 3; c++) {
        let v = 0;
        for (let t = rows.start[y]!; t < rows.start[y + 1]!; t++) v += rows.weight[t]! * across[((rows.index[t]! - firstRow) * res + x) * 3 + c]!;
        out[target + c] = Math.min(255, Math.max(0, Math.round(v)));
      }
    }
  }
  return out;
}

/**
 * One axis of the resampling as sparse weights: output pixel i (of `count`, starting `offset` pixels into the
 * `scaled`-long resized axis) = Σ weight[t] · source[index[t]] for t in [start[i], start[i+1]).
 */
interface AxisTaps {
  readonly start: Int32Array;
  readonly index: Int32Array;
  readonly weight: Float64Array;
  /** The lowest and highest source index used. */
  readonly first: number;
  readonly last: number;
}

function axisTaps(size: number, scaled: number, offset: number, count: number): AxisTaps {
  const start = new Int32Array(count + 1);
  const index: number[] = [];
  const weight: number[] = [];
  const step = size / scaled; // source pixels per resized pixel
  for (let i = 0; i < count; i++) {
    start[i] = index.length;
    const o = i + offset;
    if (scaled <= size) {
      // Area: resized pixel o covers source [o·step, (o+1)·step); weight each source pixel by its overlap.
      const from = o * step;
      const to = (o + 1) * step;
      for (let s = Math.floor(from); s < to && s < size; s++) {
        const overlap = Math.min(to, s + 1) - Math.max(from, s);
        if (overlap > 0) {
          index.push(s);
          weight.push(overlap / step);
        }
      }
    } else {
      // Bilinear: the centre of resized pixel o sits at source coordinate (o + ½)·step − ½, clamped to the edge pixels.
      const centre = Math.min(size - 1, Math.max(0, (o + 0.5) * step - 0.5));
      const left = Math.floor(centre);
      const frac = centre - left;
      index.push(left);
      weight.push(1 - frac);
      if (frac > 0) {
        index.push(left + 1);
        weight.push(frac);
      }
    }
  }
  start[count] = index.length;
  // Output pixels walk the axis left to right, so the taps' source indices never decrease.
  return { start, index: Int32Array.from(index), weight: Float64Array.from(weight), first: index[0]!, last: index[index.length - 1]! };
}
