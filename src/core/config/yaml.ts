import { parse } from 'yaml';
import { CONFIG_KEYS, FIELD_RULES, type RunConfig } from './schema';

/** Column where the trailing comments start, as in the documented example. */
const COMMENT_COLUMN = 36;

/**
 * A string as a YAML scalar: bare when it is simple and reads back as the same string (not `null`,
 * `true`, `8` or `1e-4`), otherwise double-quoted. JSON string syntax is valid YAML double-quoted
 * syntax, escapes included. Commas are never bare so the result is also safe inside `[a, b]`.
 */
function scalar(text: string): string {
  const bare = /^[A-Za-z0-9_./~][A-Za-z0-9_./~ +-]*$/.test(text) && !text.endsWith(' ') && parse(text) === text;
  return bare ? text : JSON.stringify(text);
}

/** Numbers read back exactly; small rates in exponent form (1e-4) the way people write them. */
function number(x: number): string {
  if (x !== 0 && Math.abs(x) < 1e-3) return x.toExponential();
  return String(x);
}

function inline(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'boolean') return String(value);
  if (typeof value === 'number') return number(value);
  if (typeof value === 'string') return scalar(value);
  if (Array.isArray(value)) return `[${value.map((item) => inline(item)).join(', ')}]`;
  throw new Error(`runConfigToYaml: unexpected value ${String(value)}`);
}

function withComment(text: string, comment: string): string {
  return `${text.padEnd(Math.max(COMMENT_COLUMN, text.length + 2))}# ${comment}`;
}

/**
 * The config as YAML the headless runner (and parseRunConfigYaml) reads back to an equal config:
 * every canonical key in the documented order, each with a short comment.
 */
export function runConfigToYaml(config: RunConfig): string {
  const lines = ['# LoRA Lab run config'];
  for (const key of CONFIG_KEYS) {
    const value: unknown = config[key];
    const { comment } = FIELD_RULES[key];
    // Prompts are free text and can be long: one per line reads better than a flow list.
    if (key === 'sample_prompts' && Array.isArray(value) && value.length > 0) {
      lines.push(withComment(`${key}:`, comment));
      for (const prompt of value) lines.push(`  - ${inline(prompt)}`);
      continue;
    }
    lines.push(withComment(`${key}: ${inline(value)}`, comment));
  }
  return `${lines.join('\n')}\n`;
}
