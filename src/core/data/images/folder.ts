import { UserError } from '../../errors';
import type { ByteSource } from '../../safetensors/source';
import { utf8Chunks } from '../formats/utf8';
import { readMetadataCsv } from './metadata-csv';
import { baseName, comparePaths, dirName, extensionOf, IMAGE_EXTENSIONS, isHiddenPath, isImagePath, joinPath, normalisePath, stemOf } from './paths';

/**
 * A picked image folder → training images with captions and repeat counts, read the way kohya's sd-scripts reads
 * a `train_data_dir`:
 *
 * - Repeat folders: a folder directly inside the picked one named `<n>_<name>` (`10_stripes`) repeats each of its
 *   images n times per epoch, and `<name>` is its "class tokens": the caption of its images that have none. Images
 *   anywhere below such a folder belong to it. Images directly in the picked folder, or in folders not named so,
 *   repeat once (kohya skips those; LoRA Lab keeps them, and says so in a note when the folder mixes both).
 * - Captions: a `metadata.csv` (Hugging Face imagefolder: `file_name,text`, names relative to its own folder) or
 *   a caption file beside the image with the same stem (`caption_extension`, `.txt` by default; `.caption`, the
 *   older kohya default, is read too). kohya reads the caption file's first line, trimmed; so does this. When
 *   both give an image a caption, metadata.csv wins, and a note says so.
 * - Every image's `folder` is the name its tags are counted under in kohya's `ss_tag_frequency` metadata: the
 *   folder directly inside the picked one that holds it (kohya's `basename(image_dir)`, e.g. `10_stripes`), or,
 *   for images directly in the picked folder, the picked folder's own name.
 */

export interface ImageFile {
  /** Relative to the picked folder, '/'-separated, without the picked folder's own name. */
  readonly path: string;
  readonly source: ByteSource;
}

export interface ReadImageFolderOptions {
  /** The picked folder's own name: names the images directly inside it (see ImageEntry.folder) and messages. */
  readonly folderName: string;
  /** kohya's `caption_extension`: `.txt` by default. */
  readonly captionExtension?: string;
}

/** Where an image's caption came from. */
export type CaptionOrigin =
  | 'metadata.csv'
  | 'caption file'
  /** No caption anywhere: the repeat folder's name after `<n>_` stands in, as kohya's class tokens. */
  | 'folder name'
  /** No caption and no repeat folder name: the caption is ''. */
  | 'none';

export interface ImageEntry {
  readonly path: string;
  /** What the text encoder sees: trimmed, '' when there is none. */
  readonly caption: string;
  readonly captionOrigin: CaptionOrigin;
  /** Times the image is seen per epoch (≥ 1). */
  readonly repeats: number;
  /** The dataset folder it belongs to: the key of its tags in ss_tag_frequency. */
  readonly folder: string;
  readonly source: ByteSource;
}

export interface ImageFolder {
  /** Sorted by path (code-unit order, the same everywhere). */
  readonly entries: readonly ImageEntry[];
  /** Things the person should know about how the folder was read, as sentences. */
  readonly notes: readonly string[];
}

export const DEFAULT_CAPTION_EXTENSION = '.txt';
/** The caption extensions kohya users have: `.txt` (lora-scripts, kohya_ss) and `.caption` (sd-scripts' default). */
const KNOWN_CAPTION_EXTENSIONS = ['.txt', '.caption'];

/** A kohya repeat folder name: `10_stripes`, `3_sks dog`, `5` (no class tokens). As kohya, n is the part before the first '_'. */
const REPEAT_FOLDER = /^(\d+)(?:_(.*))?$/s;
/** More repeats than anyone sets on purpose: most likely a folder named after a date or a year (`2023_trip`). */
const MANY_REPEATS = 100;

interface DatasetFolder {
  readonly name: string;
  readonly repeats: number;
  /** kohya's class tokens, the caption of images without one; null outside repeat folders. */
  readonly classTokens: string | null;
}

export function parseRepeatFolder(name: string): { repeats: number; classTokens: string } | null {
  const match = REPEAT_FOLDER.exec(name);
  return match ? { repeats: Number(match[1]), classTokens: match[2] ?? '' } : null;
}

export async function readImageFolder(files: readonly ImageFile[], opts: ReadImageFolderOptions): Promise<ImageFolder> {
  const captionExtensions = captionExtensionsFor(opts.captionExtension ?? DEFAULT_CAPTION_EXTENSION);
  const notes: string[] = [];

  const { images, captionFiles, metadataFiles, ignored } = sortFiles(files, captionExtensions);
  if (images.size === 0) {
    throw new UserError(
      opts.folderName,
      `has no images (LoRA Lab reads ${IMAGE_EXTENSIONS.join(', ')}).`,
      'Pick the folder that holds the training images, or the folder above kohya-style repeat folders such as 10_name.',
    );
  }

  const metadata = await readMetadataCaptions(metadataFiles, images, notes);

  const folders = new Map<string, DatasetFolder>();
  const entries: ImageEntry[] = [];
  const usedFolders = new Set<DatasetFolder>();
  const zeroRepeatFolders = new Set<string>();
  let bothLayouts = 0;
  let bothDiffer = 0;
  let multiLine = 0;
  let duplicateCaptionFiles = 0;
  for (const path of [...images.keys()].sort(comparePaths)) {
    const folder = datasetFolderOf(path, opts.folderName, folders);
    if (folder.repeats === 0) {
      zeroRepeatFolders.add(folder.name);
      continue;
    }
    const captionSources = captionExtensions.map((ext) => captionFiles.get(`${stemOf(path)}${ext}`)).filter((s) => s !== undefined);
    if (captionSources.length > 1) duplicateCaptionFiles++;
    const fromFile = captionSources[0] === undefined ? null : await readCaptionFile(captionSources[0]);
    if (fromFile?.moreLines) multiLine++;
    const fromMetadata = metadata.get(path);

    let caption: string;
    let captionOrigin: CaptionOrigin;
    if (fromMetadata !== undefined) {
      [caption, captionOrigin] = [fromMetadata, 'metadata.csv'];
      if (fromFile !== null) {
        bothLayouts++;
        if (fromFile.caption !== fromMetadata) bothDiffer++;
      }
    } else if (fromFile !== null) [caption, captionOrigin] = [fromFile.caption, 'caption file'];
    else if (folder.classTokens !== null) [caption, captionOrigin] = [folder.classTokens.trim(), 'folder name'];
    else [caption, captionOrigin] = ['', 'none'];
    usedFolders.add(folder);
    entries.push({ path, caption, captionOrigin, repeats: folder.repeats, folder: folder.name, source: images.get(path)! });
  }

  const captionExt = captionExtensions[0]!;
  if (bothLayouts > 0) {
    const differ = bothDiffer === 0 ? 'they agree' : `they differ for ${bothDiffer} of them`;
    notes.push(`metadata.csv and ${captionExt} caption files both caption ${count(bothLayouts, 'image')}: metadata.csv wins (${differ}).`);
  }
  if (duplicateCaptionFiles > 0) {
    notes.push(`${count(duplicateCaptionFiles, 'image')} ${have(duplicateCaptionFiles)} both ${captionExtensions.join(' and ')} caption files: the ${captionExt} file is used.`);
  }
  if (multiLine > 0) notes.push(`${count(multiLine, 'caption file')} ${have(multiLine)} more than one line: only the first line is used, as kohya does.`);
  for (const name of [...zeroRepeatFolders].sort(comparePaths)) notes.push(`The folder ${name} repeats its images 0 times, so they are left out.`);
  for (const folder of usedFolders) {
    if (folder.repeats > MANY_REPEATS) {
      notes.push(
        `The folder ${folder.name} repeats its images ${folder.repeats} times per epoch, because kohya reads the number before the first "_" as the repeat count. Rename the folder if that is not meant (e.g. 10_${folder.classTokens}).`,
      );
    }
  }
  if (entries.length === 0) {
    throw new UserError(opts.folderName, 'has images only in folders that repeat them 0 times.', 'Rename the folders to 1_name or more, e.g. 10_name.');
  }

  const repeating = [...usedFolders].filter((f) => f.classTokens !== null);
  const plain = [...usedFolders].filter((f) => f.classTokens === null);
  if (repeating.length > 0 && plain.length > 0) {
    notes.push(
      `Images outside kohya repeat folders (${plain.map((f) => f.name).join(', ')}) are trained once per epoch; kohya's sd-scripts would skip them.`,
    );
  }
  if (repeating.length === 0 && parseRepeatFolder(opts.folderName) !== null) {
    notes.push(
      `The picked folder ${opts.folderName} is named like a kohya repeat folder, but repeats come from folders inside the picked one, so its images are trained once per epoch. Pick the folder above it to repeat them.`,
    );
  }
  const byFolderName = entries.filter((e) => e.captionOrigin === 'folder name');
  if (byFolderName.length > 0) {
    notes.push(
      `Images without a caption take their repeat folder's name as the caption, as in kohya (${count(byFolderName.length, 'image')}, e.g. ${byFolderName[0]!.path}: "${byFolderName[0]!.caption}").`,
    );
  }
  const imageStems = new Set([...images.keys()].map(stemOf));
  const orphanCaptions = [...captionFiles.keys()].filter((key) => !imageStems.has(stemOf(key)));
  if (orphanCaptions.length > 0) notes.push(`Caption files without an image of the same name are not used (${count(orphanCaptions.length, 'file')}, e.g. ${orphanCaptions.sort(comparePaths)[0]}).`);
  if (ignored.length > 0) {
    notes.push(`${count(ignored.length, 'file')} that ${ignored.length === 1 ? 'is' : 'are'} neither images nor captions ${ignored.length === 1 ? 'is' : 'are'} ignored (e.g. ${ignored.sort(comparePaths)[0]}).`);
  }
  return { entries, notes };
}

interface SortedFiles {
  readonly images: Map<string, ByteSource>;
  /** By `${stem}${extension}`, the extension lower-cased with its dot. */
  readonly captionFiles: Map<string, ByteSource>;
  readonly metadataFiles: { path: string; source: ByteSource }[];
  /** Files of no known kind (hidden files are left out silently). */
  readonly ignored: string[];
}

function sortFiles(files: readonly ImageFile[], captionExtensions: readonly string[]): SortedFiles {
  const sorted: SortedFiles = { images: new Map(), captionFiles: new Map(), metadataFiles: [], ignored: [] };
  for (const file of files) {
    const path = normalisePath(file.path);
    if (path === null || path === '' || isHiddenPath(path)) continue;
    const extension = `.${extensionOf(path)}`;
    if (isImagePath(path)) sorted.images.set(path, file.source);
    else if (baseName(path).toLowerCase() === 'metadata.csv') sorted.metadataFiles.push({ path, source: file.source });
    else if (captionExtensions.includes(extension)) sorted.captionFiles.set(`${stemOf(path)}${extension}`, file.source);
    else sorted.ignored.push(path);
  }
  return sorted;
}

function captionExtensionsFor(preferred: string): string[] {
  const first = (preferred.startsWith('.') ? preferred : `.${preferred}`).toLowerCase();
  if (first === '.' || isImagePath(`x${first}`) || first === '.csv') {
    throw new UserError('caption_extension', `"${preferred}" cannot be a caption file extension.`, 'Use .txt or .caption.');
  }
  return [first, ...KNOWN_CAPTION_EXTENSIONS.filter((ext) => ext !== first)];
}

function datasetFolderOf(path: string, rootName: string, folders: Map<string, DatasetFolder>): DatasetFolder {
  const slash = path.indexOf('/');
  const name = slash < 0 ? rootName : path.slice(0, slash);
  // The picked folder's own name never sets repeats: kohya reads them from the folders inside train_data_dir.
  // Its key cannot clash with a subfolder's, which never holds a NUL.
  const key = slash < 0 ? '\0' : name;
  let folder = folders.get(key);
  if (folder === undefined) {
    const repeat = slash < 0 ? null : parseRepeatFolder(name);
    folder = { name, repeats: repeat?.repeats ?? 1, classTokens: repeat?.classTokens ?? null };
    folders.set(key, folder);
  }
  return folder;
}

/** Captions by image path from every metadata.csv (the shallowest first, so a deeper one may not override it). */
async function readMetadataCaptions(files: { path: string; source: ByteSource }[], images: Map<string, ByteSource>, notes: string[]): Promise<Map<string, string>> {
  const captions = new Map<string, string>();
  let unknown = 0;
  let firstUnknown = '';
  let repeated = 0;
  const ordered = [...files].sort((a, b) => a.path.split('/').length - b.path.split('/').length || comparePaths(a.path, b.path));
  for (const file of ordered) {
    for (const row of await readMetadataCsv(file.source, file.path)) {
      const path = joinPath(dirName(file.path), row.fileName);
      if (!images.has(path)) {
        if (unknown++ === 0) firstUnknown = `${file.path} line ${row.line}: ${row.fileName}`;
      } else if (captions.has(path)) repeated++;
      else captions.set(path, row.caption);
    }
  }
  if (unknown > 0) notes.push(`metadata.csv names ${count(unknown, 'image')} that the folder does not have (e.g. ${firstUnknown}); those rows are skipped.`);
  if (repeated > 0) notes.push(`metadata.csv names ${count(repeated, 'image')} more than once: the first row is used.`);
  return captions;
}

async function readCaptionFile(source: ByteSource): Promise<{ caption: string; moreLines: boolean }> {
  let text = '';
  for await (const chunk of utf8Chunks(source)) text += chunk.text;
  const lines = text.split(/\r?\n/);
  return { caption: lines[0]!.trim(), moreLines: lines.slice(1).some((line) => line.trim() !== '') };
}

function count(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

function have(n: number): string {
  return n === 1 ? 'has' : 'have';
}
