import type { ImageDecoder } from '../core/data/images/index';

/**
 * The browser's image decoder for the worker: createImageBitmap reads PNG, JPEG, WebP and BMP alike, and an
 * OffscreenCanvas gives the pixels back. Alpha is left straight (not premultiplied) and colours unconverted, so
 * prepareImage composites over white from the file's own values.
 */
export const decodeWithImageBitmap: ImageDecoder = async (bytes) => {
  const bitmap = await createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>]), { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  try {
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext('2d', { willReadFrequently: true });
    if (!context) throw new Error('no 2D canvas in this worker');
    context.drawImage(bitmap, 0, 0);
    const { data } = context.getImageData(0, 0, bitmap.width, bitmap.height);
    return { width: bitmap.width, height: bitmap.height, rgba: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } finally {
    bitmap.close();
  }
};
