/**
 * Shared entry-point wrapper for the CLIs: user errors print `error: <one sentence>` and exit with their code (2),
 * never a stack trace. Unexpected errors print their message and exit 3 (the stack only with MAMBAOUT_DEBUG=1).
 * `--version` anywhere on the command line prints `mambaout <version>` and exits 0 before the command runs.
 */
import { isUserError } from '../errors.js';
import { VERSION } from '../version.js';
import { settings } from '../settings.js';

export function runMain(fn: () => Promise<number | void>): void {
  if (process.argv.slice(2).includes('--version')) {
    process.stdout.write(`mambaout ${VERSION}\n`);
    return;
  }
  fn().then(
    (code) => {
      process.exitCode = typeof code === 'number' ? code : 0;
    },
    (e: unknown) => {
      if (isUserError(e)) {
        process.stderr.write(`error: ${e.message}\n`);
        process.exitCode = e.exitCode;
        return;
      }
      const err = e as Error;
      process.stderr.write(`error: ${err?.message ?? String(e)}\n`);
      process.stderr.write(
        settings.debug
          ? `${err?.stack ?? ''}\n`
          : 'This looks like a bug in mambaout; please report it with the command line (set MAMBAOUT_DEBUG=1 for a stack trace).\n',
      );
      process.exitCode = 3;
    },
  );
}
