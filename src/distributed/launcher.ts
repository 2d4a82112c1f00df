/**
 * Launcher for data-parallel training: one worker process per device (the torchrun / `distributed_train.sh`
 * equivalent of timm-reference §9.4).
 *
 *   const res = await launch({ nprocPerNode: 4, script: 'dist/bin/train.js', args: ['-c', 'configs/femto.yaml'] });
 *   process.exitCode = res.exitCode;           // res.message: "rank 1 exited with code 1" etc.
 *
 * Each worker is `process.execPath [nodeArgs] script args` with the environment
 *   RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT   (see env.ts)
 *   MAMBAOUT_WEBGPU_ADAPTER = local rank                 (WebGPU adapter index)
 *   CUDA_VISIBLE_DEVICES    = local rank, or the local-rank-th entry of the user's CUDA_VISIBLE_DEVICES list
 * Rank r = nodeRank * nprocPerNode + localRank. On one machine a free MASTER_PORT is picked when none is given;
 * with several machines run the launcher once per machine with the same masterAddr/masterPort and its nodeRank.
 *
 * Output: rank 0's stdout and stderr pass through unchanged; the other ranks' stderr is passed through with a
 * "[rank N] " prefix per line, their stdout is dropped (timm logs only on rank 0).
 *
 * Failure: when a worker exits with a non-zero code or is killed by a signal, the others get SIGTERM and,
 * after `graceMs`, SIGKILL; the result names the first failing rank and its cause and carries a non-zero exit
 * code (the worker's code, or 128 + signal number). When several workers fail at once, one killed by a signal
 * is blamed first, then one whose code is not PEER_FAILURE_EXIT_CODE (what a worker should exit with when it
 * stops because of another rank's failure). When every failed worker blames a peer, the worker that is still
 * running after the others gave up on it (hung, stopped, deadlocked: it never exits by itself) is named. SIGINT/SIGTERM/SIGHUP sent to the launcher are forwarded
 * to all workers (they run in their own process groups, so a terminal Ctrl-C reaches them exactly once), and
 * the same grace/kill sequence applies.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as net from 'node:net';
import { constants } from 'node:os';
import { UserError } from '../errors.js';
import { SETTING_VARIABLES } from '../settings.js';
import type { DistEnv } from './env.js';

export interface LaunchOptions {
  /** Script run by every worker (a .js file, or .ts with nodeArgs ['--import', 'tsx']). */
  script: string;
  args?: string[];
  /** Workers on this machine (one per device). */
  nprocPerNode: number;
  /** Machines in the job (default 1). */
  nnodes?: number;
  /** Index of this machine (default 0). */
  nodeRank?: number;
  /** Address of the machine running rank 0 (default 127.0.0.1; required when nnodes > 1). */
  masterAddr?: string;
  /** Rendezvous port (default: a free port when nnodes == 1; required when nnodes > 1). */
  masterPort?: number;
  /** Base environment of the workers (default process.env). */
  env?: Record<string, string | undefined>;
  /** Node flags of the workers (default: this process's execArgv without inspector/test/watch flags). */
  nodeArgs?: string[];
  /** Destination of rank 0's stdout (default process.stdout). */
  stdout?: NodeJS.WritableStream;
  /** Destination of rank 0's stderr and the other ranks' prefixed stderr (default process.stderr). */
  stderr?: NodeJS.WritableStream;
  /** SIGTERM -> SIGKILL delay when stopping workers (default 10 s). */
  graceMs?: number;
  /** Forward SIGINT/SIGTERM/SIGHUP of this process to the workers (default true). */
  forwardSignals?: boolean;
  /**
   * 'mount': start each worker in its own mount namespace where the other GPUs' device nodes (/dev/nvidiaN) are
   * covered by /dev/null, so the worker's Vulkan driver (and Dawn) sees only its own GPU. Needed for WebGPU: Dawn
   * cannot tell identical GPUs apart, and NVIDIA's Vulkan driver ignores CUDA_VISIBLE_DEVICES. Linux, root, unshare.
   */
  gpuIsolation?: 'none' | 'mount';
}

/** NVIDIA GPU device nodes (/dev/nvidia0, /dev/nvidia1, ...), in index order. */
export function nvidiaDeviceNodes(): string[] {
  let names: string[] = [];
  try {
    names = readdirSync('/dev').filter((f) => /^nvidia\d+$/.test(f));
  } catch {
    return [];
  }
  return names.sort((a, b) => Number(a.slice(6)) - Number(b.slice(6))).map((f) => `/dev/${f}`);
}

/** Whether per-worker GPU isolation by mount namespace can work here. */
export function canIsolateGpus(nproc: number): { ok: boolean; why: string } {
  if (process.platform !== 'linux') return { ok: false, why: 'not Linux' };
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return { ok: false, why: 'not running as root (unshare -m needs it)' };
  const nodes = nvidiaDeviceNodes();
  if (nodes.length < 2) return { ok: false, why: `${nodes.length} NVIDIA device node(s)` };
  if (nodes.length < nproc) return { ok: false, why: `${nodes.length} GPUs for ${nproc} workers` };
  const probe = spawnSync('unshare', ['-m', 'true'], { stdio: 'ignore' });
  if (probe.status !== 0) return { ok: false, why: 'unshare -m is not permitted' };
  return { ok: true, why: `${nodes.length} GPUs, one per worker` };
}

/** The command that starts one worker: node directly, or through unshare with the other GPUs hidden. */
export function workerCommand(nodeArgv: string[], localRank: number, isolation: 'none' | 'mount'): [string, string[]] {
  if (isolation === 'none') return [process.execPath, nodeArgv];
  const hide = nvidiaDeviceNodes().filter((_, i) => i !== localRank);
  const script = hide.map((d) => `mount --bind /dev/null ${d} || exit 97; `).join('') + 'exec "$@"';
  return ['unshare', ['-m', 'sh', '-c', script, 'sh', process.execPath, ...nodeArgv]];
}

export interface WorkerExit {
  rank: number;
  localRank: number;
  pid: number;
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LaunchResult {
  /** 0 when every worker exited with code 0. */
  exitCode: number;
  /** Null on success, else e.g. "rank 1 exited with code 1", "rank 1 was killed by SIGKILL", "received SIGINT". */
  message: string | null;
  /** First failing rank (null on success or when interrupted). */
  failedRank: number | null;
  /** The MASTER_PORT the workers used. */
  masterPort: number;
  workers: WorkerExit[];
}

function tryListen(host: string, port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.unref();
    s.once('error', () => resolve(null));
    s.listen({ host, port }, () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

/** Low end of the kernel's ephemeral port range (Linux), or null. */
function ephemeralLow(): number | null {
  try {
    const [lo] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return Number.isInteger(lo) ? lo : null;
  } catch {
    return null;
  }
}

/**
 * A TCP port that is free right now on `host`. Preferably one BELOW the kernel's ephemeral range: the port is
 * only reserved once rank 0 listens on it, and in the meantime the workers' own listeners (port 0) and
 * outgoing connections take ephemeral ports, which could otherwise collide with it.
 */
export async function findFreePort(host = '127.0.0.1'): Promise<number> {
  const lo = ephemeralLow() ?? 32768;
  const min = 20000;
  if (lo - min >= 1000) {
    for (let i = 0; i < 50; i++) {
      const p = await tryListen(host, min + Math.floor(Math.random() * (lo - min)));
      if (p !== null) return p;
    }
  }
  const p = await tryListen(host, 0);
  if (p === null) throw new Error(`cannot find a free TCP port on ${host}`);
  return p;
}

/** What a worker is told about itself: the torchrun-style environment (timm's `distributed` flag is derived). */
export type WorkerIdentity = Omit<DistEnv, 'distributed'>;

/**
 * Environment of one worker: the base environment plus the torchrun variables and the device pin.
 * Throws UserError when CUDA_VISIBLE_DEVICES lists fewer devices than workers per machine.
 */
export function workerEnv(base: Record<string, string | undefined>, w: WorkerIdentity): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  env.RANK = String(w.rank);
  env.LOCAL_RANK = String(w.localRank);
  env.WORLD_SIZE = String(w.worldSize);
  env.LOCAL_WORLD_SIZE = String(w.localWorldSize);
  env.NODE_RANK = String(w.nodeRank);
  env.MASTER_ADDR = w.masterAddr;
  env.MASTER_PORT = String(w.masterPort);
  env[SETTING_VARIABLES.webgpuAdapter] = String(w.localRank);
  const cvd = base.CUDA_VISIBLE_DEVICES;
  if (cvd === undefined) {
    env.CUDA_VISIBLE_DEVICES = String(w.localRank);
  } else if (cvd.trim() !== '') {
    const list = cvd.split(',').map((s) => s.trim()).filter((s) => s !== '');
    // "-1" (or any negative id) is the usual way to hide all GPUs: leave it alone.
    if (!list.some((d) => /^-\d+$/.test(d))) {
      if (list.length < w.localWorldSize) {
        throw new UserError(
          `CUDA_VISIBLE_DEVICES=${cvd} lists ${list.length} device(s) but ${w.localWorldSize} workers per machine were requested; ` +
            `list one device per worker or lower --nproc-per-node.`,
        );
      }
      env.CUDA_VISIBLE_DEVICES = list[w.localRank];
    }
  }
  // An empty CUDA_VISIBLE_DEVICES (no GPUs) is passed through unchanged.
  return env;
}

function defaultNodeArgs(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (/^--(inspect|debug)/.test(a) || /^--test/.test(a) || /^--watch/.test(a) || a === '--eval' || a === '-e' || a === '--print' || a === '-p') {
      // flags with a separate value
      if ((a === '--eval' || a === '-e' || a === '--print' || a === '-p' || a === '--test-reporter' || a === '--test-reporter-destination' ||
        a === '--test-name-pattern' || a === '--watch-path') && i + 1 < argv.length) i++;
      continue;
    }
    out.push(a);
  }
  return out;
}

/**
 * Exit code a worker should use when it stops because ANOTHER rank failed (it caught a DistError whose `rank`
 * is not its own). The launcher then blames a different worker when several fail at once.
 */
export const PEER_FAILURE_EXIT_CODE = 75;

/** Failures within this window after the first one compete for the blame (see onExit). */
const BLAME_WINDOW_MS = 150;
/** How long, when only peer failures were seen, the launcher waits for all but one worker to exit (a hung rank). */
const HANG_WAIT_MS = 10_000;

function signalNumber(sig: NodeJS.Signals): number {
  return (constants.signals as Record<string, number>)[sig] ?? 0;
}

/** Writes a child's stream line by line with a prefix (partial lines are held until complete). */
function prefixLines(src: NodeJS.ReadableStream, dst: NodeJS.WritableStream, prefix: string): Promise<void> {
  return new Promise((resolve) => {
    let tail = '';
    src.setEncoding('utf8');
    src.on('data', (chunk: string) => {
      const text = tail + chunk;
      const lines = text.split('\n');
      tail = lines.pop()!;
      if (lines.length) dst.write(lines.map((l) => prefix + l + '\n').join(''));
    });
    src.on('end', () => {
      if (tail) dst.write(prefix + tail + '\n');
      resolve();
    });
    src.on('error', () => resolve());
  });
}

function pipeThrough(src: NodeJS.ReadableStream, dst: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve) => {
    src.on('data', (chunk: Buffer) => dst.write(chunk));
    src.on('end', () => resolve());
    src.on('error', () => resolve());
  });
}

/** Start the workers of this machine and wait until all of them have exited. */
export async function launch(opts: LaunchOptions): Promise<LaunchResult> {
  const nproc = opts.nprocPerNode;
  const nnodes = opts.nnodes ?? 1;
  const nodeRank = opts.nodeRank ?? 0;
  if (!Number.isInteger(nproc) || nproc < 1) throw new UserError(`--nproc-per-node must be a whole number >= 1, got ${nproc}.`);
  if (!Number.isInteger(nnodes) || nnodes < 1) throw new UserError(`--nnodes must be a whole number >= 1, got ${nnodes}.`);
  if (!Number.isInteger(nodeRank) || nodeRank < 0 || nodeRank >= nnodes) {
    throw new UserError(`--node-rank must be between 0 and ${nnodes - 1}, got ${nodeRank}.`);
  }
  if (nnodes > 1 && !opts.masterAddr) throw new UserError('--master-addr is required when --nnodes > 1 (the address of the machine with node rank 0).');
  if (nnodes > 1 && !opts.masterPort) throw new UserError('--master-port is required when --nnodes > 1 (the same free port on every machine).');
  if (opts.masterPort !== undefined && (!Number.isInteger(opts.masterPort) || opts.masterPort < 1 || opts.masterPort > 65535)) {
    throw new UserError(`--master-port must be a TCP port between 1 and 65535, got ${opts.masterPort}.`);
  }
  if (!existsSync(opts.script)) throw new UserError(`Training script not found: ${opts.script}.`);
  const masterAddr = opts.masterAddr ?? '127.0.0.1';
  const masterPort = opts.masterPort ?? (await findFreePort(masterAddr === 'localhost' ? '127.0.0.1' : masterAddr));
  const worldSize = nnodes * nproc;
  const base = opts.env ?? process.env;
  const nodeArgs = opts.nodeArgs ?? defaultNodeArgs();
  const stdout = opts.stdout ?? process.stdout;
  const stderr = opts.stderr ?? process.stderr;
  const graceMs = opts.graceMs ?? 10_000;

  // Validate every worker's environment before starting any of them.
  const envs = Array.from({ length: nproc }, (_, localRank) =>
    workerEnv(base, { rank: nodeRank * nproc + localRank, localRank, worldSize, localWorldSize: nproc, nodeRank, masterAddr, masterPort }),
  );
  if (opts.gpuIsolation === 'mount') {
    // each worker sees exactly one GPU: its own, as device 0
    for (const e of envs) {
      e[SETTING_VARIABLES.webgpuAdapter] = '0';
      e.CUDA_VISIBLE_DEVICES = '0';
    }
  }

  const children: ChildProcess[] = [];
  const exits: (WorkerExit | null)[] = new Array(nproc).fill(null);
  const streams: Promise<void>[] = [];
  let failure: { rank: number; message: string; exitCode: number } | null = null;
  let interrupted: NodeJS.Signals | null = null;
  let stopping = false;
  let killTimer: NodeJS.Timeout | null = null;

  const alive = (i: number): boolean => exits[i] === null && children[i]?.pid !== undefined;
  const signalChild = (i: number, sig: NodeJS.Signals): void => {
    const pid = children[i]?.pid;
    if (pid === undefined || !alive(i)) return;
    try {
      process.kill(-pid, sig); // its whole process group (detached)
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        /* already gone */
      }
    }
  };
  const stopAll = (sig: NodeJS.Signals): void => {
    for (let i = 0; i < nproc; i++) signalChild(i, sig);
    if (!stopping) {
      stopping = true;
      killTimer = setTimeout(() => {
        for (let i = 0; i < nproc; i++) signalChild(i, 'SIGKILL');
      }, graceMs);
    }
  };

  const onSignal = (sig: NodeJS.Signals): void => {
    if (!interrupted && !failure) interrupted = sig;
    stopAll(sig);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  const handlers = new Map<NodeJS.Signals, () => void>();
  if (opts.forwardSignals ?? true) {
    for (const s of signals) {
      const h = (): void => onSignal(s);
      handlers.set(s, h);
      process.on(s, h);
    }
  }

  const candidates: { rank: number; message: string; exitCode: number; bySignal: boolean }[] = [];
  let blameTimer: NodeJS.Timeout | null = null;
  let firstFailureAt = 0;
  const decideBlame = (): void => {
    if (failure || interrupted || candidates.length === 0) return;
    const own = candidates.find((x) => x.bySignal) ?? candidates.find((x) => x.exitCode !== PEER_FAILURE_EXIT_CODE);
    if (!own) {
      // Every worker that stopped did so because of a peer. The peer that stopped answering does not exit by itself:
      // once all other workers have exited, the one still running is it.
      const running = exits.map((e, i) => (e === null ? i : -1)).filter((i) => i >= 0);
      if (running.length > 1 && Date.now() - firstFailureAt < HANG_WAIT_MS) {
        blameTimer = setTimeout(decideBlame, BLAME_WINDOW_MS);
        return;
      }
      if (running.length === 1) {
        const rank = nodeRank * nproc + running[0];
        const gaveUp = candidates.map((c) => c.rank).join(', ');
        failure = {
          rank,
          message: `rank ${rank} stopped answering: rank(s) ${gaveUp} gave up waiting for it (see their messages) while it kept running`,
          exitCode: candidates[0].exitCode,
        };
        stopAll('SIGTERM');
        return;
      }
    }
    const c = own ?? candidates[0];
    failure = { rank: c.rank, message: c.message, exitCode: c.exitCode };
    stopAll('SIGTERM');
  };

  const allExited = new Promise<void>((resolveAll) => {
    let remaining = nproc;
    for (let localRank = 0; localRank < nproc; localRank++) {
      const rank = nodeRank * nproc + localRank;
      const [cmd, cmdArgs] = workerCommand([...nodeArgs, opts.script, ...(opts.args ?? [])], localRank, opts.gpuIsolation ?? 'none');
      const child = spawn(cmd, cmdArgs, {
        env: envs[localRank],
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: process.platform !== 'win32',
      });
      children.push(child);
      if (rank === 0) {
        streams.push(pipeThrough(child.stdout!, stdout), pipeThrough(child.stderr!, stderr));
      } else {
        child.stdout!.resume(); // drained, not shown
        streams.push(prefixLines(child.stderr!, stderr, `[rank ${rank}] `));
      }
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (exits[localRank]) return;
        exits[localRank] = { rank, localRank, pid: child.pid ?? -1, code, signal };
        if ((code !== 0 || signal) && !failure && !interrupted && !stopping) {
          candidates.push(
            signal
              ? { rank, message: `rank ${rank} was killed by ${signal}`, exitCode: 128 + signalNumber(signal), bySignal: true }
              : { rank, message: `rank ${rank} exited with code ${code}`, exitCode: code ?? 1, bySignal: false },
          );
          // Exits that happen together are reported in an arbitrary order (one SIGCHLD, waitpid per child), and
          // a worker that dies usually makes its peers fail right after. Collect failures for a moment and
          // blame a worker killed by a signal first, else the first one seen.
          if (!blameTimer) {
            firstFailureAt = Date.now();
            blameTimer = setTimeout(decideBlame, BLAME_WINDOW_MS);
          }
        }
        if (--remaining === 0) {
          if (blameTimer && !failure) {
            clearTimeout(blameTimer);
            decideBlame();
          }
          resolveAll();
        }
      };
      child.once('exit', onExit);
      child.once('error', (err) => {
        if (!failure && !interrupted) {
          failure = { rank, message: `rank ${rank} could not be started (${err.message})`, exitCode: 1 };
          stopAll('SIGTERM');
        }
        onExit(1, null);
      });
    }
  });

  await allExited;
  await Promise.all(streams);
  if (killTimer) clearTimeout(killTimer);
  if (blameTimer) clearTimeout(blameTimer);
  for (const [s, h] of handlers) process.off(s, h);

  const workers = exits.map((e) => e!);
  const f = failure as { rank: number; message: string; exitCode: number } | null;
  if (f) return { exitCode: f.exitCode, message: f.message, failedRank: f.rank, masterPort, workers };
  const sig = interrupted as NodeJS.Signals | null;
  if (sig) return { exitCode: 128 + signalNumber(sig), message: `received ${sig}; stopped all workers`, failedRank: null, masterPort, workers };
  return { exitCode: 0, message: null, failedRank: null, masterPort, workers };
}
