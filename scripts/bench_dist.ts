/**
 * Data-parallel scaling benchmark: the model step (forward, backward, gradient all-reduce, AdamW) on synthetic data,
 * one process per device. Run directly for 1 device or under the launcher for N:
 *
 *   node --import tsx scripts/bench_dist.ts --model mambaout_femto --batch 128 --backend webgpu --paths none,flat,flat+staged
 *   node --import tsx scripts/launch_bench_dist.ts 2 --model mambaout_femto --batch 128 --backend webgpu --paths overlap-mt,default,default+bf16 --breakdown 3
 *
 * --paths runs one measurement per gradient path, one after the other in the same processes (same compiled shaders):
 *   none     no exchange at all (the 1-device baseline; with N devices the ranks drift apart)
 *   replay   as none, but the forward and backward passes are captured in the first step and replayed from the
 *            recording after it (src/backend/step_capture.ts; webgpu only); AdamW and the loss as in none
 *   old      one flat buffer after the backward pass, payloads over the ring's sockets (the path before issue 13)
 *   flat     all gradients after the backward pass (buckets of up to 64 MiB), payloads through shared memory
 *   overlap  gradient buckets read back while the backward pass is still running on the GPU, shared memory;
 *            AdamW updates each bucket's parameters as soon as the bucket is averaged (all overlap paths)
 *   overlap-sock  the same over the ring's sockets (to separate the two levers)
 *   overlap-mt  overlap, the buckets exchanged on --comm-threads worker threads (src/distributed/pool.ts)
 *   default  what mambaout-distributed-train does (src/train/ddp.ts readDistSettings): overlap, staged transfer,
 *            threads when the gradients are >= 16 MiB (AUTO_THREADS_BYTES), the next forward pass held (+hold)
 * These move the bytes as run 1 did (tfjs data() and uploads) unless modified:
 *   +staged  persistent staging buffers (src/train/ddp_gpu.ts), e.g. overlap-mt+staged, flat+staged
 *   +bf16    bf16 compression of the exchange (packed on the GPU when staged), e.g. default+bf16
 *   +sync    overlap paths: the backward pass in tfjs's one synchronous call (the readbacks resolve after it), as
 *            before DistributedDataParallel.variableGrads issued it in pieces, e.g. default+sync
 *   +hold    overlap paths: the step does not await allreduceGrads; the next step's forward pass is issued during the
 *            exchange and submitted after its last AdamW update (src/backend/submit_hold.ts), e.g. overlap-mt+hold;
 *            `default` holds unless +await (the training loop holds with AdamW and no --clip-grad, EMA or per-update
 *            schedule: src/train/loop.ts)
 *   +whole   the forward pass as one call instead of in pieces (MambaOut.forwardSteps, between which a held pass gives
 *            the exchange's completions a turn and ends the hold once the exchange is done), e.g. default+whole
 *   +memcpy  staged paths: the main thread copies between mapped staging memory and the exchange's arrays (GradHandoff
 *            'memcpy') instead of the kernel through a /dev/shm hand-off file, e.g. default+memcpy
 *   +replay  overlap paths (webgpu, staged): the forward and backward passes captured in the first step and replayed
 *            after it (DistributedDataParallel.replayGrads; the bucket readbacks start where the capture started
 *            them), the previous exchange awaited before each replay, e.g. default+replay
 *   +noaffinity, +noslots  webgpu: the buffer pool without step marks, AdamW binding each gradient where it came in
 *            (webgpuKernelSettings poolAffinity, gradSlots; `new_bind_groups` counts what they save), e.g.
 *            default+noaffinity+noslots
 * `default` is always staged.
 * Each path: --warmup untimed steps, --steps timed steps (img/s, ms/step, JS issue time of forward + backward), then
 * --breakdown profiled steps whose exchange is timed phase by phase (src/train/ddp.ts StepProfile; the probes
 * synchronise with the GPU, so these steps are not in the img/s figure). A 1-device run with a path other than none
 * measures the readback and upload costs with nothing to exchange. --trace N: each rank writes, for the last N timed
 * steps of each path, when each phase of each bucket happened (a `TRACE {json}` line on stderr; no synchronisation
 * added; gpu_bench_lib.sh trace_table lays the ranks side by side). --read-loss step|log: every step's loss read back
 * (default) or as the training loop reads them (at most 2 steps queued). --pin halves|main: CPU affinity of the ranks
 * (see below); --marks: each rank prints its timed steps' window for a --cpu-prof profile (gpu_dist_profile.sh).
 *
 * Every rank takes its slice of one fixed global batch (generated from --seed), so N processes with --batch B see
 * exactly the data of 1 process with --batch N·B. Every path starts from the same initial weights and a fresh
 * optimizer and runs --warmup + --steps + --breakdown updates: `--save FILE` (1 process, e.g. --paths none) writes the
 * weights after the last path, `--compare FILE` (N processes, same --warmup, --steps, --breakdown) compares the
 * weights after each path with them (float32 exchange: rounding only; +bf16: the effect of the compression).
 *
 * Output (rank 0): one JSON line per path ({"path": ..., "img_s": ..., "breakdown": {...}}), then a table.
 */
import * as tf from '@tensorflow/tfjs-core';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { initBackend, releaseBackend } from '../src/backend/index.js';
import { bindGroupCacheStats } from '../src/backend/webgpu_hooks.js';
import { setWebGPUKernelSettings, webgpuKernelSettings, type WebGPUKernelSettings } from '../src/backend/kernels/webgpu/settings.js';
import { createModel } from '../src/models/mambaout.js';
import { getModelConfig } from '../src/models/registry.js';
import { createOptimizer } from '../src/train/optim/index.js';
import { DEFAULT_DIST_BUCKET_MB } from '../src/settings.js';
import { AUTO_THREADS, AUTO_THREADS_BYTES, DistributedDataParallel, stepEachBucket, type StepProfile } from '../src/train/ddp.js';
import { ProcessGroup } from '../src/distributed/group.js';
import { CommPool } from '../src/distributed/pool.js';
import { readDistEnv } from '../src/distributed/env.js';
import { readSafetensors, writeSafetensors } from '../src/checkpoint/safetensors.js';
import { Rng } from '../src/utils/rng.js';
import { runSteps, type Steps } from '../src/utils/steps.js';
import { InFlight, readBack } from '../src/backend/fence.js';
import { CapturedStep, type CaptureBackend } from '../src/backend/step_capture.js';

const BASES = ['none', 'replay', 'old', 'flat', 'overlap', 'overlap-sock', 'overlap-mt', 'default'] as const;
type Base = (typeof BASES)[number];
interface Path {
  name: string;
  base: Base;
  staged: boolean;
  bf16: boolean;
  /** overlap paths: tfjs's one synchronous backward call (watch) instead of DistributedDataParallel.variableGrads */
  sync: boolean;
  /** staged paths: GradHandoff 'memcpy' */
  memcpy: boolean;
  /** the next forward pass issued during the exchange (DistributedDataParallel.variableGrads holds it) */
  hold: boolean;
  /** the forward pass given in pieces (MambaOut.forwardSteps): a held one gives the exchange a turn between them */
  pieces: boolean;
  /** webgpuKernelSettings switched off for this path (+noaffinity, +noslots; the others as the environment says) */
  kernels: Partial<WebGPUKernelSettings>;
  /** +replay: DistributedDataParallel.replayGrads */
  replay: boolean;
}
function parsePath(name: string): Path {
  const [base, ...mods] = name.split('+').map((p) => p.trim());
  if (!BASES.includes(base as Base)) throw new Error(`unknown path '${name}' (use ${BASES.join(', ')}, with +staged and/or +bf16)`);
  const known = ['staged', 'bf16', 'sync', 'memcpy', 'hold', 'await', 'whole', 'noaffinity', 'noslots', 'replay'];
  for (const m of mods) if (!known.includes(m)) throw new Error(`unknown modifier '+${m}' in path '${name}' (use ${known.map((k) => `+${k}`).join(', ')})`);
  if ((base === 'none' || base === 'replay') && mods.length) throw new Error(`path '${base}' takes no modifiers`);
  return { name, base: base as Base, staged: base === 'default' || mods.includes('staged'), bf16: mods.includes('bf16'), sync: mods.includes('sync'), memcpy: mods.includes('memcpy'),
    hold: mods.includes('hold') || (base === 'default' && !mods.includes('await')), pieces: !mods.includes('whole'),
    kernels: { ...(mods.includes('noaffinity') ? { poolAffinity: false } : {}), ...(mods.includes('noslots') ? { gradSlots: false } : {}) },
    replay: mods.includes('replay') };
}

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'mambaout_femto' },
    batch: { type: 'string', default: '128' },
    steps: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    breakdown: { type: 'string', default: '0' },
    trace: { type: 'string', default: '0' },
    'read-loss': { type: 'string', default: 'step' },
    pin: { type: 'string', default: 'none' },
    marks: { type: 'boolean', default: false },
    'sweep-cores': { type: 'string' },
    'submit-batch': { type: 'string' },
    paths: { type: 'string' },
    'bucket-mb': { type: 'string', default: String(DEFAULT_DIST_BUCKET_MB) },
    'comm-threads': { type: 'string' }, // threads of overlap-mt (default 4) and, when given, of `default`
    backend: { type: 'string', default: 'auto' },
    'img-size': { type: 'string', default: '224' },
    seed: { type: 'string', default: '0' },
    save: { type: 'string' },
    compare: { type: 'string' },
  },
});
const env = readDistEnv();
const world = env.worldSize;
const rank = env.rank;
const B = Number(values.batch);
const S = Number(values['img-size']);
const steps = Number(values.steps);
const warmup = Number(values.warmup);
const profiled = Number(values.breakdown);
const traced = Number(values.trace);
/**
 * --read-loss step (default): every step's loss is read back before the next step starts (a full synchronisation per
 * step). `log`: as the training loop (src/train/loop.ts), at most 2 steps queued on the device and the losses read
 * every LOSS_READ_EVERY steps and at the end of the timed steps, so the next forward is issued while the GPU still runs
 * this step's optimizer. On the H200 x2 (2026-11-30, GPU run 5 in docs/BENCHMARKS.md) `log` gave femto 1 GPU +3%
 * but 2 GPUs -12% (2,834-2,912 vs 3,295 img/s; the main thread's issue 55-66 vs 46 ms) and tiny 2 GPUs 1.84x vs 2.03x.
 */
const readEachStep = values['read-loss'] === 'step';
if (!readEachStep && values['read-loss'] !== 'log') throw new Error(`--read-loss must be log or step, got ${values['read-loss']}`);
const LOSS_READ_EVERY = 50; // timm's --log-interval default
let inFlight = new InFlight(2);
const losses: tf.Tensor[] = [];
/** +hold: the exchange the last step started and did not await. */
let pendingExchange: Promise<unknown> | null = null;
/** Every step's work done: the last exchange, the losses. */
async function settle(): Promise<void> {
  const p = pendingExchange;
  pendingExchange = null;
  if (p) await p;
  await readLosses();
}
async function readLosses(): Promise<void> {
  if (losses.length) await readBack(losses.splice(0));
  await inFlight.drain();
  trace('loss');
}
/** --trace N: the last N timed steps of each path record when each phase happened (epoch ms; no synchronisation added). */
type TraceRow = [step: number, event: string, bucket: number, t: number];
const traceRows: TraceRow[] = [];
let traceStep = -1;
const now = (): number => performance.timeOrigin + performance.now();
const trace = (event: string, bucket = -1): void => {
  if (traceStep >= 0) traceRows.push([traceStep, event, bucket, +now().toFixed(3)]);
};
// traced steps also record the main thread's garbage collections: event 'gc-minor' / 'gc-major' / ..., the bucket
// column holding the pause in microseconds, t its start
if (traced > 0) {
  const kinds: Record<number, string> = { 1: 'gc-minor', 2: 'gc-major', 4: 'gc-incremental', 8: 'gc-weakcb' };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind ?? 0;
      if (traceStep >= 0) traceRows.push([traceStep, kinds[kind] ?? `gc-${kind}`, Math.round(e.duration * 1000), +(performance.timeOrigin + e.startTime).toFixed(3)]);
    }
  }).observe({ entryTypes: ['gc'] });
}
const paths = (values.paths ?? (world > 1 ? 'default' : 'none')).split(',').map((p) => parsePath(p));

/** CPU affinity of this process: of all its threads (`all`, as they are now; later ones inherit from their creator), or of the main thread. */
function pinTo(cores: string, all: boolean): boolean {
  try {
    execFileSync('taskset', [...(all ? ['-a'] : []), '-p', '-c', cores, String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch (e) {
    process.stderr.write(`[rank ${rank}] --pin ${values.pin}: taskset failed (${String(e)})\n`);
    return false;
  }
}
// --pin halves: each rank (and every thread it has or makes) on its own 1/W of the cores, local rank r on
// [r·n/W, (r+1)·n/W) (issue 13: do two ranks slow each other's main thread through the CPUs they share?)
if (!['none', 'halves', 'main'].includes(values.pin!)) throw new Error(`--pin must be none, halves or main, got ${values.pin}`);
if (values.pin === 'halves') {
  const n = availableParallelism();
  const w = env.localWorldSize;
  const r = env.localRank;
  const cores = `${Math.floor((r * n) / w)}-${Math.floor(((r + 1) * n) / w) - 1}`;
  if (pinTo(cores, true)) process.stderr.write(`[rank ${rank}] pinned to cores ${cores}\n`);
}
// --pin main: the main thread of local rank r alone on core 8r, every other thread of every rank off
// that core and off the cores that may share its physical core (8r±1, 8r+16: the VM does not say which are SMT
// siblings). Are a rank's slow steps its main thread sharing a core with its own communication threads?
const mainCore = 8 * env.localRank;
const pinMain = values.pin === 'main' && availableParallelism() >= 32;
if (pinMain) {
  const reserved = new Set<number>();
  for (let r = 0; r < env.localWorldSize; r++) for (const d of [0, 1, -1, 16]) reserved.add(8 * r + d);
  const others = Array.from({ length: availableParallelism() }, (_, i) => i).filter((i) => !reserved.has(i));
  pinTo(others.join(','), true);
}
const group = await ProcessGroup.init({ ...env, timeoutMs: 300_000 });
const backend = await initBackend(values.backend, { training: true });
// --submit-batch N: tfjs-webgpu submits every N dispatches (WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE, default 15); on 2 GPUs
// the main thread bounds the step and submitQueue was its largest self time (GPU run 6, call 6: 8.5 ms per step; call
// 10: 60 or 200 did not lower it)
if (values['submit-batch'] !== undefined) tf.env().set('WEBGPU_DEFERRED_SUBMIT_BATCH_SIZE', Number(values['submit-batch']));
if (rank === 0) process.stderr.write(`[rank 0] ${backend.message}\n`);
const model = createModel(getModelConfig(values.model!).name, { seed: 0 });
const params = model.parameterInfo().map((p) => ({ name: p.name, variable: p.variable }));
let opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
const bucketBytes = Math.round(Number(values['bucket-mb']) * 1024 * 1024);
const gradBytes = params.reduce((a, p) => a + p.variable.size * 4, 0);
// `default` = readDistSettings' automatic choice (MAMBAOUT_DIST_THREADS=auto): threads above AUTO_THREADS_BYTES
const threadsFor = (p: Path): boolean => p.base === 'overlap-mt' || (p.base === 'default' && gradBytes >= AUTO_THREADS_BYTES);
const commThreads = values['comm-threads'] !== undefined ? Number(values['comm-threads'])
  : paths.some((p) => p.base === 'default') && !paths.some((p) => p.base === 'overlap-mt') ? AUTO_THREADS : 4;
const pool = paths.some(threadsFor)
  ? await CommPool.create(group, { threads: commThreads, masterAddr: env.masterAddr || '127.0.0.1', timeoutMs: 300_000, nodeRank: env.nodeRank })
  : null;
const ddps = new Map<string, DistributedDataParallel>();
/** One DDP per combination of threads, transfer, compression and profiling (each keeps its own staging). */
function ddpFor(p: Path, profile: boolean): DistributedDataParallel {
  const key = `${threadsFor(p)}|${p.staged}|${p.bf16}|${p.memcpy}|${profile}`;
  let d = ddps.get(key);
  if (!d) {
    d = new DistributedDataParallel(group, params, {
      bucketBytes, profile, pool: threadsFor(p) ? pool : null, transfer: p.staged ? 'staged' : 'tfjs', compress: p.bf16 ? 'bf16' : 'none',
      handoff: p.memcpy ? 'memcpy' : 'auto', trace: traced > 0 ? trace : undefined,
    });
    ddps.set(key, d);
  }
  return d;
}
await ddpFor(paths[0], false).broadcastParams();
if (pinMain) {
  // the threads are there now (backend, communication pool): the main thread alone moves to its own core
  if (pinTo(String(mainCore), false)) process.stderr.write(`[rank ${rank}] main thread on core ${mainCore}, the other threads off cores near it\n`);
}
// every path starts from these weights with a fresh optimizer (so --compare measures each path on its own)
const initial = await Promise.all(params.map(async (p) => (await p.variable.data()) as Float32Array));
function resetWeights(): void {
  tf.tidy(() => params.forEach((p, i) => p.variable.assign(tf.tensor(initial[i], p.variable.shape, 'float32'))));
  opt.dispose();
  opt = createOptimizer(params, { opt: 'adamw', lr: 1e-3, weightDecay: 0.05 });
}

// This rank's slice of the fixed global batch [world·B, S, S, 3].
const rng = new Rng(Number(values.seed));
const per = S * S * 3;
const xs = new Float32Array(B * per);
const labels = new Int32Array(B);
for (let i = 0; i < world * B; i++) {
  const mine = i >= rank * B && i < (rank + 1) * B;
  for (let j = 0; j < per; j++) {
    const v = rng.random() * 2 - 1; // drawn for every image, so every rank walks the same stream
    if (mine) xs[(i - rank * B) * per + j] = v;
  }
  const y = rng.randrange(0, model.numClasses);
  if (mine) labels[i - rank * B] = y;
}
const x = tf.tensor4d(xs, [B, S, S, 3]);
const yOneHot = tf.oneHot(tf.tensor1d(labels, 'int32'), model.numClasses);
const vars = params.map((p) => p.variable);
/** The loss in pieces (MambaOut.forwardSteps), as the training loop gives it to DistributedDataParallel.variableGrads. */
const lossSteps = function* (): Steps<tf.Scalar> {
  const logits = yield* model.forwardSteps(x, { training: false });
  return tf.losses.softmaxCrossEntropy(yOneHot, logits) as tf.Scalar;
};
const lossFn = (): tf.Scalar => runSteps(lossSteps());

let issueMs = 0;
let exchangeMs = 0;
/** JS time of the optimizer call after the step (path none and awaited exchanges: the whole update's issuing). */
let optimizerMs = 0;
const overlapped = (p: Path): boolean => p.base.startsWith('overlap') || p.base === 'default';
/** The step's loss queued, and read back as --read-loss says (disposed once read). */
async function queueLoss(loss: tf.Scalar): Promise<void> {
  losses.push(loss);
  if (readEachStep || losses.length >= LOSS_READ_EVERY) await readLosses();
  else await inFlight.push();
}
/** The replay path's capture (one per run of the path: resetWeights gives the parameters new buffers). */
let captured: { step: CapturedStep; result: { value: tf.Scalar; grads: tf.NamedTensorMap } } | null = null;
async function replayStep(): Promise<void> {
  trace('step');
  const t0 = performance.now();
  if (!captured) captured = CapturedStep.capture(tf.backend() as unknown as CaptureBackend, () => tf.variableGrads(lossFn, vars));
  else captured.step.replay();
  issueMs += performance.now() - t0;
  trace('issued');
  const t2 = performance.now();
  opt.step(new Map(params.map((p) => [p.name, captured!.result.grads[p.variable.name]])));
  optimizerMs += performance.now() - t2;
  trace('optimizer');
  await queueLoss(tf.tidy(() => captured!.result.value.add(0))); // a copy: readBack disposes what it reads
}
/** +replay: the step through DistributedDataParallel.replayGrads, the exchange left running into the next step. */
async function ddpReplayStep(ddp: DistributedDataParallel): Promise<void> {
  trace('step');
  if (pendingExchange) {
    await pendingExchange;
    pendingExchange = null;
  }
  const t0 = performance.now();
  const { value, grads } = await ddp.replayGrads(lossFn, vars);
  issueMs += performance.now() - t0;
  trace('issued');
  const g = new Map<string, tf.Tensor>(params.map((p) => [p.name, grads[p.variable.name]]));
  pendingExchange = ddp.allreduceGrads(params, g, { onBucket: stepEachBucket(opt) });
  trace('optimizer');
  await queueLoss(tf.tidy(() => value.add(0))); // a copy: readBack disposes what it reads
}
function dropCapture(): void {
  for (const d of ddps.values()) d.dropCapture();
  if (!captured) return;
  captured.step.release();
  tf.dispose([captured.result.value, ...Object.values(captured.result.grads)]);
  captured = null;
}
async function step(path: Path, ddp: DistributedDataParallel): Promise<void> {
  if (path.base === 'replay') return replayStep();
  if (path.replay) return ddpReplayStep(ddp);
  trace('step');
  const t0 = performance.now();
  const { value, grads } = overlapped(path) && !path.sync ? await ddp.variableGrads(path.pieces ? lossSteps : lossFn, vars)
    : tf.tidy(() => tf.variableGrads(overlapped(path) ? ddp.watch(lossFn) : lossFn, vars));
  const t1 = performance.now();
  trace('issued');
  issueMs += t1 - t0;
  let g = new Map<string, tf.Tensor>(params.map((p) => [p.name, grads[p.variable.name]]));
  if (path.base !== 'none') {
    group.useSharedMemory = path.base !== 'old' && path.base !== 'overlap-sock';
    // overlap paths: the optimizer updates each bucket's parameters as soon as the bucket is back on the GPU
    const onBucket = overlapped(path) ? stepEachBucket(opt) : undefined;
    if (path.hold && onBucket && !path.sync && opt.updatesInPlace) {
      pendingExchange = ddp.allreduceGrads(params, g, { onBucket });
      g = new Map();
    } else {
      g = await ddp.allreduceGrads(params, g, { onBucket });
      exchangeMs += performance.now() - t1;
      trace('exchanged');
    }
  }
  const t2 = performance.now();
  if (g.size > 0) opt.step(g);
  optimizerMs += performance.now() - t2;
  for (const t of g.values()) t.dispose();
  trace('optimizer');
  await queueLoss(value);
}

function median(a: number[]): number {
  const s = [...a].sort((p, q) => p - q);
  return s.length ? s[Math.floor(s.length / 2)] : NaN;
}

interface Row {
  path: string;
  img_s: number;
  ms_per_step: number;
  issue_ms: number;
  exchange_ms: number;
  optimizer_ms: number;
  new_bind_groups: number;
  breakdown: Omit<StepProfile, 'mode'> | null;
}
const ref = values.compare ? await readSafetensors(values.compare) : null;
/** Largest |w - w_ref| over all weights (and the largest |w_ref|), on rank 0. */
async function compareWeights(): Promise<{ max_abs_weight_diff: number; max_abs_weight: number }> {
  const sd = await model.stateDictAsync();
  let worst = 0;
  let scale = 0;
  for (const [k, t] of sd) {
    const a = t.data as Float32Array;
    const b = ref!.get(k)!.data as Float32Array;
    for (let i = 0; i < a.length; i++) {
      worst = Math.max(worst, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(b[i]));
    }
  }
  return { max_abs_weight_diff: worst, max_abs_weight: scale };
}

const rows: Row[] = [];
const envKernels = { poolAffinity: webgpuKernelSettings.poolAffinity, gradSlots: webgpuKernelSettings.gradSlots };
for (const path of paths) {
  setWebGPUKernelSettings({ ...envKernels, ...path.kernels });
  dropCapture();
  if (path.base === 'replay' && !backend.description.startsWith('webgpu')) throw new Error('path replay needs --backend webgpu');
  resetWeights();
  const [ddp, ddpProf] = [ddpFor(path, false), ddpFor(path, true)];
  inFlight = new InFlight(2);
  for (let i = 0; i < warmup; i++) await step(path, ddp);
  await settle();
  issueMs = 0;
  exchangeMs = 0;
  optimizerMs = 0;
  const mark0 = process.hrtime.bigint() / 1000n; // CLOCK_MONOTONIC µs, the clock of --cpu-prof's samples
  bindGroupCacheStats(true);
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) {
    if (i >= steps - traced) traceStep = i;
    await step(path, ddp);
  }
  await settle(); // the timed steps are done when their work is
  traceStep = -1;
  const ms = (performance.now() - t0) / steps;
  // bind groups created in the timed steps (webgpu_hooks.ts cache misses; 0 once every step reuses its buffers)
  const bindGroupsPerStep = +(bindGroupCacheStats(true).misses / steps).toFixed(1);
  // the timed steps' window for scripts/profile_summary.ts --from/--to (a --cpu-prof run of this rank)
  if (values.marks) process.stderr.write(`MARKS rank=${rank} pid=${process.pid} path=${path.name} from=${mark0} to=${process.hrtime.bigint() / 1000n}\n`);
  if (traced > 0) {
    process.stderr.write(`TRACE ${JSON.stringify({ rank, path: path.name, rows: traceRows.splice(0) })}\n`);
  }
  const row: Row = {
    path: path.name, img_s: +((B * world) / (ms / 1000)).toFixed(1), ms_per_step: +ms.toFixed(1), issue_ms: +(issueMs / steps).toFixed(1),
    exchange_ms: +(exchangeMs / steps).toFixed(1), optimizer_ms: +(optimizerMs / steps).toFixed(2), new_bind_groups: bindGroupsPerStep, breakdown: null,
  };
  if (profiled > 0 && (path.base === 'none' || path.base === 'replay')) {
    for (let i = 0; i < profiled; i++) await step(path, ddp); // same number of updates as the other paths
  } else if (profiled > 0) {
    const prof: StepProfile[] = [];
    for (let i = 0; i < profiled; i++) {
      await step(path, ddpProf);
      if (ddpProf.lastProfile) prof.push(ddpProf.lastProfile);
    }
    const keys = ['tail', 'readback', 'exchange', 'reduce', 'upload', 'exposed', 'copy'] as const;
    const bd = { buckets: prof[0]?.buckets ?? 0 } as Omit<StepProfile, 'mode'>;
    for (const k of keys) {
      // the slowest rank sets the pace: median over steps of the max over ranks
      const perStep = [];
      for (const p of prof) perStep.push((await group.allreduceScalars([p[k]], 'max'))[0]);
      bd[k] = +median(perStep).toFixed(1);
    }
    row.breakdown = bd;
  }
  await settle();
  rows.push(row);
  const cmp = ref && rank === 0 ? await compareWeights() : null;
  if (rank === 0) {
    const transport = world === 1 || path.base === 'none' || path.base === 'replay' ? 'none' : group.sharedMemory?.right && path.base !== 'old' && path.base !== 'overlap-sock' ? 'shm' : group.transport?.right;
    console.log(JSON.stringify({ model: values.model, backend: backend.description, world, batch_per_device: B, global_batch: B * world, img_size: S,
      transport, threads: threadsFor(path) ? pool?.threads ?? 0 : 0, transfer: ddp.transfer, compress: ddp.compress, bucket_mb: Number(values['bucket-mb']), read_loss: values['read-loss'], ...row,
      ...(cmp ? { compare: values.compare, steps: warmup + steps + profiled, ...cmp } : {}) }));
  }
}

// --sweep-cores LIST (1 process, path none): the main thread pinned to each core of LIST in turn, a warm-up step and
// 8 timed steps on each: `SWEEP {core, issue_ms, ms_per_step}` lines on stderr. Is the spread of the issue time between
// processes (femto 1 GPU: 27-53 ms) a property of the core the main thread runs on?
if (values['sweep-cores'] && world === 1) {
  for (const c of values['sweep-cores'].split(',').map(Number)) {
    if (!pinTo(String(c), false)) throw new Error(`could not pin the main thread to core ${c}`);
    await step(paths[0], ddpFor(paths[0], false));
    await settle();
    issueMs = 0;
    const t0 = performance.now();
    for (let i = 0; i < 8; i++) await step(paths[0], ddpFor(paths[0], false));
    await settle();
    process.stderr.write(`SWEEP ${JSON.stringify({ core: c, issue_ms: +(issueMs / 8).toFixed(1), ms_per_step: +((performance.now() - t0) / 8).toFixed(1) })}\n`);
  }
}

if (rank === 0) {
  const f = (v: number | undefined): string => (v === undefined || Number.isNaN(v) ? '-' : v.toFixed(1)).padStart(8);
  console.log(`\n${values.model}, ${world} device(s), batch ${B} per device (ms; breakdown = median of ${profiled} profiled steps, slowest rank)`);
  console.log(`${'path'.padEnd(18)} ${'img/s'.padStart(9)} ${'step'.padStart(8)} ${'issue'.padStart(8)} ${'exch'.padStart(8)} |` +
    ` ${'tail'.padStart(8)} ${'readback'.padStart(8)} ${'transp'.padStart(8)} ${'reduce'.padStart(8)} ${'upload'.padStart(8)} ${'exposed'.padStart(8)} ${'copy'.padStart(6)} buckets`);
  for (const r of rows) {
    const b = r.breakdown;
    console.log(`${r.path.padEnd(18)} ${r.img_s.toFixed(1).padStart(9)} ${f(r.ms_per_step)} ${f(r.issue_ms)} ${f(r.exchange_ms)} |` +
      ` ${f(b?.tail)} ${f(b?.readback)} ${f(b ? b.exchange - b.reduce : undefined)} ${f(b?.reduce)} ${f(b?.upload)} ${f(b?.exposed)} ${f(b?.copy).trim().padStart(6)} ${b ? String(b.buckets).padStart(7) : '      -'}`);
  }
  if (values.save) await writeSafetensors(values.save, await model.stateDictAsync());
}
for (const d of ddps.values()) d.dispose();
tf.dispose([x, yOneHot]);
model.dispose();
await pool?.close();
await group.close();
await releaseBackend();
