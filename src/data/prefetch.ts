/**
 * The prefetch stage between the loader and the model, as timm's PrefetchLoader (timm/data/loader.py, 0.6.11): the
 * training and validation loops receive model-ready batches, {input: normalized float32 NHWC tensor on the device,
 * target: soft targets [n, C] or int32 labels [n]}, and the next batch is prepared before the current one is
 * handed out, so its upload and batch work are queued while the model computes.
 *
 * Batch work, in timm's prefetcher order (FastCollateMixup, then the prefetcher; timm-reference §2.4, §3.5):
 *   mixup / CutMix on the uint8 batch (rint) -> normalize (x − 255·mean) / (255·std) -> random erasing.
 * Every random decision is drawn on the host from per-epoch streams (seed, rank, epoch) — a few draws per image
 * (src/data/mixup.ts `Mixup.plan`, src/data/transforms/erasing.ts `planEraseBatch`) — and the per-pixel erasing
 * noise is counter-based (src/utils/counter_rng.ts), so the work itself can run anywhere with the same result.
 * Where it runs is this stage's choice (`BatchPath`), not the loop's:
 *   - 'webgpu': the uint8 batch is uploaded as is (4 bytes per int32 word, 19 MB for 128 images at 224 px instead
 *     of 77 MB of float32) and one WGSL kernel does the rest (src/backend/kernels/webgpu/prepare_batch.ts);
 *   - 'ops': the same from tfjs ops (./prefetch_ops.ts), for the tensorflow backend;
 *   - 'host': typed-array code on the main thread, for cpu and wasm (where the "device" is this CPU anyway).
 * The three agree: bit for bit except the device's pixel noise (WGSL log/cos; float tolerance), checked by
 * test/prefetch.test.ts (host vs ops on the cpu backend) and test/webgpu.test.ts (host vs WGSL).
 *
 * Normalization is a 768-entry table holding timm's prefetcher arithmetic in float32,
 * float32(float32(v − float32(255·mean)) / float32(255·std)), so host and device give the same floats.
 */
import * as tf from '@tensorflow/tfjs-core';
import { Rng, STREAM, streamSeed } from '../utils/rng.js';
import type { Batch } from './loader.js';
import { applyMixPlan, MIX_BLEND, mixTables, mixupTarget, type MixPlan, type Mixup } from './mixup.js';
import { fillErase, planEraseBatch, resolveErasingOptions, type EraseBox, type RandomErasingOptions, type ResolvedErasing } from './transforms/erasing.js';
import { prepareBatchOps, type PrepareParams } from './prefetch_ops.js';
import { uploadInt32 } from '../backend/kernels/webgpu/upload.js';

/** Where the batch work runs (see the file header). */
export type BatchPath = 'host' | 'ops' | 'webgpu';
export const BATCH_PATHS: readonly BatchPath[] = ['host', 'ops', 'webgpu'];
/** For log lines: where each path does the work. */
export const BATCH_PATH_WHERE: Readonly<Record<BatchPath, string>> = {
  host: 'on the host (uint8 batches, float32 upload)',
  ops: 'on the device with tfjs ops (uint8 upload)',
  webgpu: 'on the GPU in one WGSL kernel (uint8 upload)',
};

/**
 * The path for the active backend: our kernel on webgpu, tfjs ops on tensorflow, the host elsewhere (also on webgpu
 * without our kernels: tfjs's webgpu int32 division goes through float32 and would corrupt the unpacked bytes).
 */
export function defaultBatchPath(): BatchPath {
  const backend = tf.getBackend();
  if (backend === 'webgpu' && tf.getKernel('MambaoutPrepareBatch', 'webgpu') !== undefined) return 'webgpu';
  if (backend === 'tensorflow') return 'ops';
  return 'host';
}

/** timm prefetcher normalization as a table: lut[c·256 + v] (see the file header). */
export function normalizeTable(mean: readonly number[], std: readonly number[]): Float32Array {
  const f = Math.fround;
  const lut = new Float32Array(768);
  for (let c = 0; c < 3; c++) {
    const m = f(255 * mean[c]);
    const s = f(255 * std[c]);
    for (let v = 0; v < 256; v++) lut[c * 256 + v] = f(v - m) / s;
  }
  return lut;
}

/** The uint8 batch as int32 words (4 bytes each, little-endian): a view when aligned, else a zero-padded copy. */
export function packBytes(u8: Uint8Array): Int32Array {
  if (u8.byteOffset % 4 === 0 && u8.length % 4 === 0) return new Int32Array(u8.buffer, u8.byteOffset, u8.length / 4);
  const padded = new Uint8Array(Math.ceil(u8.length / 4) * 4);
  padded.set(u8);
  return new Int32Array(padded.buffer);
}

/** Normalize a uint8 NHWC batch through a table from `normalizeTable` into `out` (float32, same length). */
export function normalizeInto(u8: Uint8Array, lut: Float32Array, out: Float32Array = new Float32Array(u8.length)): Float32Array {
  const n = Math.min(u8.length, out.length);
  for (let i = 0; i < n; i += 3) {
    out[i] = lut[u8[i]];
    out[i + 1] = lut[256 + u8[i + 1]];
    out[i + 2] = lut[512 + u8[i + 2]];
  }
  return out;
}

/** What the prefetcher reads from: a DataLoader<Uint8Array>, or anything that yields uint8 batches the same way. */
export interface BatchSource {
  /** nominal batch size (positions in the epoch are index · batchSize + i) */
  readonly batchSize: number;
  /** batches per epoch */
  readonly length: number;
  setEpoch(epoch: number): void;
  [Symbol.asyncIterator](): AsyncIterator<Batch<Uint8Array>>;
  /**
   * Take a batch's image buffer back once its pixels are on the device (DataLoader.recycle): the loader writes a later
   * batch into it instead of allocating a fresh 19 MB one per step, which the main thread's garbage collector would
   * otherwise have to reclaim (V8 collects on external-memory pressure).
   */
  recycle?(batch: Batch<Uint8Array>): void;
}

/** A model-ready batch. The consumer owns `input` and `target` and disposes them. */
export interface DeviceBatch {
  /** normalized (mixed, erased) images, float32 [n, H, W, 3] on the active backend */
  input: tf.Tensor4D;
  /** soft targets float32 [n, numClasses] (training with mixup or a soft-target loss) or int32 labels [n] */
  target: tf.Tensor;
  /** the class indices of the images (host copy) */
  labels: Int32Array;
  n: number;
  /** index of the batch in the epoch */
  index: number;
}

export interface PrefetchTrainOptions {
  /** FastCollateMixup (null: off) */
  mixup: Mixup | null;
  /** random erasing after normalization (null or probability 0: off) */
  erasing: RandomErasingOptions | null;
  /** 'soft': float32 [n, C] targets (label smoothing folded in); 'labels': int32 [n] */
  targets: 'soft' | 'labels';
  numClasses: number;
  smoothing: number;
  /** --seed and the process rank: the random streams are derived from (seed, rank, epoch) */
  seed: number;
  rank: number;
}

export interface PrefetchOptions {
  mean: readonly number[];
  std: readonly number[];
  /** training batch work; absent for validation (normalize only, int32 labels) */
  train?: PrefetchTrainOptions;
  /** where the batch work runs; default: `defaultBatchPath()` when iteration starts */
  path?: BatchPath | 'auto';
}

/** The random decisions for one batch. */
interface BatchPlan {
  mix: MixPlan | null;
  erase: EraseBox[][] | null;
  targets: Float32Array | null;
}

const ERASE_MODE_CODE = { const: 0, rand: 1, pixel: 2 } as const;

export class PrefetchLoader implements AsyncIterable<DeviceBatch> {
  readonly loader: BatchSource;
  private readonly opts: PrefetchOptions;
  private readonly lut: Float32Array;
  private lutTensor: tf.Tensor1D | null = null;
  private readonly erasing: ResolvedErasing | null;
  private mixRng = new Rng(0);
  private eraseRng = new Rng(0);
  private noiseKey = 0;

  constructor(loader: BatchSource, opts: PrefetchOptions) {
    this.loader = loader;
    this.opts = opts;
    this.lut = normalizeTable(opts.mean, opts.std);
    const e = opts.train?.erasing;
    this.erasing = e && e.probability > 0 ? resolveErasingOptions(e) : null;
    this.setEpoch(0);
  }

  /** Batches per epoch (the loader's). */
  get length(): number {
    return this.loader.length;
  }

  /** timm's `loader.mixup_enabled` (forwarded to the collate function there, to the Mixup here). */
  get mixupEnabled(): boolean {
    return this.opts.train?.mixup?.mixupEnabled ?? false;
  }

  set mixupEnabled(on: boolean) {
    if (this.opts.train?.mixup) this.opts.train.mixup.mixupEnabled = on;
  }

  /** The path batches take now. */
  get path(): BatchPath {
    const p = this.opts.path ?? 'auto';
    return p === 'auto' ? defaultBatchPath() : p;
  }

  /** Forwarded to the loader (sampler order, per-sample seeds); restarts the mixup and erasing streams. */
  setEpoch(epoch: number): void {
    this.loader.setEpoch(epoch);
    const t = this.opts.train;
    if (!t) return;
    this.mixRng = new Rng(streamSeed(STREAM.mixup, t.seed, t.rank, epoch));
    this.eraseRng = new Rng(streamSeed(STREAM.erase, t.seed, t.rank, epoch));
    this.noiseKey = streamSeed(STREAM.eraseNoise, t.seed, t.rank, epoch);
  }

  /** One epoch of model-ready batches; batch k+1 is prepared before batch k is handed out (timm's order). */
  async *[Symbol.asyncIterator](): AsyncGenerator<DeviceBatch> {
    const path = this.path;
    const it = this.loader[Symbol.asyncIterator]();
    let index = 0;
    let pending: DeviceBatch | null = null;
    try {
      let next = await it.next();
      if (next.done) return;
      pending = this.prepare(next.value, index++, path);
      for (;;) {
        next = await it.next();
        const following = next.done ? null : this.prepare(next.value, index++, path);
        const current = pending;
        pending = following;
        yield current;
        if (!pending) return;
      }
    } finally {
      if (pending) tf.dispose([pending.input, pending.target]);
      await it.return?.(undefined);
    }
  }

  /** Plan and run the batch work for one loader batch (batch `index` of the epoch; used by the iterator and tests). */
  prepare(batch: Batch<Uint8Array>, index: number, path: BatchPath = this.path): DeviceBatch {
    const [n, H, W, C] = batch.shape;
    if (C !== 3) throw new Error(`prefetch: expected RGB batches, got ${C} channels`);
    const plan = this.plan(batch.labels, n, H, W);
    let input: tf.Tensor4D;
    if (path === 'host') {
      input = tf.tensor4d(this.runHost(batch.images, n, H, W, plan, index), [n, H, W, 3]);
      this.loader.recycle?.(batch); // runHost wrote new memory: the uint8 pixels are no longer read
    } else {
      if (!this.lutTensor) this.lutTensor = tf.keep(tf.tensor1d(this.lut));
      const params = this.deviceParams(n, H, W, plan, index);
      const packed = packBytes(batch.images.subarray(0, n * H * W * 3));
      // webgpu: through persistent staging buffers (tfjs would allocate a 19 MB one per batch)
      const words = (path === 'webgpu' ? tf.engine().makeTensorFromTensorInfo(uploadInt32(tf.backend(), packed)) : tf.tensor1d(packed, 'int32')) as tf.Tensor1D;
      try {
        input = path === 'ops' ? prepareBatchOps(words, this.lutTensor, params) : runPrepareKernel(words, this.lutTensor, params);
      } finally {
        words.dispose();
      }
      // uploadInt32 has copied the pixels (into a staging buffer, or a copy for tfjs's own upload); the ops path's
      // tensor may still hold the array itself, so only the webgpu path gives the buffer back
      if (path === 'webgpu') this.loader.recycle?.(batch);
    }
    const target = plan.targets ? tf.tensor2d(plan.targets, [n, this.opts.train!.numClasses]) : tf.tensor1d(batch.labels, 'int32');
    return { input, target, labels: batch.labels, n, index };
  }

  /** Free the device copy of the normalization table (the loader is closed by its owner). */
  dispose(): void {
    this.lutTensor?.dispose();
    this.lutTensor = null;
  }

  private plan(labels: Int32Array, n: number, H: number, W: number): BatchPlan {
    const t = this.opts.train;
    if (!t) return { mix: null, erase: null, targets: null };
    const mix = t.mixup && n % 2 === 0 ? t.mixup.plan(labels, n, H, W, this.mixRng) : null;
    const erase = this.erasing ? planEraseBatch(n, H, W, 3, this.erasing, this.eraseRng) : null;
    let targets: Float32Array | null = null;
    if (mix) targets = mix.targets;
    else if (t.targets === 'soft') targets = mixupTarget(labels, t.numClasses, 1, t.smoothing);
    return { mix, erase, targets };
  }

  /** The host path: mix the uint8 batch, normalize through the table, erase. */
  private runHost(u8: Uint8Array, n: number, H: number, W: number, plan: BatchPlan, index: number): Float32Array {
    const mixed = plan.mix ? applyMixPlan(u8, plan.mix, H, W, 3) : u8;
    const x = normalizeInto(mixed, this.lut, new Float32Array(n * H * W * 3));
    if (plan.erase && this.erasing) {
      const per = H * W * 3;
      const posBase = index * this.loader.batchSize;
      for (let i = 0; i < n; i++) {
        if (plan.erase[i].length) fillErase(x, i * per, W, 3, plan.erase[i], this.erasing.mode, { key: this.noiseKey, pos: posBase + i });
      }
    }
    return x;
  }

  /** The per-image parameters of the device paths (layout: src/backend/kernels/webgpu/prepare_batch.ts). */
  private deviceParams(n: number, H: number, W: number, plan: BatchPlan, index: number): PrepareParams {
    if (!this.opts.train) return { n, height: H, width: W, train: null };
    const maxBoxes = this.erasing ? this.erasing.maxCount : 0;
    const S = 6 + 4 * maxBoxes;
    const F = 512 + 3 * maxBoxes;
    const ints = new Int32Array(n * S);
    const floats = new Float32Array(n * F);
    for (let i = 0; i < n; i++) {
      const mix = plan.mix;
      if (mix && mix.kind[i] !== 0) {
        ints[i * S] = mix.kind[i];
        if (mix.kind[i] === MIX_BLEND) mixTables(mix, i, floats, i * F);
        else ints.set(mix.boxes[i]!, i * S + 1);
      }
      const boxes = plan.erase?.[i] ?? [];
      ints[i * S + 5] = boxes.length;
      boxes.forEach((b, j) => {
        ints.set([b.top, b.left, b.height, b.width], i * S + 6 + 4 * j);
        if (b.colour) floats.set(b.colour, i * F + 512 + 3 * j);
      });
    }
    return {
      n, height: H, width: W,
      train: {
        ints, floats, maxBoxes,
        mode: this.erasing ? ERASE_MODE_CODE[this.erasing.mode] : 0,
        key: this.noiseKey,
        posBase: index * this.loader.batchSize,
      },
    };
  }
}

/** Kernel MambaoutPrepareBatch with the same inputs as prepareBatchOps. */
function runPrepareKernel(words: tf.Tensor1D, lut: tf.Tensor1D, p: PrepareParams): tf.Tensor4D {
  const t = p.train;
  return tf.tidy(() => {
    const inputs: Record<string, tf.Tensor> = { words, lut };
    if (t) {
      inputs.ints = tf.tensor1d(t.ints, 'int32');
      inputs.floats = tf.tensor1d(t.floats, 'float32');
    }
    const attrs = {
      n: p.n, height: p.height, width: p.width, train: t !== null, maxBoxes: t?.maxBoxes ?? 0,
      mode: t?.mode ?? 0, key: t?.key ?? 0, posBase: t?.posBase ?? 0,
    };
    return tf.engine().runKernel('MambaoutPrepareBatch', inputs as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor4D;
  });
}
