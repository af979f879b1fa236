import { Template } from '@huggingface/jinja';
import { UserError } from '../../errors';
import type { Segment } from './types';

/**
 * Chat records → text segments, with only the assistant's turns trained.
 *
 * The model's own chat template (Jinja, from tokenizer_config.json) is rendered with @huggingface/jinja, the same
 * engine transformers.js uses, so the text matches what `apply_chat_template` produces. Templates do not say where
 * a turn begins and ends in their output, so the spans are found by rendering prefixes of the conversation:
 * the assistant turn i occupies render(messages[:i+1]) minus render(messages[:i], add_generation_prompt=True),
 * i.e. its content and end marker, without the "assistant:" header that the prompt side already writes.
 */

export interface ChatMessage {
  role: string;
  content: string;
}

/** Special-token texts that templates refer to as variables. */
export interface ChatTokens {
  bos_token: string;
  eos_token: string;
}

/**
 * Used when the model has no chat template: Zephyr's layout, a role header line then the content closed by the
 * end-of-text token. Ending each turn with eos teaches a model without chat tokens where a reply stops.
 * Rendered: "<|user|>\nHi<eos>\n<|assistant|>\nHello<eos>\n".
 */
export const FALLBACK_CHAT_TEMPLATE =
  "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

/** Where the template came from, for messages about a template that does not parse. */
const TEMPLATE_FILE = 'tokenizer_config.json';

export class ChatFormatter {
  private compiled: Template | null = null;
  private appendedText: string | null = null;

  constructor(
    /** The model's chat_template, or null for FALLBACK_CHAT_TEMPLATE. */
    private readonly template: string | null,
    private readonly tokens: ChatTokens,
  ) {}

  /**
   * The conversation as text segments, assistant turns (content + end marker) trained, everything else not.
   * `file` and `id` name the record in errors.
   */
  segments(messages: readonly ChatMessage[], file: string, id: string): Segment[] {
    if (messages.length === 0) return [];
    let full: string;
    try {
      full = this.render(messages, false);
    } catch (e) {
      if (e instanceof UserError) throw e;
      throw new UserError(file, `${id}: the chat template refused this conversation (${(e as Error).message}).`);
    }
    const spans: [number, number][] = [];
    let cursor = 0;
    messages.forEach((message, i) => {
      if (message.role !== 'assistant') return;
      const span = this.prefixSpan(messages, i, full, cursor) ?? this.searchSpan(message.content, full, cursor);
      if (span === null) {
        throw new UserError(
          file,
          `${id}: the chat template does not write message ${i + 1} (assistant) word for word, so the tokens to train on cannot be found.`,
        );
      }
      spans.push(span);
      cursor = span[1];
    });
    const out: Segment[] = [];
    const push = (text: string, trained: boolean) => {
      if (text !== '') out.push({ text, trained });
    };
    cursor = 0;
    for (const [begin, end] of spans) {
      push(full.slice(cursor, begin), false);
      push(full.slice(begin, end), true);
      cursor = end;
    }
    push(full.slice(cursor), false);
    return out;
  }

  private render(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
    if (this.compiled === null) {
      try {
        this.compiled = new Template(this.template ?? FALLBACK_CHAT_TEMPLATE);
      } catch (e) {
        throw new UserError(
          TEMPLATE_FILE,
          `its chat_template could not be parsed (${(e as Error).message}).`,
          "Fix the template, or remove it to use LoRA Lab's plain chat layout.",
        );
      }
    }
    return this.compiled.render({
      // Fresh copies: the template engine must not see (or keep) the caller's objects.
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      add_generation_prompt: addGenerationPrompt,
      bos_token: this.tokens.bos_token,
      eos_token: this.tokens.eos_token,
    });
  }

  /**
   * The span of assistant turn i from prefix renders, or null when the template is not prefix-stable (it renders
   * earlier turns differently once later ones exist, or fails on a shorter conversation).
   */
  private prefixSpan(messages: readonly ChatMessage[], i: number, full: string, cursor: number): [number, number] | null {
    let upTo: string;
    let before: string;
    try {
      upTo = this.render(messages.slice(0, i + 1), false);
      before = this.render(messages.slice(0, i), true);
      // Some templates add the assistant header in a way that is not a prefix of the finished turn; then the
      // header is trained too, which is harmless, rather than giving up.
      if (!upTo.startsWith(before)) before = this.render(messages.slice(0, i), false);
    } catch {
      return null;
    }
    // A template that ends every rendering with the assistant's header (some base models' do, with or without
    // add_generation_prompt) would put the next header inside this turn: it is not part of the turn.
    const appended = this.alwaysAppended();
    if (appended !== '' && upTo.endsWith(appended) && upTo.length - appended.length >= before.length) upTo = upTo.slice(0, -appended.length);
    if (!full.startsWith(upTo) || !upTo.startsWith(before) || before.length < cursor) return null;
    // Trailing whitespace after the end marker (ChatML's "\n") is never generated by the model, so it stays
    // masked: the trained part is the content and the marker.
    let end = upTo.length;
    while (end > before.length && /\s/.test(upTo[end - 1]!)) end--;
    return [before.length, end];
  }

  /** What the template writes for no messages at all, which such a template then also writes after every turn. */
  private alwaysAppended(): string {
    if (this.appendedText === null) {
      try {
        this.appendedText = this.render([], false);
      } catch {
        this.appendedText = '';
      }
    }
    return this.appendedText;
  }

  /** Last resort for templates that are not prefix-stable: the content itself (as templates often trim it), plus an eos that follows it. */
  private searchSpan(content: string, full: string, cursor: number): [number, number] | null {
    const needle = content.trim();
    if (needle === '') return [cursor, cursor];
    const begin = full.indexOf(needle, cursor);
    if (begin < 0) return null;
    let end = begin + needle.length;
    const eos = this.tokens.eos_token;
    if (eos !== '' && full.startsWith(eos, end)) end += eos.length;
    return [begin, end];
  }
}

/**
 * The chat template and the special-token texts it uses, from tokenizer_config.json (null when the model has
 * none). `chat_template` may be one string or, in older files, a list of named templates; "default" wins.
 */
export function chatSettingsFromConfig(tokenizerConfigJson: string | null): {
  chatTemplate: string | null;
  bosToken: string | null;
  eosToken: string | null;
} {
  if (tokenizerConfigJson === null) return { chatTemplate: null, bosToken: null, eosToken: null };
  let config: unknown;
  try {
    config = JSON.parse(tokenizerConfigJson);
  } catch (e) {
    throw new UserError(TEMPLATE_FILE, `is not valid JSON (${(e as Error).message}).`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw new UserError(TEMPLATE_FILE, 'must hold a JSON object.');
  }
  const c = config as Record<string, unknown>;
  return { chatTemplate: pickTemplate(c.chat_template), bosToken: tokenText(c.bos_token), eosToken: tokenText(c.eos_token) };
}

function pickTemplate(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (!Array.isArray(value)) return null;
  const named = value.filter(
    (t): t is { name: unknown; template: string } => typeof t === 'object' && t !== null && typeof (t as { template?: unknown }).template === 'string',
  );
  return (named.find((t) => t.name === 'default') ?? named[0])?.template ?? null;
}

function tokenText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (typeof value === 'object' && value !== null && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}
