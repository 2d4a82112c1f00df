/**
 * Distributed set-up for a training process started by mambaout-distributed-train (or torchrun-style env):
 * WORLD_SIZE > 1 joins the process group; otherwise returns null (single process).
 * A rendezvous that fails (a rank that never joins, ranks started with different WORLD_SIZE, a port or address
 * that is wrong) is a problem of how the job was started: a UserError (exit 2), not a bug.
 */
import type { Logger } from '../log/logger.js';
import { DistContext } from './context.js';
import { readDistEnv } from './env.js';
import { ProcessGroup, isDistError } from './group.js';
import { UserError } from '../errors.js';

export async function setupDistributed(args: Record<string, unknown>, logger: Logger): Promise<DistContext | null> {
  // timm: LOCAL_RANK from the environment when set, else --local_rank / --local-rank (PyTorch launchers pass it)
  const env = readDistEnv(process.env, { localRankArg: (args.local_rank as number | null) ?? undefined });
  if (!env.distributed) return null;
  const timeoutMs = 1000 * ((args.dist_timeout as number | null) ?? 300);
  let group: ProcessGroup;
  try {
    group = await ProcessGroup.init({ rank: env.rank, worldSize: env.worldSize, masterAddr: env.masterAddr, masterPort: env.masterPort, timeoutMs });
  } catch (e) {
    if (isDistError(e) && (e.reason === 'rendezvous' || e.reason === 'disconnect')) {
      throw new UserError(
        `rank ${env.rank} could not join the process group: ${e.message}; start every rank with the same WORLD_SIZE, ` +
          `MASTER_ADDR and MASTER_PORT (mambaout-distributed-train does), or raise --dist-timeout`,
      );
    }
    throw e;
  }
  logger.debug(`rank ${env.rank}/${env.worldSize} joined the process group`);
  return new DistContext(group);
}
