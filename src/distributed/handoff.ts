/**
 * HandoffFile: a /dev/shm file through which the main thread hands gradient bytes to the communication threads and
 * takes the averaged ones back, with the copies done by the kernel on libuv's threads instead of on the main thread.
 *
 * Why. On the webgpu backend a bucket's gradients arrive in Dawn's mapped staging memory, and only the main thread can
 * touch a mapped range (dawn.node refuses to transfer it to a worker: "Cannot transfer object of unsupported type",
 * checked on lavapipe). Copying it into the exchange's SharedArrayBuffer, and the averaged bucket back into the mapped
 * upload buffer, cost the main thread ~12 ms per 2-GPU femto step (29 MB each way at ~5 GB/s on the H200 x2 VM;
 * docs/BENCHMARKS.md "GPU run 5", call 3), and the main thread is what bounds the step. An asynchronous fs.write /
 * fs.read of the mapped range runs on a libuv thread: the main thread only issues it (~tens of microseconds) and is
 * called back when the bytes are in the file. The communication thread then preads the bucket into its shared array,
 * all-reduces it, and pwrites the result back, all off the main thread.
 *
 * The file is unlinked as soon as it is open (nothing is left in /dev/shm after a crash), and created only when it
 * takes at most half of the free space there (tmpfs in a container is often 64 MiB); otherwise the caller copies.
 */
import { closeSync, read, unlinkSync, write } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createShmFile, freeBytes, shmDir } from './shm.js';

/** Pieces larger than this are written/read as several concurrent requests (libuv has 4 threads by default). */
const PIECE_BYTES = 4 * 1024 * 1024;

function onePiece(op: typeof read | typeof write, fd: number, view: Uint8Array, pos: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let off = 0;
    const next = (): void => {
      (op as typeof write)(fd, view, off, view.length - off, pos + off, (err, n) => {
        if (err) return reject(err);
        if (n <= 0) return reject(new Error(`short ${op === read ? 'read from' : 'write to'} the gradient hand-off file`));
        off += n;
        if (off < view.length) next();
        else resolve();
      });
    };
    if (view.length === 0) resolve();
    else next();
  });
}

function pieces(op: typeof read | typeof write, fd: number, view: Uint8Array, pos: number): Promise<void> {
  if (view.length <= PIECE_BYTES) return onePiece(op, fd, view, pos);
  const all: Promise<void>[] = [];
  for (let o = 0; o < view.length; o += PIECE_BYTES) all.push(onePiece(op, fd, view.subarray(o, Math.min(view.length, o + PIECE_BYTES)), pos + o));
  return Promise.all(all).then(() => undefined);
}

export class HandoffFile {
  private constructor(
    private fdOrClosed: number,
    readonly bytes: number,
  ) {}

  /** A new hand-off file of `bytes` in the shared-memory directory, or null (no such directory, too little room, any error). */
  static create(bytes: number): HandoffFile | null {
    const dir = shmDir();
    if (!dir || !(bytes > 0) || bytes > freeBytes(dir) / 2) return null;
    const path = join(dir, `mambaout-handoff-${process.pid}-${randomBytes(4).toString('hex')}`);
    const fd = createShmFile(path, bytes, () => unlinkSync(path));
    return fd === null ? null : new HandoffFile(fd, bytes);
  }

  /** The descriptor (process-wide: worker threads pread/pwrite it too); -1 once closed. */
  get fd(): number {
    return this.fdOrClosed;
  }

  /** Copy `src` into the file at byte `pos`, on libuv's threads. `src` must stay valid until this settles. */
  write(src: Uint8Array, pos: number): Promise<void> {
    if (this.fd < 0) return Promise.reject(new Error('the gradient hand-off file is closed'));
    return pieces(write, this.fd, src, pos);
  }

  /** Copy the file's bytes at `pos` into `dst`, on libuv's threads. `dst` must stay valid until this settles. */
  read(dst: Uint8Array, pos: number): Promise<void> {
    if (this.fd < 0) return Promise.reject(new Error('the gradient hand-off file is closed'));
    return pieces(read, this.fd, dst, pos);
  }

  close(): void {
    if (this.fdOrClosed < 0) return;
    try {
      closeSync(this.fdOrClosed);
    } catch {
      /* closed */
    }
    this.fdOrClosed = -1;
  }
}
