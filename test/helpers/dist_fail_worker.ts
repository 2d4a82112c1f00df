/**
 * Worker for the launcher failure tests in test/dist.test.ts.
 *   argv[2] = 'exit7':   rank $FAIL_RANK exits with code 7 after 300 ms; the others wait forever.
 *   argv[2] = 'sigkill': rank $FAIL_RANK kills itself with SIGKILL after 300 ms; the others wait forever
 *                        and ignore SIGTERM (so the launcher has to escalate to SIGKILL).
 *   argv[2] = 'wait':    every rank prints "ready <rank>" to stdout and stderr once its SIGTERM handler is in place
 *                        (rank 0's stdout reaches the launcher's stdout; the other ranks' stderr reaches it as
 *                        "[rank N] ready N") and waits; on SIGTERM it exits with code 0 after writing "got SIGTERM"
 *                        to stderr.
 */
const mode = process.argv[2];
const rank = Number(process.env.RANK);
const failRank = Number(process.env.FAIL_RANK ?? -1);
setInterval(() => {}, 1000);
if (mode === 'exit7' && rank === failRank) setTimeout(() => process.exit(7), 300);
if (mode === 'sigkill') {
  if (rank === failRank) setTimeout(() => process.kill(process.pid, 'SIGKILL'), 300);
  else process.on('SIGTERM', () => process.stderr.write('ignoring SIGTERM\n'));
}
if (mode === 'wait') {
  process.on('SIGTERM', () => {
    process.stderr.write('got SIGTERM\n');
    process.exit(0);
  });
  process.stdout.write(`ready ${rank}\n`);
  process.stderr.write(`ready ${rank}\n`);
}
