import { imagePreview, measureImages, readImageFolder, type ImagePreview } from '../core/data/images/index';
import { loadClipTokenizerFromFolder } from '../core/models/diffusion/clip-tokenizer';
import { blobSource } from '../core/safetensors/source';
import { decodeWithImageBitmap } from './image-decoder';
import type { PickedFolder } from './image-run';
import type { RunContext } from './training-run';

export interface ImageFolderPreviewRequest {
  readonly folder: PickedFolder;
  /** The diffusers model whose tokenizer counts the captions' tokens. */
  readonly model: PickedFolder;
  readonly resolution: number;
  readonly captionExtension: string;
}

export interface ImageFolderPreview extends ImagePreview {
  /** How the folder was read (which captions won, what was left out), as sentences. */
  readonly notes: readonly string[];
}

/**
 * The Data step's look at an image folder before training, in the worker so that decoding hundreds of photos never
 * blocks the page: each image decoded once (size, duplicate hash), captions counted with the model's CLIP tokenizer,
 * and the warnings a kohya user would want before a run (missing or long captions, tiny or very non-square images,
 * duplicates).
 */
export async function previewImageFolder(request: ImageFolderPreviewRequest, ctx: RunContext): Promise<ImageFolderPreview> {
  const read = await readImageFolder(
    request.folder.files.map(({ path, file }) => ({ path, source: blobSource(file, path) })),
    { folderName: request.folder.name, captionExtension: request.captionExtension },
  );
  const tokenizer = await loadClipTokenizerFromFolder(new Map(request.model.files.map(({ path, file }) => [path, blobSource(file, path)])));
  const infos = await measureImages(read.entries, decodeWithImageBitmap, {
    signal: ctx.signal,
    onProgress: (done, total) => ctx.progress({ phase: 'Reading images', done, total, unit: 'steps' }),
  });
  return { ...imagePreview(read.entries, infos, tokenizer, { resolution: request.resolution }), notes: read.notes };
}
