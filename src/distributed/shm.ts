/**
 * Shared-memory mailboxes between two ranks of one machine: the bulk payloads of a ring edge go through a file in
 * /dev/shm (tmpfs) instead of through the socket, and the socket carries only the 32-byte frame headers (the
 * doorbell) and the receiver's acknowledgements (flow control).
 *
 * Why: a ring edge over a unix socket moves ~1.2 GB/s (the all-reduce table in docs/BENCHMARKS.md): the kernel
 * socket buffers are small (~200 KiB), so every MiB costs several write/read syscalls, event-loop wake-ups and
 * copies through skbs. pwrite/pread of whole multi-MiB payloads into a tmpfs file cost one syscall each and run at
 * memcpy speed (2-core box, 29 MB: Float32Array.set 1.8 ms, pwrite 2.8 ms, pread 2.0 ms, i.e. 10-15 GB/s), so the
 * same number of copies as the socket path (sender: one copy in; receiver: one copy out, or one copy plus the add)
 * runs several times faster. No native module is needed: mmap through one (mmap-io, shmmap, shm-typed-array on
 * npm; all node-gyp builds without prebuilt binaries) would save the receiver's copy before an add, but
 * brings a compiler into the install and into the GPU machine's package, for a copy that costs ~1 ms per 15 MB.
 *
 * Layout: one file per ring edge, created by the receiver (its "inbox"), `bytes` long, used as a FIFO ring buffer.
 * The first 64 bytes hold a random key that the sender checks after opening the path (proves both processes see
 * the same file, e.g. not two containers with separate /dev/shm). Payload bytes start at offset 64.
 *
 *   sender:   pos = written % cap; pwrite the payload at 64 + pos (wrapping in two pieces); send the header with
 *             FLAG_SHM; written += length. It may only write while written + length - acked <= cap.
 *   receiver: on a header with FLAG_SHM, pread `length` bytes at 64 + consumed % cap, consumed += length, and
 *             send an Ack frame carrying `consumed`; the sender sets acked = consumed and writes what waited.
 *
 * Both sides see payloads in socket order, so no offsets travel. The receiver unlinks the file as soon as the
 * sender confirmed that it opened it (ShmOk), so a crash later leaves nothing behind in /dev/shm.
 */
import { closeSync, existsSync, ftruncateSync, openSync, readSync, statfsSync, unlinkSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { settings } from '../settings.js';

const KEY_BYTES = 64;
/** Payloads smaller than this travel inline on the socket (a header round trip is cheaper than two syscalls). */
export const SHM_MIN_PAYLOAD = 64 * 1024;
/** Default capacity of one inbox. */
export const DEFAULT_SHM_BYTES = 32 * 1024 * 1024;
/** Smallest inbox worth having: messages up to half of it go through it (an all-reduce chunk of a 4 MiB bucket). */
export const MIN_SHM_BYTES = 4 * 1024 * 1024;

/** What the receiver tells the sender in its ring HELLO. */
export interface ShmOffer {
  path: string;
  bytes: number;
  key: string;
}

/** Directory for the mailboxes: /dev/shm when it is there (tmpfs), else none (sockets only). */
export function shmDir(): string | null {
  const d = settings.distShmDir;
  if (d === '' || d === 'none') return null;
  return existsSync(d) ? d : null;
}

/** Write all of `src` at `pos` (pwrite until done). */
export function pwriteFull(fd: number, src: Uint8Array, pos: number): void {
  let off = 0;
  while (off < src.length) {
    const n = writeSync(fd, src, off, src.length - off, pos + off);
    if (n <= 0) throw new Error('short write to the shared-memory mailbox');
    off += n;
  }
}

/** Fill all of `dst` from `pos` (pread until done). */
export function preadFull(fd: number, dst: Uint8Array, pos: number): void {
  let off = 0;
  while (off < dst.length) {
    const n = readSync(fd, dst, off, dst.length - off, pos + off);
    if (n <= 0) throw new Error('short read from the shared-memory mailbox');
    off += n;
  }
}

/** Free bytes in `dir` (0 when that cannot be read). */
export function freeBytes(dir: string): number {
  try {
    const fs = statfsSync(dir);
    return Number(fs.bavail) * Number(fs.bsize);
  } catch {
    return 0;
  }
}

/**
 * A new file at `path` (created exclusively, mode 0600, open read-write) of `bytes`, after `setup` ran on it; null
 * when anything fails, and then nothing is left behind. Returns the descriptor.
 */
export function createShmFile(path: string, bytes: number, setup: (fd: number) => void): number | null {
  let fd = -1;
  try {
    fd = openSync(path, 'wx+', 0o600);
    ftruncateSync(fd, bytes);
    setup(fd);
    return fd;
  } catch {
    if (fd >= 0) {
      try {
        closeSync(fd);
        unlinkSync(path);
      } catch {
        /* gone */
      }
    }
    return null;
  }
}

/** Receiving end: creates the file, reads payloads in order. */
export class ShmInbox {
  readonly path: string;
  readonly cap: number;
  readonly key: string;
  private fd: number;
  private consumed = 0;
  private unlinked = false;

  private constructor(path: string, fd: number, cap: number, key: string) {
    this.path = path;
    this.fd = fd;
    this.cap = cap;
    this.key = key;
  }

  /**
   * A new inbox of up to `bytes` payload bytes in `dir`: at most an eighth of the free space there (several ranks and
   * channels each create one, and tmpfs in a container is often only 64 MiB), at least MIN_SHM_BYTES; null when that
   * does not fit or anything fails (the edge then stays on its socket).
   */
  static create(dir: string, tag: string, bytes: number): ShmInbox | null {
    const path = join(dir, `mambaout-dist-${tag}-${process.pid}-${randomBytes(4).toString('hex')}`);
    const free = freeBytes(dir);
    const want = bytes;
    bytes = Math.min(want, Math.floor(free / 8 / (1 << 20)) * (1 << 20));
    if (bytes < 1 || bytes < Math.min(MIN_SHM_BYTES, want)) return null;
    const key = randomBytes(16).toString('hex');
    const kb = Buffer.alloc(KEY_BYTES);
    kb.write(key, 'latin1');
    const fd = createShmFile(path, KEY_BYTES + bytes, (f) => pwriteFull(f, kb, 0));
    return fd === null ? null : new ShmInbox(path, fd, bytes, key);
  }

  offer(): ShmOffer {
    return { path: this.path, bytes: this.cap, key: this.key };
  }

  /** Remove the name (the sender holds its own descriptor). */
  unlink(): void {
    if (this.unlinked) return;
    this.unlinked = true;
    try {
      unlinkSync(this.path);
    } catch {
      /* already gone */
    }
  }

  /**
   * Read the next payload of `length` bytes: into `direct` when given (exactly `length` bytes), else in pieces into
   * `scratch`, each handed to `piece`. Returns the cumulative number of bytes consumed (for the Ack).
   */
  read(length: number, direct: Uint8Array | null, scratch: Uint8Array, piece: (chunk: Uint8Array) => void): number {
    let pos = this.consumed % this.cap;
    let left = length;
    let out = 0;
    while (left > 0) {
      const n = Math.min(left, this.cap - pos);
      if (direct) {
        preadFull(this.fd, direct.subarray(out, out + n), KEY_BYTES + pos);
      } else {
        for (let o = 0; o < n; o += scratch.length) {
          const m = Math.min(scratch.length, n - o);
          const dst = scratch.subarray(0, m);
          preadFull(this.fd, dst, KEY_BYTES + pos + o);
          piece(dst);
        }
      }
      out += n;
      left -= n;
      pos = (pos + n) % this.cap;
    }
    this.consumed += length;
    return this.consumed;
  }

  close(): void {
    this.unlink();
    if (this.fd >= 0) {
      try {
        closeSync(this.fd);
      } catch {
        /* closed */
      }
      this.fd = -1;
    }
  }
}

/** Sending end: opens the receiver's file, writes payloads in order within the acknowledged window. */
export class ShmOutbox {
  readonly cap: number;
  private fd: number;
  private written = 0;
  private acked = 0;

  private constructor(fd: number, cap: number) {
    this.fd = fd;
    this.cap = cap;
  }

  /** Open the receiver's inbox; null when the file is not reachable or not the one offered. */
  static open(offer: ShmOffer): ShmOutbox | null {
    let fd = -1;
    try {
      if (!Number.isSafeInteger(offer.bytes) || offer.bytes < 1) return null;
      fd = openSync(offer.path, 'r+');
      const kb = Buffer.alloc(KEY_BYTES);
      preadFull(fd, kb, 0);
      if (kb.toString('latin1', 0, offer.key.length) !== offer.key) {
        closeSync(fd);
        return null;
      }
      return new ShmOutbox(fd, offer.bytes);
    } catch {
      if (fd >= 0) {
        try {
          closeSync(fd);
        } catch {
          /* closed */
        }
      }
      return null;
    }
  }

  /** Whether a payload of `length` bytes may ever go through this mailbox (else it travels inline). */
  fits(length: number): boolean {
    return length >= SHM_MIN_PAYLOAD && length <= this.cap / 2;
  }

  /** Whether `length` bytes can be written now. */
  hasRoom(length: number): boolean {
    return this.written + length - this.acked <= this.cap;
  }

  write(payload: Uint8Array): void {
    let pos = this.written % this.cap;
    let off = 0;
    while (off < payload.length) {
      const n = Math.min(payload.length - off, this.cap - pos);
      pwriteFull(this.fd, payload.subarray(off, off + n), KEY_BYTES + pos);
      off += n;
      pos = (pos + n) % this.cap;
    }
    this.written += payload.length;
  }

  /** The receiver consumed everything up to `consumed` (cumulative bytes). */
  ack(consumed: number): void {
    if (consumed > this.acked && consumed <= this.written) this.acked = consumed;
  }

  close(): void {
    if (this.fd >= 0) {
      try {
        closeSync(this.fd);
      } catch {
        /* closed */
      }
      this.fd = -1;
    }
  }
}
