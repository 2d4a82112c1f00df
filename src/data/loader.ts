/**
 * Batched image loader: decode + per-image transform in a pool of worker threads, several batches
 * ahead, delivered in order (torch DataLoader semantics as timm uses them: one worker builds one
 * whole batch, `prefetch` batches in flight, persistent workers across epochs).
 *
 *   const loader = new DataLoader({ samples, transform: { kind: 'eval', ...cfg }, batchSize: 128, workers: 2 });
 *   for await (const batch of loader) { ... }   // one epoch
 *   await loader.close();
 *
 * Unreadable images are never dropped silently: each one is passed to `onSkip` (default: a warning
 * on stderr), listed in its batch's `skipped`, and counted in `loader.skippedCount`. A batch whose
 * images all failed is not yielded.
 *
 * Workers are unref'd while idle, so a loader that was not closed does not keep the process alive.
 */
import type { Worker } from 'node:worker_threads';
import type { Sample } from './folder.js';
import { SequentialSampler, type Sampler } from './sampler.js';
import { sampleSeed } from '../utils/rng.js';
import { startModuleWorker } from '../utils/worker_thread.js';
import { runBatch, type BatchResult, type BatchTask, type TaskItem, type WorkerInit, type WorkerReply } from './worker.js';
import { getTransform, type ImageArray, type TransformSpec } from './transforms/index.js';

export type { ImageArray, TransformSpec } from './transforms/index.js';

export interface Batch<I extends ImageArray = Float32Array> {
  /** B·H·W·3, NHWC (normalized float32, or uint8 when the transform asks for it) */
  images: I;
  /** [B, H, W, 3] */
  shape: [number, number, number, number];
  labels: Int32Array;
  paths: string[];
  /** dataset indices of the images */
  indices: number[];
  /** images of this batch that could not be decoded (not in `images`) */
  skipped: { path: string; reason: string }[];
}

/**
 * Where the workers' time goes, summed over all batches since the loader was created: `decodeMs` is the time a
 * worker spent reading and decoding files (or waiting for sharp), `transformMs` the time in the per-image transform. Read by
 * scripts/bench_data.ts; cheap enough to keep on (two performance.now() per image).
 */
export interface LoaderStats {
  images: number;
  decodeMs: number;
  transformMs: number;
}

export interface LoaderOptions {
  samples: readonly Sample[];
  transform: TransformSpec;
  batchSize: number;
  /** worker threads (-j); 0 = decode in the calling thread. Default 0. */
  workers?: number;
  /** batches prepared ahead (in flight + ready). Default 2 per worker (torch's prefetch_factor), 2 in-process; at least `workers`. */
  prefetch?: number;
  /** index order (default sequential) */
  sampler?: Sampler;
  /** drop the last incomplete batch (training) */
  dropLast?: boolean;
  /** base seed for per-sample transform seeds (random transforms); default 0 */
  seed?: number;
  /** called once per unreadable image; default: a warning on stderr */
  onSkip?: (path: string, reason: string) => void;
}

function defaultOnSkip(path: string, reason: string): void {
  process.stderr.write(`warning: skipping unreadable image ${path}: ${reason}\n`);
}

// ---------------------------------------------------------------------------------------------
// Worker pool: one task at a time per worker.

interface Pending {
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

function startWorker(init: WorkerInit): Worker {
  return startModuleWorker(new URL('./worker.js', import.meta.url), init, { commonjs: true }); // no top-level await in its graph
}

class WorkerPool {
  private readonly workers: Worker[] = [];
  private readonly idle: Worker[] = [];
  private readonly pending = new Map<Worker, Pending>();
  private broken: Error | null = null;
  private closed = false;
  /** called whenever a worker becomes idle (or the pool breaks); set by the running epoch */
  onIdle: (() => void) | null = null;

  constructor(size: number, init: WorkerInit) {
    for (let i = 0; i < size; i++) {
      const w = startWorker(init);
      w.on('message', (msg: WorkerReply) => this.onMessage(w, msg));
      w.on('error', (e: Error) => this.fail(w, e));
      w.on('exit', (code) => {
        if (!this.closed) this.fail(w, new Error(`data worker exited unexpectedly (code ${code})`));
      });
      w.unref();
      this.workers.push(w);
      this.idle.push(w);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  get isBroken(): Error | null {
    return this.broken;
  }

  get idleCount(): number {
    return this.broken ? 0 : this.idle.length;
  }

  run(task: BatchTask): Promise<BatchResult> {
    if (this.broken) return Promise.reject(this.broken);
    if (this.closed) return Promise.reject(new Error('the data loader is closed'));
    const w = this.idle.pop();
    if (!w) return Promise.reject(new Error('internal: no idle data worker'));
    return new Promise<BatchResult>((resolve, reject) => {
      this.pending.set(w, { resolve, reject });
      w.ref(); // keep the process alive while work is outstanding
      w.postMessage(task, task.buffer ? [task.buffer] : []);
    });
  }

  private release(w: Worker): void {
    w.unref();
    this.pending.delete(w);
    this.idle.push(w);
    this.onIdle?.();
  }

  private onMessage(w: Worker, msg: WorkerReply): void {
    const p = this.pending.get(w);
    this.release(w);
    if (!p) return;
    if (msg.ok) {
      p.resolve(msg.result);
    } else {
      const e = new Error(`data worker failed: ${msg.error}`);
      if (msg.stack) e.stack = msg.stack;
      p.reject(e);
    }
  }

  private fail(w: Worker, e: Error): void {
    if (!this.broken) this.broken = e;
    const p = this.pending.get(w);
    this.pending.delete(w);
    w.unref();
    p?.reject(e);
    this.onIdle?.();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of this.pending.values()) p.reject(new Error('the data loader was closed'));
    this.pending.clear();
    // ref'd until they have exited, so that nothing but close() decides when the process may end (idle workers are
    // unref'd, and a caller awaiting close() expects the workers gone when it resolves)
    for (const w of this.workers) w.ref();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

// ---------------------------------------------------------------------------------------------

export class DataLoader<I extends ImageArray = Float32Array> implements AsyncIterable<Batch<I>> {
  readonly samples: readonly Sample[];
  readonly transform: TransformSpec;
  readonly batchSize: number;
  readonly workers: number;
  readonly prefetch: number;
  readonly sampler: Sampler;
  readonly dropLast: boolean;
  readonly seed: number;
  /** images skipped as unreadable since the loader was created */
  skippedCount = 0;
  /** decode / transform time of the images delivered so far */
  readonly stats: LoaderStats = { images: 0, decodeMs: 0, transformMs: 0 };
  /** batch buffers given back through recycle(), reused for the next batches */
  private readonly spare: ArrayBuffer[] = [];
  private readonly fullBytes: number;
  private readonly onSkip: (path: string, reason: string) => void;
  private readonly imageShape: [number, number, number];
  private pool: WorkerPool | null = null;
  private epoch = 0;
  private generation = 0;
  private closed = false;
  /** wakes the epoch being iterated (so a superseded or closed epoch fails instead of waiting) */
  private wakeActive: (() => void) | null = null;

  constructor(opts: LoaderOptions) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) {
      throw new Error(`batch size must be a positive integer, got ${opts.batchSize}`);
    }
    const workers = opts.workers ?? 0;
    if (!Number.isInteger(workers) || workers < 0) throw new Error(`workers must be a non-negative integer, got ${workers}`);
    this.samples = opts.samples;
    this.transform = opts.transform;
    this.batchSize = opts.batchSize;
    this.workers = workers;
    this.prefetch = Math.max(opts.prefetch ?? 2 * Math.max(1, workers), Math.max(1, workers), 1);
    this.sampler = opts.sampler ?? new SequentialSampler(opts.samples.length);
    this.dropLast = opts.dropLast ?? false;
    this.seed = opts.seed ?? 0;
    this.onSkip = opts.onSkip ?? defaultOnSkip;
    const out = getTransform(opts.transform).output(opts.transform); // validates the kind
    this.imageShape = out.shape;
    this.fullBytes = this.batchSize * out.shape[0] * out.shape[1] * out.shape[2] * (out.dtype === 'float32' ? 4 : 1);
  }

  /**
   * Give a batch's image buffer back once it is no longer read (e.g. after its upload to the GPU): the loader writes a
   * later batch into it instead of allocating (and page-faulting) a fresh one — 19 MB per batch of 128 at 224 px,
   * ~0.2 ms per image on the CPU box. Optional: batches that are not recycled are simply garbage-collected. After
   * recycle(batch), `batch.images` must not be used: with workers its buffer is transferred away (reads see an empty
   * array), in-process it is overwritten by a later batch.
   */
  recycle(batch: Batch<I>): void {
    const buf = batch.images.buffer as ArrayBuffer;
    if (buf.byteLength !== this.fullBytes || this.spare.length >= this.prefetch + 2 || this.spare.includes(buf)) return;
    this.spare.push(buf);
  }

  /** Batches per epoch. */
  get length(): number {
    const n = this.sampler.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /** Set the epoch: forwarded to the sampler (DistributedSampler) and mixed into sample seeds. */
  setEpoch(epoch: number): void {
    this.epoch = epoch;
    this.sampler.setEpoch?.(epoch);
  }

  /** One epoch of batches (the sampler's current order). */
  async *[Symbol.asyncIterator](): AsyncGenerator<Batch<I>> {
    if (this.closed) throw new Error('the data loader is closed');
    const gen = ++this.generation;
    const order = [...this.sampler];
    const bs = this.batchSize;
    const nBatches = this.dropLast ? Math.floor(order.length / bs) : Math.ceil(order.length / bs);
    const epoch = this.epoch;
    const makeTask = (b: number): BatchTask => {
      const items: TaskItem[] = [];
      for (let p = b * bs; p < Math.min((b + 1) * bs, order.length); p++) {
        const index = order[p];
        const s = this.samples[index];
        if (!s) throw new Error(`sampler index ${index} is outside the dataset (size ${this.samples.length})`);
        items.push({ index, path: s.path, label: s.label, seed: sampleSeed(this.seed, epoch, p) });
      }
      return { id: b, items };
    };

    if (this.workers > 0 && !this.pool) {
      this.pool = new WorkerPool(this.workers, { mambaoutDataWorker: true, spec: this.transform });
    }
    const pool = this.pool;
    // Results land here by batch index; `inFlight` counts submitted, unfinished batches.
    const ready = new Map<number, { task: BatchTask; result?: BatchResult; error?: Error }>();
    let nextToSubmit = 0;
    let inFlight = 0;
    let wake: (() => void) | null = null;
    let stopped = false;
    const notify = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    // A worker still busy with a batch of an abandoned epoch wakes us when it becomes free.
    if (pool) pool.onIdle = notify;
    this.wakeActive?.();
    this.wakeActive = notify;
    const submit = () => {
      while (
        !stopped && nextToSubmit < nBatches && inFlight + ready.size < this.prefetch &&
        (pool ? pool.idleCount > 0 : inFlight === 0)
      ) {
        const task = makeTask(nextToSubmit++);
        const spare = this.spare.pop();
        if (spare) task.buffer = spare;
        inFlight++;
        const run = pool ? pool.run(task) : runBatch(task, this.transform);
        run.then(
          (result) => {
            inFlight--;
            if (stopped || gen !== this.generation) return;
            ready.set(task.id, { task, result });
            notify();
          },
          (error: Error) => {
            inFlight--;
            if (stopped || gen !== this.generation) return;
            ready.set(task.id, { task, error });
            notify();
          },
        );
      }
    };

    try {
      for (let b = 0; b < nBatches; b++) {
        submit();
        while (!ready.has(b)) {
          if (this.closed) throw new Error('the data loader was closed during the epoch');
          if (gen !== this.generation) throw new Error('this epoch was abandoned: the loader was iterated again');
          if (pool?.isBroken) throw pool.isBroken;
          await new Promise<void>((r) => (wake = r));
          submit();
        }
        const entry = ready.get(b)!;
        ready.delete(b);
        submit();
        if (entry.error) throw entry.error;
        const batch = this.toBatch(entry.task, entry.result!);
        // One event-loop turn per batch: a ready batch would otherwise reach the consumer on microtasks alone, and a
        // loop that never waits on I/O (in-process decoding is synchronous) would not see a signal (Ctrl-C) or timer.
        await new Promise<void>((r) => setImmediate(r));
        if (batch) yield batch;
      }
    } finally {
      stopped = true; // results of batches still in flight are dropped
      if (this.wakeActive === notify) this.wakeActive = null;
    }
  }

  private toBatch(task: BatchTask, r: BatchResult): Batch<I> | null {
    for (const s of r.skipped) {
      this.skippedCount++;
      this.onSkip(s.path, s.reason);
    }
    this.stats.images += r.count;
    this.stats.decodeMs += r.decodeMs;
    this.stats.transformMs += r.transformMs;
    if (r.count === 0) return null;
    const [h, w, c] = this.imageShape;
    const per = h * w * c;
    const images = (r.images.length === r.count * per ? r.images : r.images.subarray(0, r.count * per)) as I;
    const paths: string[] = [];
    const indices: number[] = [];
    for (const k of r.kept) {
      paths.push(task.items[k].path);
      indices.push(task.items[k].index);
    }
    return { images, shape: [r.count, h, w, c], labels: r.labels, paths, indices, skipped: r.skipped };
  }

  /** Stop the worker threads. The loader cannot be iterated afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    this.generation++;
    this.wakeActive?.();
    const pool = this.pool;
    this.pool = null;
    if (pool) await pool.close();
  }
}

/** Convenience: `new DataLoader(opts)`. */
export function createLoader<I extends ImageArray = Float32Array>(opts: LoaderOptions): DataLoader<I> {
  return new DataLoader<I>(opts);
}
