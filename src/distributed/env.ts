/**
 * torchrun-style environment of one worker process (timm-reference §9.1).
 *
 * The launcher (launcher.ts, or torchrun itself) starts one process per device and tells each who it is
 * through environment variables:
 *
 *   RANK              global rank, 0..WORLD_SIZE-1
 *   LOCAL_RANK        rank on this machine, 0..LOCAL_WORLD_SIZE-1 (selects the device)
 *   WORLD_SIZE        number of processes in the job; > 1 means distributed
 *   LOCAL_WORLD_SIZE  processes on this machine
 *   NODE_RANK         index of this machine, 0..WORLD_SIZE/LOCAL_WORLD_SIZE-1
 *   MASTER_ADDR       address where rank 0 listens for the rendezvous
 *   MASTER_PORT       port of that listener
 *
 * `readDistEnv()` parses and cross-checks them and throws ONE UserError (one sentence that says what is
 * wrong) on the first inconsistency. With no WORLD_SIZE and no RANK in the environment the process is a
 * plain single-process run (world size 1, `distributed: false`), as in timm where distributed mode is on
 * iff WORLD_SIZE > 1.
 *
 * Usage in a training script:
 *   const env = readDistEnv(process.env, { localRankArg: argv.localRank });
 *   log(distModeLine(env));
 *   const group = await ProcessGroup.init({ ...env, timeoutMs: distTimeoutMs(argv.distTimeout) });
 */
import { UserError } from '../errors.js';

export interface DistEnv {
  rank: number;
  localRank: number;
  worldSize: number;
  localWorldSize: number;
  nodeRank: number;
  /** Rendezvous address ('' when world size is 1 and none was given). */
  masterAddr: string;
  /** Rendezvous port (0 when world size is 1 and none was given). */
  masterPort: number;
  /** True iff worldSize > 1 (timm: `args.distributed = WORLD_SIZE > 1`). */
  distributed: boolean;
}

/** Default for `--dist-timeout` (seconds): how long any receive may wait before the job is declared hung. */
export const DEFAULT_DIST_TIMEOUT_S = 300;

type Env = Record<string, string | undefined>;

function present(env: Env, name: string): boolean {
  const v = env[name];
  return v !== undefined && v.trim() !== '';
}

function intVar(env: Env, name: string, min: number): number | undefined {
  if (!present(env, name)) return undefined;
  const raw = env[name]!.trim();
  if (!/^[0-9]+$/.test(raw)) {
    throw new UserError(`Environment variable ${name} must be a whole number >= ${min}, got '${env[name]}'.`);
  }
  const v = Number(raw);
  if (!Number.isSafeInteger(v) || v < min) {
    throw new UserError(`Environment variable ${name} must be a whole number >= ${min}, got '${env[name]}'.`);
  }
  return v;
}

export interface ReadDistEnvOptions {
  /** Value of a `--local_rank` / `--local-rank` command-line flag; used only when LOCAL_RANK is not set. */
  localRankArg?: number;
}

/**
 * Parse and validate the torchrun-style variables. Throws UserError on the first inconsistency, e.g.
 * "RANK=4 is out of range for WORLD_SIZE=4 (ranks are 0..3)."
 */
export function readDistEnv(env: Env = process.env, opts: ReadDistEnvOptions = {}): DistEnv {
  const worldSize = intVar(env, 'WORLD_SIZE', 1);
  const rankVar = intVar(env, 'RANK', 0);
  const localRankVar = intVar(env, 'LOCAL_RANK', 0);
  const localWorldVar = intVar(env, 'LOCAL_WORLD_SIZE', 1);
  const nodeRankVar = intVar(env, 'NODE_RANK', 0);
  const portVar = intVar(env, 'MASTER_PORT', 0);
  const masterAddr = present(env, 'MASTER_ADDR') ? env.MASTER_ADDR!.trim() : '';

  if (worldSize === undefined) {
    if (rankVar !== undefined && rankVar !== 0) {
      throw new UserError(`RANK=${rankVar} is set but WORLD_SIZE is not; start workers with mambaout-distributed-train or set WORLD_SIZE as well.`);
    }
  }
  const W = worldSize ?? 1;
  const rank = rankVar ?? 0;
  if (W > 1 && rankVar === undefined) {
    throw new UserError(`WORLD_SIZE=${W} is set but RANK is not; every worker needs its own RANK (0..${W - 1}).`);
  }
  if (rank >= W) {
    throw new UserError(`RANK=${rank} is out of range for WORLD_SIZE=${W} (ranks are 0..${W - 1}).`);
  }

  const localWorldSize = localWorldVar ?? W;
  if (localWorldSize > W) {
    throw new UserError(`LOCAL_WORLD_SIZE=${localWorldSize} is larger than WORLD_SIZE=${W}.`);
  }
  if (W % localWorldSize !== 0) {
    throw new UserError(`WORLD_SIZE=${W} is not a multiple of LOCAL_WORLD_SIZE=${localWorldSize} (every machine must run the same number of workers).`);
  }
  const nnodes = W / localWorldSize;
  const nodeRank = nodeRankVar ?? Math.floor(rank / localWorldSize);
  if (nodeRank >= nnodes) {
    throw new UserError(`NODE_RANK=${nodeRank} is out of range for ${nnodes} machine(s) (WORLD_SIZE=${W} / LOCAL_WORLD_SIZE=${localWorldSize}).`);
  }
  const localRank = localRankVar ?? opts.localRankArg ?? rank - nodeRank * localWorldSize;
  if (!Number.isSafeInteger(localRank) || localRank < 0 || localRank >= localWorldSize) {
    throw new UserError(`LOCAL_RANK=${localRank} is out of range for LOCAL_WORLD_SIZE=${localWorldSize} (local ranks are 0..${localWorldSize - 1}).`);
  }
  if (rank !== nodeRank * localWorldSize + localRank) {
    throw new UserError(
      `RANK=${rank} does not match NODE_RANK=${nodeRank} * LOCAL_WORLD_SIZE=${localWorldSize} + LOCAL_RANK=${localRank} = ` +
        `${nodeRank * localWorldSize + localRank}.`,
    );
  }
  if (W > 1) {
    if (!masterAddr) throw new UserError(`WORLD_SIZE=${W} but MASTER_ADDR is not set; set it to the address of the machine that runs rank 0.`);
    if (portVar === undefined) throw new UserError(`WORLD_SIZE=${W} but MASTER_PORT is not set; set it to a free TCP port on the machine that runs rank 0.`);
  }
  if (portVar !== undefined && (portVar < 1 || portVar > 65535)) {
    throw new UserError(`MASTER_PORT must be a TCP port between 1 and 65535, got ${portVar}.`);
  }
  return {
    rank,
    localRank,
    worldSize: W,
    localWorldSize,
    nodeRank,
    masterAddr,
    masterPort: portVar ?? 0,
    distributed: W > 1,
  };
}

/** timm's start-up log line (§9.1). */
export function distModeLine(env: Pick<DistEnv, 'rank' | 'worldSize'>): string {
  return env.worldSize > 1
    ? `Training in distributed mode with multiple processes, 1 GPU per process. Process ${env.rank}, total ${env.worldSize}.`
    : 'Training with a single process on 1 GPUs.';
}

/** `--dist-timeout` seconds -> milliseconds, validated (UserError for <= 0 or non-numbers). */
export function distTimeoutMs(seconds: number | string | undefined = DEFAULT_DIST_TIMEOUT_S): number {
  const s = typeof seconds === 'string' ? Number(seconds) : seconds;
  if (!Number.isFinite(s) || s <= 0) {
    throw new UserError(`--dist-timeout must be a positive number of seconds, got '${seconds}'.`);
  }
  return Math.round(s * 1000);
}

/** What one launcher (one per machine) needs to know about the job. */
export interface NodeConfig {
  nprocPerNode?: number;
  nnodes: number;
  nodeRank: number;
  masterAddr?: string;
  masterPort?: number;
  /** Where the values came from, for the start-up line, e.g. "NNODES/NODE_RANK" or "WORLD_SIZE/RANK (one per node)". */
  source: string;
}

/**
 * The machine-level view of the job for a launcher that starts the workers of one machine (torchrun's job), read from
 * flags first, then from the environment a scheduler sets:
 *
 *   PET_NNODES, PET_NODE_RANK, PET_NPROC_PER_NODE, PET_MASTER_ADDR, PET_MASTER_PORT   torchrun's own variables (the
 *        Kubeflow training operator sets PET_NNODES/PET_NODE_RANK/PET_NPROC_PER_NODE when nprocPerNode is given)
 *   NNODES, NODE_RANK, NPROC_PER_NODE                                                 plain names (e.g. from SLURM_NNODES
 *        and SLURM_NODEID in a Slurm batch script, see examples/slurm/train.sbatch)
 *   WORLD_SIZE, RANK  without any of the above: one launcher per node, WORLD_SIZE nodes, this one is node RANK. That is
 *        what a PyTorchJob pod gets (the operator counts pods: Master + Worker replicas; see examples/kubernetes/) and
 *        what cloud batch platforms set for `torchrun --nnodes $WORLD_SIZE --node_rank $RANK`.
 *   MASTER_ADDR, MASTER_PORT   address and port of node 0's rendezvous.
 *
 * Throws a UserError on values that are not whole numbers or out of range, and on elastic node ranges ("1:4").
 */
export function readNodeConfig(flags: Partial<Omit<NodeConfig, 'source'>>, env: Env = process.env): NodeConfig {
  const pick = (names: string[], min: number): { v: number; name: string } | undefined => {
    for (const n of names) {
      if (!present(env, n)) continue;
      if (/^\s*\d+\s*:\s*\d+\s*$/.test(env[n]!)) {
        throw new UserError(`${n}=${env[n]} is an elastic range; mambaout needs a fixed number of nodes (set ${n} to one number).`);
      }
      return { v: intVar(env, n, min)!, name: n };
    }
    return undefined;
  };
  let nnodes = flags.nnodes;
  let nodeRank = flags.nodeRank;
  let source = nnodes !== undefined ? '--nnodes/--node-rank' : '';
  if (nnodes === undefined) {
    const n = pick(['PET_NNODES', 'NNODES'], 1);
    if (n) {
      nnodes = n.v;
      source = n.name === 'PET_NNODES' ? 'PET_NNODES/PET_NODE_RANK' : 'NNODES/NODE_RANK';
      nodeRank ??= pick(n.name === 'PET_NNODES' ? ['PET_NODE_RANK', 'NODE_RANK'] : ['NODE_RANK'], 0)?.v;
    } else {
      const w = pick(['WORLD_SIZE'], 1);
      if (w) {
        nnodes = w.v;
        nodeRank ??= pick(['RANK'], 0)?.v;
        source = 'WORLD_SIZE/RANK (one launcher per node)';
        if (nodeRank === undefined) throw new UserError(`WORLD_SIZE=${w.v} is set but RANK is not; every node's launcher needs its own RANK (0..${w.v - 1}).`);
      }
    }
  }
  nnodes ??= 1;
  if (nodeRank === undefined) {
    if (nnodes > 1) throw new UserError(`the job has ${nnodes} nodes but this node's rank is not set; give --node-rank or set NODE_RANK.`);
    nodeRank = 0;
  }
  if (nodeRank >= nnodes) throw new UserError(`node rank ${nodeRank} is out of range for ${nnodes} node(s) (node ranks are 0..${nnodes - 1}).`);
  const nprocPerNode = flags.nprocPerNode ?? pick(['PET_NPROC_PER_NODE', 'NPROC_PER_NODE'], 1)?.v;
  const masterAddr = flags.masterAddr ?? (present(env, 'PET_MASTER_ADDR') ? env.PET_MASTER_ADDR!.trim() : present(env, 'MASTER_ADDR') ? env.MASTER_ADDR!.trim() : undefined);
  const masterPort = flags.masterPort ?? pick(['PET_MASTER_PORT', 'MASTER_PORT'], 1)?.v;
  if (masterPort !== undefined && masterPort > 65535) throw new UserError(`MASTER_PORT must be a TCP port between 1 and 65535, got ${masterPort}.`);
  return { nprocPerNode, nnodes, nodeRank, masterAddr, masterPort, source: source || 'single node' };
}
