/**
 * Worker for the launcher test "names the rank that stopped answering" (test/hostile.test.ts): rank $HANG_RANK joins
 * the process group and then hangs (never enters a collective, ignores nothing, never exits by itself); the other
 * ranks run one allreduce with a 1.5 s timeout, fail with a DistError that names a peer, and exit the way
 * bin/train.ts does in that case (PEER_FAILURE_EXIT_CODE).
 */
import { ProcessGroup, isDistError } from '../../src/distributed/group.js';
import { PEER_FAILURE_EXIT_CODE } from '../../src/distributed/launcher.js';

const g = await ProcessGroup.fromEnv({ timeoutMs: 1500 });
if (g.rank === Number(process.env.HANG_RANK)) {
  setInterval(() => {}, 1000);
} else {
  try {
    await g.allreduce(new Float32Array(16));
    process.exit(0);
  } catch (e) {
    if (isDistError(e) && e.rank !== g.rank) {
      process.stderr.write(`rank ${g.rank}: ${e.message}\n`);
      process.exit(PEER_FAILURE_EXIT_CODE);
    }
    throw e;
  }
}
