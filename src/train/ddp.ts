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
 * stages' buckets are queued while the JS thread still issues the earlier stages. They resolve once the backward call
 * returns, while the GPU computes the rest; each bucket then goes into the all-reduce (queued in bucket order, the
 * same on every rank) and is uploaded as soon as it is averaged. What stays on the critical path is the GPU tail of the
 * backward pass plus the exchange of the last bucket(s) and the uploads.
 *
 * Why the tape and not identity ops with a custom gradient (tf.customGrad per parameter use): that needs the model to
 * read every variable through a hook (src/models/ does not), adds a node per parameter to every forward, and sees the
 * gradient of one use rather than the accumulated one. The tape nodes are tfjs-core's `engine.state.activeTape` (4.x);
 * if it is not there (another tfjs version) `watch` does nothing and the flat path runs: same results, no overlap.
 * Parameters used more than once (the cpu path's fc1 row blocks) go to the buckets after the backward returns.
 *
 * Results: every bucket is averaged with the ring all-reduce of the process group, so all ranks hold bit-identical
 * gradients. With 2 ranks the overlapped and the flat paths give the same bits (a + b does not depend on where the
 * buckets or chunks are cut); with 3 or more the summation order of an element depends on its chunk, so the two
 * paths agree to float32 rounding.
 *
 * `profile` (scripts/bench_dist.ts --breakdown) adds probe readbacks that time the phases of one exchange; they
 * synchronise with the GPU, so profiled steps are slower than plain ones and are run after the timed steps.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Logger } from '../log/logger.js';
import { readDistEnv } from '../distributed/env.js';
import { ProcessGroup, isDistError, reduceClock } from '../distributed/group.js';
import type { CommPool } from '../distributed/pool.js';
import { UserError } from '../errors.js';
import { settings } from '../settings.js';
import type { NamedParameter } from './optim/base.js';

/** The process-group operations DDP uses (src/distributed/group.ts). */
export interface Communicator {
  readonly rank: number;
  readonly worldSize: number;
  allreduce(buf: Float32Array, opts?: { op?: 'sum' | 'avg' }): Promise<void>;
  broadcast(buf: ArrayBufferView, root: number): Promise<void>;
  allreduceScalars(values: readonly number[], op: 'sum' | 'avg'): Promise<number[]>;
  close(): void | Promise<void>;
}

export interface DdpOptions {
  /** Bucket size of the overlapped exchange in bytes (default 4 MiB; DDP's default is 25 MB). */
  bucketBytes?: number;
  /** Time the phases of every exchange (adds GPU synchronisations; benchmarks only). */
  profile?: boolean;
  /**
   * Exchange the buckets on these worker threads (src/distributed/pool.ts) instead of the main thread: bucket b on
   * channel b. The readback is copied into shared memory once, and the upload reads from there.
   */
  pool?: CommPool | null;
}

export interface ExchangeOptions {
  /**
   * Receives each bucket's averaged gradients as soon as they are uploaded (and owns them: dispose them), e.g. to run
   * the optimizer on them while later buckets are still exchanged; allreduceGrads then returns an empty map. Fine for
   * optimizers whose update of a parameter depends only on its own gradient and state (all of src/train/optim, which
   * keep torch's per-parameter step counts), not with gradient clipping by the global norm.
   */
  onBucket?: (grads: Map<string, tf.Tensor>) => void;
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
  buckets: number;
}

/** tfjs-core's tape node (engine internals, 4.x). */
interface TapeNode {
  inputs: Record<string, tf.Tensor>;
  outputs: tf.Tensor[];
  gradient?: (dys: tf.Tensor[]) => Record<string, () => tf.Tensor>;
}

/** The parts of a WebGPU device and buffer that upload() uses (dawn.node's objects). */
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

/** Gradients of one backward pass on their way into the buckets. */
class PendingStep {
  readonly grads: (tf.Tensor | null)[];
  readonly missing: number[];
  readonly readbacks: (Promise<Float32Array> | null)[];
  constructor(private readonly ddp: DistributedDataParallel, nParams: number, buckets: readonly Bucket[]) {
    this.grads = new Array(nParams).fill(null);
    this.missing = buckets.map((b) => b.members.length);
    this.readbacks = new Array(buckets.length).fill(null);
  }

  ready(i: number, g: tf.Tensor): void {
    if (this.grads[i]) return;
    this.grads[i] = g;
    const b = this.ddp.bucketOf[i];
    if (--this.missing[b] === 0) {
      const p = this.ddp.startReadback(this.ddp.buckets[b], this.grads);
      p.catch(() => {}); // awaited (and its failure reported) by allreduceGrads, in bucket order
      this.readbacks[b] = p;
    }
  }
}

export class DistributedDataParallel {
  readonly buckets: Bucket[];
  /** Bucket index of each parameter. */
  readonly bucketOf: number[];
  /** Phases of the most recent exchange when profiling. */
  lastProfile: StepProfile | null = null;
  private readonly indexById = new Map<number, number>();
  private pending: PendingStep | null = null;
  private readonly profile: boolean;
  private readonly pool: CommPool | null;
  /** Shared-memory home of the buckets when a pool exchanges them (bucket b at bucketOffset[b]). */
  private shared: Float32Array | null = null;
  private readonly bucketOffset: number[] = [];
  /** webgpu: one persistent GPU buffer per bucket that the averaged gradients are written into (see upload()). */
  private readonly gpuBuffers: (GpuBufferLike | null)[] = [];
  private gpuUpload = true;

  constructor(
    readonly group: Communicator,
    readonly params: readonly NamedParameter[],
    opts: DdpOptions = {},
  ) {
    this.profile = opts.profile ?? false;
    this.pool = opts.pool ?? null;
    const cap = opts.bucketBytes ?? 4 * 1024 * 1024;
    if (!(cap >= 4)) throw new UserError(`the gradient bucket size must be at least 4 bytes, got ${cap}.`);
    // DDP order: parameters in reverse registration order, which is roughly the order the backward pass produces them.
    this.buckets = [];
    this.bucketOf = new Array(params.length).fill(-1);
    let cur: Bucket | null = null;
    for (let i = params.length - 1; i >= 0; i--) {
      const bytes = params[i].variable.size * 4;
      if (!cur || (cur.bytes > 0 && cur.bytes + bytes > cap)) {
        cur = { members: [], bytes: 0 };
        this.buckets.push(cur);
      }
      cur.members.push(i);
      cur.bytes += bytes;
      this.bucketOf[i] = this.buckets.length - 1;
    }
    params.forEach((p, i) => this.indexById.set(p.variable.id, i));
    let off = 0;
    for (const b of this.buckets) {
      this.bucketOffset.push(off);
      off += b.bytes / 4;
    }
    if (this.pool && off > 0) this.shared = this.pool.alloc(off);
  }

  get rank(): number {
    return this.group.rank;
  }

  get worldSize(): number {
    return this.group.worldSize;
  }

  /** Rank 0's parameter values everywhere (DDP's broadcast at wrap time). */
  async broadcastParams(params: readonly NamedParameter[] = this.params): Promise<void> {
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
   * Wrap the loss function given to `tf.variableGrads` so that the following backward pass starts the bucket
   * readbacks as soon as their gradients are issued; then call `allreduceGrads` with the returned gradients.
   */
  watch<T extends tf.Tensor>(lossFn: () => T): () => T {
    return () => {
      const y = lossFn();
      this.hookTape(y);
      return y;
    };
  }

  private hookTape(y: tf.Tensor): void {
    this.pending = null;
    const state = (tf.engine() as unknown as { state?: { activeTape?: TapeNode[] | null } }).state;
    const tape = state?.activeTape;
    if (!Array.isArray(tape)) return;
    // Only nodes on a path to the loss take part in the backward pass (tfjs prunes the others, e.g. the clones
    // that ops record when they save a variable for their gradient): the same walk as tfjs's getFilteredNodesXToY.
    const leadsToY = new Set<number>([y.id]);
    const onPath = new Array<boolean>(tape.length).fill(false);
    for (let n = tape.length - 1; n >= 0; n--) {
      const node = tape[n];
      if (!node || typeof node.inputs !== 'object' || !Array.isArray(node.outputs)) return;
      if (!node.outputs.some((o) => leadsToY.has(o.id))) continue;
      onPath[n] = true;
      for (const input in node.inputs) leadsToY.add(node.inputs[input].id);
    }
    const P = this.params.length;
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
    const step = new PendingStep(this, P, this.buckets);
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
      node.gradient = (dys: tf.Tensor[]) => {
        const map = gradient(dys);
        for (const { input, i } of list) {
          const thunk = map[input];
          if (typeof thunk !== 'function') continue;
          map[input] = () => {
            const dx = thunk();
            step.ready(i, dx);
            return dx;
          };
        }
        return map;
      };
    }
    this.pending = step;
  }

  /** Concatenate a bucket's gradients and start its readback (called in the middle of the backward pass). */
  startReadback(b: Bucket, grads: readonly (tf.Tensor | null)[]): Promise<Float32Array> {
    const flat = tf.tidy(() => tf.keep(tf.concat(b.members.map((i) => grads[i]!.reshape([-1])))));
    return flat.data().then((d) => {
      flat.dispose();
      return d as Float32Array;
    });
  }

  /**
   * Average gradients over ranks; returns new tensors (the inputs are disposed). Uses the buckets of a `watch`ed
   * backward pass when there is one, else one flat buffer.
   */
  async allreduceGrads(params: readonly NamedParameter[], grads: Map<string, tf.Tensor>, opts: ExchangeOptions = {}): Promise<Map<string, tf.Tensor>> {
    const step = this.pending;
    this.pending = null;
    const t0 = performance.now();
    const probe = this.profile ? this.probeGpu(grads) : null;
    reduceClock.ms = 0;
    reduceClock.on = this.profile;
    try {
      const sameParams = params.length === this.params.length && params.every((p, i) => p === this.params[i]);
      if (step && sameParams && params.every((p) => grads.has(p.name))) return await this.exchangeBuckets(step, grads, t0, probe, opts.onBucket);
      const out = await this.exchangeFlat(params, grads, t0, probe);
      if (!opts.onBucket) return out;
      opts.onBucket(out);
      return new Map();
    } finally {
      reduceClock.on = false;
    }
  }

  private async exchangeFlat(params: readonly NamedParameter[], grads: Map<string, tf.Tensor>, t0: number, probe: Promise<number> | null): Promise<Map<string, tf.Tensor>> {
    const order = params.filter((p) => grads.has(p.name));
    const tensors = order.map((p) => grads.get(p.name)!);
    const flat = tf.tidy(() => tf.concat(tensors.map((t) => t.reshape([-1]))));
    const buf = (await flat.data()) as Float32Array;
    const tRead = performance.now();
    flat.dispose();
    for (const t of tensors) t.dispose();
    await this.group.allreduce(buf, { op: 'avg' });
    const tEx = performance.now();
    const out = new Map<string, tf.Tensor>();
    tf.tidy(() => {
      // (slot past the buckets: the flat buffer gets its own persistent GPU buffer)
      const parts = tf.split(this.upload(this.buckets.length, buf), tensors.map((t) => t.size));
      order.forEach((p, i) => out.set(p.name, tf.keep(parts[i].reshape(tensors[i].shape))));
    });
    if (probe) await this.record('flat', 1, t0, probe, tRead, tRead, tEx, out);
    return out;
  }

  private async exchangeBuckets(
    step: PendingStep, grads: Map<string, tf.Tensor>, t0: number, probe: Promise<number> | null, onBucket?: (g: Map<string, tf.Tensor>) => void,
  ): Promise<Map<string, tf.Tensor>> {
    // Parameters whose gradients were not seen during the backward pass (used more than once): now.
    this.params.forEach((p, i) => {
      if (!step.grads[i]) step.ready(i, grads.get(p.name)!);
    });
    const out = new Map<string, tf.Tensor>();
    const done: Promise<void>[] = [];
    let tFirst = 0;
    let tRead = 0;
    let tEx = 0;
    let uploadProbe: Promise<number> | null = null;
    for (let b = 0; b < this.buckets.length; b++) {
      let buf = await step.readbacks[b]!;
      tRead = performance.now();
      if (b === 0) tFirst = tRead;
      const bucket = this.buckets[b];
      let reduced: Promise<void>;
      if (this.pool && this.shared) {
        const view = this.shared.subarray(this.bucketOffset[b], this.bucketOffset[b] + buf.length);
        view.set(buf);
        buf = view;
        reduced = this.pool.allreduce(view, 'avg', b);
      } else {
        reduced = this.group.allreduce(buf, { op: 'avg' });
      }
      // Queued in bucket order (identical on every rank); uploaded as soon as it is averaged. A failure is reported by
      // the Promise.all below, not as an unhandled rejection while a later bucket's readback is awaited.
      const uploaded = reduced.then(() => {
        tEx = performance.now();
        const mine = onBucket ? new Map<string, tf.Tensor>() : out;
        tf.tidy(() => {
          const parts = tf.split(this.upload(b, buf), bucket.members.map((i) => this.params[i].variable.size));
          bucket.members.forEach((i, k) => {
            const v = this.params[i].variable;
            mine.set(this.params[i].name, tf.keep(parts[k].reshape(v.shape)));
          });
        });
        if (onBucket) {
          if (probe) uploadProbe = this.probeGpu(mine);
          onBucket(mine);
        }
      });
      uploaded.catch(() => {});
      done.push(uploaded);
    }
    await Promise.all(done);
    for (const t of grads.values()) t.dispose();
    if (probe) await this.record('overlap', this.buckets.length, t0, probe, tFirst, tRead, tEx, out, uploadProbe);
    return out;
  }

  /**
   * The averaged bucket as a tensor on the device. tfjs uploads a host array through a staging buffer that it creates
   * mapped and destroys again on every upload (tfjs-backend-webgpu uploadToGPU: acquireBuffer(..., reuse=false)), i.e.
   * one buffer creation per bucket per step (the flat path's first version paid ~0.25 s per femto step for 172 of
   * them). On webgpu the bucket is instead written with queue.writeBuffer (Dawn copies it through its own staging
   * ring) into a GPU buffer created once per bucket, and wrapped without a copy (zeroCopy: tfjs never frees it). The
   * split that reads it is submitted long before the next step writes the buffer again (every readback submits).
   * Shared-memory arrays (the pool's) and other backends take the plain path.
   */
  private upload(b: number, buf: Float32Array): tf.Tensor1D {
    if (this.gpuUpload && !(buf.buffer instanceof SharedArrayBuffer) && tf.getBackend() === 'webgpu') {
      const device = (tf.backend() as unknown as { device?: GpuDeviceLike }).device;
      const usage = (globalThis as unknown as { GPUBufferUsage?: Record<string, number> }).GPUBufferUsage;
      if (device && usage) {
        try {
          let g = this.gpuBuffers[b] ?? null;
          if (!g || g.size !== buf.byteLength) {
            g?.destroy();
            g = device.createBuffer({ size: buf.byteLength, usage: usage.STORAGE | usage.COPY_SRC | usage.COPY_DST });
            this.gpuBuffers[b] = g;
          }
          device.queue.writeBuffer(g, 0, buf.buffer, buf.byteOffset, buf.byteLength);
          return tf.tensor({ buffer: g, zeroCopy: true } as unknown as Float32Array, [buf.length], 'float32') as tf.Tensor1D;
        } catch {
          this.gpuUpload = false; // this Dawn does not take it: tfjs's own upload from now on
        }
      }
    }
    return tf.tensor1d(buf);
  }

  /** Free the GPU buffers of the bucket uploads. */
  dispose(): void {
    for (const g of this.gpuBuffers) g?.destroy();
    this.gpuBuffers.length = 0;
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
    uploadProbe: Promise<number> | null = null,
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
      buckets,
    };
  }

  /** Sum or average a few numbers over ranks (metrics: timm's reduce_tensor), in float64 and rank order. */
  async allreduceScalars(values: number[], op: 'sum' | 'avg'): Promise<number[]> {
    return this.group.allreduceScalars(values, op);
  }

  async close(): Promise<void> {
    await this.group.close();
  }
}

/**
 * Distributed set-up of a training process started by mambaout-distributed-train (or torchrun-style env):
 * WORLD_SIZE > 1 joins the process group; otherwise returns null (single process). The transport can be forced with
 * settings.distTransport (MAMBAOUT_DIST_TRANSPORT=auto|unix|tcp; default auto: shared memory between the ranks of one machine).
 */
export async function setupDistributed(
  args: { dist_timeout?: unknown; local_rank?: unknown },
  logger: Logger,
  params: readonly NamedParameter[] = [],
): Promise<DistributedDataParallel | null> {
  // timm: LOCAL_RANK from the environment when set, else --local_rank / --local-rank (PyTorch launchers pass it)
  const env = readDistEnv(process.env, { localRankArg: (args.local_rank as number | null) ?? undefined });
  if (!env.distributed) return null;
  const timeoutMs = 1000 * ((args.dist_timeout as number | null) ?? 300);
  let group: ProcessGroup;
  try {
    group = await ProcessGroup.init({ ...env, timeoutMs, transport: settings.distTransport });
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
  return new DistributedDataParallel(group, params);
}
