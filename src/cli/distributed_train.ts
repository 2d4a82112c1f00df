/**
 * mambaout-distributed-train: what the MambaOut repository's distributed_train.sh does with torchrun/DDP
 * (bin/distributed_train.ts).
 *
 *   mambaout-distributed-train NUM_GPUS DATA_DIR [mambaout-train flags]
 *   mambaout-distributed-train --nproc-per-node 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 DATA_DIR [flags]
 *
 * Spawns one `mambaout-train` worker per device with RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set,
 * pins each worker to its device (webgpu adapter index / CUDA_VISIBLE_DEVICES), streams rank 0's output, and stops the
 * whole job when any worker fails, naming the rank and the cause.
 */
import { existsSync } from 'node:fs';
import { UserError } from '../errors.js';
import { splitLauncherArgs } from './parse.js';
import type { Flag } from './options.js';
import { canIsolateGpus, launch } from '../distributed/launcher.js';
import { readNodeConfig } from '../distributed/env.js';

const L = 'Launcher:';
const GPU_ISOLATION = ['auto', 'mount', 'none'];
/** The launcher's own flags (torchrun's names); every other argument goes to the workers unparsed. */
export const LAUNCHER_FLAGS: Flag[] = [
  { dest: 'nproc_per_node', type: 'number', default: undefined, describe: 'training processes (GPUs) per machine (or NUM_GPUS first, or NPROC_PER_NODE)', group: L },
  { dest: 'nnodes', type: 'number', default: 1, describe: 'machines in the job (or NNODES)', group: L },
  { dest: 'node_rank', type: 'number', default: 0, describe: "this machine's index in the job (or NODE_RANK)", group: L },
  { dest: 'master_addr', type: 'string', default: undefined, describe: 'address of the machine with node rank 0 (or MASTER_ADDR)', group: L },
  { dest: 'master_port', type: 'number', default: undefined, describe: 'rendezvous port on that machine (or MASTER_PORT)', group: L },
  { dest: 'gpu_isolation', type: 'string', default: 'auto', describe: 'show each worker only its own GPU: auto, mount or none', group: L, choices: GPU_ISOLATION },
];

const USAGE = `usage: mambaout-distributed-train NUM_GPUS DATA_DIR [mambaout-train flags]
       mambaout-distributed-train --nproc-per-node N [--nnodes M --node-rank R --master-addr HOST --master-port PORT]
                                  [--gpu-isolation auto|mount|none] DATA_DIR [flags]

Starts one training process per GPU (timm's distributed_train.sh). All mambaout-train flags are forwarded;
-b is the per-GPU batch: global batch = -b x --grad-accum-steps x total GPUs.`;

function intFlag(v: string | undefined, name: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UserError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

/** `self`: the path of the bin that runs this (the worker script, train.(ts|js), lies next to it). */
export async function distributedTrainCommand(argv: readonly string[], self: string): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') {
    process.stdout.write(USAGE + '\n');
    return argv.length === 0 ? 2 : 0;
  }
  const { launcher, nproc, rest } = splitLauncherArgs(argv, LAUNCHER_FLAGS);
  // Flags first, then the scheduler's environment (torchrun's PET_*, NNODES/NODE_RANK, a PyTorchJob's WORLD_SIZE/RANK).
  const node = readNodeConfig({
    nprocPerNode: intFlag(launcher.nproc_per_node, 'nproc-per-node', 1) ?? nproc ?? undefined,
    nnodes: intFlag(launcher.nnodes, 'nnodes', 1),
    nodeRank: intFlag(launcher.node_rank, 'node-rank', 0),
    masterAddr: launcher.master_addr,
    masterPort: intFlag(launcher.master_port, 'master-port', 1),
  });
  const { nprocPerNode, nnodes, nodeRank, masterAddr, masterPort } = node;
  if (!nprocPerNode || nprocPerNode < 1) throw new UserError('give the number of processes per machine first (mambaout-distributed-train NUM_GPUS DATA ...), with --nproc-per-node or NPROC_PER_NODE');
  if (nnodes > 1 && (!masterAddr || !masterPort)) throw new UserError('with more than one node give --master-addr and --master-port, or MASTER_ADDR and MASTER_PORT (the address of the node with rank 0)');
  if (nnodes > 1) process.stderr.write(`mambaout-distributed-train: node ${nodeRank} of ${nnodes} (${node.source}), rendezvous at ${masterAddr}:${masterPort}\n`);

  // WebGPU workers must each see only their own GPU (Dawn cannot tell identical GPUs apart): hide the others.
  const iso = launcher.gpu_isolation ?? 'auto';
  if (!GPU_ISOLATION.includes(iso)) throw new UserError(`--gpu-isolation must be auto, mount or none, got '${iso}'`);
  let gpuIsolation: 'none' | 'mount' = 'none';
  if (iso !== 'none') {
    const can = canIsolateGpus(nprocPerNode);
    if (can.ok) gpuIsolation = 'mount';
    else if (iso === 'mount') throw new UserError(`--gpu-isolation mount is not possible here: ${can.why}`);
    process.stderr.write(`mambaout-distributed-train: ${nprocPerNode} workers; ${gpuIsolation === 'mount' ? `each worker sees only its own GPU (mount namespace; ${can.why})` : `no GPU isolation (${can.why})`}\n`);
  }

  // The worker script: compiled JS next to the bin, or the TypeScript source under tsx.
  const ts = self.endsWith('.ts');
  const script = self.replace(/distributed_train\.(ts|js)$/, `train.$1`);
  if (!existsSync(script)) throw new UserError(`cannot find the training script next to ${self}`);
  const r = await launch({
    script,
    args: rest,
    nprocPerNode,
    nnodes,
    nodeRank,
    masterAddr,
    masterPort,
    nodeArgs: ts ? ['--import', 'tsx'] : [],
    gpuIsolation,
  });
  if (r.exitCode !== 0) {
    process.stderr.write(`error: ${r.message ?? 'a worker failed'}; the job was stopped (the last checkpoint is intact: continue with --resume).\n`);
  }
  return r.exitCode;
}
