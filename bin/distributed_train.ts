#!/usr/bin/env node
/**
 * mambaout-distributed-train: what the MambaOut repository's distributed_train.sh does with torchrun/DDP.
 *
 *   mambaout-distributed-train NUM_GPUS DATA_DIR [mambaout-train flags]
 *   mambaout-distributed-train --nproc-per-node 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 DATA_DIR [flags]
 *
 * Spawns one `mambaout-train` worker per device with RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set,
 * pins each worker to its device (webgpu adapter index / CUDA_VISIBLE_DEVICES), streams rank 0's output, and stops the
 * whole job when any worker fails, naming the rank and the cause.
 */
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { runMain } from '../src/cli/main.js';
import { UserError } from '../src/errors.js';
import { canIsolateGpus, launch } from '../src/distributed/launcher.js';
import { readNodeConfig } from '../src/distributed/env.js';

const LAUNCHER_FLAGS = ['nproc-per-node', 'nnodes', 'node-rank', 'master-addr', 'master-port', 'gpu-isolation'] as const;
type LauncherFlag = (typeof LAUNCHER_FLAGS)[number];

const USAGE = `usage: mambaout-distributed-train NUM_GPUS DATA_DIR [mambaout-train flags]
       mambaout-distributed-train --nproc-per-node N [--nnodes M --node-rank R --master-addr HOST --master-port PORT]
                                  [--gpu-isolation auto|mount|none] DATA_DIR [flags]

Starts one training process per GPU (timm's distributed_train.sh). All mambaout-train flags are forwarded;
-b is the per-GPU batch: global batch = -b x --grad-accum-steps x total GPUs.`;

/** Split launcher flags (and the leading NUM_GPUS) from the flags forwarded to every worker. */
export function splitArgs(argv: string[]): { launcher: Partial<Record<LauncherFlag, string>>; nproc: number | null; rest: string[] } {
  const launcher: Partial<Record<LauncherFlag, string>> = {};
  const rest: string[] = [];
  let nproc: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--([a-z-_]+)(?:=(.*))?$/.exec(a);
    const name = m?.[1].replace(/_/g, '-') as LauncherFlag | undefined;
    if (m && name && (LAUNCHER_FLAGS as readonly string[]).includes(name)) {
      const v = m[2] ?? argv[++i];
      if (v === undefined) throw new UserError(`--${name} needs a value`);
      launcher[name] = v;
      continue;
    }
    if (i === 0 && /^\d+$/.test(a)) {
      nproc = Number(a);
      continue;
    }
    rest.push(a);
  }
  return { launcher, nproc, rest };
}

function intFlag(v: string | undefined, name: string, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UserError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

runMain(async () => {
  const argv = process.argv.slice(2);
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h') {
    process.stdout.write(USAGE + '\n');
    return argv.length === 0 ? 2 : 0;
  }
  const { launcher, nproc, rest } = splitArgs(argv);
  // Flags first, then the scheduler's environment (torchrun's PET_*, NNODES/NODE_RANK, a PyTorchJob's WORLD_SIZE/RANK).
  const node = readNodeConfig({
    nprocPerNode: intFlag(launcher['nproc-per-node'], 'nproc-per-node', 1) ?? nproc ?? undefined,
    nnodes: intFlag(launcher.nnodes, 'nnodes', 1),
    nodeRank: intFlag(launcher['node-rank'], 'node-rank', 0),
    masterAddr: launcher['master-addr'],
    masterPort: intFlag(launcher['master-port'], 'master-port', 1),
  });
  const { nprocPerNode, nnodes, nodeRank, masterAddr, masterPort } = node;
  if (!nprocPerNode || nprocPerNode < 1) throw new UserError('give the number of processes per machine first (mambaout-distributed-train NUM_GPUS DATA ...), with --nproc-per-node or NPROC_PER_NODE');
  if (nnodes > 1 && (!masterAddr || !masterPort)) throw new UserError('with more than one node give --master-addr and --master-port, or MASTER_ADDR and MASTER_PORT (the address of the node with rank 0)');
  if (nnodes > 1) process.stderr.write(`mambaout-distributed-train: node ${nodeRank} of ${nnodes} (${node.source}), rendezvous at ${masterAddr}:${masterPort}\n`);

  // WebGPU workers must each see only their own GPU (Dawn cannot tell identical GPUs apart): hide the others.
  const iso = launcher['gpu-isolation'] ?? 'auto';
  if (!['auto', 'mount', 'none'].includes(iso)) throw new UserError(`--gpu-isolation must be auto, mount or none, got '${iso}'`);
  let gpuIsolation: 'none' | 'mount' = 'none';
  if (iso !== 'none') {
    const can = canIsolateGpus(nprocPerNode);
    if (can.ok) gpuIsolation = 'mount';
    else if (iso === 'mount') throw new UserError(`--gpu-isolation mount is not possible here: ${can.why}`);
    process.stderr.write(`mambaout-distributed-train: ${nprocPerNode} workers; ${gpuIsolation === 'mount' ? `each worker sees only its own GPU (mount namespace; ${can.why})` : `no GPU isolation (${can.why})`}\n`);
  }

  // The worker script: compiled JS next to this file, or the TypeScript source under tsx.
  const self = fileURLToPath(import.meta.url);
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
});
