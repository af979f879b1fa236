/**
 * Path rules for a picked image folder. Paths are relative to the picked folder and '/'-separated, as the browser
 * gives them (webkitRelativePath without its first component) and as the Node tests build them.
 */

/** kohya's image extensions (train_util.IMAGE_EXTENSIONS without the formats a browser cannot decode). */
export const IMAGE_EXTENSIONS = ['png', 'jpg', 'jpeg', 'webp', 'bmp'] as const;

/** The lower-cased extension without its dot ('' when there is none): `a/b.PNG` → `png`. */
export function extensionOf(path: string): string {
  const name = baseName(path);
  const dot = name.lastIndexOf('.');
  return dot <= 0 ? '' : name.slice(dot + 1).toLowerCase();
}

/** The path without its last extension: `a/img.png` → `a/img`. */
export function stemOf(path: string): string {
  const name = baseName(path);
  const dot = name.lastIndexOf('.');
  return dot <= 0 ? path : path.slice(0, path.length - (name.length - dot));
}

export function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** The folder part: `a/b/c.png` → `a/b`, `c.png` → ''. */
export function dirName(path: string): string {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? '' : path.slice(0, slash);
}

export function isImagePath(path: string): boolean {
  return (IMAGE_EXTENSIONS as readonly string[]).includes(extensionOf(path));
}

/**
 * Files no one means to train on: dot files and folders (`.DS_Store`, `.git/`), macOS's `__MACOSX/` copies in
 * unpacked zips, and the `._img.png` AppleDouble files next to real images, which carry an image extension but
 * hold no image.
 */
export function isHiddenPath(path: string): boolean {
  return path.split('/').some((part) => part.startsWith('.') || part === '__MACOSX');
}

/**
 * Clean a relative path: backslashes (a Windows metadata.csv) become '/', `./` and empty parts go. Returns null for
 * a path that climbs out of the folder (`..`), which cannot name a picked file.
 */
export function normalisePath(path: string): string | null {
  const parts: string[] = [];
  for (const part of path.replace(/\\/g, '/').split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') return null;
    parts.push(part);
  }
  return parts.join('/');
}

export function joinPath(dir: string, path: string): string {
  return dir === '' ? path : `${dir}/${path}`;
}

/** Code-unit order: the same in every browser and in Node, unlike localeCompare. */
export function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
