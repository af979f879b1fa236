import { isUserError, type UserError } from '../../../src/core/errors';
import { formatIssue, type ConfigParseResult } from '../../../src/core/config';

export type Ok = Extract<ConfigParseResult, { ok: true }>;
export type Failed = Extract<ConfigParseResult, { ok: false }>;

/** The parsed config, or a test failure that lists the issues it was refused with. */
export function ok(result: ConfigParseResult): Ok {
  if (!result.ok) throw new Error(`expected a valid config, got:\n${result.issues.map(formatIssue).join('\n')}`);
  return result;
}

/** The issues a config was refused with, or a test failure showing the config that was accepted. */
export function failed(result: ConfigParseResult): Failed {
  if (result.ok) throw new Error(`expected issues, got a valid config ${JSON.stringify(result.config)}`);
  return result;
}

/** The UserError `fn` throws; any other outcome fails the test. */
export function thrown(fn: () => unknown): UserError {
  try {
    fn();
  } catch (e) {
    if (isUserError(e)) return e as UserError;
    throw e;
  }
  throw new Error('expected a UserError');
}
