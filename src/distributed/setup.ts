/**
 * Distributed set-up for a training process started by mambaout-distributed-train (or torchrun-style env):
 * WORLD_SIZE > 1 joins the process group; otherwise returns null (single process).
 */
import type { Logger } from '../log/logger.js';
import { DistContext } from './context.js';
import { readDistEnv } from './env.js';
import { ProcessGroup } from './group.js';

export async function setupDistributed(args: Record<string, unknown>, logger: Logger): Promise<DistContext | null> {
  // timm: LOCAL_RANK from the environment when set, else --local_rank / --local-rank (PyTorch launchers pass it)
  const env = readDistEnv(process.env, { localRankArg: (args.local_rank as number | null) ?? undefined });
  if (!env.distributed) return null;
  const timeoutMs = 1000 * ((args.dist_timeout as number | null) ?? 300);
  const group = await ProcessGroup.init({ rank: env.rank, worldSize: env.worldSize, masterAddr: env.masterAddr, masterPort: env.masterPort, timeoutMs });
  logger.debug(`rank ${env.rank}/${env.worldSize} joined the process group`);
  return new DistContext(group);
}
