import { UserError } from '../../errors';
import type { ByteSource } from '../../safetensors/source';
import { kindOfFields, recordFromFields, type RecordContext } from './records';
import type { DatasetRecord, RecordBatch } from './types';
import { utf8Chunks, type ChunkOptions } from './utf8';

/**
 * CSV / TSV with a header row. Quoting follows RFC 4180 for both (a field that starts with " runs to the next lone
 * ", "" inside it is one ", and it may hold delimiters and line breaks), as pandas and Python's csv module read
 * TSV too. Like those readers it is lenient where the RFC is silent: a " in the middle of an unquoted field is
 * kept as text, and so is text after a closing quote. Outside quotes, CR is dropped (CRLF files); inside quotes,
 * CRLF becomes LF. Blank lines are skipped.
 *
 * Header names are matched without case or surrounding spaces. Which columns are trained on follows the same
 * order as JSON fields (see records.ts); a `file_name` column (as in Hugging Face's metadata.csv) names each row.
 */

/** Columns the record builder reads; the rest of a row is ignored. */
const USED_COLUMNS = ['text', 'caption', 'prompt', 'completion', 'response', 'instruction', 'input', 'output'] as const;

const CSV_ACCEPTED =
  'Accepted: "text"; "prompt" with "completion" or "response"; "instruction" with "output" and optional "input"; or "caption".';

export async function* csvRecords(source: ByteSource, ctx: RecordContext, opts: ChunkOptions & { delimiter: string }): AsyncGenerator<RecordBatch> {
  const parser = new CsvParser(opts.delimiter, ctx.file);
  let table: Table | null = null;
  const toRecords = (rows: Row[]): DatasetRecord[] => {
    const records: DatasetRecord[] = [];
    for (const row of rows) {
      if (row.fields.length === 1 && row.fields[0] === '') continue; // a blank line
      if (table === null) table = readHeader(row, ctx.file);
      else records.push(rowRecord(table, row, ctx, opts.delimiter));
    }
    return records;
  };
  let bytesDone = 0;
  for await (const chunk of utf8Chunks(source, opts)) {
    bytesDone = chunk.bytesDone;
    yield { records: toRecords(parser.push(chunk.text)), bytesDone };
  }
  yield { records: toRecords(parser.end()), bytesDone };
}

interface Table {
  header: string[];
  /** Lower-cased column name → index of its first occurrence. */
  columns: Map<string, number>;
  fileName: number | undefined;
}

function readHeader(row: Row, file: string): Table {
  const header = row.fields.map((f) => f.trim());
  const columns = new Map<string, number>();
  header.forEach((name, i) => {
    const key = name.toLowerCase();
    if (!columns.has(key)) columns.set(key, i);
  });
  // Chat fields are JSON structures, which a CSV cell does not hold.
  const kind = kindOfFields((name) => name !== 'messages' && name !== 'conversations' && columns.has(name));
  if (kind === null) {
    throw new UserError(
      file,
      `has no column LoRA Lab can train on (the header on line ${row.line} has ${header.map((h) => `"${h}"`).join(', ')}).`,
      CSV_ACCEPTED,
    );
  }
  return { header, columns, fileName: columns.get('file_name') };
}

function rowRecord(table: Table, row: Row, ctx: RecordContext, delimiter: string): DatasetRecord {
  if (row.fields.length !== table.header.length) {
    const sep = delimiter === '\t' ? 'tabs' : 'commas';
    throw new UserError(
      ctx.file,
      `line ${row.line} has ${row.fields.length} fields, but the header has ${table.header.length}.`,
      `Put fields that contain ${sep} or line breaks in "double quotes", and write a " inside them as "".`,
    );
  }
  const fields: Record<string, string> = {};
  for (const name of USED_COLUMNS) {
    const i = table.columns.get(name);
    if (i !== undefined) fields[name] = row.fields[i]!;
  }
  const name = table.fileName === undefined ? '' : row.fields[table.fileName]!.trim();
  return recordFromFields(fields, name !== '' ? name : `line ${row.line}`, ctx);
}

interface Row {
  fields: string[];
  /** Line on which the row starts. */
  line: number;
}

const State = {
  /** At the start of a field. */
  FieldStart: 0,
  /** In an unquoted field, or after a quoted field's closing quote. */
  Unquoted: 1,
  /** Inside quotes. */
  Quoted: 2,
  /** Just saw " inside quotes: "" (an escaped quote) or the closing quote, decided by the next character. */
  QuoteInQuoted: 3,
} as const;
type State = (typeof State)[keyof typeof State];

const QUOTE = 0x22;
const LF = 0x0a;
const CR = 0x0d;

/** Rows from text that arrives in pieces; a field or quote may be split anywhere. */
export class CsvParser {
  private state: State = State.FieldStart;
  private field = '';
  private fields: string[] = [];
  private line = 1;
  private rowLine = 1;
  private quoteLine = 1;
  private readonly delimiter: number;

  constructor(
    delimiter: string,
    private readonly file: string,
  ) {
    this.delimiter = delimiter.charCodeAt(0);
  }

  push(text: string): Row[] {
    const rows: Row[] = [];
    let seg = 0; // start of the current field's text not yet copied into this.field
    const endField = (at: number) => {
      this.field += text.slice(seg, at);
      this.fields.push(this.field.includes('\r') ? this.field.replace(/\r\n/g, '\n') : this.field);
      this.field = '';
      seg = at + 1;
      this.state = State.FieldStart;
    };
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      switch (this.state) {
        case State.FieldStart:
          if (c === QUOTE) {
            this.state = State.Quoted;
            this.quoteLine = this.line;
            seg = i + 1;
          } else {
            this.state = State.Unquoted;
            seg = i;
            i--; // read this character as part of the unquoted field
          }
          break;
        case State.Unquoted:
          if (c === this.delimiter) endField(i);
          else if (c === LF) {
            endField(i);
            rows.push({ fields: this.fields, line: this.rowLine });
            this.fields = [];
            this.line++;
            this.rowLine = this.line;
          } else if (c === CR) {
            this.field += text.slice(seg, i);
            seg = i + 1;
          }
          break;
        case State.Quoted:
          if (c === QUOTE) {
            this.field += text.slice(seg, i);
            seg = i + 1;
            this.state = State.QuoteInQuoted;
          } else if (c === LF) this.line++;
          break;
        case State.QuoteInQuoted:
          if (c === QUOTE) {
            this.field += '"';
            seg = i + 1;
            this.state = State.Quoted;
          } else {
            // The quote closed the field; what follows is handled as if unquoted (a delimiter, a line end, or
            // stray text kept as it is).
            this.state = State.Unquoted;
            seg = i;
            i--;
          }
          break;
      }
    }
    if (this.state === State.Unquoted || this.state === State.Quoted) this.field += text.slice(seg);
    return rows;
  }

  /** The last row when the file does not end with a line break. */
  end(): Row[] {
    if (this.state === State.Quoted) {
      throw new UserError(this.file, `the quoted field that starts on line ${this.quoteLine} is never closed.`, 'Add the missing closing ".');
    }
    if (this.state === State.FieldStart && this.fields.length === 0) return [];
    this.fields.push(this.field.replace(/\r\n/g, '\n'));
    const row = { fields: this.fields, line: this.rowLine };
    this.fields = [];
    this.field = '';
    this.state = State.FieldStart;
    return [row];
  }
}
