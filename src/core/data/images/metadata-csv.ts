import { UserError } from '../../errors';
import type { ByteSource } from '../../safetensors/source';
import { CsvParser } from '../formats/csv';
import { utf8Chunks } from '../formats/utf8';
import { normalisePath } from './paths';

/**
 * A Hugging Face imagefolder `metadata.csv`: a header with `file_name` and a caption column (`text`, as the
 * diffusers training scripts write it, or `caption`), one row per image. `file_name` is relative to the folder
 * that holds the metadata.csv. The text is the caption as it stands (trimmed), line breaks included, as the
 * datasets library reads it.
 */

export interface MetadataCaption {
  /** The image's path relative to the metadata.csv's folder, cleaned ('/'-separated, no `./`). */
  readonly fileName: string;
  readonly caption: string;
  /** Line the row starts on, for messages. */
  readonly line: number;
}

const CAPTION_COLUMNS = ['text', 'caption'] as const;

export async function readMetadataCsv(source: ByteSource, file: string): Promise<MetadataCaption[]> {
  const parser = new CsvParser(',', file);
  const rows: { fields: string[]; line: number }[] = [];
  for await (const chunk of utf8Chunks(source)) rows.push(...parser.push(chunk.text));
  rows.push(...parser.end());
  const nonBlank = rows.filter((row) => !(row.fields.length === 1 && row.fields[0] === ''));
  const [header, ...body] = nonBlank;
  if (header === undefined) return [];

  const names = header.fields.map((f) => f.trim().toLowerCase());
  const fileColumn = names.indexOf('file_name');
  const captionName = CAPTION_COLUMNS.find((name) => names.includes(name));
  if (fileColumn < 0 || captionName === undefined) {
    throw new UserError(
      file,
      `needs a "file_name" column and a "text" column, but its header has ${header.fields.map((f) => `"${f.trim()}"`).join(', ')}.`,
      'Write the header as file_name,text and one row per image, or remove metadata.csv and put a .txt caption file beside each image.',
    );
  }
  const captionColumn = names.indexOf(captionName);

  return body.map((row) => {
    if (row.fields.length !== header.fields.length) {
      throw new UserError(
        file,
        `line ${row.line} has ${row.fields.length} fields, but the header has ${header.fields.length}.`,
        'Put captions that contain commas or line breaks in "double quotes", and write a " inside them as "".',
      );
    }
    const fileName = normalisePath(row.fields[fileColumn]!.trim());
    if (fileName === null || fileName === '') {
      throw new UserError(file, `line ${row.line} names no image inside the folder (file_name is "${row.fields[fileColumn]}").`, 'Give each row the image file name relative to the folder that holds metadata.csv.');
    }
    return { fileName, caption: row.fields[captionColumn]!.trim(), line: row.line };
  });
}
