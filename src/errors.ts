/**
 * An error caused by the user's input (bad flag, missing file, wrong class count...).
 * CLIs print its message as one line and exit non-zero, never a stack trace.
 */
export class UserError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 2) {
    super(message);
    this.name = 'UserError';
    this.exitCode = exitCode;
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}

/** The message of anything thrown (an Error's message, else its string form). */
export function errMessage(e: unknown): string {
  const m = (e as { message?: unknown } | null | undefined)?.message;
  return typeof m === 'string' ? m : String(e);
}

/** The first line of a (possibly multi-line) message, at most `max` characters: for one-line reasons in logs. */
export function firstLine(s: string, max = 200): string {
  return s.split('\n')[0].slice(0, max);
}

/** All lines of a message on one line, trimmed, joined by '; ' (libvips messages can span several lines). */
export function oneLine(s: string): string {
  return s.split('\n').map((l) => l.trim()).filter(Boolean).join('; ');
}
