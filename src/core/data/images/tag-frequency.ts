import type { ImageEntry } from './folder';

/**
 * Tag counts per dataset folder as kohya records them in `ss_tag_frequency`: each caption split on ',', tags
 * trimmed and lower-cased, empty ones dropped, each image counted once whatever its repeats (a tag written twice
 * in one caption counts twice, as in kohya). Keyed by ImageEntry.folder (`10_stripes`, or the picked folder's
 * name for images directly inside it); folders in sorted order, tags in the order first seen.
 *
 * kohya counts the captions it trains on, so an image that took its folder's name as caption counts that name.
 */
export type TagFrequency = Record<string, Record<string, number>>;

export function tagFrequency(entries: readonly Pick<ImageEntry, 'folder' | 'caption'>[]): TagFrequency {
  const byFolder = new Map<string, Map<string, number>>();
  for (const { folder, caption } of entries) {
    let counts = byFolder.get(folder);
    if (counts === undefined) byFolder.set(folder, (counts = new Map()));
    for (const part of caption.split(',')) {
      const tag = part.trim().toLowerCase();
      if (tag !== '') counts.set(tag, (counts.get(tag) ?? 0) + 1);
    }
  }
  // Object.fromEntries defines own properties, so a tag such as "__proto__" stays a plain key.
  const folders = [...byFolder.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return Object.fromEntries(folders.map((folder) => [folder, Object.fromEntries(byFolder.get(folder)!)]));
}
