import { UserError } from '../../errors';
import type { ByteSource } from '../../safetensors/source';
import { recordFromFields, type RecordContext } from './records';
import type { DatasetRecord, RecordBatch } from './types';
import { lineBatches, peekFirstChar, prepend, utf8Chunks, type ChunkOptions, type TextChunk } from './utf8';

/**
 * JSON records (.jsonl, .json): one JSON object per line (JSONL), or one JSON array of objects.
 * Which one is decided by the first non-space character ("[" = array), whatever the extension says, since
 * .json files come both ways. Arrays are split into elements by a small scanner as the bytes stream in, so a
 * large array never has to exist as one string; each element is then parsed on its own.
 */

export async function* jsonRecords(source: ByteSource, ctx: RecordContext, opts: ChunkOptions): AsyncGenerator<RecordBatch> {
  const chunks = utf8Chunks(source, opts);
  const { char, seen } = await peekFirstChar(chunks);
  const all = prepend(seen, chunks);
  if (char === '[') yield* arrayRecords(all, ctx);
  else yield* lineRecords(all, ctx, /\.json$/i.test(source.name));
}

async function* lineRecords(chunks: AsyncIterable<TextChunk>, ctx: RecordContext, dotJson: boolean): AsyncGenerator<RecordBatch> {
  for await (const batch of lineBatches(chunks)) {
    const records: DatasetRecord[] = [];
    batch.lines.forEach((line, k) => {
      if (line.trim() === '') return; // blank lines (a trailing one above all) are not records
      const id = `line ${batch.first + k}`;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch (e) {
        throw new UserError(
          ctx.file,
          `${id} is not JSON (${(e as Error).message}).`,
          dotJson
            ? 'A .json dataset must be a JSON array of records, or hold one JSON record per line (JSONL).'
            : 'A .jsonl dataset holds one complete JSON object per line.',
        );
      }
      records.push(recordFromFields(value, id, ctx));
    });
    yield { records, bytesDone: batch.bytesDone };
  }
}

async function* arrayRecords(chunks: AsyncIterable<TextChunk>, ctx: RecordContext): AsyncGenerator<RecordBatch> {
  const splitter = new JsonArraySplitter(ctx.file);
  for await (const chunk of chunks) {
    yield { records: splitter.push(chunk.text).map((e) => elementRecord(e, ctx)), bytesDone: chunk.bytesDone };
  }
  splitter.end();
}

function elementRecord(element: ArrayElement, ctx: RecordContext): DatasetRecord {
  const id = `record ${element.index}`;
  let value: unknown;
  try {
    value = JSON.parse(element.text);
  } catch (e) {
    throw new UserError(ctx.file, `${id} (line ${element.line}) is not JSON (${(e as Error).message}).`);
  }
  return recordFromFields(value, id, ctx);
}

interface ArrayElement {
  /** The element's JSON text, not yet parsed. */
  text: string;
  /** 1-based position in the array. */
  index: number;
  /** Line on which it starts. */
  line: number;
}

const Phase = {
  /** Before the opening "[". */
  Start: 0,
  /** Expecting an element (or "]" right after "["). */
  Value: 1,
  /** Inside an element. */
  Inside: 2,
  /** After an element, expecting "," or "]". */
  After: 3,
  /** After the closing "]": only whitespace may follow. */
  Done: 4,
} as const;
type Phase = (typeof Phase)[keyof typeof Phase];

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

/**
 * Finds the top-level elements of a JSON array in text that arrives in pieces. It tracks only strings (so
 * brackets inside them do not count) and bracket depth; whether an element is valid JSON is left to JSON.parse.
 */
class JsonArraySplitter {
  private phase: Phase = Phase.Start;
  private depth = 0;
  private inString = false;
  private escaped = false;
  private afterComma = false;
  private line = 1;
  private index = 0;
  private parts: string[] = [];
  private elementLine = 0;

  constructor(private readonly file: string) {}

  push(text: string): ArrayElement[] {
    const out: ArrayElement[] = [];
    let begin = this.phase === Phase.Inside ? 0 : -1; // start of the current element within `text`
    const finish = (end: number) => {
      this.parts.push(text.slice(begin, end));
      out.push({ text: this.parts.join(''), index: this.index, line: this.elementLine });
      this.parts = [];
      begin = -1;
      this.phase = Phase.After;
    };
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c === 0x0a) this.line++;
      const space = c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
      switch (this.phase) {
        case Phase.Start:
          // The reader only comes here when the first visible character is "[".
          if (!space) this.phase = Phase.Value;
          break;
        case Phase.Value:
          if (space) break;
          if (c === 0x5d /* ] */) {
            if (this.afterComma) throw this.error(`record ${this.index + 1} (line ${this.line}) is missing: the array has a "," before its "]".`);
            this.phase = Phase.Done;
            break;
          }
          if (c === 0x2c /* , */) throw this.error(`record ${this.index + 1} (line ${this.line}) is missing: two "," follow each other.`);
          this.index++;
          this.afterComma = false;
          this.elementLine = this.line;
          this.phase = Phase.Inside;
          begin = i;
          this.depth = 0;
          this.inString = false;
          this.escaped = false;
          i--; // look at this character again as part of the element
          break;
        case Phase.Inside:
          if (this.inString) {
            if (this.escaped) this.escaped = false;
            else if (c === BACKSLASH) this.escaped = true;
            else if (c === QUOTE) {
              this.inString = false;
              if (this.depth === 0) finish(i + 1);
            }
          } else if (c === QUOTE) this.inString = true;
          else if (c === 0x7b /* { */ || c === 0x5b /* [ */) this.depth++;
          else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
            if (this.depth === 0) {
              // A bare value (number, true…) ended by the array's own "]".
              finish(i);
              i--;
            } else if (--this.depth === 0) finish(i + 1);
          } else if (this.depth === 0 && (c === 0x2c || space)) {
            finish(i);
            i--;
            if (c === 0x0a) this.line--;
          }
          break;
        case Phase.After:
          if (space) break;
          if (c === 0x2c) {
            this.phase = Phase.Value;
            this.afterComma = true;
          } else if (c === 0x5d) this.phase = Phase.Done;
          else throw this.error(`line ${this.line}: expected "," or "]" after record ${this.index}.`);
          break;
        case Phase.Done:
          if (!space) throw this.error(`line ${this.line} has text after the array's closing "]".`);
          break;
      }
    }
    if (begin >= 0) this.parts.push(text.slice(begin));
    return out;
  }

  end(): void {
    if (this.phase === Phase.Done) return;
    if (this.phase === Phase.Inside) {
      throw this.error(`record ${this.index} (line ${this.elementLine}) never ends; the file stops inside it.`, 'The file may be cut short; check that it is complete.');
    }
    throw this.error('the JSON array never ends (there is no closing "]").', 'The file may be cut short; check that it is complete.');
  }

  private error(problem: string, fix?: string): UserError {
    return new UserError(this.file, problem, fix);
  }
}
