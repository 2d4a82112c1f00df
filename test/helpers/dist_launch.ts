/**
 * Runs launch() in its own process (for the signal-forwarding test): argv[2] is a JSON LaunchOptions subset.
 * Prints the LaunchResult as the last stdout line, prefixed with "RESULT ".
 */
import { launch, type LaunchOptions } from '../../src/distributed/launcher.js';

const opts = JSON.parse(process.argv[2]) as LaunchOptions;
const res = await launch(opts);
process.stdout.write(`RESULT ${JSON.stringify(res)}\n`);
process.exitCode = res.exitCode;
