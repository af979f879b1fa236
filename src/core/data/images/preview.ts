import type { ClipTokenizer } from '../../models/diffusion/clip-tokenizer';
import type { ImageInfo } from './decode';
import type { CaptionOrigin, ImageEntry } from './folder';
import { tagFrequency, type TagFrequency } from './tag-frequency';

/** The Data panel's table of an image folder: one row per image, with what may go wrong in training it. */

/** An image whose short side is under resolution / 2 is enlarged more than 2× and trains blurry. */
export const TINY_FRACTION = 0.5;
/** Beyond this long:short ratio the centre crop keeps under half of the image. */
export const MAX_ASPECT = 2;

export type ImageWarning =
  | { readonly kind: 'missing-caption'; readonly message: string }
  | { readonly kind: 'empty-caption'; readonly message: string }
  | { readonly kind: 'long-caption'; readonly tokens: number; readonly limit: number; readonly message: string }
  | { readonly kind: 'tiny'; readonly shortSide: number; readonly resolution: number; readonly message: string }
  | { readonly kind: 'non-square'; readonly aspect: number; readonly message: string }
  | { readonly kind: 'duplicate'; readonly of: string; readonly message: string };

export type ImageWarningKind = ImageWarning['kind'];

export interface ImagePreviewRow {
  readonly path: string;
  readonly caption: string;
  readonly captionOrigin: CaptionOrigin;
  /** CLIP tokens of the caption, without start/end tokens and before the cut at maxPromptTokens. */
  readonly tokenCount: number;
  readonly width: number;
  readonly height: number;
  readonly repeats: number;
  readonly folder: string;
  readonly warnings: readonly ImageWarning[];
}

/** One kind of problem over the whole folder, with the images that have it. */
export interface ImageDatasetWarning {
  readonly kind: ImageWarningKind;
  readonly paths: readonly string[];
  readonly message: string;
}

export interface ImagePreview {
  readonly rows: readonly ImagePreviewRow[];
  readonly warnings: readonly ImageDatasetWarning[];
  /** Images seen per epoch: the sum of the repeats. */
  readonly imagesPerEpoch: number;
  readonly tagFrequency: TagFrequency;
}

export function imagePreview(
  entries: readonly ImageEntry[],
  infos: ReadonlyMap<string, ImageInfo>,
  tokenizer: Pick<ClipTokenizer, 'encode' | 'maxPromptTokens'>,
  opts: { readonly resolution: number },
): ImagePreview {
  const firstWithPixels = new Map<string, string>();
  const rows = entries.map((entry): ImagePreviewRow => {
    const info = infos.get(entry.path);
    if (info === undefined) throw new Error(`imagePreview: ${entry.path} was not measured`);
    const tokenCount = tokenizer.encode(entry.caption).length;
    const warnings: ImageWarning[] = [];
    const captionWarning = captionWarningOf(entry);
    if (captionWarning) warnings.push(captionWarning);
    if (tokenCount > tokenizer.maxPromptTokens) {
      warnings.push({
        kind: 'long-caption',
        tokens: tokenCount,
        limit: tokenizer.maxPromptTokens,
        message: `The caption is ${tokenCount} tokens long; the text encoder sees only the first ${tokenizer.maxPromptTokens}, so the rest is cut.`,
      });
    }
    const shortSide = Math.min(info.width, info.height);
    if (shortSide < opts.resolution * TINY_FRACTION) {
      warnings.push({
        kind: 'tiny',
        shortSide,
        resolution: opts.resolution,
        message: `At ${info.width}×${info.height} it is enlarged ${(opts.resolution / shortSide).toFixed(1)}× to ${opts.resolution} pixels, so it trains blurry.`,
      });
    }
    const aspect = Math.max(info.width, info.height) / shortSide;
    if (aspect > MAX_ASPECT) {
      warnings.push({
        kind: 'non-square',
        aspect,
        message: `At ${info.width}×${info.height} the square centre crop keeps only ${Math.round(100 / aspect)}% of it.`,
      });
    }
    const first = firstWithPixels.get(info.pixelHash);
    if (first === undefined) firstWithPixels.set(info.pixelHash, entry.path);
    else warnings.push({ kind: 'duplicate', of: first, message: `It has the same pixels as ${first}, so that picture is trained more often than the others.` });
    return { ...pick(entry), tokenCount, width: info.width, height: info.height, warnings };
  });
  return {
    rows,
    warnings: datasetWarnings(rows, tokenizer.maxPromptTokens, opts.resolution),
    imagesPerEpoch: entries.reduce((n, e) => n + e.repeats, 0),
    tagFrequency: tagFrequency(entries),
  };
}

function pick(entry: ImageEntry) {
  const { path, caption, captionOrigin, repeats, folder } = entry;
  return { path, caption, captionOrigin, repeats, folder };
}

function captionWarningOf(entry: ImageEntry): ImageWarning | null {
  switch (entry.captionOrigin) {
    case 'none':
      return { kind: 'missing-caption', message: 'It has no caption, so it trains with an empty prompt.' };
    case 'folder name':
      return { kind: 'missing-caption', message: `It has no caption, so it trains with its folder's name as the prompt: "${entry.caption}".` };
    case 'metadata.csv':
    case 'caption file':
      return entry.caption === '' ? { kind: 'empty-caption', message: `Its caption (from ${entry.captionOrigin}) is empty, so it trains with an empty prompt.` } : null;
  }
}

const DATASET_MESSAGES: Record<ImageWarningKind, (n: string, limit: number, resolution: number) => string> = {
  'missing-caption': (n) => `${n} no caption.`,
  'empty-caption': (n) => `${n} an empty caption.`,
  'long-caption': (n, limit) => `${n} a caption over ${limit} tokens, which is cut.`,
  tiny: (n, _, resolution) => `${n} a short side under ${resolution * TINY_FRACTION} pixels and will train blurry.`,
  'non-square': (n) => `${n} a side over ${MAX_ASPECT}× the other, so the centre crop loses much of them.`,
  duplicate: (n) => `${n} the same pixels as an earlier image.`,
};

function datasetWarnings(rows: readonly ImagePreviewRow[], limit: number, resolution: number): ImageDatasetWarning[] {
  const warnings: ImageDatasetWarning[] = [];
  for (const kind of Object.keys(DATASET_MESSAGES) as ImageWarningKind[]) {
    const paths = rows.filter((row) => row.warnings.some((w) => w.kind === kind)).map((row) => row.path);
    if (paths.length === 0) continue;
    const n = paths.length === 1 ? '1 image has' : `${paths.length} images have`;
    warnings.push({ kind, paths, message: DATASET_MESSAGES[kind](n, limit, resolution) });
  }
  return warnings;
}
