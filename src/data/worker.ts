/**
 * The batch worker: the loader sends a serializable transform spec (./transforms/index.ts) once per worker, then one
 * task per batch: the samples to decode and transform. The worker writes every image straight into one batch buffer
 * (float32 or uint8, NHWC) and transfers it back (no copy). The same `runBatch` runs in-process when the loader has
 * `workers: 0`.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeRGB, decodeRGBSync, DecodeError, type DecodedImage, type DecodeGeometry } from './decode.js';
import { errMessage } from '../errors.js';
import { getTransform, type ImageArray, type SampleContext, type TransformSpec } from './transforms/index.js';

// ---------------------------------------------------------------------------------------------
// Batch task protocol

export interface TaskItem {
  index: number;
  path: string;
  label: number;
  seed: number;
}

export interface BatchTask {
  id: number;
  items: TaskItem[];
  /** a recycled batch buffer to write into (DataLoader.recycle), used when it is large enough */
  buffer?: ArrayBuffer;
}

export interface BatchResult {
  id: number;
  /** `count` images, H·W·3 each, packed from the start (the buffer may hold room for more) */
  images: ImageArray;
  count: number;
  /** positions (into task.items) of the images that made it, in order */
  kept: Int32Array;
  labels: Int32Array;
  skipped: { path: string; reason: string }[];
  /** time spent decoding / transforming this batch's images, ms (see LoaderStats) */
  decodeMs: number;
  transformMs: number;
}

/** Files up to this size are read into one reused per-thread buffer; larger ones into their own. */
const READ_REUSE_MAX = 64 << 20;
let readBuf: Buffer | null = null;

/**
 * Read a whole file synchronously into this thread's reused buffer (valid until the next call). Synchronous on
 * purpose: fs.promises.readFile costs ~0.57 ms CPU per 100 KB JPEG on the CPU box (open, stat, read, close each a hop
 * through libuv's 4-thread pool, which all workers share) against 0.03 ms here; a data worker has nothing else to do
 * meanwhile, and timm's workers read synchronously too.
 */
function readWhole(path: string): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    if (size > READ_REUSE_MAX) {
      const b = readFileSync(fd);
      return new Uint8Array(b.buffer, b.byteOffset, b.length);
    }
    if (!readBuf || readBuf.length < size) readBuf = Buffer.allocUnsafeSlow(Math.max(size, 1 << 20));
    let off = 0;
    while (off < size) {
      const n = readSync(fd, readBuf, off, size - off, off);
      if (n === 0) break;
      off += n;
    }
    // a plain Uint8Array view: Buffer#slice would not copy, Uint8Array#slice does
    return new Uint8Array(readBuf.buffer, readBuf.byteOffset, off);
  } finally {
    closeSync(fd);
  }
}

/**
 * Decode and transform one batch, image by image: read the file, decode a plain JPEG on this thread
 * (decodeRGBSync) and hand its pixels to the transform without a copy, all without yielding; other formats go
 * through sharp. Decode failures are reported in `skipped`; any other error is thrown.
 */
export async function runBatch(task: BatchTask, spec: TransformSpec): Promise<BatchResult> {
  const def = getTransform(spec);
  const { shape, dtype } = def.output(spec);
  const per = shape[0] * shape[1] * shape[2];
  const n = task.items.length;
  const Ctor = dtype === 'float32' ? Float32Array : Uint8Array;
  const reuse = task.buffer && task.buffer.byteLength >= n * per * Ctor.BYTES_PER_ELEMENT ? task.buffer : null;
  // Only the first count·per values are handed out, and all of those are written: a recycled buffer needs no clearing.
  const images = reuse ? new Ctor(reuse, 0, n * per) : new Ctor(n * per);
  const kept = new Int32Array(n);
  const labels = new Int32Array(n);
  const skipped: { path: string; reason: string }[] = [];
  let count = 0;
  let decodeMs = 0;
  let transformMs = 0;
  for (let i = 0; i < n; i++) {
    // In-process (-j 0) the caller's event loop gets a turn at the start of a batch and every 8 images (between
    // images: no borrowed pixels). Reads and decodes no longer wait on I/O, so without this a training loop fed from
    // here could run on microtasks alone and never see a signal (Ctrl-C) or a timer.
    if (isMainThread && i % 8 === 0) await new Promise<void>((r) => setImmediate(r));
    const it = task.items[i];
    const ctx: SampleContext = { index: it.index, path: it.path, seed: it.seed };
    const t0 = performance.now();
    let img: DecodedImage | null = null;
    let err: DecodeError | null = null;
    let data: Uint8Array | null = null;
    try {
      data = readWhole(it.path);
    } catch (e) {
      err = new DecodeError(it.path, errMessage(e));
    }
    if (data) {
      const scaleFor = def.decodeScale ? (w: number, h: number) => def.decodeScale!(w, h, spec, ctx) : undefined;
      // only the part of a JPEG the transform reads is decoded (region decode; the same pixels there)
      const regionFor = def.decodeRegion ? (g: DecodeGeometry) => def.decodeRegion!(g, spec, ctx) : undefined;
      try {
        img = decodeRGBSync(data, { scaleFor, regionFor }, it.path);
      } catch (e) {
        if (!(e instanceof DecodeError)) throw e;
        err = e; // over the pixel limit: refused from the header
      }
      if (!img && !err) {
        try {
          // sharp works asynchronously: give it its own copy of the bytes (the read buffer is reused)
          img = await decodeRGB(data.slice(), it.path);
        } catch (e) {
          if (!(e instanceof DecodeError)) throw e;
          err = e;
        }
      }
    }
    const t1 = performance.now();
    decodeMs += t1 - t0;
    if (err || !img) {
      skipped.push({ path: it.path, reason: err ? err.reason : 'unknown error' });
      continue;
    }
    // `img` may be a view of the decoder's memory: it is consumed here, before anything else can decode.
    def.apply(img, spec, ctx, images, count * per);
    transformMs += performance.now() - t1;
    kept[count] = i;
    labels[count] = it.label;
    count++;
  }
  return {
    id: task.id, images, count, kept: kept.subarray(0, count), labels: labels.subarray(0, count), skipped, decodeMs, transformMs,
  };
}

// ---------------------------------------------------------------------------------------------
// Worker thread entry

export interface WorkerInit {
  mambaoutDataWorker: true;
  spec: TransformSpec;
}

type WorkerReply = { ok: true; result: BatchResult } | { ok: false; id: number; error: string; stack?: string };

if (!isMainThread && parentPort && (workerData as WorkerInit | undefined)?.mambaoutDataWorker) {
  const port = parentPort;
  const spec = (workerData as WorkerInit).spec;
  port.on('message', (task: BatchTask) => {
    // (task.buffer arrives transferred, with the task)
    runBatch(task, spec).then(
      (result) => {
        const reply: WorkerReply = { ok: true, result };
        // Transfer, don't copy. kept/labels are views of their own buffers.
        port.postMessage(reply, [result.images.buffer, result.kept.buffer, result.labels.buffer] as ArrayBuffer[]);
      },
      (e: unknown) => {
        const reply: WorkerReply = {
          ok: false,
          id: task.id,
          error: errMessage(e),
          stack: e instanceof Error ? e.stack : undefined,
        };
        port.postMessage(reply);
      },
    );
  });
}

export type { WorkerReply };
