/** Image folders → training images for Stable Diffusion LoRAs (kohya sd-scripts' dataset layout). DOM-free. */
export {
  type CaptionOrigin,
  type ImageEntry,
  type ImageFile,
  type ImageFolder,
  type ReadImageFolderOptions,
  DEFAULT_CAPTION_EXTENSION,
  parseRepeatFolder,
  readImageFolder,
} from './folder';
export { type DecodedImage, type ImageDecoder, type ImageInfo, decodeImageEntry, imageInfo, measureImages, pixelHash } from './decode';
export { type PrepareImageOptions, prepareImage } from './prepare';
export {
  type ImageDatasetWarning,
  type ImagePreview,
  type ImagePreviewRow,
  type ImageWarning,
  type ImageWarningKind,
  imagePreview,
  MAX_ASPECT,
  TINY_FRACTION,
} from './preview';
export { type TagFrequency, tagFrequency } from './tag-frequency';
export { IMAGE_EXTENSIONS } from './paths';
