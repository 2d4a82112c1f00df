/**
 * Peer links of the process group (the layer under allreduce.ts and over node:net).
 *
 * Topology. The W ranks form one directed ring: rank r streams bulk data to its right neighbour (r+1) % W
 * and receives bulk data from its left neighbour (r-1+W) % W. Each ring edge is one stream socket (TCP, or a
 * unix-domain socket between processes of one machine; see tcp.ts). Rank r *connects* to its left neighbour
 * and reads on that client socket, which lets us pass `onread` a fixed, 8-byte-aligned read buffer (no
 * allocation per read, Float32 views straight into it). Besides the ring every rank keeps its rendezvous
 * ("control") connection to rank 0, which is used to flood ABORT messages when something fails.
 *
 * Framing: wire.ts (a 32-byte header, then `length` payload bytes).
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
import { FLAG_SHM, FRAME, HEADER_BYTES, OP_KIND_NAME, ProtocolError, decodeHeader, encodeHeader, type FrameHeader } from './wire.js';
import { addF32 } from './float32.js';
import { errMessage } from '../errors.js';

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

/**
 * Collects a small payload (control frames, or data frames that arrived before their collective started) into an
 * own ArrayBuffer (offset 0, aligned, so typed views into it are always possible).
 */
function collectSink(length: number, onEnd: (data: Uint8Array) => void): PayloadSink {
  const data = new Uint8Array(length);
  return new CopySink(data, () => onEnd(data));
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
      const msg = errMessage(e);
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
        this.curSink = collectSink(h.length, (data) => this.stashEarly(h, data));
      }
    } else if (h.type === FRAME.Abort || h.type === FRAME.Bye || h.type === FRAME.Hello || h.type === FRAME.Table) {
      if (h.length > 16 * 1024 * 1024) throw new ProtocolError(`control frame of ${h.length} bytes`);
      this.curSink = collectSink(h.length, (data) => this.onControl(h.type, data));
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
      sink = collectSink(h.length, (data) => this.stashEarly({ ...h, flags: 0 }, data));
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
      this.handler?.protocolError(this, errMessage(e));
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
