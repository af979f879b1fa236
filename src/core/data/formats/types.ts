/**
 * Shapes shared by the dataset format readers (`formats/*.ts`) and `dataset.ts`, which tokenizes what they read.
 * A reader turns bytes into records of text segments; only `dataset.ts` knows about token ids.
 */

/** How a file's bytes are laid out, from its extension. */
export type DatasetFormat = 'text' | 'jsonl' | 'csv' | 'bin';

/** What one record holds, which decides which parts of it count in the loss. */
export type RecordKind = 'text' | 'prompt_completion' | 'alpaca' | 'chat' | 'tokens';

/** A stretch of a record's text; `trained` false = the model reads it but is not taught to write it. */
export interface Segment {
  text: string;
  trained: boolean;
}

/** One training example of a text format, before tokenization. */
export interface DatasetRecord {
  /** Where it came from, for messages and the preview: "line 17", "record 3" (JSON arrays) or a CSV file_name. */
  id: string;
  kind: RecordKind;
  segments: Segment[];
}

/** What a reader hands over after each slice of the file, so progress can follow the bytes. */
export interface RecordBatch {
  records: DatasetRecord[];
  /** Bytes of the file consumed so far. */
  bytesDone: number;
}
