/**
 * Ring collectives as streaming state machines (no I/O of their own: group.ts feeds them frames from the
 * left neighbour and sends what they emit to the right neighbour).
 *
 * ## Ring all-reduce (reduce-scatter + all-gather), bucketed
 *
 * The buffer of N floats is cut into B buckets of at most `bucketElems` floats; bucket b is cut into W chunks
 * (chunk c = [floor(c*n/W), floor((c+1)*n/W)) of the bucket's n floats, so uneven sizes, n < W and n = 0 are
 * all handled; empty chunks travel as empty messages). Each bucket is an independent ring all-reduce:
 *
 *   reduce-scatter step s = 0..W-2: rank r sends chunk (r-s) mod W and receives chunk (r-s-1) mod W, which
 *     it adds into its own copy; after W-1 steps rank r owns the full sum of chunk (r+1) mod W.
 *     (For 'avg' the owner divides its chunk by W here: every rank ends with the same quotient bits.)
 *   all-gather step t = 0..W-2: rank r sends chunk (r+1-t) mod W and receives chunk (r-t) mod W, which
 *     overwrites its copy.
 *
 * The message sent at step s+1 is the chunk received at step s, so a rank forwards a chunk as soon as it has
 * folded it in. All buckets run at once, interleaved, and every ring edge carries the messages in the fixed
 * order m = s*B + b (s = 0..2W-3): the first step of all buckets is sent up front, and each incoming message
 * triggers exactly one outgoing message (except the last all-gather step). Buckets therefore pipeline: while
 * bucket b is being added here, bucket b+1 is on the wire and bucket b-1 is already being added by the right
 * neighbour. Traffic per rank: 2(W-1)/W * N floats sent and received, the bandwidth-optimal amount.
 *
 * Determinism: chunk c of each bucket is summed in the fixed order
 *   ((x[c] + x[c+1]) + x[c+2]) + ... + x[c-1]     (ranks mod W)
 * and the all-gather copies the owner's bits, so all ranks end bit-identical, and the result is the same
 * from run to run for the same world size and bucket size. (The order differs between chunks and therefore
 * from a plain rank-0-first sum: float results may differ from a single-process sum in the last bits.)
 * Integer-valued data whose partial sums stay below 2^24 is summed exactly.
 *
 * Buffer ownership: sends are zero-copy views of the caller's array. A region is only overwritten (all-gather)
 * after the right neighbour has consumed our earlier send of it (the chunk has to travel the whole ring
 * through that neighbour first), and group.ts resolves only after all writes are flushed.
 *
 * ## Broadcast
 * Root sends the buffer (as bytes, any typed array) to its right neighbour in buckets; every other rank copies
 * each bucket into place and forwards it, except the rank before the root. Pipelined the same way.
 *
 * ## All-gather of float64 vectors (scalars, barrier)
 * W-1 ring steps; step s forwards the vector of rank (r-s) mod W. Reductions of scalars are then computed
 * locally in rank order 0..W-1 in float64, identically on every rank.
 */
import { AddF32Sink, CopySink, type PayloadSink } from './transport.js';
import { OP_KIND, ProtocolError } from './wire.js';
import { addBf16x2, addF32, divideBf16x2, divideF32 } from './float32.js';

export type ReduceOp = 'sum' | 'avg';
export type ScalarReduceOp = 'sum' | 'avg' | 'max' | 'min';

/** Emits one message to the right neighbour. The payload is referenced until the collective resolves. */
export type RingSend = (msgIndex: number, payload: Uint8Array) => void;

/** A collective as seen by the group: which frames it expects, what to do with each. */
export interface RingCollective {
  /** OP_KIND.* - checked against the sender's. */
  readonly kind: number;
  /** Reduction op code / broadcast root - checked against the sender's. */
  readonly aux: number;
  /** Total bytes of the buffer - checked against the sender's (catches different buffer lengths). */
  readonly totalBytes: number;
  /** Number of frames this rank receives from its left neighbour. */
  readonly expectedFrames: number;
  /**
   * True when the left neighbour sends its first message of this collective as soon as it enters it (without
   * waiting for anyone). Then silence from it means it never entered, and it can be blamed for a timeout.
   */
  readonly leftSendsFirst: boolean;
  /** Human description for errors, e.g. "allreduce of 7300000 floats". */
  readonly description: string;
  /** Send the initial messages. */
  start(send: RingSend): void;
  /** Sink for incoming message `msgIndex` of `length` bytes (frames arrive in index order). */
  frame(msgIndex: number, length: number, send: RingSend): PayloadSink;
  /** All frames received. */
  finish(): void;
}

export const REDUCE_OP_CODE: Record<ReduceOp, number> = { sum: 0, avg: 1 };

/**
 * Element type of an all-reduce: 'f32', or 'bf16x2' (each 4-byte word holds two bfloat16 values, bf16.ts; sums and
 * quotients are rounded to bfloat16 at every step, as NCCL's bfloat16 all-reduce does).
 */
export type ReduceDtype = 'f32' | 'bf16x2';
/** Bit of the frame's aux field that marks a bf16x2 all-reduce (ranks that disagree on the dtype are told so). */
export const AUX_BF16 = 2;

/** "sum", "avg (bf16x2)", ... from a frame's aux field. */
export function describeReduceAux(aux: number): string {
  return `${aux & 1 ? 'avg' : 'sum'}${aux & AUX_BF16 ? ' (bf16x2)' : ''}`;
}

const mod = (a: number, n: number): number => ((a % n) + n) % n;

/** Start of chunk c of a range of n elements split into w parts: floor(c*n/w), exact for n*w < 2^53. */
export function chunkStart(c: number, n: number, w: number): number {
  return Math.floor((c * n) / w);
}

function bytesOf(a: Float32Array, start: number, end: number): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset + start * 4, (end - start) * 4);
}

export class RingAllreduce implements RingCollective {
  readonly kind = OP_KIND.AllReduce;
  readonly leftSendsFirst = true;
  readonly aux: number;
  readonly totalBytes: number;
  readonly expectedFrames: number;
  readonly description: string;
  private readonly buckets: number;

  constructor(
    private readonly buf: Float32Array,
    private readonly rank: number,
    private readonly world: number,
    private readonly op: ReduceOp,
    private readonly bucketElems: number,
    dtype: ReduceDtype = 'f32',
  ) {
    if (!(bucketElems >= 1)) throw new RangeError('bucketElems must be >= 1');
    const bf16 = dtype === 'bf16x2';
    this.aux = REDUCE_OP_CODE[op] | (bf16 ? AUX_BF16 : 0);
    this.add = bf16 ? addBf16x2 : addF32;
    this.divide = bf16 ? divideBf16x2 : divideF32;
    this.totalBytes = buf.byteLength;
    this.buckets = Math.ceil(buf.length / bucketElems);
    this.expectedFrames = world > 1 ? 2 * (world - 1) * this.buckets : 0;
    this.description = bf16 ? `allreduce (${op}) of ${buf.length} bf16 pairs` : `allreduce (${op}) of ${buf.length} floats`;
  }

  private readonly add: (dst: Float32Array, src: Float32Array) => void;
  private readonly divide: (a: Float32Array, w: number) => void;

  /** [start, end) element range of chunk c of bucket b, absolute in buf. */
  private chunk(b: number, c: number): [number, number] {
    const bStart = b * this.bucketElems;
    const n = Math.min(this.bucketElems, this.buf.length - bStart);
    return [bStart + chunkStart(c, n, this.world), bStart + chunkStart(c + 1, n, this.world)];
  }

  start(send: RingSend): void {
    if (this.world === 1) return;
    for (let b = 0; b < this.buckets; b++) {
      const [s, e] = this.chunk(b, this.rank);
      send(b, bytesOf(this.buf, s, e));
    }
  }

  frame(msgIndex: number, length: number, send: RingSend): PayloadSink {
    const W = this.world;
    const B = this.buckets;
    const step = Math.floor(msgIndex / B);
    const b = msgIndex % B;
    if (step < W - 1) {
      // reduce-scatter: receive chunk (r-step-1), add, forward it as the next step's message
      const c = mod(this.rank - step - 1, W);
      const [s, e] = this.chunk(b, c);
      this.checkLength(msgIndex, length, s, e);
      return new AddF32Sink(this.buf.subarray(s, e), () => {
        if (step === W - 2 && this.op === 'avg') {
          // This rank owns the complete sum of chunk c: divide once, so every rank copies the same quotient.
          this.divide(this.buf.subarray(s, e), W);
        }
        send(msgIndex + B, bytesOf(this.buf, s, e));
      }, this.add);
    }
    // all-gather
    const t = step - (W - 1);
    const c = mod(this.rank - t, W);
    const [s, e] = this.chunk(b, c);
    this.checkLength(msgIndex, length, s, e);
    return new CopySink(bytesOf(this.buf, s, e), () => {
      if (t < W - 2) send(msgIndex + B, bytesOf(this.buf, s, e));
    });
  }

  private checkLength(m: number, length: number, s: number, e: number): void {
    if (length !== (e - s) * 4) {
      throw new ProtocolError(`message ${m} of ${this.description} has ${length} bytes, expected ${(e - s) * 4}`);
    }
  }

  finish(): void {}
}

export class RingBroadcast implements RingCollective {
  readonly kind = OP_KIND.Broadcast;
  readonly leftSendsFirst: boolean;
  readonly aux: number;
  readonly totalBytes: number;
  readonly expectedFrames: number;
  readonly description: string;
  private readonly buckets: number;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly rank: number,
    private readonly world: number,
    private readonly root: number,
    private readonly bucketBytes: number,
  ) {
    if (!(bucketBytes >= 1)) throw new RangeError('bucketBytes must be >= 1');
    this.aux = root;
    this.leftSendsFirst = mod(rank - 1, world) === root;
    this.totalBytes = bytes.length;
    this.buckets = Math.ceil(bytes.length / bucketBytes);
    this.expectedFrames = world > 1 && rank !== root ? this.buckets : 0;
    this.description = `broadcast of ${bytes.length} bytes from rank ${root}`;
  }

  private part(b: number): Uint8Array {
    const s = b * this.bucketBytes;
    return this.bytes.subarray(s, Math.min(this.bytes.length, s + this.bucketBytes));
  }

  start(send: RingSend): void {
    if (this.rank !== this.root || this.world === 1) return;
    for (let b = 0; b < this.buckets; b++) send(b, this.part(b));
  }

  frame(msgIndex: number, length: number, send: RingSend): PayloadSink {
    const dst = this.part(msgIndex);
    if (length !== dst.length) {
      throw new ProtocolError(`message ${msgIndex} of ${this.description} has ${length} bytes, expected ${dst.length}`);
    }
    const lastBeforeRoot = mod(this.rank + 1, this.world) === this.root;
    return new CopySink(dst, () => {
      if (!lastBeforeRoot) send(msgIndex, dst);
    });
  }

  finish(): void {}
}

/** All-gather of one float64 vector per rank; `result[j]` is rank j's vector after finish(). */
export class RingAllgather implements RingCollective {
  readonly kind = OP_KIND.AllGather;
  readonly leftSendsFirst = true;
  readonly aux = 0;
  readonly totalBytes: number;
  readonly expectedFrames: number;
  readonly description: string;
  readonly gathered: Float64Array;

  constructor(
    values: ArrayLike<number>,
    private readonly rank: number,
    private readonly world: number,
  ) {
    const k = values.length;
    this.gathered = new Float64Array(k * world);
    this.gathered.set(values, rank * k);
    this.totalBytes = k * 8;
    this.expectedFrames = world - 1;
    this.description = `all-gather of ${k} value(s)`;
  }

  private slot(j: number): Uint8Array {
    const k = this.totalBytes / 8;
    return new Uint8Array(this.gathered.buffer, j * k * 8, k * 8);
  }

  start(send: RingSend): void {
    if (this.world > 1) send(0, this.slot(this.rank));
  }

  frame(msgIndex: number, length: number, send: RingSend): PayloadSink {
    const j = mod(this.rank - msgIndex - 1, this.world);
    const dst = this.slot(j);
    if (length !== dst.length) {
      throw new ProtocolError(`message ${msgIndex} of ${this.description} has ${length} bytes, expected ${dst.length}`);
    }
    return new CopySink(dst, () => {
      if (msgIndex < this.world - 2) send(msgIndex + 1, dst);
    });
  }

  finish(): void {}

  /** Vectors per rank. */
  perRank(): number[][] {
    const k = this.totalBytes / 8;
    const out: number[][] = [];
    for (let j = 0; j < this.world; j++) out.push(Array.from(this.gathered.subarray(j * k, (j + 1) * k)));
    return out;
  }

  /** Element-wise reduction in rank order 0..W-1 (float64). */
  reduce(op: ScalarReduceOp): number[] {
    const k = this.totalBytes / 8;
    const g = this.gathered;
    const out: number[] = new Array(k);
    for (let i = 0; i < k; i++) {
      let acc = g[i];
      for (let j = 1; j < this.world; j++) {
        const v = g[j * k + i];
        if (op === 'max') acc = v > acc || Number.isNaN(v) ? v : acc;
        else if (op === 'min') acc = v < acc || Number.isNaN(v) ? v : acc;
        else acc += v;
      }
      out[i] = op === 'avg' ? acc / this.world : acc;
    }
    return out;
  }
}
