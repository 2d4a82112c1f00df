/**
 * DistributedDataParallel for tfjs training (torch.nn.parallel.DistributedDataParallel's job): rank 0's weights
 * everywhere at start, gradients averaged over ranks at every optimizer update, metrics averaged for the log. The
 * communication itself is src/distributed/ (a process group that knows nothing of tfjs); this file is the glue.
 *
 * ## Two ways to average the gradients
 *
 * Flat (`allreduceGrads` after `tf.variableGrads`): one concat + one readback of all gradients after the backward
 * pass, one all-reduce, one upload + split. Nothing overlaps the backward pass: on the H200 x2 machine (femto, 29 MB of
 * gradients) the step grew from 102 ms to 260 ms (docs/BENCHMARKS.md, "Two GPUs"). Per-tensor readbacks and uploads
 * cost a GPU buffer creation each (~0.25 s per femto step): always one buffer per bucket, never per tensor.
 *
 * Overlapped (`watch(lossFn)` passed to `tf.variableGrads`, then `allreduceGrads`): DDP's gradient buckets. tfjs runs
 * the backward pass synchronously in JS while the GPU executes the issued kernels asynchronously (femto: JS issue
 * ~91 ms, GPU ~87 ms). `watch` lets the forward run, then marks on the gradient tape, for every parameter used once,
 * the tape node whose backward produces its gradient; when the backward pass reaches it the gradient tensor is handed
 * to its bucket. A full bucket is concatenated and its readback started right there (tfjs's `data()` encodes the copy
 * into a staging buffer, submits and calls mapAsync before it returns its promise), so the readbacks of the last
 * stages' buckets are queued while the JS thread still issues the earlier stages. With tfjs's one synchronous backward
 * call they resolve only once it returns; `variableGrads` (what the loop uses) issues the backward pass node by node and
 * gives the event loop a turn after each node that started a readback, so they resolve while the rest is issued (H200,
 * femto, 2 GPUs: the exchange left after the backward pass 40-42 -> 19-23 ms per step). Each bucket then goes into the
 * all-reduce (queued in bucket order per communication channel, the same on every rank) and is uploaded as soon as it
 * is averaged. What stays on the critical path is the GPU tail of the backward pass plus the exchange of the last
 * bucket(s) and the uploads. The exchange does not wait for `allreduceGrads`: a bucket whose readback is done is
 * all-reduced and uploaded whenever the event loop runs, e.g. while the training loop awaits the loss; `allreduceGrads`
 * only collects the results.
 *
 * ## The held forward pass (the `hold` option; src/backend/submit_hold.ts)
 *
 * The last buckets (the stem's and the first stage's gradients, produced last) come back from the exchange 5-20 ms
 * after the backward pass was issued, and the next forward pass needs exactly those weights first. A caller that does
 * not await allreduceGrads (the training loop when nothing between two updates needs the exchange done: AdamW updating
 * in place, no --clip-grad, EMA or per-update schedule) lets the next variableGrads issue the forward pass at once,
 * with tfjs's submits held; the AdamW updates of the buckets still in flight are recorded and submitted ahead of the
 * held work (`ahead`), and the held command buffers go to the GPU, one submit each, once the exchange is done. A loss
 * function given in pieces (MambaOut.forwardSteps) gives the exchange's completions a turn after every block, outside
 * the tape (`outsideTape`), and ends the hold at the first pause after the exchange is done; given whole, the
 * completions wait until the whole pass is issued. H200 x2, femto, alternating in one pair of processes (docs/
 * BENCHMARKS.md "GPU run 7"): held in pieces 4,094 img/s, awaited 4,001, held whole 3,784. The weights are the same bits
 * as with the exchange awaited (tests on lavapipe: the DDP alone, and the training loop).
 *
 * ## Moving the bytes (the `transfer` option; measured by scripts/gpu_transfer_bench.ts)
 *
 * 'staged' (default on webgpu, src/train/ddp_gpu.ts): persistent MAP_READ / MAP_WRITE staging buffers per bucket and
 * persistent host arrays, the gradient tensors' GPU buffers copied straight into the staging buffer: no JS or Dawn
 * allocation per step (new memory ran at 0.1-3 GB/s, reused memory at memcpy speed). 'tfjs': tensor.data() and tfjs's
 * or Dawn's uploads (every backend; the path of run 1). Staged buckets that communication threads exchange and that
 * are read back while the backward pass is still being issued skip the main thread's copies: the bytes go between
 * the mapped staging memory and the threads through a /dev/shm hand-off file (`slot`, src/distributed/handoff.ts).
 *
 * ## bf16 compression (`compress: 'bf16'`, MAMBAOUT_DIST_COMPRESS=bf16; off by default)
 *
 * torch's bf16_compress_hook: the bucket is packed to bfloat16 (round to nearest even) on the GPU before the readback,
 * all-reduced as bfloat16 (src/distributed/bf16.ts: every add and the division rounded to bfloat16, as NCCL does) and
 * widened on the GPU after the upload: half the bytes in every phase. The averaged gradient differs from the float32
 * one by the bfloat16 rounding (8 significant bits); scripts/bench_dist.ts --compare measures the weights after N steps.
 *
 * Why the tape and not identity ops with a custom gradient (tf.customGrad per parameter use): that needs the model to
 * read every variable through a hook (src/models/ does not), adds a node per parameter to every forward, and sees the
 * gradient of one use rather than the accumulated one. The tape nodes are tfjs-core's `engine.state.activeTape` (4.x);
 * if it is not there (another tfjs version) `watch` does nothing and the flat path runs: same results, no overlap.
 * Parameters used more than once (the cpu path's fc1 row blocks) go to the buckets after the backward returns.
 *
 * Results: every bucket is averaged with the ring all-reduce of the process group (or of the communication threads,
 * `pool`), so all ranks hold bit-identical gradients. With 2 ranks the overlapped and the flat paths give the same
 * bits (a + b does not depend on where the buckets or chunks are cut; bfloat16 rounding is per element too); with 3 or
 * more the summation order of an element depends on its chunk, so the two paths agree to float32 rounding.
 *
 * `profile` (scripts/bench_dist.ts --breakdown) adds probe readbacks that time the phases of one exchange; they
 * synchronise with the GPU, so profiled steps are slower than plain ones and are run after the timed steps.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Logger } from '../log/logger.js';
import { readDistEnv } from '../distributed/env.js';
import { ProcessGroup, isDistError, reduceClock, type ReduceDtype, type TransportKind } from '../distributed/group.js';
import { CommPool } from '../distributed/pool.js';
import { bf16Words, packBf16, unpackBf16 } from '../distributed/bf16.js';
import { UserError } from '../errors.js';
import { DEFAULT_DIST_BUCKET_MB, settings } from '../settings.js';
import type { NamedParameter } from './optim/base.js';
import { StagedBucket, stagingClock, webgpuInternals, type HostSlot } from './ddp_gpu.js';
import type { HandoffFile } from '../distributed/handoff.js';
import { submitRecorded } from '../backend/fence.js';
import { SubmitHold } from '../backend/submit_hold.js';
import { CapturedStep, type CaptureBackend } from '../backend/step_capture.js';
import { updateSharedInPlace } from '../ops/adam.js';
import { markPoolStep, withPoolStream } from '../backend/webgpu_hooks.js';
import { runSteps, type Steps } from '../utils/steps.js';

/** Largest bucket of the flat (not overlapped) exchange. */
const FLAT_BUCKET_BYTES = 64 * 1024 * 1024;

/** The process-group operations DDP uses (src/distributed/group.ts). */
export interface Communicator {
  readonly rank: number;
  readonly worldSize: number;
  allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg'; dtype?: ReduceDtype }): Promise<void>;
  broadcast(buf: ArrayBufferView, root: number): Promise<void>;
  allreduceScalars(values: readonly number[], op: 'sum' | 'avg'): Promise<number[]>;
  close(): void | Promise<void>;
}

/** 'bf16': gradients cross GPU->host, the wire and host->GPU as bfloat16 (torch DDP's bf16_compress_hook). */
export type GradCompression = 'none' | 'bf16';
/**
 * How bucket bytes move between the GPU and the host: 'staged' = persistent staging buffers (src/train/ddp_gpu.ts,
 * webgpu only), 'tfjs' = tensor.data() and tfjs/Dawn uploads (every backend), 'auto' = staged where it can.
 */
export type GradTransfer = 'auto' | 'tfjs' | 'staged';
/**
 * Who copies the staged bytes between Dawn's mapped memory and the exchange's shared arrays: 'auto' = the kernel on
 * libuv's threads through a /dev/shm hand-off file (src/distributed/handoff.ts) when communication threads exchange
 * the buckets and the file fits, else the main thread; 'memcpy' = always the main thread.
 */
export type GradHandoff = 'auto' | 'memcpy';
/**
 * Whether the caller may start the next step before an exchange is done (allreduceGrads not awaited; variableGrads
 * then holds the next forward pass until it is): 'auto' = the training loop does when nothing between two updates needs
 * the exchange done (src/train/loop.ts), 'off' = it awaits every exchange.
 */
export type GradHold = 'auto' | 'off';

export interface DdpOptions {
  /** Bucket size of the overlapped exchange in bytes (default DEFAULT_DIST_BUCKET_MB = 2 MiB; DDP's default is 25 MB). */
  bucketBytes?: number;
  /** Time the phases of every exchange (adds GPU synchronisations; benchmarks only). */
  profile?: boolean;
  /**
   * Exchange the buckets on these worker threads (src/distributed/pool.ts) instead of the main thread: bucket b on
   * channel b. The readback is copied into shared memory once, and the upload reads from there.
   */
  pool?: CommPool | null;
  /** Default 'none'. */
  compress?: GradCompression;
  /** Default 'auto'. */
  transfer?: GradTransfer;
  /** Default 'auto'. */
  handoff?: GradHandoff;
  /** Default 'auto'. */
  hold?: GradHold;
  /**
   * Called at each phase of each bucket (benchmarks only: scripts/bench_dist.ts --trace): 'ready' (its gradients
   * issued, readback started), 'read' (on the host), 'reduced' (averaged over the ranks), 'uploaded' (back on the GPU),
   * 'applied' (handed to onBucket). Adds no GPU synchronisation.
   */
  trace?: (event: TraceEvent, bucket: number) => void;
}

export type TraceEvent = 'ready' | 'read' | 'reduced' | 'uploaded' | 'applied';

export interface ExchangeOptions {
  /**
   * Receives each bucket's averaged gradients as soon as they are uploaded (and owns them: dispose them), e.g. to run
   * the optimizer on them while later buckets are still exchanged; allreduceGrads then returns an empty map. Buckets
   * that are back by the time the previous call returns come together in one call (bucket order is kept). Fine for
   * optimizers whose update of a parameter depends only on its own gradient and state (all of src/train/optim, which
   * keep torch's per-parameter step counts), not with gradient clipping by the global norm.
   */
  onBucket?: (grads: Map<string, tf.Tensor>) => void;
}

/**
 * ExchangeOptions.onBucket that runs `optimizer` on each run of averaged buckets and frees their gradients (the
 * training loop without --clip-grad, scripts/bench_dist.ts's overlap paths).
 */
export function stepEachBucket(optimizer: { step(grads: Map<string, tf.Tensor>): void }): (grads: Map<string, tf.Tensor>) => void {
  return (grads) => {
    optimizer.step(grads);
    for (const t of grads.values()) t.dispose();
  };
}

/** Phases of one gradient exchange, in milliseconds from the moment `allreduceGrads` was called. */
export interface StepProfile {
  mode: 'flat' | 'overlap';
  /** GPU still computing the backward pass after the JS thread issued it. */
  tail: number;
  /** All gradient bytes on the host (includes the tail). */
  readback: number;
  /** Wall time from the first all-reduce call to the last one done. */
  exchange: number;
  /** CPU time of the float32 adds/divides inside the exchange. */
  reduce: number;
  /** From the last all-reduce done until the averaged gradients are on the GPU. */
  upload: number;
  /** Time `allreduceGrads` kept the caller waiting (without the upload probe): what the exchange adds to a step. */
  exposed: number;
  /** Main-thread time of the staging memcpys (mapped GPU memory <-> host arrays); 0 for the tfjs transfer. */
  copy: number;
  buckets: number;
}

/** tfjs-core's tape node (engine internals, 4.x). */
interface TapeNode {
  id?: number;
  kernelName?: string;
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

/** The parts of tfjs-core's Engine (4.x) that `variableGrads` drives: the tape and the scopes. */
interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number; scopeStack: unknown[]; activeScope: unknown };
  startTape(): void;
  endTape(): void;
  startScope(name?: string): void;
  endScope(result?: tf.TensorContainer): void;
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  tidy<T extends tf.TensorContainer>(name: string | (() => T), f?: () => T): T;
}

/**
 * A loss function for DistributedDataParallel.variableGrads: the loss, or a generator that computes it in pieces
 * (pausing between them, e.g. after each block of MambaOut.forwardSteps) and returns it.
 */
export type LossFn = () => tf.Scalar | Steps<tf.Scalar>;

/** The loss of a LossFn result, running a generator to its end. */
function toEnd(r: tf.Scalar | Steps<tf.Scalar>): tf.Scalar {
  return r instanceof tf.Tensor ? r : runSteps(r);
}

/**
 * @internal Run `fn` (async) with the engine as it is outside a gradient computation: no tape recording, and tensors made meanwhile
 * belong to the scope around the forward pass's, not to it (its end would free them). Restored after.
 */
export async function outsideTape<T>(engine: EngineInternals, fn: () => Promise<T>): Promise<T> {
  const st = engine.state;
  const mine = { tape: st.activeTape, depth: st.gradientDepth, stack: st.scopeStack, scope: st.activeScope };
  const outer = mine.stack.slice(0, -1);
  st.activeTape = null;
  st.gradientDepth = 0;
  st.scopeStack = outer;
  st.activeScope = outer.length ? outer[outer.length - 1] : null;
  try {
    return await fn();
  } finally {
    st.activeTape = mine.tape;
    st.gradientDepth = mine.depth;
    st.scopeStack = mine.stack;
    st.activeScope = mine.scope;
  }
}

/**
 * For each node of `tape`: whether one of its outputs leads to `y` and it has inputs (tfjs's backward walk visits
 * exactly these; getFilteredNodesXToY's second half). null when a node is not shaped like tfjs 4.x's tape nodes.
 */
function nodesLeadingTo(tape: readonly TapeNode[], y: tf.Tensor): boolean[] | null {
  const toY = new Set<number>([y.id]);
  const marked = new Array<boolean>(tape.length).fill(false);
  for (let n = tape.length - 1; n >= 0; n--) {
    const node = tape[n];
    if (!node || typeof node.inputs !== 'object' || !Array.isArray(node.outputs)) return null;
    if (!node.outputs.some((o) => toY.has(o.id))) continue;
    for (const name in node.inputs) {
      toY.add(node.inputs[name].id);
      marked[n] = true;
    }
  }
  return marked;
}

/**
 * The nodes of `tape` on a path from one of `xs` to `y`, each with only the inputs that come from `xs` (copies; the
 * same filter as tfjs-core's getFilteredNodesXToY, which the package does not export).
 */
function filterTape(tape: TapeNode[], xs: readonly tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set<number>(xs.map((x) => x.id));
  const nodeFromX = new Array<boolean>(tape.length).fill(false);
  tape.forEach((node, n) => {
    for (const name in node.inputs) {
      if (fromX.has(node.inputs[name].id)) {
        for (const o of node.outputs) fromX.add(o.id);
        nodeFromX[n] = true;
        break;
      }
    }
  });
  const nodeToY = nodesLeadingTo(tape, y)!;
  const out: TapeNode[] = [];
  tape.forEach((node, n) => {
    if (!nodeFromX[n] || !nodeToY[n]) return;
    const inputs: Record<string, tf.Tensor> = {};
    for (const name in node.inputs) if (fromX.has(node.inputs[name].id)) inputs[name] = node.inputs[name];
    out.push({ ...node, inputs, outputs: node.outputs });
  });
  return out;
}

/** The parts of a WebGPU device and buffer that the tfjs transfer's upload uses (dawn.node's objects). */
interface GpuBufferLike {
  readonly size: number;
  destroy(): void;
}
interface GpuDeviceLike {
  createBuffer(desc: { size: number; usage: number }): GpuBufferLike;
  queue: { writeBuffer(buffer: GpuBufferLike, offset: number, data: ArrayBufferLike, dataOffset: number, size: number): void };
}

interface Bucket {
  /** Parameter indices, in bucket order. */
  members: number[];
  bytes: number;
}

/** A partition of the parameters into buckets, with the host memory and the staging that exchange them. */
class Layout {
  readonly bucketOf: number[];
  /** Host words of each bucket: a persistent slice of one array (shared memory when a pool exchanges them). */
  readonly host: Float32Array[] = [];
  readonly staged: (StagedBucket | null)[];
  /** tfjs transfer on webgpu: one persistent GPU buffer per bucket that the averaged words are written into. */
  readonly gpuBuffers: (GpuBufferLike | null)[];
  /** The hand-off file of the host arrays (owned by the pool), once decided (DistributedDataParallel.slot). */
  file: HandoffFile | null | undefined = undefined;
  /** Whether each bucket's last readback went through the file. */
  viaFile: boolean[] = [];

  constructor(readonly buckets: Bucket[], nParams: number, readonly compress: GradCompression, pool: CommPool | null) {
    this.bucketOf = new Array(nParams).fill(-1);
    buckets.forEach((b, k) => b.members.forEach((i) => (this.bucketOf[i] = k)));
    const words = buckets.map((b) => (compress === 'bf16' ? bf16Words(b.bytes / 4) : b.bytes / 4));
    const total = words.reduce((a, w) => a + w, 0);
    const all = pool && total > 0 ? pool.alloc(total) : new Float32Array(total);
    let off = 0;
    for (const w of words) {
      this.host.push(all.subarray(off, off + w));
      off += w;
    }
    this.staged = new Array(buckets.length).fill(null);
    this.gpuBuffers = new Array(buckets.length).fill(null);
  }

  dispose(): void {
    for (const s of this.staged) s?.dispose();
    // the split of the last upload may still wait in tfjs's encoder: submitted before its buffer goes
    if (this.gpuBuffers.some((g) => g)) submitRecorded();
    for (const g of this.gpuBuffers) g?.destroy();
    this.staged.fill(null);
    this.gpuBuffers.fill(null);
  }
}

/**
 * One exchange in flight: gradients go into their buckets as the backward pass produces them; a full bucket starts
 * its readback; buckets whose readback is done are all-reduced in bucket order on each channel (the same order on
 * every rank; see pump), and each is uploaded as soon as it is averaged. Nothing waits for allreduceGrads: the
 * exchange moves whenever the event loop runs (e.g. while the caller awaits the loss).
 */
class PendingStep {
  readonly grads: (tf.Tensor | null)[];
  private readonly missing: number[];
  private readonly readDone: boolean[];
  /** Next bucket to all-reduce on each channel (bucket b goes to channel b % channels). */
  private readonly next: number[];
  private readonly channels: number;
  /** Each bucket's averaged gradients on the device, in member order. */
  readonly done: Promise<tf.Tensor[]>[];
  /** The same once settled (null before): allreduceGrads hands a run of finished buckets to onBucket at once. */
  readonly back: (tf.Tensor[] | null)[];
  private readonly settle: { resolve: (t: tf.Tensor[]) => void; reject: (e: unknown) => void }[] = [];
  private failed = false;
  /** Buckets whose readback has been started (DistributedDataParallel.variableGrads yields when this grows). */
  started = 0;
  tRead = 0;
  tFirst = 0;
  tEx = 0;

  constructor(private readonly ddp: DistributedDataParallel, readonly layout: Layout, nParams: number) {
    this.grads = new Array(nParams).fill(null);
    this.missing = layout.buckets.map((b) => b.members.length);
    this.readDone = new Array(layout.buckets.length).fill(false);
    this.back = new Array(layout.buckets.length).fill(null);
    this.channels = ddp.channelsFor(layout);
    this.next = Array.from({ length: this.channels }, (_, c) => c);
    this.done = layout.buckets.map(() => {
      const p = new Promise<tf.Tensor[]>((resolve, reject) => this.settle.push({ resolve, reject }));
      p.catch(() => {}); // awaited (and its failure reported) by allreduceGrads, in bucket order
      return p;
    });
  }

  ready(i: number, g: tf.Tensor): void {
    if (this.grads[i]) return;
    this.grads[i] = g;
    const b = this.layout.bucketOf[i];
    if (--this.missing[b] === 0) {
      this.started++;
      this.ddp.trace?.('ready', b);
      let p: Promise<unknown>;
      try {
        p = this.ddp.startReadback(this.layout.buckets[b], this.grads, this.layout.host[b], this.layout, b);
      } catch (e) {
        p = Promise.reject(e);
      }
      p.then(
        () => {
          this.tRead = performance.now();
          this.ddp.trace?.('read', b);
          this.readDone[b] = true;
          this.pump();
        },
        (e) => this.fail(e),
      );
    }
  }

  private fail(e: unknown): void {
    if (this.failed) return;
    this.failed = true;
    for (const s of this.settle) s.reject(e);
  }

  /**
   * Start the all-reduce of every bucket whose readback is done and whose predecessors on its channel have started.
   * Every channel is its own ring whose collectives every rank must call in the same order: bucket order within a
   * channel. Across channels nothing needs ordering, so a bucket the backward pass finished early does not wait for
   * an earlier-numbered one on another channel (femto on 2 GPUs, gpu_dist_trace.sh: bucket 16 was on the host at
   * 38 ms and waited for bucket 15, read at 49 ms). One channel (no threads): bucket order, as before.
   */
  private pump(): void {
    const n = this.layout.buckets.length;
    for (let progress = true; progress && !this.failed; ) {
      progress = false;
      for (let c = 0; c < this.channels; c++) {
        const b = this.next[c];
        if (b >= n || !this.readDone[b]) continue;
        this.next[c] += this.channels;
        progress = true;
        this.startReduce(b);
      }
    }
  }

  private startReduce(b: number): void {
    if (b === 0) this.tFirst = performance.now();
    this.ddp
      .reduceBucket(this.layout, b)
      .then(() => {
        this.tEx = performance.now();
        this.ddp.trace?.('reduced', b);
        return this.ddp.uploadBucket(this.layout, b);
      })
      .then((t) => {
        this.ddp.trace?.('uploaded', b);
        this.back[b] = t;
        this.settle[b].resolve(t);
      }, (e) => this.fail(e));
  }
}

export class DistributedDataParallel {
  private _params: readonly NamedParameter[] = [];
  /** The overlapped layout (buckets in reverse registration order) and, when needed, the one-bucket flat layout. */
  private layout: Layout;
  private flatLayout: Layout | null = null;
  /** Phases of the most recent exchange when profiling. */
  lastProfile: StepProfile | null = null;
  private readonly indexById = new Map<number, number>();
  private pending: PendingStep | null = null;
  private readonly profile: boolean;
  /** @internal DdpOptions.trace */
  readonly trace: DdpOptions['trace'];
  private pool: CommPool | null;
  /** The pool was started by attach() (and is closed by close()), not handed in. */
  private ownPool = false;
  private readonly bucketCap: number;
  readonly compress: GradCompression;
  private transferMode: GradTransfer;
  private readonly handoffMode: GradHandoff;
  /** DdpOptions.hold: whether the training loop may leave an exchange running into the next step. */
  readonly holdMode: GradHold;
  /** variableGrads is issuing the backward pass: the main thread is busy (the hand-off file pays only then). */
  private issuing = false;
  /** The exchange that allreduceGrads is running (the caller may start the next step before it is done). */
  private exchange: Promise<unknown> | null = null;
  /** variableGrads holds the next forward pass's submits until that exchange is done (src/backend/submit_hold.ts). */
  private hold: SubmitHold | null = null;
  /**
   * replayGrads: the captured forward and backward passes, their results (`kept`: the gradients, which allreduceGrads
   * leaves alone), the captured step's bucket state (whose `grads` hold each hooked parameter's gradient tensor) and
   * the parameters' buffers then.
   */
  private captured: { step: CapturedStep; value: tf.Scalar; grads: tf.NamedTensorMap; kept: Set<tf.Tensor>; first: PendingStep | null; ids: object[] } | null = null;
  /** replayGrads is capturing: the hooked readbacks start outside the recording, at marks. */
  private capturing = false;
  /** The step a replay is running: its marks start the bucket readbacks of this step. */
  private replaying: PendingStep | null = null;
  /** Forward passes issued while the previous exchange was still running (tests, benchmarks). */
  heldForwards = 0;
  /** Of those, the ones whose hold ended at a pause of the pass, before all of it was issued (tests, benchmarks). */
  releasedEarly = 0;
  private gpuUpload = true;
  /** setupDistributed: start a CommPool at attach time when the gradients are this large (bytes; null = never). */
  poolAbove: { bytes: number; threads: number; masterAddr: string; nodeRank?: number; timeoutMs: number } | null = null;

  constructor(
    readonly group: Communicator,
    params: readonly NamedParameter[],
    opts: DdpOptions = {},
  ) {
    this.profile = opts.profile ?? false;
    this.trace = opts.trace;
    this.pool = opts.pool ?? null;
    this.compress = opts.compress ?? 'none';
    if (this.compress !== 'none' && this.compress !== 'bf16') throw new UserError(`gradient compression must be none or bf16, got '${String(this.compress)}'.`);
    this.transferMode = opts.transfer ?? 'auto';
    if (!['auto', 'tfjs', 'staged'].includes(this.transferMode)) throw new UserError(`the gradient transfer must be auto, tfjs or staged, got '${String(this.transferMode)}'.`);
    this.handoffMode = opts.handoff ?? 'auto';
    if (this.handoffMode !== 'auto' && this.handoffMode !== 'memcpy') throw new UserError(`the gradient hand-off must be auto or memcpy, got '${String(this.handoffMode)}'.`);
    this.holdMode = opts.hold ?? 'auto';
    if (this.holdMode !== 'auto' && this.holdMode !== 'off') throw new UserError(`the forward-pass hold must be auto or off, got '${String(this.holdMode)}'.`);
    const cap = opts.bucketBytes ?? DEFAULT_DIST_BUCKET_MB * 1024 * 1024;
    if (!(cap >= 4)) throw new UserError(`the gradient bucket size must be at least 4 bytes, got ${cap}.`);
    this.bucketCap = cap;
    this.layout = this.bind(params);
  }

  private bind(params: readonly NamedParameter[]): Layout {
    this._params = params;
    this.indexById.clear();
    params.forEach((p, i) => this.indexById.set(p.variable.id, i));
    // DDP order: parameters in reverse registration order, which is roughly the order the backward pass produces them.
    const buckets: Bucket[] = [];
    let cur: Bucket | null = null;
    for (let i = params.length - 1; i >= 0; i--) {
      const bytes = params[i].variable.size * 4;
      if (!cur || (cur.bytes > 0 && cur.bytes + bytes > this.bucketCap)) {
        cur = { members: [], bytes: 0 };
        buckets.push(cur);
      }
      cur.members.push(i);
      cur.bytes += bytes;
    }
    return new Layout(buckets, params.length, this.compress, this.pool);
  }

  /**
   * Use these parameters (when the DDP was created before the model, as setupDistributed is): builds the buckets, and
   * starts the communication threads when `poolAbove` asks for them. Collective when it starts threads (every rank
   * calls it with the same parameters). broadcastParams() calls it when the DDP has no parameters yet.
   */
  async attach(params: readonly NamedParameter[]): Promise<void> {
    this.disposeLayouts();
    const bytes = params.reduce((a, p) => a + p.variable.size * 4, 0);
    const want = this.poolAbove;
    if (!this.pool && want && this.group instanceof ProcessGroup && this.group.worldSize > 1) {
      // rank 0 decides, so that every rank starts the same threads even if their settings differ
      const threads = await this.group.broadcastObject(bytes >= want.bytes ? want.threads : 0, 0);
      if (threads > 0) {
        this.pool = await CommPool.create(this.group, { threads, masterAddr: want.masterAddr, nodeRank: want.nodeRank, timeoutMs: want.timeoutMs });
        this.ownPool = true;
      }
    }
    this.layout = this.bind(params);
  }

  get params(): readonly NamedParameter[] {
    return this._params;
  }

  get buckets(): readonly Bucket[] {
    return this.layout.buckets;
  }

  /** Bucket index of each parameter. */
  get bucketOf(): readonly number[] {
    return this.layout.bucketOf;
  }

  get rank(): number {
    return this.group.rank;
  }

  get worldSize(): number {
    return this.group.worldSize;
  }

  /** Communication threads in use (0 = the main thread exchanges). */
  get commThreads(): number {
    return this.pool?.threads ?? 0;
  }

  /** The transfer in use: staged only on the webgpu backend with the internals ddp_gpu.ts needs. */
  get transfer(): 'tfjs' | 'staged' {
    if (this.transferMode === 'tfjs') return 'tfjs';
    return webgpuInternals() ? 'staged' : 'tfjs';
  }

  /** Rank 0's parameter values everywhere (DDP's broadcast at wrap time); binds the parameters when there are none. */
  async broadcastParams(params: readonly NamedParameter[] = this._params): Promise<void> {
    if (this._params.length === 0 && params.length > 0) await this.attach(params);
    const datas = (await Promise.all(params.map((p) => p.variable.data()))) as Float32Array[];
    const buf = new Float32Array(datas.reduce((a, d) => a + d.length, 0));
    let off = 0;
    for (const d of datas) {
      buf.set(d, off);
      off += d.length;
    }
    await this.group.broadcast(buf, 0);
    off = 0;
    tf.tidy(() => {
      for (const p of params) {
        p.variable.assign(tf.tensor(buf.subarray(off, off + p.variable.size), p.variable.shape, 'float32'));
        off += p.variable.size;
      }
    });
  }

  /**
   * `variableGrads` for a step that is the same every time (the same input tensors, the parameters updated in place):
   * the first call runs the forward and backward passes through tfjs and records their Dawn calls
   * (src/backend/step_capture.ts); every later call replays the recording, and the bucket readbacks start where the
   * capture started them. The main thread then issues a femto step in ~3 ms instead of ~25 (Dawn's null backend,
   * docs/BENCHMARKS.md), which on 2 GPUs is what bounds the step. The previous exchange is awaited first (the replay
   * itself is short, so there is nothing to hold). Returns the same loss and gradient tensors every time: the caller
   * keeps them (allreduceGrads does not dispose them) until `dropCapture`. webgpu with the staged transfer only.
   * `feed` (replays): [captured input, this step's tensor] pairs copied in first (CapturedStep.replay). When the step
   * cannot be captured (CapturedStep.tryCapture), it ran live: its result comes back with `unsupported` set, it is the
   * caller's as variableGrads' is, and nothing is kept.
   */
  async replayGrads(
    lossFn: () => tf.Scalar,
    vars: readonly tf.Variable[],
    feed: readonly (readonly [tf.Tensor, tf.Tensor])[] = [],
  ): Promise<{ value: tf.Scalar; grads: tf.NamedTensorMap; unsupported?: string }> {
    if (this.transfer !== 'staged') throw new Error('replayGrads needs the webgpu backend with the staged transfer');
    if (this.exchange) await this.exchange;
    markPoolStep();
    const c = this.captured;
    if (!c) {
      this.capturing = true;
      let got: { step: CapturedStep | null; unsupported: string | null; result: { value: tf.Scalar; grads: tf.NamedTensorMap } };
      try {
        got = CapturedStep.tryCapture(tf.backend() as unknown as CaptureBackend, () => tf.variableGrads(this.watch(lossFn), [...vars]) as { value: tf.Scalar; grads: tf.NamedTensorMap });
      } finally {
        this.capturing = false;
      }
      const { value, grads } = got.result;
      if (!got.step) return { value, grads, unsupported: got.unsupported! };
      this.captured = { step: got.step, value, grads, kept: new Set(Object.values(grads)), first: this.pending, ids: this._params.map((p) => p.variable.dataId) };
      return got.result;
    }
    const moved = this._params.find((p, i) => p.variable.dataId !== c.ids[i]);
    if (moved) throw new Error(`parameter ${moved.name} has a new buffer since the step was captured (the optimizer must update in place)`);
    const step = new PendingStep(this, this.layout, this._params.length);
    this.pending = step;
    this.replaying = step;
    try {
      c.step.replay(feed);
    } finally {
      this.replaying = null;
    }
    return { value: c.value, grads: c.grads };
  }

  private replayReady(i: number): void {
    const g = this.captured?.first?.grads[i];
    if (this.replaying && g) this.replaying.ready(i, g);
  }

  /** Resolves once the exchange left running (allreduceGrads not awaited) is done; rejects with its error. */
  async exchangeDone(): Promise<void> {
    if (this.exchange) await this.exchange;
  }

  /** Forget replayGrads's capture: its buffers go back to the pool, its loss and gradient tensors are disposed. */
  dropCapture(): void {
    const c = this.captured;
    if (!c) return;
    this.captured = null;
    c.step.release();
    tf.dispose([c.value, ...Object.values(c.grads)]);
  }

  /**
   * Wrap the loss function given to `tf.variableGrads` so that the following backward pass starts the bucket
   * readbacks (and the exchange) as soon as their gradients are issued; then call `allreduceGrads` with the returned
   * gradients.
   */
  watch<T extends tf.Tensor>(lossFn: () => T): () => T {
    return () => {
      const y = lossFn();
      this.hookTape(y);
      return y;
    };
  }

  /**
   * `tf.variableGrads(this.watch(lossFn), vars)` with the backward pass issued in pieces. tfjs issues the whole
   * backward pass in one synchronous call, so the readbacks the buckets start during it can only resolve after it
   * returns (their mapAsync needs the event loop): on the H200 a 2-GPU femto step was the time to issue it plus an
   * exchange of 30-57 ms that overlapped nothing (docs/BENCHMARKS.md, GPU run 3). Here the tape is walked as tfjs's
   * backpropagateGradients walks it (same nodes, same order, same kernels, same accumulation: the same gradient bits,
   * test/ddp.test.ts), and after every node that started a bucket's readback the event loop gets a turn
   * (setImmediate): finished readbacks go into the all-reduce, and averaged buckets back to the GPU, while the earlier
   * stages are still being issued. A tf.tidy per node frees what its gradient function made as soon as the node is done
   * (tfjs frees it at the end of the backward pass). Where tfjs's engine internals are not there (another version, or
   * inside another gradient computation) this is tf.variableGrads with watch(). `vars` must be trainable.
   */
  async variableGrads(lossFn: LossFn, vars: readonly tf.Variable[]): Promise<{ value: tf.Scalar; grads: tf.NamedTensorMap }> {
    markPoolStep();
    const engine = tf.engine() as unknown as EngineInternals;
    if (typeof engine.startTape !== 'function' || typeof engine.endTape !== 'function' || typeof engine.scopedRun !== 'function' ||
      typeof engine.startScope !== 'function' || typeof engine.endScope !== 'function' || !engine.state ||
      !Array.isArray(engine.state.scopeStack) || engine.state.gradientDepth !== 0) {
      if (this.exchange) await this.exchange;
      return tf.variableGrads(this.watch(() => toEnd(lossFn())), [...vars]) as { value: tf.Scalar; grads: tf.NamedTensorMap };
    }
    // The previous step's exchange may still run (its caller did not await allreduceGrads): its last buckets update
    // weights this forward pass reads. The forward pass is issued now anyway, its submits held until the exchange is
    // done (the optimizer's updates of those buckets go ahead of it: `ahead`), then the backward pass. Without the
    // staged transfer (whose uploads record into tfjs's encoder) the exchange is awaited first.
    const prev = this.exchange;
    const hold = prev && this.transfer === 'staged' ? SubmitHold.start() : null;
    if (hold) this.heldForwards++;
    if (prev && !hold) await prev;
    this.hold = hold;
    let settled = false;
    prev?.then(() => (settled = true), () => (settled = true));
    // At each pause of a forward pass given in pieces (MambaOut.forwardSteps): the exchange's completions get a turn
    // (the last buckets' readbacks, averages, uploads and AdamW updates; otherwise they wait until the whole pass is
    // issued, 15-20 ms of a ~70 ms femto step on the H200 x2, docs/BENCHMARKS.md "GPU run 7"), and once the exchange is
    // done the hold ends: what is held goes to the GPU, and the rest of the pass is submitted as it is issued.
    const turn = hold
      ? async (): Promise<boolean> => {
          await new Promise<void>((resolve) => setImmediate(resolve));
          if (!settled) return true;
          if (this.hold === hold) {
            this.hold = null;
            hold.release();
            this.releasedEarly++;
          }
          return false;
        }
      : null;
    let y: tf.Tensor;
    try {
      y = await this.forward(engine, lossFn, turn);
    } catch (e) {
      this.hold = null;
      hold?.release();
      if (prev) await prev.catch(() => {});
      throw e;
    }
    const tape = engine.state.activeTape ?? [];
    const acc = new Map<number, tf.Tensor>();
    const grads: tf.NamedTensorMap = {};
    try {
      if (hold) {
        try {
          await prev;
        } finally {
          this.hold = null;
          hold.release();
        }
      }
      this.issuing = true;
      if (!(y instanceof tf.Tensor) || y.rank !== 0) throw new Error('The loss function passed to variableGrads must return a scalar.');
      this.hookTape(y);
      const step = this.pending;
      const filtered = filterTape(tape, vars, y);
      acc.set(y.id, tf.ones(y.shape));
      let started = step?.started ?? 0;
      for (let n = filtered.length - 1; n >= 0; n--) {
        const node = filtered[n];
        const gradient = node.gradient;
        if (typeof gradient !== 'function') throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
        const dys = node.outputs.map((o) => acc.get(o.id) ?? null);
        engine.tidy(() => {
          const fns = gradient(dys);
          const touched: tf.Tensor[] = [];
          for (const name in node.inputs) {
            if (!(name in fns)) throw new Error(`Cannot backprop through input ${name}. Available gradients found: ${Object.keys(fns)}.`);
            const dx = engine.tidy(() => fns[name]());
            const x = node.inputs[name];
            if (dx.dtype !== 'float32') throw new Error(`Error in gradient for op ${node.kernelName}: the gradient of input ${name} has dtype ${dx.dtype}.`);
            if (!tf.util.arraysEqual(dx.shape, x.shape)) throw new Error(`Error in gradient for op ${node.kernelName}: the gradient of input '${name}' has shape ${dx.shape}, the input ${x.shape}.`);
            const cur = acc.get(x.id);
            if (cur === undefined) acc.set(x.id, dx);
            else {
              acc.set(x.id, tf.add(cur, dx));
              cur.dispose();
            }
            touched.push(x);
          }
          return [...new Set(touched.map((x) => acc.get(x.id)!))]; // kept; everything else the node made is freed
        });
        if (step && step.started !== started) {
          started = step.started;
          await new Promise<void>((resolve) => setImmediate(resolve));
        }
      }
      for (const v of vars) {
        const g = acc.get(v.id);
        if (g) {
          grads[v.name] = g;
          acc.delete(v.id);
        }
      }
      if (Object.keys(grads).length === 0) throw new Error('Cannot find a connection between any variable and the result of the loss function.');
      return { value: y as tf.Scalar, grads };
    } catch (e) {
      if (y instanceof tf.Tensor) y.dispose();
      tf.dispose(Object.values(grads));
      throw e;
    } finally {
      this.issuing = false;
      tf.dispose([...acc.values()]);
      if (engine.state.gradientDepth === 0 && engine.state.activeTape === tape) {
        for (const node of tape) for (const t of node.saved ?? []) t.dispose();
        engine.state.activeTape = null;
      }
    }
  }

  /**
   * The forward pass on a fresh gradient tape, in a scope that keeps only its result (tfjs's variableGrads does the
   * same with scopedRun + tidy). With `turn`, a loss function given in pieces (a generator) is run piece by piece, and
   * between pieces `turn` runs outside the tape and the scope, as if no forward pass were being recorded; it returns
   * false when no more turns are wanted.
   */
  private async forward(engine: EngineInternals, lossFn: LossFn, turn: (() => Promise<boolean>) | null): Promise<tf.Tensor> {
    if (!turn) return engine.scopedRun(() => engine.startTape(), () => engine.endTape(), () => engine.tidy('forward', () => toEnd(lossFn())));
    let y: tf.Tensor | undefined;
    engine.startTape();
    try {
      engine.startScope('forward');
      try {
        const r = lossFn();
        if (r instanceof tf.Tensor) y = r;
        else {
          let more = true;
          for (let it = r.next(); ; it = r.next()) {
            if (it.done) {
              y = it.value;
              break;
            }
            if (more) more = await outsideTape(engine, turn);
          }
        }
      } finally {
        engine.endScope(y);
      }
    } finally {
      engine.endTape();
    }
    return y;
  }

  private hookTape(y: tf.Tensor): void {
    this.pending = null;
    const state = (tf.engine() as unknown as { state?: { activeTape?: TapeNode[] | null } }).state;
    const tape = state?.activeTape;
    if (!Array.isArray(tape) || this._params.length === 0) return;
    // Only nodes on a path to the loss take part in the backward pass (tfjs prunes the others, e.g. the clones
    // that ops record when they save a variable for their gradient).
    const onPath = nodesLeadingTo(tape, y);
    if (!onPath) return;
    const P = this._params.length;
    const uses = new Array<number>(P).fill(0);
    const first: ({ node: TapeNode; input: string } | null)[] = new Array(P).fill(null);
    for (let n = 0; n < tape.length; n++) {
      if (!onPath[n]) continue;
      const node = tape[n];
      for (const input in node.inputs) {
        const i = this.indexById.get(node.inputs[input]?.id);
        if (i === undefined) continue;
        uses[i]++;
        if (!first[i]) first[i] = { node, input };
      }
    }
    const step = new PendingStep(this, this.layout, P);
    const hooks = new Map<TapeNode, { input: string; i: number }[]>();
    for (let i = 0; i < P; i++) {
      const f = first[i];
      if (uses[i] !== 1 || !f || typeof f.node.gradient !== 'function') continue;
      const list = hooks.get(f.node) ?? [];
      list.push({ input: f.input, i });
      hooks.set(f.node, list);
    }
    for (const [node, list] of hooks) {
      const gradient = node.gradient!;
      node.gradient = (dys: (tf.Tensor | null)[]) => {
        const map = gradient(dys);
        for (const { input, i } of list) {
          const thunk = map[input];
          if (typeof thunk !== 'function') continue;
          map[input] = () => {
            const dx = thunk();
            // a capture (replayGrads): the readback starts now and is not recorded; a replay starts it here
            if (this.capturing) CapturedStep.live(() => step.ready(i, dx), () => this.replayReady(i));
            else step.ready(i, dx);
            return dx;
          };
        }
        return map;
      };
    }
    this.pending = step;
  }

  /**
   * Start moving a full bucket's gradients into `host` (called in the middle of the backward pass): staged, the
   * copies are recorded and submitted now; tfjs, a concat and data(). bf16 packs them (on the GPU when staged).
   */
  startReadback(b: Bucket, grads: readonly (tf.Tensor | null)[], host: Float32Array, layout: Layout = this.layout, k = 0): Promise<void> {
    const members = b.members.map((i) => grads[i]!);
    if (this.transfer === 'staged') return this.stagedBucket(layout, k).readback(members, this.slot(layout, k, 'readback'));
    const flat = tf.tidy(() => tf.keep(tf.concat(members.map((t) => t.reshape([-1])))));
    return flat.data().then((d) => {
      flat.dispose();
      if (this.compress === 'bf16') packBf16(d as Float32Array, host);
      else host.set(d as Float32Array);
    });
  }

  /**
   * Where bucket k's staged bytes go. Through the pool's hand-off file (GradHandoff 'auto', when it fits) only while
   * variableGrads is still issuing the backward pass: then the main thread has better things to do than copying. Once
   * it waits, a main-thread copy is the shorter way (two hops fewer: the last buckets are the step's critical path; H200
   * x2, femto: the last bucket read -> averaged 3.6 ms through the file vs 1.8 ms copied, docs/BENCHMARKS.md "GPU run 6").
   * The upload takes the file only if the readback did (the thread writes the average there and into `host`).
   */
  private slot(layout: Layout, k: number, phase: 'readback' | 'reduce' | 'upload'): HostSlot {
    const host = layout.host[k];
    if (layout.file === undefined) {
      const shared = layout.host[0]?.buffer instanceof SharedArrayBuffer;
      layout.file = this.handoffMode === 'auto' && this.pool && shared ? this.pool.handoff(layout.host[0]) : null;
      layout.viaFile = new Array(layout.buckets.length).fill(false);
    }
    if (phase === 'readback') layout.viaFile[k] = layout.file !== null && this.issuing;
    const file = layout.viaFile[k] && (phase !== 'upload' || this.issuing) ? layout.file : null;
    return { host, file };
  }

  private stagedBucket(layout: Layout, k: number): StagedBucket {
    let s = layout.staged[k];
    if (!s) {
      s = new StagedBucket(webgpuInternals()!, layout.buckets[k].members.map((i) => this._params[i].variable.shape), this.compress);
      layout.staged[k] = s;
    }
    return s;
  }

  /** @internal Independent all-reduce channels for this layout's buckets (bucket k on channel k % n; reduceBucket). */
  channelsFor(layout: Layout): number {
    return this.pool && layout.host[0]?.buffer instanceof SharedArrayBuffer ? this.pool.threads : 1;
  }

  /** @internal All-reduce (average) bucket k's host words. */
  reduceBucket(layout: Layout, k: number): Promise<void> {
    const host = layout.host[k];
    const dtype: ReduceDtype = this.compress === 'bf16' ? 'bf16x2' : 'f32';
    if (this.pool && host.buffer instanceof SharedArrayBuffer) return this.pool.allreduce(host, 'avg', k, dtype, this.transfer === 'staged' ? this.slot(layout, k, 'reduce').file : null);
    return this.group.allreduce(host, { op: 'avg', dtype });
  }

  /** @internal Bucket k's averaged host words as gradient tensors on the device, in member order. */
  async uploadBucket(layout: Layout, k: number): Promise<tf.Tensor[]> {
    const b = layout.buckets[k];
    if (this.transfer === 'staged') return this.stagedBucket(layout, k).upload(this.slot(layout, k, 'upload'), (fn) => this.ahead(fn));
    let flat = layout.host[k];
    if (this.compress === 'bf16') {
      const f = new Float32Array(b.bytes / 4);
      unpackBf16(flat, f);
      flat = f;
    }
    return tf.tidy(() => {
      const parts = tf.split(this.upload(layout, k, flat), b.members.map((i) => this._params[i].variable.size));
      return b.members.map((i, j) => tf.keep(parts[j].reshape(this._params[i].variable.shape)));
    });
  }

  /**
   * Average gradients over ranks; returns new tensors (the inputs are disposed). Uses the buckets of a `watch`ed
   * backward pass when there is one, else one flat buffer.
   */
  allreduceGrads(params: readonly NamedParameter[], grads: Map<string, tf.Tensor>, opts: ExchangeOptions = {}): Promise<Map<string, tf.Tensor>> {
    const p = this.exchangeGrads(params, grads, opts);
    this.exchange = p;
    const done = (): void => {
      if (this.exchange === p) this.exchange = null;
    };
    p.then(done, done);
    return p;
  }

  /**
   * Work on the device that the held next forward pass depends on: recorded and submitted ahead of it. The optimizer
   * must update the parameters in place (src/ops/adam.ts, allowed here although the held pass holds views of them): one
   * that gives a parameter a new buffer (tfjs's assign) would leave the held pass reading the old weights, so that is
   * an error.
   */
  private ahead<T>(fn: () => T): T {
    const hold = this.hold;
    // the exchange's buffer requests in their own stream: where they fall between the forward pass's does not move
    // which buffers the pass gets (src/backend/webgpu_hooks.ts markPoolStep)
    if (!hold) return withPoolStream('exchange', fn);
    const ids = this._params.map((p) => p.variable.dataId);
    const out = hold.before(() => withPoolStream('exchange', () => updateSharedInPlace(fn)));
    const moved = this._params.find((p, i) => p.variable.dataId !== ids[i]);
    if (moved) {
      throw new Error(`the optimizer gave parameter ${moved.name} a new buffer while the next forward pass was held; ` +
        'with this optimizer await allreduceGrads before the next step');
    }
    return out;
  }

  private async exchangeGrads(params: readonly NamedParameter[], grads: Map<string, tf.Tensor>, opts: ExchangeOptions): Promise<Map<string, tf.Tensor>> {
    let step = this.pending;
    this.pending = null;
    const t0 = performance.now();
    const probe = this.profile ? this.probeGpu(grads) : null;
    const copy0 = stagingClock.ms;
    reduceClock.ms = 0;
    reduceClock.on = this.profile;
    try {
      const sameParams = params.length === this._params.length && params.every((p, i) => p === this._params[i]) && params.every((p) => grads.has(p.name));
      if (!sameParams) {
        const out = await this.exchangeSubset(params, grads, t0, probe);
        if (!opts.onBucket) return out;
        this.ahead(() => opts.onBucket!(out));
        return new Map();
      }
      if (!step || step.layout !== this.layout) step = new PendingStep(this, this.flat(), this._params.length);
      // Parameters whose gradients were not seen during the backward pass (used more than once, or no watch): now.
      this._params.forEach((p, i) => step!.ready(i, grads.get(p.name)!));
      const out = new Map<string, tf.Tensor>();
      let uploadProbe: Promise<number> | null = null;
      const { buckets } = step.layout;
      for (let k = 0; k < buckets.length; k++) {
        const first = k;
        const mine = opts.onBucket ? new Map<string, tf.Tensor>() : out;
        const take = (tensors: tf.Tensor[]): void => buckets[k].members.forEach((i, j) => mine.set(this._params[i].name, tensors[j]));
        take(await step.done[k]);
        if (opts.onBucket) {
          // The buckets after it that are back already go along: one optimizer call for the run (femto on 2 GPUs: 14
          // of 18 buckets are back when the backward pass has been issued; an AdamW call per bucket cost the main
          // thread ~2 ms more per step in dispatches and bind groups, gpu_dist_profile.sh, docs/BENCHMARKS.md).
          while (k + 1 < buckets.length && step.back[k + 1]) take(step.back[++k]!);
          if (probe && k === buckets.length - 1) uploadProbe = this.probeGpu(mine);
          this.ahead(() => opts.onBucket!(mine));
          for (let j = first; j <= k; j++) this.trace?.('applied', j);
        }
      }
      const kept = this.captured?.kept;
      for (const t of grads.values()) if (!kept?.has(t)) t.dispose();
      if (probe) {
        const mode = step.layout === this.flatLayout ? 'flat' : 'overlap';
        await this.record(mode, buckets.length, t0, probe, step.tFirst, step.tRead, step.tEx, out, uploadProbe, stagingClock.ms - copy0);
      }
      return out;
    } finally {
      reduceClock.on = false;
    }
  }

  /**
   * The exchange without watch(): all parameters in registration order, in buckets of up to FLAT_BUCKET_BYTES (one
   * bucket for femto and for most models; a GPU buffer must stay under WebGPU's maxBufferSize, 256 MiB by default).
   */
  private flat(): Layout {
    if (!this.flatLayout) {
      const buckets: Bucket[] = [];
      let cur: Bucket | null = null;
      this._params.forEach((p, i) => {
        const bytes = p.variable.size * 4;
        if (!cur || (cur.bytes > 0 && cur.bytes + bytes > FLAT_BUCKET_BYTES)) {
          cur = { members: [], bytes: 0 };
          buckets.push(cur);
        }
        cur.members.push(i);
        cur.bytes += bytes;
      });
      this.flatLayout = new Layout(buckets, this._params.length, this.compress, this.pool);
    }
    return this.flatLayout;
  }

  /** Gradients of parameters other than the attached ones: one flat exchange through tfjs, nothing kept. */
  private async exchangeSubset(params: readonly NamedParameter[], grads: Map<string, tf.Tensor>, t0: number, probe: Promise<number> | null): Promise<Map<string, tf.Tensor>> {
    const order = params.filter((p) => grads.has(p.name));
    const tensors = order.map((p) => grads.get(p.name)!);
    const flat = tf.tidy(() => tf.concat(tensors.map((t) => t.reshape([-1]))));
    const data = (await flat.data()) as Float32Array;
    const tRead = performance.now();
    flat.dispose();
    for (const t of tensors) t.dispose();
    let buf = data;
    if (this.compress === 'bf16') {
      buf = new Float32Array(bf16Words(data.length));
      packBf16(data, buf);
    }
    await this.group.allreduce(buf, { op: 'avg', dtype: this.compress === 'bf16' ? 'bf16x2' : 'f32' });
    if (this.compress === 'bf16') unpackBf16(buf, data);
    const tEx = performance.now();
    const out = new Map<string, tf.Tensor>();
    tf.tidy(() => {
      const parts = tf.split(tf.tensor1d(data), tensors.map((t) => t.size));
      order.forEach((p, i) => out.set(p.name, tf.keep(parts[i].reshape(tensors[i].shape))));
    });
    if (probe) await this.record('flat', 1, t0, probe, tRead, tRead, tEx, out, null, 0);
    return out;
  }

  /**
   * The tfjs transfer's upload of an averaged bucket. tfjs uploads a host array through a staging buffer that it
   * creates mapped and destroys again on every upload (tfjs-backend-webgpu uploadToGPU: acquireBuffer(..., reuse=false)),
   * i.e. one buffer creation per bucket per step. On webgpu the bucket is instead written with queue.writeBuffer (Dawn
   * copies it through its own staging ring) into a GPU buffer created once per bucket, and wrapped without a copy
   * (zeroCopy: tfjs never frees it); the split that reads it makes the gradient tensors. The split is submitted long
   * before the next step writes the buffer again (every readback submits). Shared-memory arrays (the pool's) and other
   * backends take tfjs's own path (a copy of the array on the cpu backend, which would otherwise keep a view of it).
   */
  private upload(layout: Layout, k: number, buf: Float32Array): tf.Tensor1D {
    if (this.gpuUpload && !(buf.buffer instanceof SharedArrayBuffer) && tf.getBackend() === 'webgpu') {
      const device = (tf.backend() as unknown as { device?: GpuDeviceLike }).device;
      const usage = (globalThis as unknown as { GPUBufferUsage?: Record<string, number> }).GPUBufferUsage;
      if (device && usage) {
        try {
          let g = layout.gpuBuffers[k] ?? null;
          if (!g || g.size !== buf.byteLength) {
            g?.destroy();
            g = device.createBuffer({ size: buf.byteLength, usage: usage.STORAGE | usage.COPY_SRC | usage.COPY_DST });
            layout.gpuBuffers[k] = g;
          }
          device.queue.writeBuffer(g, 0, buf.buffer, buf.byteOffset, buf.byteLength);
          return tf.tensor({ buffer: g, zeroCopy: true } as unknown as Float32Array, [buf.length], 'float32') as tf.Tensor1D;
        } catch {
          this.gpuUpload = false; // this Dawn does not take it: tfjs's own upload from now on
        }
      }
    }
    return tf.tensor1d(tf.getBackend() === 'webgpu' ? buf : buf.slice());
  }

  private disposeLayouts(): void {
    this.layout?.dispose();
    this.flatLayout?.dispose();
    this.flatLayout = null;
  }

  /** Free the GPU buffers of the staging and the uploads (and replayGrads's capture). */
  dispose(): void {
    this.dropCapture();
    this.disposeLayouts();
  }

  /** A 1-float readback issued after every kernel so far: resolves when the GPU has finished them. */
  private probeGpu(grads: Map<string, tf.Tensor>): Promise<number> {
    const any = grads.values().next().value as tf.Tensor | undefined;
    if (!any) return Promise.resolve(performance.now());
    const p = tf.tidy(() => tf.keep(any.reshape([-1]).slice(0, 1)));
    return p.data().then(() => {
      p.dispose();
      return performance.now();
    });
  }

  private async record(
    mode: StepProfile['mode'], buckets: number, t0: number, probe: Promise<number>, tFirst: number, tRead: number, tEx: number, out: Map<string, tf.Tensor>,
    uploadProbe: Promise<number> | null, copy: number,
  ): Promise<void> {
    const exposed = performance.now() - t0;
    const reduce = reduceClock.ms;
    const tGpu = await probe;
    const up = await (uploadProbe ?? this.probeGpu(out));
    this.lastProfile = {
      mode,
      tail: tGpu - t0,
      readback: tRead - t0,
      exchange: tEx - tFirst,
      reduce,
      upload: up - tEx,
      exposed,
      copy,
      buckets,
    };
  }

  /**
   * Sum or average a few numbers over ranks (metrics: timm's reduce_tensor), in float64 and rank order. Without
   * communication threads the buckets are all-reduced on the same ring, whose collectives every rank must queue in the
   * same order; an exchange the caller left running (the held forward pass) queues its buckets whenever their readbacks
   * finish, at a different moment on each rank, so it is finished first.
   */
  async allreduceScalars(values: number[], op: 'sum' | 'avg'): Promise<number[]> {
    if (this.exchange && !this.pool) await this.exchange.catch(() => {}); // its failure is reported where it is awaited
    return this.group.allreduceScalars(values, op);
  }

  async close(): Promise<void> {
    this.dispose();
    if (this.ownPool) await this.pool?.close();
    await this.group.close();
  }
}

/**
 * Settings of the gradient exchange, in one place: a snapshot of src/settings.ts taken when the process group is set
 * up (mambaout-distributed-train passes its environment to every rank; torchrun/srun/Kubernetes users set them like
 * MASTER_ADDR). The variables, documented with their defaults there:
 *
 *   MAMBAOUT_DIST_TRANSPORT  auto | unix | tcp     ring transport; auto: shared memory between the ranks of one machine
 *   MAMBAOUT_DIST_COMPRESS   none | bf16           bf16: buckets cross GPU->host, the wire and host->GPU as bfloat16,
 *                                                  summed and averaged in bfloat16 (torch DDP's bf16_compress_hook);
 *                                                  default none (float32, results equal 1 process with the W-fold batch)
 *   MAMBAOUT_DIST_TRANSFER   auto | staged | tfjs  GPU<->host path of the buckets (src/train/ddp_gpu.ts); auto: staged on
 *                                                  webgpu
 *   MAMBAOUT_DIST_HANDOFF    auto | memcpy         who copies staged bytes between Dawn's mapped memory and the exchange:
 *                                                  auto: the kernel on libuv's threads via a /dev/shm file (GradHandoff)
 *   MAMBAOUT_DIST_HOLD       auto | off            auto: the training loop issues the next forward pass while the
 *                                                  exchange finishes, when it can (GradHold); off: awaits every exchange
 *   MAMBAOUT_DIST_THREADS    auto | 0 | N          communication threads per rank (src/distributed/pool.ts); auto: 4 when
 *                                                  the gradients are 16 MiB or more, else the main thread. Run 2 on the
 *                                                  H200 x2 with the staged transfer (docs/BENCHMARKS.md): femto (29 MB)
 *                                                  2,578 img/s on 4 threads vs 2,435 on the main thread, tiny (106 MB)
 *                                                  1,666 vs 1,239 (run 1, tfjs transfer: femto had been faster on the
 *                                                  main thread, hence the earlier 64 MiB)
 *   MAMBAOUT_DIST_BUCKET_MB  2                     bucket size of the overlapped exchange (MiB)
 */
export interface DistSettings {
  transport: TransportKind;
  compress: GradCompression;
  transfer: GradTransfer;
  handoff: GradHandoff;
  hold: GradHold;
  threads: 'auto' | number;
  bucketMb: number;
}

/** Gradients from this size up are exchanged on threads when MAMBAOUT_DIST_THREADS is auto. */
export const AUTO_THREADS_BYTES = 16 * 1024 * 1024;
export const AUTO_THREADS = 4;

/** The exchange settings now (a bad value: the UserError of src/settings.ts naming the variable). */
export function readDistSettings(): DistSettings {
  return {
    transport: settings.distTransport,
    compress: settings.distCompress,
    transfer: settings.distTransfer,
    handoff: settings.distHandoff,
    hold: settings.distHold,
    threads: settings.distThreads,
    bucketMb: settings.distBucketMb,
  };
}

/**
 * Distributed set-up of a training process started by mambaout-distributed-train (or torchrun-style env):
 * WORLD_SIZE > 1 joins the process group; otherwise returns null (single process). Exchange settings: readDistSettings.
 * The parameters may come later: broadcastParams(params) (DDP's broadcast at wrap time) attaches them.
 */
export async function setupDistributed(
  args: { dist_timeout?: unknown; local_rank?: unknown },
  logger: Logger,
  params: readonly NamedParameter[] = [],
): Promise<DistributedDataParallel | null> {
  // timm: LOCAL_RANK from the environment when set, else --local_rank / --local-rank (PyTorch launchers pass it)
  const env = readDistEnv(process.env, { localRankArg: (args.local_rank as number | null) ?? undefined });
  if (!env.distributed) return null;
  const ds = readDistSettings();
  const timeoutMs = 1000 * ((args.dist_timeout as number | null) ?? 300);
  let group: ProcessGroup;
  try {
    group = await ProcessGroup.init({ ...env, timeoutMs, transport: ds.transport });
  } catch (e) {
    // A rank that never joins, ranks started with different WORLD_SIZE, a wrong port or address: a problem of how
    // the job was started (exit 2), not a bug.
    if (isDistError(e) && (e.reason === 'rendezvous' || e.reason === 'disconnect')) {
      throw new UserError(
        `rank ${env.rank} could not join the process group: ${e.message}; start every rank with the same WORLD_SIZE, ` +
          `MASTER_ADDR and MASTER_PORT (mambaout-distributed-train does), or raise --dist-timeout`,
      );
    }
    throw e;
  }
  logger.debug(`rank ${env.rank}/${env.worldSize} joined the process group`);
  const ddp = new DistributedDataParallel(group, [], {
    compress: ds.compress,
    transfer: ds.transfer,
    handoff: ds.handoff,
    hold: ds.hold,
    bucketBytes: Math.round(ds.bucketMb * 1024 * 1024),
  });
  const threads = ds.threads === 'auto' ? AUTO_THREADS : ds.threads;
  if (threads > 0) {
    ddp.poolAbove = {
      bytes: ds.threads === 'auto' ? AUTO_THREADS_BYTES : 0, threads, masterAddr: env.masterAddr || '127.0.0.1', nodeRank: env.nodeRank, timeoutMs,
    };
  }
  if (params.length > 0) await ddp.attach(params);
  return ddp;
}
