/**
 * A problem the person using the app caused and can fix (a bad file, a bad config value).
 * It names the thing at fault and says what to do, so the UI can show it next to that thing.
 * Anything else thrown is a bug in LoRA Lab.
 */
export class UserError extends Error {
  override readonly name = 'UserError';

  constructor(
    /** The file name or config field at fault, e.g. `model.safetensors` or `lora_rank`. */
    readonly subject: string,
    /** What is wrong, in one sentence. */
    readonly problem: string,
    /** What to do about it, when there is something better to say than "fix the file". */
    readonly fix?: string,
  ) {
    super(`${subject}: ${problem}${fix ? ` ${fix}` : ''}`);
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof Error && e.name === 'UserError';
}
