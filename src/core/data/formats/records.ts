import { UserError } from '../../errors';
import type { ChatFormatter, ChatMessage } from './chat';
import type { DatasetRecord, RecordKind, Segment } from './types';

/**
 * One record's fields (a JSON object, or a CSV row keyed by its header) → a DatasetRecord.
 *
 * Which fields make which kind, checked in this order, so a record that carries extra fields (a chat with a
 * "text" copy, a prompt/completion pair with a "text" column of metadata) is read as the richer kind:
 *   messages: [{role, content}] or ShareGPT conversations: [{from, value}] → chat
 *   instruction + output (+ input)                                         → alpaca
 *   prompt + completion (or response)                                      → prompt_completion
 *   text, else caption                                                     → text
 */

export const ACCEPTED_FIELDS =
  '"text"; "prompt" with "completion" (or "response"); "instruction" with "output" and optional "input" (Alpaca); ' +
  '"messages" as [{"role", "content"}] (chat); "conversations" as [{"from", "value"}] (ShareGPT); or "caption".';

/**
 * Alpaca layout (LoRA Lab's choice, documented for users): the instruction, then a blank line and the input when
 * there is one, then a blank line, then the output. Only the output is trained:
 *   "{instruction}\n\n{input}\n\n" (masked) + "{output}" (trained)
 */
export const ALPACA_SEPARATOR = '\n\n';

/** Things a field-to-record conversion needs besides the fields. */
export interface RecordContext {
  /** The dataset file, the subject of errors. */
  file: string;
  chat: ChatFormatter;
}

type Fields = Readonly<Record<string, unknown>>;

/** The kind that a set of field names makes, or null when none of the accepted sets is complete. */
export function kindOfFields(has: (field: string) => boolean): Exclude<RecordKind, 'tokens'> | null {
  if (has('messages') || has('conversations')) return 'chat';
  if (has('instruction') && has('output')) return 'alpaca';
  if (has('prompt') && (has('completion') || has('response'))) return 'prompt_completion';
  if (has('text') || has('caption')) return 'text';
  return null;
}

/** `value` is one parsed JSON record or CSV row; `id` names it in messages ("line 17"). */
export function recordFromFields(value: unknown, id: string, ctx: RecordContext): DatasetRecord {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UserError(ctx.file, `${id} is ${describe(value)}, not a JSON object with the record's fields.`, `Each record needs ${ACCEPTED_FIELDS}`);
  }
  const fields = value as Fields;
  const has = (name: string) => Object.prototype.hasOwnProperty.call(fields, name);
  const kind = kindOfFields(has);
  const text = (name: string) => stringField(fields, name, id, ctx.file);
  let segments: Segment[];
  switch (kind) {
    case null: {
      const found = Object.keys(fields);
      throw new UserError(
        ctx.file,
        `${id} has none of the fields LoRA Lab trains on (it has ${found.length ? found.map((f) => `"${f}"`).join(', ') : 'no fields'}).`,
        `Each record needs ${ACCEPTED_FIELDS}`,
      );
    }
    case 'text':
      segments = [{ text: has('text') ? text('text') : text('caption'), trained: true }];
      break;
    case 'prompt_completion':
      // Joined as they are, like TRL's prompt-completion datasets: the space or newline between them is the data's.
      segments = [
        { text: text('prompt'), trained: false },
        { text: has('completion') ? text('completion') : text('response'), trained: true },
      ];
      break;
    case 'alpaca': {
      const input = fields.input === undefined || fields.input === null ? '' : text('input');
      const prompt = text('instruction') + (input === '' ? '' : ALPACA_SEPARATOR + input) + ALPACA_SEPARATOR;
      segments = [
        { text: prompt, trained: false },
        { text: text('output'), trained: true },
      ];
      break;
    }
    case 'chat':
      segments = ctx.chat.segments(chatMessages(fields, id, ctx.file), ctx.file, id);
      break;
  }
  return { id, kind, segments: segments.filter((s) => s.text !== '') };
}

function stringField(fields: Fields, name: string, id: string, file: string): string {
  const v = fields[name];
  if (typeof v === 'string') return v;
  throw new UserError(file, `${id}: "${name}" is ${describe(v)}; it must be a string.`);
}

/** ShareGPT's speaker names, mapped to the roles chat templates expect. */
const SHAREGPT_ROLES: Readonly<Record<string, string>> = { human: 'user', gpt: 'assistant', system: 'system' };

function chatMessages(fields: Fields, id: string, file: string): ChatMessage[] {
  const sharegpt = !Object.prototype.hasOwnProperty.call(fields, 'messages');
  const key = sharegpt ? 'conversations' : 'messages';
  const [roleKey, contentKey] = sharegpt ? ['from', 'value'] : ['role', 'content'];
  const list = fields[key];
  if (!Array.isArray(list)) {
    throw new UserError(file, `${id}: "${key}" is ${describe(list)}; it must be a list of {"${roleKey}", "${contentKey}"} objects.`);
  }
  return list.map((m: unknown, k): ChatMessage => {
    const where = `${id}: message ${k + 1} of "${key}"`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) {
      throw new UserError(file, `${where} is ${describe(m)}; it must be a {"${roleKey}", "${contentKey}"} object.`);
    }
    const role = (m as Fields)[roleKey];
    const content = (m as Fields)[contentKey];
    if (typeof role !== 'string') throw new UserError(file, `${where} has ${role === undefined ? 'no' : `a non-string (${describe(role)})`} "${roleKey}".`);
    // OpenAI-style data writes null content for turns that only call tools; that is an empty turn, not an error.
    if (typeof content !== 'string' && content !== null) {
      throw new UserError(file, `${where} has ${content === undefined ? 'no' : `a non-string (${describe(content)})`} "${contentKey}".`);
    }
    return { role: sharegpt ? (SHAREGPT_ROLES[role] ?? role) : role, content: content ?? '' };
  });
}

/** A JSON value's kind in words, for messages. */
export function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return 'a string';
  return `a ${typeof v} (${String(v)})`;
}
