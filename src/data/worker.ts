/**
 * Per-image transform registry and the batch worker.
 *
 * The loader sends a serializable transform spec (`{ kind: 'eval', ...DataConfig }`) once per
 * worker, then one task per batch: the samples to decode and transform. The worker writes every
 * image straight into one batch buffer (float32 or uint8, NHWC) and transfers it back (no copy).
 * The same `runBatch` runs in-process when the loader has `workers: 0`.
 *
 * Adding a transform: write a `TransformDef` (e.g. TRAIN_TRANSFORM in transforms/train.ts) and add
 * one line to TRANSFORMS below; the `TransformSpec` union type follows from that table.
 */
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { decodeRGB, DecodeError } from './decode.js';
import { evalCropUint8, evalTransform, type DataConfig } from './transforms/eval.js';
import type { RGBImage } from './transforms/resize.js';
import { TRAIN_TRANSFORM } from './transforms/train.js';

export type ImageDType = 'float32' | 'uint8';
export type ImageArray = Float32Array | Uint8Array;

/** What a transform knows about the sample it is transforming. */
export interface SampleContext {
  /** dataset index */
  index: number;
  path: string;
  /**
   * A uint32 seed for this sample in this epoch, derived from (loader seed, epoch, position in the
   * epoch); random transforms seed their own `Rng` from it, so results do not depend on how many
   * workers run or which worker gets the batch.
   */
  seed: number;
}

/** A per-image transform: decoded RGB in, one H×W×3 image (float32 or uint8) out. */
export interface TransformDef<S extends { kind: string }> {
  /** Output shape [H, W, 3] and element type for this spec. */
  output(spec: S): { shape: [number, number, number]; dtype: ImageDType };
  /** Transform `img` and write H·W·3 values to `out` starting at `offset`. */
  apply(img: RGBImage, spec: S, ctx: SampleContext, out: ImageArray, offset: number): void;
}

/** timm eval transform; `output: 'uint8'` gives the resized + cropped pixels before normalization. */
export interface EvalTransformSpec extends DataConfig {
  kind: 'eval';
  output?: ImageDType;
}

export const EVAL_TRANSFORM: TransformDef<EvalTransformSpec> = {
  output: (spec) => ({ shape: [spec.inputSize[1], spec.inputSize[2], 3], dtype: spec.output ?? 'float32' }),
  apply(img, spec, _ctx, out, offset) {
    if (out instanceof Float32Array) {
      evalTransform(img, spec, out, offset);
    } else {
      out.set(evalCropUint8(img, spec).data, offset);
    }
  },
};

/** kind -> transform. Add new transforms here (one line each). */
const TRANSFORMS = {
  eval: EVAL_TRANSFORM,
  train: TRAIN_TRANSFORM,
};

type Registry = typeof TRANSFORMS;
/** Union of the specs of all registered transforms. */
export type TransformSpec = { [K in keyof Registry]: Registry[K] extends TransformDef<infer S> ? S : never }[keyof Registry];

export function getTransform(spec: TransformSpec): TransformDef<TransformSpec> {
  const def = (TRANSFORMS as Record<string, TransformDef<TransformSpec> | undefined>)[spec.kind];
  if (!def) throw new Error(`unknown transform kind '${spec.kind}'`);
  return def;
}

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

/**
 * Decode and transform one batch. Decoding of image i+1 (libvips, off the JS thread) overlaps the
 * transform of image i. Decode failures are reported in `skipped`; any other error is thrown.
 */
export async function runBatch(task: BatchTask, spec: TransformSpec): Promise<BatchResult> {
  const def = getTransform(spec);
  const { shape, dtype } = def.output(spec);
  const per = shape[0] * shape[1] * shape[2];
  const n = task.items.length;
  const images = dtype === 'float32' ? new Float32Array(n * per) : new Uint8Array(n * per);
  const kept = new Int32Array(n);
  const labels = new Int32Array(n);
  const skipped: { path: string; reason: string }[] = [];
  const decode = (i: number) =>
    decodeRGB(task.items[i].path).then(
      (img) => ({ img, err: null as DecodeError | null }),
      (err: unknown) => {
        if (err instanceof DecodeError) return { img: null, err };
        throw err;
      },
    );
  let count = 0;
  let decodeMs = 0;
  let transformMs = 0;
  let t = performance.now();
  let next = n > 0 ? decode(0) : null;
  for (let i = 0; i < n; i++) {
    const cur = await next!;
    const t1 = performance.now();
    decodeMs += t1 - t;
    next = i + 1 < n ? decode(i + 1) : null;
    const it = task.items[i];
    if (cur.err || !cur.img) {
      skipped.push({ path: it.path, reason: cur.err ? cur.err.reason : 'unknown error' });
      continue;
    }
    const t2 = performance.now();
    def.apply(cur.img, spec, { index: it.index, path: it.path, seed: it.seed }, images, count * per);
    t = performance.now();
    transformMs += t - t2;
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
          error: e instanceof Error ? e.message : String(e),
          stack: e instanceof Error ? e.stack : undefined,
        };
        port.postMessage(reply);
      },
    );
  });
}

export type { WorkerReply };
