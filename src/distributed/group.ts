/**
 * ProcessGroup: the collective-communication API of mambaout (a small, CPU-side stand-in for
 * torch.distributed with the NCCL backend). One process per device; all processes of a job form one group.
 *
 * ## Typical use (what the training loop does)
 *
 *   import { readDistEnv } from './env.js';
 *   import { ProcessGroup } from './group.js';
 *
 *   const env = readDistEnv();                              // RANK, WORLD_SIZE, MASTER_ADDR, ... (UserError if bad)
 *   const group = await ProcessGroup.init({ ...env, timeoutMs: 300_000 });  // world size 1: no sockets at all
 *
 *   await group.broadcast(flatWeights, 0);                  // DDP start: every rank takes rank 0's weights
 *   ...
 *   // gradient averaging every optimizer step (flat Float32Array, or one call per bucket):
 *   await group.allreduce(flatGrads, { op: 'avg' });
 *   // overlap with backward: start early buckets while computing later ones
 *   const pending = buckets.map((b) => group.allreduceAsync(b, { op: 'avg' }));  // issued as they become ready
 *   await Promise.all(pending);
 *   // metrics (timm reduce_tensor = all_reduce(sum) / W):
 *   const [loss, top1, top5] = await group.allreduceScalars([loss, top1, top5], 'avg');
 *   await group.barrier();
 *   await group.close();
 *
 * ## Semantics
 * - Every rank must call the same collectives in the same order with buffers of the same length (as with
 *   NCCL). Collectives are queued at call time and executed one after another, so several may be issued
 *   without awaiting (`allreduceAsync` is the same as `allreduce`: both return a promise immediately).
 *   Mismatches (other length, other collective, other root) are detected and fail the group with a message.
 * - Buffers are used in place and must not be touched until the returned promise resolves; after it
 *   resolves the buffer may be reused immediately (all sends have been flushed).
 * - allreduce results are bit-identical on all ranks and deterministic (see allreduce.ts for the summation
 *   order). 'avg' divides the sum by W once (x / W, like timm's reduce_tensor).
 * - Communication only progresses while the event loop runs: synchronous compute (e.g. tfjs cpu kernels)
 *   blocks it; awaiting GPU work (webgpu `data()`) lets buckets move in the meantime.
 * - Faults: every wait for a peer has a timeout (`timeoutMs`, the `--dist-timeout`). When a peer disconnects,
 *   times out or violates the protocol, the pending collective and all later ones reject with a DistError
 *   naming the rank and cause ("rank 2 disconnected (connection reset)", "rank 1 did not answer within
 *   30 s (...)"); the failure is flooded to all other ranks so they fail with the same message instead of
 *   waiting for their own timeouts. A failed group stays failed (`group.failure`).
 *   Blame for timeouts: a rank blames its left neighbour when that neighbour sent nothing at all for the
 *   current collective within `timeoutMs` (it never entered it); ranks whose neighbour is busy forwarding
 *   wait up to 2x the timeout for that report before giving up on their own.
 * - Sockets do not keep the process alive while no collective is pending, so a worker exits normally even
 *   without close(). close() waits for queued collectives, then tells the peers it leaves on purpose.
 */
import { UserError } from '../errors.js';
import { DEFAULT_DIST_TIMEOUT_S, readDistEnv } from './env.js';
import {
  RingAllgather,
  RingAllreduce,
  RingBroadcast,
  describeReduceAux,
  type ReduceDtype,
  type ReduceOp,
  type RingCollective,
  type RingSend,
  type ScalarReduceOp,
} from './allreduce.js';
import { connectRing, type Ring, type TransportKind } from './tcp.js';
import type { FrameConsumer, Link, LinkHandler, PayloadSink } from './transport.js';
import { FRAME, OP_KIND_NAME, ProtocolError, type FrameHeader } from './wire.js';
import { DistError } from './errors.js';

export { DistError, isDistError } from './errors.js';
export { reduceClock } from './float32.js';
export type { ReduceDtype, ReduceOp, ScalarReduceOp } from './allreduce.js';
export type { TransportKind } from './tcp.js';

/**
 * Default bucket size of allreduce/broadcast pipelining (bytes). scripts/bench_allreduce.ts, 7.3M floats,
 * 16-core x86 host, unix sockets (median of 20): W=2 24 ms, W=3 29 ms, W=4 35 ms at 4 MiB; 16 MiB is the same
 * within noise, 1 MiB is 15% slower at W=3. Smaller buckets start the pipeline sooner for small buffers.
 */
export const DEFAULT_BUCKET_BYTES = 4 * 1024 * 1024;

export interface ProcessGroupOptions {
  rank: number;
  worldSize: number;
  /** Rendezvous address of rank 0 (required when worldSize > 1). */
  masterAddr?: string;
  /** Rendezvous port of rank 0 (required when worldSize > 1). */
  masterPort?: number;
  /** Informational (device selection is the caller's business). */
  localRank?: number;
  /** Longest wait for any peer during a collective (default 300 s). */
  timeoutMs?: number;
  /** Longest wait for the rendezvous (all ranks joining); default: timeoutMs. */
  initTimeoutMs?: number;
  /** Pipelining unit of allreduce and broadcast in bytes (default DEFAULT_BUCKET_BYTES). */
  bucketBytes?: number;
  /**
   * 'auto' (default): shared memory (payloads) + unix sockets (headers) between ranks on one machine, TCP otherwise.
   * 'unix': unix sockets carry the payloads too (the transport before shared memory). 'tcp': TCP only.
   */
  transport?: TransportKind;
  /** Machine index (NODE_RANK); ranks with different node ranks never use shared memory or unix sockets. */
  nodeRank?: number;
  /** Capacity of each shared-memory inbox in bytes (default 32 MiB). */
  shmBytes?: number;
  /** Read buffer per ring socket (default 1 MiB). */
  readBufferBytes?: number;
  /** Early data (from a neighbour that is ahead) buffered before reading pauses (default 256 MiB). */
  maxBufferedBytes?: number;
}

export interface AllreduceOptions {
  /** 'sum' (default) or 'avg' (sum / worldSize). */
  op?: ReduceOp;
  /** Overrides the group's bucket size for this call. */
  bucketBytes?: number;
  /** 'f32' (default) or 'bf16x2': every 4-byte element holds two bfloat16 values (bf16.ts), reduced as bfloat16. */
  dtype?: ReduceDtype;
}

/** How long a rank whose write to a peer failed waits for an Abort naming an earlier culprit (see closed()). */
const ABORT_GRACE_MS = 200;

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

interface Running {
  seq: number;
  op: RingCollective;
  phase: 'recv' | 'flush';
  fail(err: Error): void;
}

export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly localRank: number;
  readonly timeoutMs: number;
  readonly bucketBytes: number;

  private ring: Ring | null = null;
  private seq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private current: Running | null = null;
  private failed: DistError | null = null;
  private closeRequested = false;
  private closing = false;
  private closePromise: Promise<void> | null = null;
  /** A neighbour that left with close(): later collectives cannot run. */
  private departed: number | null = null;

  private constructor(opts: ProcessGroupOptions, timeoutMs: number, bucketBytes: number) {
    this.rank = opts.rank;
    this.worldSize = opts.worldSize;
    this.localRank = opts.localRank ?? opts.rank;
    this.timeoutMs = timeoutMs;
    this.bucketBytes = bucketBytes;
  }

  /**
   * Join the group: rendezvous through masterAddr:masterPort, connect the ring, and run one barrier, so that
   * when this resolves every rank is connected. World size 1 returns immediately (no sockets).
   */
  static async init(opts: ProcessGroupOptions): Promise<ProcessGroup> {
    const W = opts.worldSize;
    const r = opts.rank;
    if (!Number.isInteger(W) || W < 1) throw new UserError(`world size must be a positive whole number, got ${W}.`);
    if (!Number.isInteger(r) || r < 0 || r >= W) throw new UserError(`rank ${r} is out of range for world size ${W} (ranks are 0..${W - 1}).`);
    const timeoutMs = opts.timeoutMs ?? DEFAULT_DIST_TIMEOUT_S * 1000;
    if (!(timeoutMs > 0)) throw new UserError(`the distributed timeout must be positive, got ${timeoutMs} ms.`);
    const bucketBytes = Math.floor(opts.bucketBytes ?? DEFAULT_BUCKET_BYTES);
    if (!(bucketBytes >= 4)) throw new UserError(`the all-reduce bucket size must be at least 4 bytes, got ${opts.bucketBytes}.`);
    const g = new ProcessGroup(opts, timeoutMs, bucketBytes);
    if (W === 1) return g;
    if (!opts.masterAddr) throw new UserError(`MASTER_ADDR is required for world size ${W}.`);
    if (!opts.masterPort || opts.masterPort < 1 || opts.masterPort > 65535) {
      throw new UserError(`MASTER_PORT must be a TCP port between 1 and 65535 for world size ${W}, got ${opts.masterPort}.`);
    }
    const ring = await connectRing({
      rank: r,
      worldSize: W,
      masterAddr: opts.masterAddr,
      masterPort: opts.masterPort,
      initTimeoutMs: opts.initTimeoutMs ?? timeoutMs,
      transport: opts.transport ?? 'auto',
      readBufferBytes: opts.readBufferBytes ?? 1 << 20,
      maxBufferedBytes: opts.maxBufferedBytes ?? 256 * 1024 * 1024,
      nodeRank: opts.nodeRank,
      shmBytes: opts.shmBytes,
    });
    g.ring = ring;
    const handler = g.linkHandler();
    for (const l of g.links()) l.handler = handler;
    await g.barrier();
    return g;
  }

  /** init() from the torchrun-style environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ...). */
  static async fromEnv(opts: Omit<ProcessGroupOptions, 'rank' | 'worldSize' | 'masterAddr' | 'masterPort' | 'localRank'> = {}, env: Record<string, string | undefined> = process.env): Promise<ProcessGroup> {
    const e = readDistEnv(env);
    return ProcessGroup.init({ ...opts, rank: e.rank, worldSize: e.worldSize, masterAddr: e.masterAddr, masterPort: e.masterPort, localRank: e.localRank, nodeRank: e.nodeRank });
  }

  /** The failure that broke the group, or null. */
  get failure(): DistError | null {
    return this.failed;
  }

  /** Socket kinds of the ring edges, e.g. { left: 'unix', right: 'unix' } (null for world size 1). */
  get transport(): { left: 'tcp' | 'unix'; right: 'tcp' | 'unix' } | null {
    return this.ring ? { left: this.ring.left.via, right: this.ring.right.via } : null;
  }

  /**
   * Send payloads through shared memory where the ring edge has a mailbox (default true); false sends them over the
   * socket as before (benchmarks compare both in one process). Receiving handles either at any time.
   */
  set useSharedMemory(on: boolean) {
    if (this.ring) this.ring.right.shmEnabled = on;
  }

  /** Payload bytes this rank has moved through shared memory so far (sent plus received). */
  get sharedMemoryBytes(): number {
    return this.ring ? this.ring.left.shmBytes + this.ring.right.shmBytes : 0;
  }

  /** Whether the payloads of each ring edge travel through shared memory (null for world size 1). */
  get sharedMemory(): { left: boolean; right: boolean } | null {
    return this.ring ? { left: this.ring.left.sharedMemory.in, right: this.ring.right.sharedMemory.out } : null;
  }

  // ------------------------------------------------------------------------------------------ collectives

  /**
   * Sum (or average) `buf` over all ranks, in place. Resolves when the result is in `buf` and `buf` may be
   * reused. Results are bit-identical on all ranks.
   */
  allreduce(buf: Float32Array, opts: AllreduceOptions = {}): Promise<void> {
    if (!(buf instanceof Float32Array)) return Promise.reject(new TypeError('allreduce expects a Float32Array'));
    const op = opts.op ?? 'sum';
    if (op !== 'sum' && op !== 'avg') return Promise.reject(new TypeError(`unknown reduction '${String(op)}' (use 'sum' or 'avg')`));
    const bucketElems = Math.max(1, Math.floor((opts.bucketBytes ?? this.bucketBytes) / 4));
    const dtype = opts.dtype ?? 'f32';
    if (dtype !== 'f32' && dtype !== 'bf16x2') return Promise.reject(new TypeError(`unknown all-reduce dtype '${String(dtype)}' (use 'f32' or 'bf16x2')`));
    if (this.worldSize === 1) return this.local();
    return this.enqueue(() => new RingAllreduce(buf, this.rank, this.worldSize, op, bucketElems, dtype));
  }

  /**
   * Same as allreduce(): starts (queues) the reduction now and returns its promise, so the caller can go on
   * computing further gradient buckets and await all promises before the optimizer step.
   */
  allreduceAsync(buf: Float32Array, opts: AllreduceOptions = {}): Promise<void> {
    return this.allreduce(buf, opts);
  }

  /** Copy `buf` of rank `root` into `buf` of every rank (any typed array; same byte length on all ranks). */
  broadcast(buf: ArrayBufferView, root = 0): Promise<void> {
    if (!ArrayBuffer.isView(buf)) return Promise.reject(new TypeError('broadcast expects a typed array'));
    if (!Number.isInteger(root) || root < 0 || root >= this.worldSize) {
      return Promise.reject(new RangeError(`broadcast root ${root} is out of range for world size ${this.worldSize}`));
    }
    if (this.worldSize === 1) return this.local();
    const bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
    return this.enqueue(() => new RingBroadcast(bytes, this.rank, this.worldSize, root, this.bucketBytes));
  }

  /** Broadcast a JSON-serialisable value from `root` (other ranks' `value` is ignored; pass undefined). */
  broadcastObject<T>(value: T, root = 0): Promise<T> {
    if (this.worldSize === 1) return this.local().then(() => value);
    const len = new Float64Array(1);
    let bytes: Uint8Array = new Uint8Array(0);
    if (this.rank === root) {
      // (undefined and functions become null, so that every rank still runs both broadcasts)
      const json = JSON.stringify(value) ?? 'null';
      bytes = new Uint8Array(Buffer.from(json, 'utf8'));
      len[0] = bytes.length;
    }
    const first = this.broadcast(len, root);
    // Queued now (so the order of collectives is fixed at call time), built when it runs (needs the length).
    const second = this.enqueue(() => {
      if (this.rank !== root) bytes = new Uint8Array(len[0]);
      return new RingBroadcast(bytes, this.rank, this.worldSize, root, this.bucketBytes);
    });
    return Promise.all([first, second]).then(() => JSON.parse(Buffer.from(bytes).toString('utf8')) as T);
  }

  /**
   * Reduce a few numbers over all ranks (metrics). Computed in float64, in rank order, identically on every
   * rank. 'avg' = sum / worldSize (timm reduce_tensor).
   */
  allreduceScalars(values: readonly number[], op: ScalarReduceOp = 'sum'): Promise<number[]> {
    if (!['sum', 'avg', 'max', 'min'].includes(op)) return Promise.reject(new TypeError(`unknown reduction '${op}'`));
    if (this.worldSize === 1) return this.local().then(() => values.map((v) => (op === 'avg' ? v / 1 : v)));
    let g: RingAllgather | null = null;
    return this.enqueue(() => (g = new RingAllgather(values, this.rank, this.worldSize))).then(() => g!.reduce(op));
  }

  /** Every rank's `values` (result[j] = rank j's values; all ranks must pass the same count). */
  allgatherScalars(values: readonly number[]): Promise<number[][]> {
    if (this.worldSize === 1) return this.local().then(() => [values.slice()]);
    let g: RingAllgather | null = null;
    return this.enqueue(() => (g = new RingAllgather(values, this.rank, this.worldSize))).then(() => g!.perRank());
  }

  /** Resolves once every rank has called barrier() (after all earlier collectives). */
  async barrier(): Promise<void> {
    const all = await this.allgatherScalars([this.rank]);
    for (let j = 0; j < all.length; j++) {
      if (all[j][0] !== j) throw new DistError(`barrier: rank slot ${j} holds ${all[j][0]} (corrupted ring)`, null, 'protocol');
    }
  }

  /**
   * Leave the group: waits for the collectives already queued, then tells the peers this rank leaves on
   * purpose and closes the sockets. Later collectives reject. Safe to call more than once.
   */
  close(): Promise<void> {
    if (!this.closePromise) {
      this.closeRequested = true;
      this.closePromise = this.tail.then(
        () => this.shutdown(),
        () => this.shutdown(),
      );
    }
    return this.closePromise;
  }

  // ------------------------------------------------------------------------------------------ machinery

  private links(): Link[] {
    if (!this.ring) return [];
    const out = [this.ring.left, this.ring.right];
    for (const c of this.ring.control) if (c) out.push(c);
    return out;
  }

  private shutdown(): void {
    this.closing = true;
    for (const l of this.links()) {
      if (!this.failed && l.connected) l.sendControl(FRAME.Bye);
      l.end();
    }
  }

  private local(): Promise<void> {
    if (this.closeRequested) return Promise.reject(new DistError('the process group is closed', null, 'closed'));
    return Promise.resolve();
  }

  private setRef(on: boolean): void {
    for (const l of this.links()) l.setRef(on);
  }

  /** Queue a collective; `make` runs when it is its turn (all earlier collectives finished). */
  private enqueue(make: () => RingCollective): Promise<void> {
    if (this.closeRequested) return Promise.reject(new DistError('the process group is closed', null, 'closed'));
    const seq = this.seq++;
    const p = this.tail.then(() => this.execute(seq, make));
    this.tail = p.catch(() => {});
    return p;
  }

  private execute(seq: number, make: () => RingCollective): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.departed !== null) {
      return Promise.reject(new DistError(`rank ${this.departed} has left the process group (it called close())`, this.departed, 'closed'));
    }
    const ring = this.ring!;
    const op = make();
    const T = this.timeoutMs;
    return new Promise<void>((resolve, reject) => {
      const startedAt = Date.now();
      let flushStart = 0;
      let received = 0;
      let done = false;
      let timer: NodeJS.Timeout | null = null;

      const settle = (err?: Error): void => {
        if (done) return;
        done = true;
        if (timer) clearTimeout(timer);
        ring.left.detach();
        if (this.current === running) this.current = null;
        this.setRef(false);
        if (err) reject(err);
        else resolve();
      };
      const running: Running = { seq, op, phase: 'recv', fail: settle };
      this.current = running;
      this.setRef(true);

      const send: RingSend = (msgIndex, payload) =>
        ring.right.send({ type: FRAME.Data, kind: op.kind, opSeq: seq, msgIndex, aux: op.aux, total: op.totalBytes }, payload);

      const endRecv = (): void => {
        ring.left.detach();
        op.finish();
        running.phase = 'flush';
        flushStart = Date.now();
        ring.right.flushed().then(() => settle(this.failed ?? undefined));
      };

      const consumer: FrameConsumer = {
        opSeq: seq,
        frame: (h: FrameHeader): PayloadSink => {
          if (h.kind !== op.kind || h.aux !== op.aux || h.total !== op.totalBytes) {
            throw new ProtocolError(mismatch(ring.left.peer, h, op, seq));
          }
          if (h.msgIndex !== received) {
            throw new ProtocolError(`rank ${ring.left.peer} sent message ${h.msgIndex} of collective #${seq}, expected ${received}`);
          }
          const sink = op.frame(h.msgIndex, h.length, send);
          return {
            write: (c) => sink.write(c),
            end: () => {
              sink.end();
              received++;
              if (received === op.expectedFrames) endRecv();
            },
          };
        },
      };

      const check = (): void => {
        timer = null;
        if (done) return;
        const now = Date.now();
        if (running.phase === 'recv') {
          const L = ring.left;
          // If the left neighbour would have sent something on entering this collective but sent nothing, it
          // never entered it: blame it after T. Otherwise it is waiting on someone further up the ring, whose
          // own right neighbour reports the failure to everyone; only after 2T give up on our own.
          const leftStarted = L.maxOpSeqSeen >= seq;
          const blameLeft = !leftStarted && op.leftSendsFirst;
          const idle = now - Math.max(startedAt, L.lastRxAt);
          const limit = blameLeft ? T : 2 * T;
          if (idle >= limit && this.departed !== null) {
            this.fail(
              new DistError(`rank ${this.departed} left the process group (called close()) while this rank was in collective #${seq} (${op.description})`, this.departed, 'closed'),
            );
            return;
          }
          if (idle >= limit) {
            this.fail(
              blameLeft
                ? new DistError(`rank ${L.peer} did not answer within ${seconds(T)} (collective #${seq}: ${op.description})`, L.peer, 'timeout')
                : leftStarted
                  ? new DistError(`rank ${L.peer} stopped sending during collective #${seq} (${op.description}): no data for ${seconds(idle)}`, L.peer, 'timeout')
                  : new DistError(`no data from rank ${L.peer} within ${seconds(idle)} (collective #${seq}: ${op.description}); a rank before it in the ring is stuck`, null, 'timeout'),
            );
            return;
          }
          timer = setTimeout(check, limit - idle);
        } else {
          const R = ring.right;
          const idle = now - Math.max(flushStart, R.lastTxDoneAt);
          if (idle >= T) {
            this.fail(new DistError(`rank ${R.peer} did not take its data within ${seconds(T)} (collective #${seq}: ${op.description})`, R.peer, 'timeout'));
            return;
          }
          timer = setTimeout(check, T - idle);
        }
        timer.unref();
      };

      try {
        op.start(send);
        if (op.expectedFrames === 0) endRecv();
        else ring.left.attach(consumer);
      } catch (e) {
        settle(e as Error);
        return;
      }
      if (!done) {
        timer = setTimeout(check, T);
        timer.unref();
      }
    });
  }

  /** Mark the group failed, reject the running collective, and flood the failure to all peers. */
  private fail(err: DistError): void {
    if (this.failed) return;
    if (err.detectedBy === null) err.detectedBy = this.rank;
    this.failed = err;
    const cur = this.current;
    this.current = null;
    cur?.fail(err);
    const msg = { message: err.message, rank: err.rank, reason: err.reason, detectedBy: err.detectedBy };
    for (const l of this.links()) {
      if (l.connected) l.sendControl(FRAME.Abort, msg);
      l.end(1000);
    }
  }

  private linkHandler(): LinkHandler {
    const ring = this.ring!;
    const isRing = (l: Link): boolean => l === ring.left || l === ring.right;
    return {
      control: (_link, type, payload) => {
        if (type === FRAME.Abort) {
          const p = (payload ?? {}) as { message?: string; rank?: number | null; reason?: DistError['reason']; detectedBy?: number };
          const e = new DistError(p.message ?? 'a peer aborted', p.rank ?? null, p.reason ?? 'disconnect');
          e.detectedBy = p.detectedBy ?? null;
          this.fail(e);
        }
        // Bye: recorded on the link (peerLeft); handled when the socket closes.
      },
      closed: (link, cause) => {
        if (this.closing || this.failed) return;
        if (!isRing(link)) return; // control links: ring neighbours detect the same failure
        if (cause === null) {
          // The neighbour called close(). Fine unless we still need it.
          if (this.departed === null) this.departed = link.peer;
          const cur = this.current;
          // Left gone while we still expect its data, or right gone with our data unsent: this collective
          // cannot finish. (Otherwise it may still finish; if it cannot, the watchdog reports the departure.)
          if (cur && (link === ring.left ? cur.phase === 'recv' : link.writesPending > 0)) {
            this.fail(new DistError(`rank ${link.peer} left the process group (called close()) during collective #${cur.seq} (${cur.op.description})`, link.peer, 'closed'));
          }
          return;
        }
        const err = new DistError(`rank ${link.peer} disconnected (${cause})`, link.peer, 'disconnect');
        // A write that fails (broken pipe, reset) destroys the socket with the peer's last frames unread: the peer
        // may have sent an Abort naming the rank that failed first, which then arrives over another link. Wait a
        // moment for it so every rank names the same culprit; a clean close has delivered everything already.
        if (cause === 'broken pipe' || cause === 'connection reset') setTimeout(() => this.fail(err), ABORT_GRACE_MS);
        else this.fail(err);
      },
      protocolError: (link, message) => {
        this.fail(new DistError(`protocol error from rank ${link.peer}: ${message}`, link.peer, 'protocol'));
      },
    };
  }
}

function mismatch(peer: number, h: FrameHeader, op: RingCollective, seq: number): string {
  const theirs = OP_KIND_NAME[h.kind] ?? `kind ${h.kind}`;
  const ours = OP_KIND_NAME[op.kind];
  if (h.kind !== op.kind) {
    return `rank ${peer} called ${theirs} as collective #${seq} where this rank called ${ours}: all ranks must call the same collectives in the same order`;
  }
  if (h.total !== op.totalBytes) {
    return `rank ${peer}'s ${theirs} #${seq} has ${h.total} bytes but this rank's has ${op.totalBytes}: all ranks must pass buffers of the same length`;
  }
  return h.kind === 2
    ? `rank ${peer}'s broadcast #${seq} is from root ${h.aux} but this rank's is from root ${op.aux}`
    : `rank ${peer}'s ${theirs} #${seq} uses reduction ${describeReduceAux(h.aux)} but this rank's uses ${describeReduceAux(op.aux)}`;
}
