/**
 * Shared entry-point wrapper for the CLIs: user errors print one sentence and exit non-zero, never a stack trace.
 * Unexpected errors print their message (and the stack only with MAMBAOUT_DEBUG=1).
 */
import { isUserError } from '../errors.js';

export function runMain(name: string, fn: () => Promise<number | void>): void {
  fn().then(
    (code) => {
      process.exitCode = typeof code === 'number' ? code : 0;
    },
    (e: unknown) => {
      if (isUserError(e)) {
        process.stderr.write(`${name}: error: ${e.message}\n`);
        process.exitCode = e.exitCode;
        return;
      }
      const err = e as Error;
      process.stderr.write(`${name}: internal error: ${err?.message ?? String(e)}\n`);
      if (process.env.MAMBAOUT_DEBUG) process.stderr.write(`${err?.stack ?? ''}\n`);
      else process.stderr.write('(set MAMBAOUT_DEBUG=1 to see the stack trace, and please report it)\n');
      process.exitCode = 1;
    },
  );
}
