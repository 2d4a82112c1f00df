/**
 * Wire format and peer links of the process group (the layer under allreduce.ts and over node:net).
 *
 * Topology. The W ranks form one directed ring: rank r streams bulk data to its right neighbour (r+1) % W
 * and receives bulk data from its left neighbour (r-1+W) % W. Each ring edge is one stream socket (TCP, or a
 * unix-domain socket between processes of one machine; see tcp.ts). Rank r *connects* to its left neighbour
 * and reads on that client socket, which lets us pass `onread` a fixed, 8-byte-aligned read buffer (no
 * allocation per read, Float32 views straight into it). Besides the ring every rank keeps its rendezvous
 * ("control") connection to rank 0, which is used to flood ABORT messages when something fails.
 *
 * Framing. Every message is a 32-byte little-endian header followed by `length` payload bytes:
 *
 *   off size  field
 *    0   u8   type      FRAME.Data / Abort / Bye / Hello / Table
 *    1   u8   kind      OP_KIND of the collective the data belongs to (0 for control frames)
 *    2   u16  magic     0xD157, rejects stray connections
 *    4   u32  opSeq     sequence number of the collective on the sending rank (same on all ranks)
 *    8   u32  msgIndex  index of the message inside that collective's stream on this ring edge
 *   12   u32  length    payload bytes
 *   16   u32  aux       collective parameter (reduction op, broadcast root) - checked by the receiver
 *   20   u32  flags     FLAG_SHM: the payload is in the shared-memory mailbox of this edge, not on the socket
 *   24   f64  total     total byte size of the collective's buffer on the sender - checked by the receiver
 *
 * Data frames of a collective are not assembled into messages: the payload bytes are handed, as they arrive,
 * to a PayloadSink chosen by the collective (add into / copy into the destination array), so reduction overlaps
 * with reception. Control frames (JSON payloads) are collected and passed to the LinkHandler.
 *
 * Sending is zero-copy: the payload is a view of the caller's array, written with cork/uncork so header and
 * payload go out in one writev. Node keeps a reference until the kernel took the bytes; `flushed()` resolves
 * when every write so far has completed, and a collective only resolves after its writes are flushed, so the
 * caller may reuse its buffer as soon as the promise resolves.
 *
 * Shared memory. On an edge between ranks of one machine, payloads of SHM_MIN_PAYLOAD bytes or more go through the
 * receiver's mailbox file (shm.ts) instead of the socket: the header carries FLAG_SHM and the payload length, the
 * receiver reads the bytes from the mailbox in socket order (CopySink reads straight into the destination) and answers
 * with an Ack frame (header only, `total` = bytes consumed) that frees room for the sender's next payloads. Frames that
 * wait for room are queued in order with everything sent after them.
 *
 * Backpressure. Sends reference memory the caller owns (no copies), so an over-eager sender costs no memory;
 * a sender that is ahead of us (frames for a collective this rank has not started yet) is buffered up to
 * `maxBufferedBytes`, after which the socket is paused and TCP flow control pushes back on the sender.
 */
import type { Socket } from 'node:net';
import { ShmInbox, ShmOutbox } from './shm.js';
import { addBf16x2Scalar, divideBf16x2Scalar } from './bf16.js';

/** Failure of the process group. `rank` names the rank at fault when known. */
export class DistError extends Error {
  readonly rank: number | null;
  readonly reason: DistFailure;
  /** Rank that detected the failure (differs from this process's rank when the error was relayed). */
  detectedBy: number | null = null;
  constructor(message: string, rank: number | null, reason: DistFailure) {
    super(message);
    this.name = 'DistError';
    this.rank = rank;
    this.reason = reason;
  }
}

export type DistFailure = 'timeout' | 'disconnect' | 'protocol' | 'closed' | 'rendezvous';

export function isDistError(e: unknown): e is DistError {
  return e instanceof DistError;
}

export const HEADER_BYTES = 32;
const MAGIC = 0xd157;
/** Largest payload of one frame (u32 length field; collectives split larger data into buckets). */
export const MAX_FRAME_PAYLOAD = 0x7fffffff;

export const FRAME = { Data: 1, Abort: 2, Bye: 3, Hello: 4, Table: 5, Ack: 6, ShmOk: 7 } as const;
/** Header flag: the payload of this data frame is in the edge's shared-memory mailbox (shm.ts), not on the socket. */
export const FLAG_SHM = 1;
export const OP_KIND = { AllReduce: 1, Broadcast: 2, AllGather: 3 } as const;
export const OP_KIND_NAME: Record<number, string> = { 1: 'allreduce', 2: 'broadcast', 3: 'allgather' };

export interface FrameHeader {
  type: number;
  kind: number;
  opSeq: number;
  msgIndex: number;
  length: number;
  aux: number;
  total: number;
  /** FLAG_* bits (0 when absent). */
  flags?: number;
}

export function encodeHeader(h: FrameHeader): Buffer {
  // allocUnsafeSlow: an own ArrayBuffer, so a pooled slab is not pinned by the pending write.
  const b = Buffer.allocUnsafeSlow(HEADER_BYTES);
  b.writeUInt8(h.type, 0);
  b.writeUInt8(h.kind, 1);
  b.writeUInt16LE(MAGIC, 2);
  b.writeUInt32LE(h.opSeq >>> 0, 4);
  b.writeUInt32LE(h.msgIndex >>> 0, 8);
  b.writeUInt32LE(h.length >>> 0, 12);
  b.writeUInt32LE(h.aux >>> 0, 16);
  b.writeUInt32LE((h.flags ?? 0) >>> 0, 20);
  b.writeDoubleLE(h.total, 24);
  return b;
}

function decodeHeader(b: Uint8Array): FrameHeader | null {
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_BYTES);
  if (dv.getUint16(2, true) !== MAGIC) return null;
  return {
    type: dv.getUint8(0),
    kind: dv.getUint8(1),
    opSeq: dv.getUint32(4, true),
    msgIndex: dv.getUint32(8, true),
    length: dv.getUint32(12, true),
    aux: dv.getUint32(16, true),
    flags: dv.getUint32(20, true),
    total: dv.getFloat64(24, true),
  };
}

/** Receives the payload bytes of one data frame, in order, in pieces of any size. */
export interface PayloadSink {
  write(chunk: Uint8Array): void;
  /** Optional: hand out the next `n` destination bytes to be filled in place (instead of write()). */
  direct?(n: number): Uint8Array;
  /** All `length` bytes have been written. */
  end(): void;
}

/** The running collective's view of incoming data frames on one link. */
export interface FrameConsumer {
  readonly opSeq: number;
  /** Next data frame of this collective; throw ProtocolError when it is not what is expected. */
  frame(h: FrameHeader): PayloadSink;
}

export class ProtocolError extends Error {}

/** Events of a link, delivered to its current owner (rendezvous code first, then the ProcessGroup). */
export interface LinkHandler {
  /** A control frame (Hello, Table, Abort, Bye) with its JSON payload. */
  control(link: Link, type: number, payload: unknown): void;
  /** The socket closed. `cause` is null when the close was announced (Bye) or initiated locally. */
  closed(link: Link, cause: string | null): void;
  /** The peer sent something malformed or unexpected. */
  protocolError(link: Link, message: string): void;
}

/** Human-readable cause of a socket error, e.g. "connection reset". */
export function describeSocketError(err: (Error & { code?: string }) | null | undefined): string {
  if (!err) return 'connection closed';
  switch (err.code) {
    case 'ECONNRESET': return 'connection reset';
    case 'EPIPE': return 'broken pipe';
    case 'ETIMEDOUT': return 'connection timed out';
    case 'ECONNREFUSED': return 'connection refused';
    case 'EHOSTUNREACH': return 'host unreachable';
    case 'ENETUNREACH': return 'network unreachable';
    default: return err.code ? `${err.code}: ${err.message}` : err.message;
  }
}

/** Copies payload bytes into a byte range of the destination. */
export class CopySink implements PayloadSink {
  private pos = 0;
  constructor(private readonly dst: Uint8Array, private readonly onEnd: () => void) {}
  write(chunk: Uint8Array): void {
    this.dst.set(chunk, this.pos);
    this.pos += chunk.length;
  }
  /** The next `n` destination bytes, to be filled by the caller (a shared-memory read goes straight there). */
  direct(n: number): Uint8Array {
    const d = this.dst.subarray(this.pos, this.pos + n);
    this.pos += n;
    return d;
  }
  end(): void {
    this.onEnd();
  }
}

// ------------------------------------------------------------------------------------------ float32 kernels
//
// dst += src and a /= w over float32 arrays. JS evaluates `d[i] + s[i]` in float64 and rounds once to float32,
// which equals the IEEE float32 sum (float64 has more than 2*24+2 bits, so double rounding is innocuous; the
// same holds for division). WebAssembly f32x4.add / f32x4.div are IEEE float32 operations, so the SIMD path
// gives the same bits as the scalar path (NaN payloads aside) and ranks with and without SIMD agree.
// The SIMD kernel works on staging areas inside its own memory: copying in and out (memcpy) plus a 4-wide add
// is ~4x faster than V8's scalar Float32Array loop (2.5 ms vs 9-11 ms for 3.65M floats on an x86 server core).

/** Floats per staging area of the SIMD kernels. */
const KCH = 1 << 16;

interface SimdKernels {
  add(dstPtr: number, srcPtr: number, nBytes: number): void;
  div(ptr: number, nBytes: number, w: number): void;
  /** The same on words holding two bfloat16 each: unpack, f32 add / divide, round to nearest even (bf16.ts). */
  addBf16(dstPtr: number, srcPtr: number, nBytes: number): void;
  divBf16(ptr: number, nBytes: number, w: number): void;
  a: Float32Array;
  b: Float32Array;
}

let simd: SimdKernels | null | undefined;

function uleb(n: number): number[] {
  const o: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    o.push(b);
  } while (n);
  return o;
}

function sleb(n: number): number[] {
  const o: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      o.push(b);
      return o;
    }
    o.push(b | 0x80);
  }
}

/**
 * Hand-assembled module: (import "m" "mem" memory) add(d,s,nBytes): d[] += s[]; div(p,nBytes,w): p[] /= w;
 * addbf(d,s,nBytes) / divbf(p,nBytes,w): the same on bfloat16 pairs (each u32 word = low bf16 | high bf16 << 16).
 */
function simdModuleBytes(): Uint8Array<ArrayBuffer> {
  const sec = (id: number, c: number[]): number[] => [id, ...uleb(c.length), ...c];
  const str = (t: string): number[] => [t.length, ...Array.from(t, (ch) => ch.charCodeAt(0))];
  const LOAD = [0xfd, 0x00, 0x02, 0x00]; // v128.load align=4 offset=0
  const STORE = [0xfd, 0x0b, 0x02, 0x00]; // v128.store
  const bump = (local: number): number[] => [0x20, local, 0x41, 0x10, 0x6a, 0x21, local]; // local += 16
  // add: params d=0 s=1 n=2; local end=3
  const add = [
    0x01, 0x01, 0x7f,
    0x20, 0, 0x20, 2, 0x6a, 0x21, 3, // end = d + n
    0x02, 0x40, 0x03, 0x40, // block loop
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1, // if d >= end break
    0x20, 0, 0x20, 0, ...LOAD, 0x20, 1, ...LOAD, 0xfd, 0xe4, 0x01, ...STORE, // *d = *d + *s (f32x4.add)
    ...bump(0), ...bump(1),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  // div: params p=0 n=1 w=2 (f32); locals end=3 (i32), wv=4 (v128)
  const div = [
    0x02, 0x01, 0x7f, 0x01, 0x7b,
    0x20, 2, 0xfd, 0x13, 0x21, 4, // wv = f32x4.splat(w)
    0x20, 0, 0x20, 1, 0x6a, 0x21, 3, // end = p + n
    0x02, 0x40, 0x03, 0x40,
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1,
    0x20, 0, 0x20, 0, ...LOAD, 0x20, 4, 0xfd, 0xe7, 0x01, ...STORE, // *p = *p / wv (f32x4.div)
    ...bump(0),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  // bfloat16 pairs. v128 ops: 0xfd + uleb(opcode).
  const V = (op: number): number[] => [0xfd, ...uleb(op)];
  const get = (l: number): number[] => [0x20, l];
  const set = (l: number): number[] => [0x21, l];
  const i32 = (v: number): number[] => [0x41, ...sleb(v)];
  const SPLAT_I32 = V(0x11), SPLAT_F32 = V(0x13), AND = V(0x4e), OR = V(0x50);
  const SHL = V(0xab), SHR_U = V(0xad), IADD = V(0xae), FADD = V(0xe4), FDIV = V(0xe7);
  // round the f32 lanes in local x to bf16 (nearest, ties to even): x + 0x7fff + ((x >> 16) & 1); then keep the
  // high halves: `>> 16` for the low bf16 of each word, `& 0xffff0000` for the high one
  const round = (x: number, C: number, ONE: number): number[] => [...get(x), ...get(C), ...IADD, ...get(x), ...i32(16), ...SHR_U, ...get(ONE), ...AND, ...IADD];
  // addbf: params d=0 s=1 n=2; locals end=3 (i32), a=4 b=5 M=6 C=7 ONE=8 lo=9 hi=10 (v128)
  const addbf = [
    0x02, 0x01, 0x7f, 0x07, 0x7b,
    ...i32(-65536), ...SPLAT_I32, ...set(6), ...i32(0x7fff), ...SPLAT_I32, ...set(7), ...i32(1), ...SPLAT_I32, ...set(8),
    0x20, 0, 0x20, 2, 0x6a, 0x21, 3,
    0x02, 0x40, 0x03, 0x40,
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1,
    ...get(0), ...LOAD, ...set(4), ...get(1), ...LOAD, ...set(5),
    ...get(4), ...i32(16), ...SHL, ...get(5), ...i32(16), ...SHL, ...FADD, ...set(9),
    ...get(4), ...get(6), ...AND, ...get(5), ...get(6), ...AND, ...FADD, ...set(10),
    ...get(0),
    ...round(9, 7, 8), ...i32(16), ...SHR_U,
    ...round(10, 7, 8), ...get(6), ...AND,
    ...OR, ...STORE,
    ...bump(0), ...bump(1),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  // divbf: params p=0 n=1 w=2 (f32); locals end=3 (i32), wv=4 M=5 C=6 ONE=7 lo=8 hi=9 a=10 (v128)
  const divbf = [
    0x02, 0x01, 0x7f, 0x07, 0x7b,
    ...get(2), ...SPLAT_F32, ...set(4),
    ...i32(-65536), ...SPLAT_I32, ...set(5), ...i32(0x7fff), ...SPLAT_I32, ...set(6), ...i32(1), ...SPLAT_I32, ...set(7),
    0x20, 0, 0x20, 1, 0x6a, 0x21, 3,
    0x02, 0x40, 0x03, 0x40,
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1,
    ...get(0), ...LOAD, ...set(10),
    ...get(10), ...i32(16), ...SHL, ...get(4), ...FDIV, ...set(8),
    ...get(10), ...get(5), ...AND, ...get(4), ...FDIV, ...set(9),
    ...get(0),
    ...round(8, 6, 7), ...i32(16), ...SHR_U,
    ...round(9, 6, 7), ...get(5), ...AND,
    ...OR, ...STORE,
    ...bump(0),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...sec(1, [2, 0x60, 3, 0x7f, 0x7f, 0x7f, 0, 0x60, 3, 0x7f, 0x7f, 0x7d, 0]),
    ...sec(2, [1, ...str('m'), ...str('mem'), 2, 0, 8]),
    ...sec(3, [4, 0, 1, 0, 1]),
    ...sec(7, [4, ...str('add'), 0, 0, ...str('div'), 0, 1, ...str('addbf'), 0, 2, ...str('divbf'), 0, 3]),
    ...sec(10, [4, ...uleb(add.length), ...add, ...uleb(div.length), ...div, ...uleb(addbf.length), ...addbf, ...uleb(divbf.length), ...divbf]),
  ]);
}

function getSimd(): SimdKernels | null {
  if (simd !== undefined) return simd;
  simd = null;
  if (process.env.MAMBAOUT_DIST_NO_SIMD === '1') return simd;
  try {
    const bytes = simdModuleBytes();
    if (typeof WebAssembly === 'undefined' || !WebAssembly.validate(bytes)) return simd;
    const mem = new WebAssembly.Memory({ initial: 8 }); // 512 KiB: two staging areas of KCH floats
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { m: { mem } });
    const ex = inst.exports as unknown as { add: SimdKernels['add']; div: SimdKernels['div']; addbf: SimdKernels['addBf16']; divbf: SimdKernels['divBf16'] };
    simd = { add: ex.add, div: ex.div, addBf16: ex.addbf, divBf16: ex.divbf, a: new Float32Array(mem.buffer, 0, KCH), b: new Float32Array(mem.buffer, KCH * 4, KCH) };
  } catch {
    simd = null;
  }
  return simd;
}

/** Time spent in the reduction kernels (addF32, divideF32), for the per-step breakdown; counted while `on`. */
export const reduceClock = { on: false, ms: 0 };

/** dst[i] += src[i] for i < src.length (IEEE float32 sums; SIMD when available). */
export function addF32(dst: Float32Array, src: Float32Array): void {
  if (reduceClock.on) {
    const t0 = performance.now();
    addF32Kernel(dst, src);
    reduceClock.ms += performance.now() - t0;
  } else addF32Kernel(dst, src);
}

function addF32Kernel(dst: Float32Array, src: Float32Array): void {
  const n = src.length;
  const k = getSimd();
  if (!k || n < 64) {
    addScalar(dst, src, 0, n);
    return;
  }
  for (let p = 0; p < n; p += KCH) {
    const m = Math.min(KCH, n - p);
    k.a.set(dst.subarray(p, p + m));
    k.b.set(src.subarray(p, p + m));
    const m4 = m & ~3;
    k.add(0, KCH * 4, m4 * 4);
    for (let i = m4; i < m; i++) k.a[i] += k.b[i];
    dst.set(k.a.subarray(0, m), p);
  }
}

/** a[i] = a[i] / w (IEEE float32 quotients, the same bits as `a[i] / w` in JS; SIMD when available). */
export function divideF32(a: Float32Array, w: number): void {
  if (reduceClock.on) {
    const t0 = performance.now();
    divideF32Kernel(a, w);
    reduceClock.ms += performance.now() - t0;
  } else divideF32Kernel(a, w);
}

function divideF32Kernel(a: Float32Array, w: number): void {
  const n = a.length;
  const k = getSimd();
  if (!k || n < 64) {
    for (let i = 0; i < n; i++) a[i] = a[i] / w;
    return;
  }
  for (let p = 0; p < n; p += KCH) {
    const m = Math.min(KCH, n - p);
    k.a.set(a.subarray(p, p + m));
    const m4 = m & ~3;
    k.div(0, m4 * 4, w);
    for (let i = m4; i < m; i++) k.a[i] = k.a[i] / w;
    a.set(k.a.subarray(0, m), p);
  }
}

/** dst[i] = bf16(dst[i] + src[i]) on bfloat16 pairs (bf16.ts layout; SIMD when available, same bits as the scalar path). */
export function addBf16x2(dst: Float32Array, src: Float32Array): void {
  const t0 = reduceClock.on ? performance.now() : 0;
  const n = src.length;
  const k = getSimd();
  if (!k || n < 64) addBf16x2Scalar(dst.subarray(0, n), src);
  else {
    for (let p = 0; p < n; p += KCH) {
      const m = Math.min(KCH, n - p);
      k.a.set(dst.subarray(p, p + m));
      k.b.set(src.subarray(p, p + m));
      const m4 = m & ~3;
      k.addBf16(0, KCH * 4, m4 * 4);
      if (m4 < m) addBf16x2Scalar(k.a.subarray(m4, m), k.b.subarray(m4, m));
      dst.set(k.a.subarray(0, m), p);
    }
  }
  if (reduceClock.on) reduceClock.ms += performance.now() - t0;
}

/** a[i] = bf16(a[i] / w) on bfloat16 pairs. */
export function divideBf16x2(a: Float32Array, w: number): void {
  const t0 = reduceClock.on ? performance.now() : 0;
  const n = a.length;
  const k = getSimd();
  if (!k || n < 64) divideBf16x2Scalar(a, w);
  else {
    for (let p = 0; p < n; p += KCH) {
      const m = Math.min(KCH, n - p);
      k.a.set(a.subarray(p, p + m));
      const m4 = m & ~3;
      k.divBf16(0, m4 * 4, w);
      if (m4 < m) divideBf16x2Scalar(k.a.subarray(m4, m), w);
      a.set(k.a.subarray(0, m), p);
    }
  }
  if (reduceClock.on) reduceClock.ms += performance.now() - t0;
}

function addScalar(dst: Float32Array, src: Float32Array, pos: number, n: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    dst[pos + i] += src[i];
    dst[pos + i + 1] += src[i + 1];
    dst[pos + i + 2] += src[i + 2];
    dst[pos + i + 3] += src[i + 3];
  }
  for (; i < n; i++) dst[pos + i] += src[i];
}

let scratch = new Float32Array(1 << 16);

/**
 * Adds incoming little-endian float32 values into `dst` element-wise: dst[i] = dst[i] + in[i].
 * (Float32 addition is commutative, so every rank computes the same bits for the same pair of operands;
 * JS computes the sum in float64 and rounds once to float32, which equals the IEEE float32 sum.)
 * Pieces may split a float: up to 3 leftover bytes are carried to the next piece. Pieces that are not
 * 4-byte aligned in memory are copied to an aligned scratch array first.
 */
export class AddF32Sink implements PayloadSink {
  private pos = 0;
  private readonly carry = new Uint8Array(4);
  private readonly carryF32 = new Float32Array(this.carry.buffer);
  private carryLen = 0;
  /** `add` is the element kernel: addF32, or addBf16x2 for words of two bfloat16. */
  constructor(
    private readonly dst: Float32Array,
    private readonly onEnd: () => void,
    private readonly add: (dst: Float32Array, src: Float32Array) => void = addF32,
  ) {}

  write(chunk: Uint8Array): void {
    let off = 0;
    const len = chunk.length;
    if (this.carryLen > 0) {
      const take = Math.min(4 - this.carryLen, len);
      this.carry.set(chunk.subarray(0, take), this.carryLen);
      this.carryLen += take;
      off = take;
      if (this.carryLen < 4) return;
      this.add(this.dst.subarray(this.pos, this.pos + 1), this.carryF32);
      this.pos++;
      this.carryLen = 0;
    }
    const n = (len - off) >>> 2;
    if (n > 0) {
      const byteOff = chunk.byteOffset + off;
      let src: Float32Array;
      if ((byteOff & 3) === 0) {
        src = new Float32Array(chunk.buffer, byteOff, n);
      } else {
        if (scratch.length < n) scratch = new Float32Array(n);
        new Uint8Array(scratch.buffer, 0, n * 4).set(chunk.subarray(off, off + n * 4));
        src = scratch;
      }
      this.add(this.dst.subarray(this.pos, this.pos + n), n === src.length ? src : src.subarray(0, n));
      this.pos += n;
      off += n * 4;
    }
    if (off < len) {
      this.carry.set(chunk.subarray(off), 0);
      this.carryLen = len - off;
    }
  }

  end(): void {
    this.onEnd();
  }
}

/** Collects a small payload (control frames, or data frames that arrived before their collective started). */
class CollectSink implements PayloadSink {
  readonly data: Uint8Array;
  private pos = 0;
  constructor(length: number, private readonly onEnd: (data: Uint8Array) => void) {
    // An own ArrayBuffer (offset 0, aligned) so typed views into it are always possible.
    this.data = new Uint8Array(length);
  }
  write(chunk: Uint8Array): void {
    this.data.set(chunk, this.pos);
    this.pos += chunk.length;
  }
  direct(n: number): Uint8Array {
    const d = this.data.subarray(this.pos, this.pos + n);
    this.pos += n;
    return d;
  }
  end(): void {
    this.onEnd(this.data);
  }
}

interface BufferedFrame {
  h: FrameHeader;
  data: Uint8Array;
}

export interface LinkOptions {
  /** Rank of the peer at the other end. */
  peer: number;
  /** 'unix' or 'tcp' (for logs and benchmarks). */
  via: 'tcp' | 'unix';
  /** Pause reading when this many bytes of early frames are buffered (default 256 MiB). */
  maxBufferedBytes?: number;
}

/**
 * One socket to one peer: parses frames, routes data payloads to the attached consumer (or buffers frames of
 * collectives that have not started here yet), sends frames, tracks write completion and activity times.
 */
export class Link {
  peer: number;
  readonly via: 'tcp' | 'unix';
  handler: LinkHandler | null = null;
  /** Date.now() of the last byte received. */
  lastRxAt = Date.now();
  /** Date.now() of the last completed write. */
  lastTxDoneAt = Date.now();
  /** Highest opSeq of any data frame received (-1: none yet). */
  maxOpSeqSeen = -1;
  /** The peer announced a clean shutdown (Bye) or an abort; a following close is not an error. */
  peerLeft = false;
  /** We closed this link on purpose. */
  localClosing = false;
  isClosed = false;

  private socket: Socket | null = null;
  private readonly hdr = new Uint8Array(HEADER_BYTES);
  private hdrFill = 0;
  private payloadLeft = 0;
  private curHeader: FrameHeader | null = null;
  private curSink: PayloadSink | null = null;
  private consumer: FrameConsumer | null = null;
  private readonly early: BufferedFrame[] = [];
  private earlyBytes = 0;
  private readonly maxBufferedBytes: number;
  private pausedForBuffer = false;
  private pendingWrites = 0;
  private flushWaiters: (() => void)[] = [];
  private lastError: (Error & { code?: string }) | null = null;
  private dead = false;
  /** Receiving side of a shared-memory edge (this rank reads payloads the left neighbour wrote). */
  private shmIn: ShmInbox | null = null;
  /** Sending side of a shared-memory edge (this rank writes payloads into the right neighbour's inbox). */
  private shmOut: ShmOutbox | null = null;
  /** Frames waiting for room in the mailbox (socket order is kept: later frames wait behind them). */
  private readonly outQueue: { h: Omit<FrameHeader, 'length'>; payload?: Uint8Array; done: (err?: Error | null) => void }[] = [];
  private shmScratch: Uint8Array | null = null;
  /** Payload bytes moved through shared memory (both directions), for benchmarks. */
  shmBytes = 0;
  /** Send large payloads through the mailbox when there is one (false: inline, as over a plain socket). */
  shmEnabled = true;

  constructor(opts: LinkOptions) {
    this.peer = opts.peer;
    this.via = opts.via;
    this.maxBufferedBytes = opts.maxBufferedBytes ?? 256 * 1024 * 1024;
  }

  /** Allocates an `onread` option for net.connect that feeds this link from a fixed aligned buffer. */
  static onreadFor(holder: { link: Link | null }, bufferBytes = 1 << 20): { buffer: Uint8Array; callback: (n: number, buf: Uint8Array) => boolean } {
    const buffer = new Uint8Array(bufferBytes);
    return {
      buffer,
      callback: (n: number, buf: Uint8Array): boolean => {
        const link = holder.link;
        if (!link) return true;
        link.onBytes(buf.subarray(0, n));
        return !link.pausedForBuffer;
      },
    };
  }

  /**
   * Takes ownership of a connected socket. With `useDataEvents` the link listens to 'data' events (accepted
   * sockets, which cannot use `onread`); otherwise the socket must have been created with `onreadFor()`.
   */
  adopt(socket: Socket, useDataEvents: boolean): void {
    this.socket = socket;
    socket.setNoDelay(true);
    if (useDataEvents) socket.on('data', (chunk: Buffer) => this.onBytes(chunk));
    socket.on('error', (err: Error & { code?: string }) => {
      if (!this.lastError) this.lastError = err;
    });
    socket.on('close', () => {
      this.isClosed = true;
      this.consumer = null;
      this.outQueue.length = 0;
      this.shmIn?.close();
      this.shmOut?.close();
      const graceful = this.peerLeft || this.localClosing;
      // Release anyone waiting on writes (their callbacks have fired with errors by now).
      this.pendingWrites = 0;
      this.resolveFlushWaiters();
      this.handler?.closed(this, graceful ? null : describeSocketError(this.lastError));
    });
  }

  get connected(): boolean {
    return this.socket !== null && !this.isClosed;
  }

  /** Keep (true) or stop keeping (false) the event loop alive for this socket. */
  setRef(on: boolean): void {
    if (!this.socket || this.isClosed) return;
    if (on) this.socket.ref();
    else this.socket.unref();
  }

  // ------------------------------------------------------------------------------------------------ receive

  /** Feed received bytes (the buffer may be reused by the caller after this returns). */
  onBytes(u8: Uint8Array): void {
    if (this.dead) return;
    this.lastRxAt = Date.now();
    let off = 0;
    const n = u8.length;
    try {
      while (off < n) {
        if (this.curHeader === null) {
          const take = Math.min(HEADER_BYTES - this.hdrFill, n - off);
          this.hdr.set(u8.subarray(off, off + take), this.hdrFill);
          this.hdrFill += take;
          off += take;
          if (this.hdrFill < HEADER_BYTES) break;
          this.hdrFill = 0;
          const h = decodeHeader(this.hdr);
          if (!h) throw new ProtocolError('received bytes that are not a mambaout process-group frame');
          this.beginFrame(h);
          if (this.dead) return;
        } else {
          const take = Math.min(this.payloadLeft, n - off);
          this.curSink!.write(u8.subarray(off, off + take));
          off += take;
          this.payloadLeft -= take;
          if (this.payloadLeft === 0) this.endFrame();
          if (this.dead) return;
        }
      }
    } catch (e) {
      this.dead = true;
      const msg = e instanceof Error ? e.message : String(e);
      this.handler?.protocolError(this, msg);
    }
  }

  private beginFrame(h: FrameHeader): void {
    if (h.type === FRAME.Ack) {
      // The right neighbour consumed its inbox up to h.total bytes: write what waited for room.
      this.shmOut?.ack(h.total);
      this.pump();
      return;
    }
    if (h.type === FRAME.ShmOk) {
      this.shmIn?.unlink();
      return;
    }
    if (h.type === FRAME.Data && ((h.flags ?? 0) & FLAG_SHM) !== 0) {
      this.shmFrame(h);
      return;
    }
    this.curHeader = h;
    this.payloadLeft = h.length;
    if (h.type === FRAME.Data) {
      if (h.opSeq > this.maxOpSeqSeen) this.maxOpSeqSeen = h.opSeq;
      const c = this.consumer;
      if (c && h.opSeq === c.opSeq) {
        this.curSink = c.frame(h);
      } else if (c && h.opSeq < c.opSeq) {
        throw new ProtocolError(
          `rank ${this.peer} sent data for ${OP_KIND_NAME[h.kind] ?? 'an unknown collective'} #${h.opSeq} while this rank is at #${c.opSeq}`,
        );
      } else {
        // A collective this rank has not started yet: keep the bytes.
        this.curSink = new CollectSink(h.length, (data) => this.stashEarly(h, data));
      }
    } else if (h.type === FRAME.Abort || h.type === FRAME.Bye || h.type === FRAME.Hello || h.type === FRAME.Table) {
      if (h.length > 16 * 1024 * 1024) throw new ProtocolError(`control frame of ${h.length} bytes`);
      this.curSink = new CollectSink(h.length, (data) => this.onControl(h.type, data));
    } else {
      throw new ProtocolError(`unknown frame type ${h.type}`);
    }
    if (this.payloadLeft === 0) this.endFrame();
  }

  /** A data frame whose payload is in the shared-memory inbox: read it into the frame's sink, then acknowledge. */
  private shmFrame(h: FrameHeader): void {
    const inbox = this.shmIn;
    if (!inbox) throw new ProtocolError(`rank ${this.peer} sent a shared-memory frame on a link without a mailbox`);
    if (h.opSeq > this.maxOpSeqSeen) this.maxOpSeqSeen = h.opSeq;
    const c = this.consumer;
    let sink: PayloadSink;
    if (c && h.opSeq === c.opSeq) {
      sink = c.frame(h);
    } else if (c && h.opSeq < c.opSeq) {
      throw new ProtocolError(
        `rank ${this.peer} sent data for ${OP_KIND_NAME[h.kind] ?? 'an unknown collective'} #${h.opSeq} while this rank is at #${c.opSeq}`,
      );
    } else {
      // A collective this rank has not started yet: copy it out (as the socket path buffers it) and free the room.
      sink = new CollectSink(h.length, (data) => this.stashEarly({ ...h, flags: 0 }, data));
    }
    if (!this.shmScratch) this.shmScratch = new Uint8Array(1 << 20);
    const direct = sink.direct ? sink.direct(h.length) : null;
    const consumed = inbox.read(h.length, direct, this.shmScratch, (piece) => sink.write(piece));
    this.shmBytes += h.length;
    this.sendRaw({ type: FRAME.Ack, kind: 0, opSeq: 0, msgIndex: 0, aux: 0, total: consumed });
    sink.end();
  }

  private endFrame(): void {
    const sink = this.curSink!;
    this.curHeader = null;
    this.curSink = null;
    sink.end();
  }

  private stashEarly(h: FrameHeader, data: Uint8Array): void {
    const c = this.consumer;
    if (c && c.opSeq === h.opSeq && this.early.length === 0) {
      // The collective started while this frame was arriving.
      deliver(c, h, data);
      return;
    }
    this.early.push({ h, data });
    this.earlyBytes += data.length;
    if (this.earlyBytes > this.maxBufferedBytes && !this.pausedForBuffer && this.socket) {
      this.pausedForBuffer = true;
      this.socket.pause();
    }
  }

  private onControl(type: number, data: Uint8Array): void {
    let payload: unknown = null;
    if (data.length > 0) {
      try {
        payload = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.length).toString('utf8'));
      } catch {
        throw new ProtocolError('malformed control message');
      }
    }
    if (type === FRAME.Bye || type === FRAME.Abort) this.peerLeft = true;
    this.handler?.control(this, type, payload);
  }

  /**
   * Route data frames of collective `consumer.opSeq` to `consumer`; frames that arrived early are
   * delivered now, synchronously.
   */
  attach(consumer: FrameConsumer): void {
    this.consumer = consumer;
    try {
      while (this.early.length > 0 && this.consumer === consumer) {
        const f = this.early[0];
        if (f.h.opSeq > consumer.opSeq) break;
        if (f.h.opSeq < consumer.opSeq) {
          throw new ProtocolError(
            `rank ${this.peer} sent data for ${OP_KIND_NAME[f.h.kind] ?? 'an unknown collective'} #${f.h.opSeq} while this rank is at #${consumer.opSeq}`,
          );
        }
        this.early.shift();
        this.earlyBytes -= f.data.length;
        deliver(consumer, f.h, f.data);
      }
    } catch (e) {
      this.dead = true;
      this.handler?.protocolError(this, e instanceof Error ? e.message : String(e));
      return;
    }
    if (this.pausedForBuffer && this.earlyBytes <= this.maxBufferedBytes && this.socket) {
      this.pausedForBuffer = false;
      this.socket.resume();
    }
  }

  detach(): void {
    this.consumer = null;
  }

  // ------------------------------------------------------------------------------------------------ send

  /**
   * Queue one frame. `payload` is referenced, not copied: do not modify it until flushed(). On a shared-memory edge
   * a large payload is written into the right neighbour's inbox (possibly later, when there is room) and only the
   * header goes on the socket.
   */
  send(h: Omit<FrameHeader, 'length'>, payload?: Uint8Array): void {
    const s = this.socket;
    if (!s || this.isClosed || s.destroyed) return;
    this.pendingWrites++;
    const done = (err?: Error | null): void => {
      if (err && !this.lastError) this.lastError = err;
      this.lastTxDoneAt = Date.now();
      if (this.pendingWrites > 0) this.pendingWrites--;
      if (this.pendingWrites === 0) this.resolveFlushWaiters();
    };
    if (this.shmOut) {
      this.outQueue.push({ h, payload, done });
      this.pump();
      return;
    }
    this.sendRaw(h, payload, done);
  }

  /** Write queued frames in order while the mailbox has room for the next one. */
  private pump(): void {
    const out = this.shmOut;
    const s = this.socket;
    while (this.outQueue.length > 0) {
      if (!s || this.isClosed || s.destroyed) {
        for (const f of this.outQueue.splice(0)) f.done(new Error('socket closed'));
        return;
      }
      const f = this.outQueue[0];
      const length = f.payload ? f.payload.length : 0;
      if (out && this.shmEnabled && f.payload && out.fits(length)) {
        if (!out.hasRoom(length)) return; // an Ack will call pump() again
        try {
          out.write(f.payload);
        } catch (e) {
          // The mailbox failed (e.g. the file system filled up): everything from here goes inline.
          this.shmOut = null;
          out.close();
          continue;
        }
        this.outQueue.shift();
        this.shmBytes += length;
        this.lastTxDoneAt = Date.now();
        this.sendRaw({ ...f.h, flags: (f.h.flags ?? 0) | FLAG_SHM }, undefined, f.done, length);
      } else {
        this.outQueue.shift();
        this.sendRaw(f.h, f.payload, f.done);
      }
    }
  }

  /** Put one frame on the socket now. `shmLength`: length of a payload that went through the mailbox. */
  private sendRaw(h: Omit<FrameHeader, 'length'>, payload?: Uint8Array, done?: (err?: Error | null) => void, shmLength?: number): void {
    const s = this.socket;
    if (!s || this.isClosed || s.destroyed) {
      done?.(new Error('socket closed'));
      return;
    }
    const length = payload ? payload.length : 0;
    const header = encodeHeader({ ...h, length: shmLength ?? length });
    if (length === 0) {
      if (done) s.write(header, done);
      else s.write(header);
      return;
    }
    const body = Buffer.from(payload!.buffer, payload!.byteOffset, length);
    s.cork();
    s.write(header);
    s.write(body, done);
    s.uncork();
  }

  /** Receiving end of a shared-memory edge: payloads flagged FLAG_SHM are read from `inbox`. */
  attachShmInbox(inbox: ShmInbox): void {
    this.shmIn = inbox;
  }

  /** Sending end of a shared-memory edge; tells the receiver it may remove the file name. */
  attachShmOutbox(outbox: ShmOutbox): void {
    this.shmOut = outbox;
    this.sendRaw({ type: FRAME.ShmOk, kind: 0, opSeq: 0, msgIndex: 0, aux: 0, total: 0 });
  }

  /** Whether large payloads on this link travel through shared memory (either direction). */
  get sharedMemory(): { in: boolean; out: boolean } {
    return { in: this.shmIn !== null, out: this.shmOut !== null };
  }

  sendControl(type: number, payload: unknown = null): void {
    const body = payload === null ? undefined : new Uint8Array(Buffer.from(JSON.stringify(payload), 'utf8'));
    this.send({ type, kind: 0, opSeq: 0, msgIndex: 0, aux: 0, total: 0 }, body);
  }

  get writesPending(): number {
    return this.pendingWrites;
  }

  /** Resolves when every frame queued so far has been handed to the kernel (or the socket closed). */
  flushed(): Promise<void> {
    if (this.pendingWrites === 0) return Promise.resolve();
    return new Promise((resolve) => this.flushWaiters.push(resolve));
  }

  private resolveFlushWaiters(): void {
    const w = this.flushWaiters;
    this.flushWaiters = [];
    for (const f of w) f();
  }

  /** Graceful close: pending writes are flushed, then FIN. Destroyed after `graceMs` if still open. */
  end(graceMs = 2000): void {
    this.localClosing = true;
    const s = this.socket;
    if (!s || this.isClosed) return;
    s.end();
    const t = setTimeout(() => s.destroy(), graceMs);
    t.unref();
    s.once('close', () => clearTimeout(t));
  }

  destroy(): void {
    this.localClosing = true;
    this.socket?.destroy();
  }
}

function deliver(c: FrameConsumer, h: FrameHeader, data: Uint8Array): void {
  const sink = c.frame(h);
  if (data.length > 0) sink.write(data);
  sink.end();
}
