/**
 * CommPool: all-reduce on K worker threads, each with its own ProcessGroup (its own ring connections and
 * shared-memory mailboxes), like NCCL's channels. Buffers are SharedArrayBuffer slices that the threads reduce in
 * place, so the main thread only hands over offsets.
 *
 * Why: in tfjs the JS main thread is the bottleneck of a training step (femto on the H200: JS issue ~91 ms of a 102 ms
 * step), so every millisecond the exchange spends on it (pwrite/pread of the mailboxes, the float adds: ~4 passes over
 * the gradients per rank) is a millisecond added to the step. On threads it overlaps the main thread's own work (the
 * readback copies, the uploads) and the GPU's backward tail, and K threads move K buckets at once (one thread copies at
 * ~10-15 GB/s, a server's memory system several times that).
 *
 *   const pool = await CommPool.create(group, { threads: 4, masterAddr, timeoutMs });   // collective: all ranks
 *   const buf = pool.alloc(n);                    // Float32Array on a SharedArrayBuffer
 *   await pool.allreduce(buf.subarray(a, b), 'avg', k);                                 // channel k (same on all ranks)
 *   await pool.close();
 *
 * Every rank must give the same buffers to the same channel in the same order (as with the group itself).
 */
import type { Worker } from 'node:worker_threads';
import { findFreePort } from './launcher.js';
import { DistError, type DistFailure } from './errors.js';
import type { ProcessGroup, ProcessGroupOptions, ReduceDtype, ReduceOp } from './group.js';
import { startModuleWorker } from '../utils/worker_thread.js';
import { HandoffFile } from './handoff.js';

export interface CommPoolOptions {
  threads: number;
  /** Rendezvous address of rank 0 (the channels listen on free ports there). */
  masterAddr: string;
  timeoutMs?: number;
  transport?: ProcessGroupOptions['transport'];
  nodeRank?: number;
}

interface Pending {
  resolve: () => void;
  reject: (e: Error) => void;
}

function startWorker(data: ProcessGroupOptions): Worker {
  return startModuleWorker(new URL('./comm_worker.js', import.meta.url), data);
}

export class CommPool {
  private nextId = 0;
  private readonly pending = new Map<number, Pending>();
  private failed: Error | null = null;
  /** Hand-off files of alloc()'s arrays (handoff()), closed only after the threads have exited (close()). */
  private readonly files = new Map<SharedArrayBuffer, HandoffFile | null>();

  private constructor(private readonly workers: Worker[]) {
    for (const w of workers) {
      w.on('message', (m: { id: number; error?: { message: string; rank: number | null; reason: DistFailure } }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        if (m.error) p.reject(new DistError(m.error.message, m.error.rank, m.error.reason));
        else p.resolve();
      });
      w.on('error', (e) => this.fail(e));
      w.unref();
    }
  }

  get threads(): number {
    return this.workers.length;
  }

  /** Start the channels: a collective over `group` (every rank calls it with the same `threads`). */
  static async create(group: ProcessGroup, opts: CommPoolOptions): Promise<CommPool> {
    const K = opts.threads;
    const ports: number[] = group.rank === 0 ? await Promise.all(Array.from({ length: K }, () => findFreePort(opts.masterAddr === 'localhost' ? '127.0.0.1' : opts.masterAddr))) : [];
    const all = await group.broadcastObject(ports, 0);
    if (new Set(all).size !== all.length) throw new DistError('the communication channels got the same port twice', 0, 'rendezvous');
    const workers = all.map((masterPort) =>
      startWorker({
        rank: group.rank, worldSize: group.worldSize, masterAddr: opts.masterAddr, masterPort, timeoutMs: opts.timeoutMs, transport: opts.transport, nodeRank: opts.nodeRank,
      }),
    );
    try {
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve, reject) => {
              w.once('message', (m: { ready?: boolean; initError?: string }) => (m.ready ? resolve() : reject(new DistError(`a communication channel could not start: ${m.initError}`, null, 'rendezvous'))));
              w.once('error', reject);
            }),
        ),
      );
    } catch (e) {
      for (const w of workers) void w.terminate();
      throw e;
    }
    return new CommPool(workers);
  }

  /** A zeroed Float32Array on shared memory that the channels can reduce in place. */
  alloc(n: number): Float32Array {
    return new Float32Array(new SharedArrayBuffer(n * 4));
  }

  /**
   * A /dev/shm file as large as `buf`'s shared array (src/distributed/handoff.ts; one per array, owned by the pool),
   * or null when there is no room for it. Byte k of the array is byte k of the file.
   */
  handoff(buf: Float32Array): HandoffFile | null {
    const sab = buf.buffer;
    if (!(sab instanceof SharedArrayBuffer)) return null;
    if (!this.files.has(sab)) this.files.set(sab, HandoffFile.create(sab.byteLength));
    return this.files.get(sab) ?? null;
  }

  /**
   * All-reduce `buf` (a view of alloc()'s memory) on channel `channel % threads`. `through` (its handoff()): the
   * caller has written the bucket into the file at `buf`'s byte offset instead of into `buf`; the thread reads it from
   * there first and writes the result back there as well as into `buf`.
   */
  allreduce(buf: Float32Array, op: ReduceOp, channel: number, dtype: ReduceDtype = 'f32', through: HandoffFile | null = null): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (!(buf.buffer instanceof SharedArrayBuffer)) return Promise.reject(new TypeError('CommPool.allreduce needs a view of CommPool.alloc() memory'));
    const id = this.nextId++;
    const w = this.workers[channel % this.workers.length];
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.ref();
      w.postMessage({ id, buffer: buf.buffer, offset: buf.byteOffset, length: buf.length, op, dtype, fd: through ? through.fd : -1 });
    }).finally(() => {
      if (this.pending.size === 0) for (const x of this.workers) x.unref();
    });
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.pending.values()) p.reject(this.failed);
    this.pending.clear();
  }

  async close(): Promise<void> {
    await Promise.all(
      this.workers.map(
        (w) =>
          new Promise<void>((resolve) => {
            w.once('exit', () => resolve());
            w.ref(); // keep the event loop alive until the thread has said goodbye to its peers
            w.postMessage({ close: true });
            setTimeout(() => void w.terminate(), 5000).unref();
          }),
      ),
    );
    for (const f of this.files.values()) f?.close();
    this.files.clear();
  }
}
