/**
 * timm validate.py on mambaout: top-1 / top-5 / loss of a model over an ImageNet-style folder.
 * The CLI (bin/validate.ts) is a thin shell over `validateOne` and `validateBulk`.
 *
 * How the work is fed (measurements in docs/BENCHMARKS.md):
 * - The weights are read first (a checkpoint's metadata carries its data config: input size, crop, mean/std), then
 *   the folder is scanned and the loader starts decoding before the engine is built: on the 2-core box the ONNX
 *   export and session creation take ~1 s of one core, during which the other decodes, up to a whole batch ahead
 *   (aheadImages). The onnxruntime path starts no tfjs backend (load.ts), runs no warm-up forward (the engine says
 *   it would not pay: InferenceEngine.warmUp), and its workers start without tsx's hooks thread when run from the
 *   sources (utils/worker_thread.ts). Start-up CPU per step: docs/BENCHMARKS.md "CPU box: validate start-up".
 * - The loader decodes small pieces (CHUNK images, a divisor of --batch-size): with torch's one-worker-per-batch,
 *   inference waits for a whole 256-image batch to be decoded by one worker before it starts, and the workers
 *   run dry while a long inference call holds the main thread. Logs and meters still count batches of -b.
 * - The loader hands over uint8 pixels. onnxruntime (CPU) gets them normalized on the host, one chunk per run;
 *   tfjs engines get them through the prefetcher (src/data/prefetch.ts: uint8 upload, normalization on the GPU on
 *   webgpu) and keep loss and hit counts on the device, read back at --log-freq and at the end.
 * - Buffers go back once their pixels are used (DataLoader.recycle; validate's joined batches and float input are
 *   reused too): no fresh 19 MB array per batch for the main thread's garbage collector.
 */
import { existsSync, promises as fsp, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { UserError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { Progress } from '../log/progress.js';
import { listModels } from '../models/registry.js';
import { resolveSplit, scanImageFolder } from '../data/folder.js';
import { describeDataConfig, resolveDataConfig, type DataConfig } from '../data/config.js';
import { DataLoader, type Batch } from '../data/loader.js';
import { normalizeInto, normalizeTable, PrefetchLoader, type BatchSource } from '../data/prefetch.js';
import { InFlight, readBack } from '../backend/fence.js';
import { crossEntropy } from '../train/loss.js';
import { accuracyCounts } from '../train/metrics.js';
import type { InferenceEngine } from '../engine/index.js';
import { classifierClasses, loadClassifier, readWeights, weightsDataDefaults, type EngineChoice, type LoadOptions } from './load.js';
import { RealLabels, readValidLabels, selectColumns } from './real_labels.js';
import { writeFileAtomic } from '../checkpoint/atomic.js';
import { padL, pyFixed, pyJson, pyRepr, pyRoundTo } from '../utils/pyformat.js';

export interface ValidateArgs {
  data: string;
  split: string;
  /** --model as given; null: the checkpoint's architecture, else the default model. */
  model: string | null;
  checkpoint: string;
  pretrained: boolean;
  pretrainedPath: string;
  useEma: boolean;
  batchSize: number;
  workers: number;
  imgSize: number | null;
  inputSize: number[] | null;
  cropPct: number | null;
  mean: number[] | null;
  std: number[] | null;
  interpolation: string;
  numClasses: number | null;
  classMap: string;
  logFreq: number;
  resultsFile: string;
  /** --real-labels: ImageNet-ReaL json (''/absent = none). */
  realLabels?: string;
  /** --valid-labels: text file of class indices (''/absent = none). */
  validLabels?: string;
  engine: EngineChoice;
  backend?: string;
  amp: boolean;
  threads?: number;
}

export interface ValidateResult {
  model: string;
  top1: number;
  top1_err: number;
  top5: number;
  top5_err: number;
  param_count: number;
  img_size: number;
  crop_pct: number;
  interpolation: string;
  images: number;
  skipped: number;
  loss: number;
  checkpoint?: string;
}


/** Images per loader task: the largest divisor of the batch size up to this (onnxruntime runs 8 at a time). */
const CHUNK = 16;

export function chunkSize(batchSize: number, max = CHUNK): number {
  for (let c = Math.min(max, batchSize); c > 1; c--) if (batchSize % c === 0) return c;
  return 1;
}

/** Decoded uint8 images the loader may hold ahead of inference, at most (see aheadImages). */
const AHEAD_BYTES = 64 << 20;

/**
 * How far the loader's workers may decode ahead of inference: one batch of B images (38.5 MB of uint8 at 224 px for
 * -b 256), at most AHEAD_BYTES. While the main thread exports the model and creates the session (single-threaded,
 * ~1-4 s of wall time on the 2-core box), torch's 2 chunks per worker (32 images per worker) can be decoded before the
 * engine is ready, and a core would then wait; a batch ahead leaves the workers work until the first chunk runs.
 * Measured on the shared 2-core box (docs/BENCHMARKS.md, 2026-11-30, load ~2): no difference within its noise
 * (41.5 img/s with start-up without it, 42.4 and 36.2 with it); kept because it cannot cost CPU, only memory.
 */
export function aheadImages(B: number, cfg: Pick<DataConfig, 'inputSize'>): number {
  const [, H, W] = cfg.inputSize;
  return Math.max(1, Math.min(B, Math.floor(AHEAD_BYTES / (H * W * 3))));
}

/** Loss sum and hit counts of one batch of `batchSize` images, and the running totals. */
interface Totals {
  lossSum: number;
  hit1: number;
  hit5: number;
  count: number;
}

/**
 * Chunks of the sequential loader (each inside one batch of B: chunk sizes divide B) regrouped into batches of B;
 * a batch is identified by the dataset index of its first image (sequential sampler: index = position).
 */
async function* regroup(
  chunks: AsyncIterator<Batch<Uint8Array>>, B: number, pool: Regrouped = { spare: [], joined: new WeakSet() },
  recycleChunk?: (b: Batch<Uint8Array>) => void,
): AsyncGenerator<Batch<Uint8Array>> {
  let parts: Batch<Uint8Array>[] = [];
  let id = -1;
  const join = (): Batch<Uint8Array> => {
    if (parts.length === 1) return parts[0];
    const [, h, w, c] = parts[0].shape;
    const n = parts.reduce((a, p) => a + p.shape[0], 0);
    const bytes = n * h * w * c;
    const reuse = pool.spare.findIndex((a) => a.byteLength >= bytes);
    const images = reuse >= 0 ? new Uint8Array(pool.spare.splice(reuse, 1)[0], 0, bytes) : new Uint8Array(bytes);
    pool.joined.add(images.buffer);
    let o = 0;
    for (const p of parts) {
      images.set(p.images.subarray(0, p.shape[0] * h * w * c), o);
      o += p.shape[0] * h * w * c;
      recycleChunk?.(p); // copied out: the loader may write the next chunk into it
    }
    return {
      images,
      shape: [n, h, w, c],
      labels: Int32Array.from(parts.flatMap((p) => [...p.labels])),
      paths: parts.flatMap((p) => p.paths),
      indices: parts.flatMap((p) => p.indices),
      skipped: parts.flatMap((p) => p.skipped),
    };
  };
  for (;;) {
    const r = await chunks.next();
    if (r.done) break;
    const b = Math.floor(r.value.indices[0] / B);
    if (b !== id && parts.length) {
      yield join();
      parts = [];
    }
    id = b;
    parts.push(r.value);
  }
  if (parts.length) yield join();
}

/** Buffers of joined batches given back after their upload, reused by regroup (one 19 MB array per batch otherwise). */
interface Regrouped {
  spare: ArrayBuffer[];
  /** the buffers regroup made (the others are the loader's) */
  joined: WeakSet<ArrayBuffer>;
}

/** Result fields that Python prints as floats (100.0, not 100). */
export const RESULT_FLOAT_KEYS: ReadonlySet<string> = new Set(['top1', 'top1_err', 'top5', 'top5_err', 'param_count', 'crop_pct', 'loss']);

/** The results as validate.py prints them after `--result` (json.dumps, indent 4). */
export function resultJson(result: ValidateResult | ValidateResult[]): string {
  return pyJson(result, RESULT_FLOAT_KEYS, 4);
}

/**
 * Folder labels -> the model's class indices by name, for a checkpoint that knows its class names: a validation
 * folder holding some of the training classes is scored against the right outputs. Null when a folder class is not
 * among the names (then the folder's own sorted order is used, as timm does).
 */
export function labelsByName(folderClasses: readonly string[], modelClasses: readonly string[]): Int32Array | null {
  const index = new Map(modelClasses.map((c, i) => [c, i]));
  const map = new Int32Array(folderClasses.length);
  for (let i = 0; i < folderClasses.length; i++) {
    const j = index.get(folderClasses[i]);
    if (j === undefined) return null;
    map[i] = j;
  }
  return map;
}

/** Cross-entropy (mean) and top-1/top-k hit counts of host logits [n, C] against labels. */
export function scoreLogits(logits: Float32Array, labels: ArrayLike<number>, numClasses: number, k = 5): { lossSum: number; hit1: number; hitK: number } {
  const n = labels.length;
  let lossSum = 0;
  let hit1 = 0;
  let hitK = 0;
  const kk = Math.min(k, numClasses);
  for (let i = 0; i < n; i++) {
    const row = logits.subarray(i * numClasses, (i + 1) * numClasses);
    let max = -Infinity;
    for (let c = 0; c < numClasses; c++) if (row[c] > max) max = row[c];
    let s = 0;
    for (let c = 0; c < numClasses; c++) s += Math.exp(row[c] - max);
    const y = labels[i];
    lossSum += Math.log(s) + max - row[y];
    // rank of the target: number of classes with a strictly larger logit (ties: earlier index wins, as topk)
    let rank = 0;
    for (let c = 0; c < numClasses; c++) if (row[c] > row[y] || (row[c] === row[y] && c < y)) rank++;
    if (rank === 0) hit1++;
    if (rank < kk) hitK++;
  }
  return { lossSum, hit1, hitK };
}

/** Benchmark hooks: called after each batch with the images done so far and when (performance.now()). */
export interface ValidateHooks {
  onBatch?: (images: number, batchIdx: number, timeMs: number) => void;
}

export async function validateOne(a: ValidateArgs, logger: Logger, hooks: ValidateHooks = {}): Promise<ValidateResult> {
  // Data before the engine: a missing folder fails first, and decoding starts while the engine is built (the
  // weights are read first: a checkpoint's metadata carries its own data config).
  if (!existsSync(a.data)) throw new UserError(`data folder '${a.data}' does not exist`);
  const loadOpts: LoadOptions = {
    model: a.model,
    checkpoint: a.checkpoint || undefined,
    pretrained: a.pretrained || !a.checkpoint,
    pretrainedPath: a.pretrainedPath || undefined,
    useEma: a.useEma,
    numClasses: a.numClasses,
    engine: a.engine,
    backend: a.backend,
    threads: a.threads,
    spinning: false, // the loader's threads decode on the same cores: a spinning thread only takes their time
    interactive: logger.interactive,
    log: (m) => logger.info(m),
  };
  const weights = await readWeights(loadOpts);
  // The checkpoint's own data config (input size, crop, mean/std); flags override as in timm.
  const cfg: DataConfig = resolveDataConfig(weightsDataDefaults(weights), {
    imgSize: a.imgSize,
    inputSize: a.inputSize,
    cropPct: a.cropPct,
    mean: a.mean,
    std: a.std,
    interpolation: a.interpolation || undefined,
  });
  const root = resolveSplit(a.data, a.split);
  const ds = await scanImageFolder(root, { classMap: a.classMap || undefined });
  const skippedPaths: string[] = [];
  const B = a.batchSize;
  const loader = new DataLoader<Uint8Array>({
    samples: ds.samples,
    transform: { kind: 'eval', ...cfg, output: 'uint8' },
    batchSize: chunkSize(B),
    workers: a.workers,
    prefetch: a.workers > 0 ? Math.max(2 * a.workers, Math.ceil(aheadImages(B, cfg) / chunkSize(B))) : undefined,
    onSkip: (p, why) => {
      skippedPaths.push(p);
      logger.warn(`skipping unreadable image ${p}: ${why}`);
    },
  });
  let started: AsyncIterator<Batch<Uint8Array>> | null = null;
  /** Start the workers (labels are final by then: the class-name mapping below rewrites them first). */
  const start = (): AsyncIterator<Batch<Uint8Array>> => {
    const it = loader[Symbol.asyncIterator]();
    const first = it.next();
    first.catch(() => undefined); // (a failure is rethrown when the loop reads it)
    started = (async function* () {
      const r = await first;
      if (r.done) return;
      yield r.value;
      yield* { [Symbol.asyncIterator]: () => it };
    })();
    return started;
  };
  // --valid-labels: the logits are cut to these columns and the folder's labels index them (timm)
  const numClassesOfWeights = classifierClasses(weights, a.numClasses);
  const validCols = a.validLabels ? await readValidLabels(a.validLabels, numClassesOfWeights) : null;
  const outClasses = validCols ? validCols.length : numClassesOfWeights;
  // A checkpoint that knows its class names maps the folder's classes by name (a subset of them included).
  const classNames = weights.meta?.label_names ?? null;
  const byName = !a.classMap && !validCols && classNames ? labelsByName(ds.classes, classNames) : null;
  if (byName) for (const smp of ds.samples) smp.label = byName[smp.label];
  const classesOk = byName || a.classMap || ds.classes.length === outClasses;
  if (classesOk && ds.classes.length <= outClasses) start();

  try {
    const classifier = await loadClassifier(loadOpts, weights);
    const { engine, numClasses } = classifier;
    try {
      logger.info(classifier.description);
      if (a.amp) logger.warn(`--amp: ${engine.name} runs in float32 here (no half precision on this path); continuing in float32.`);
      logger.info(`Loaded ${a.checkpoint ? `checkpoint '${a.checkpoint}'` : `pretrained weights '${classifier.source}'`}`);
      const modelName = classifier.config.name;
      logger.info(`Model ${modelName} created, param count: ${classifier.paramCount}`);
      for (const line of describeDataConfig(cfg)) logger.info(line);
      if (byName) {
        logger.info(`Matched the ${ds.classes.length} class folder(s) to the checkpoint's class names`);
      } else if (!a.classMap && ds.classes.length !== outClasses) {
        throw new UserError(
          `the dataset in ${root} has ${ds.classes.length} classes but the model has ${outClasses}` +
            `${validCols ? ' kept by --valid-labels' : ' (from the checkpoint or --num-classes)'}; pass --class-map to map folder names to the model's class indices`,
        );
      }
      if (ds.classes.length > outClasses) {
        throw new UserError(`the class map has ${ds.classes.length} classes but the model has ${outClasses}${validCols ? ' kept by --valid-labels' : ''}`);
      }
      const [, H, W] = cfg.inputSize;
      const real = a.realLabels ? await RealLabels.load(a.realLabels) : null;
      // timm runs one warm-up forward on random input before timing ("reduce variability of first batch time"): on a
      // GPU it pays for kernel compilation once, as it does for tfjs; the engine says whether it pays (onnxruntime:
      // no, its first run at the loop's shape costs the same after a warm-up, which is then pure cost).
      if (engine.warmUp !== false) await engine.infer(new Float32Array(Math.min(B, 2) * H * W * 3), Math.min(B, 2), H, W);

      const nBatches = Math.ceil(ds.samples.length / B);
      const progress = new Progress(logger, nBatches, 'Validate');
      const t0 = performance.now();
      let end = t0;
      let timeSum = 0;
      let batchIdx = -1;
      const totals: Totals = { lossSum: 0, hit1: 0, hit5: 0, count: 0 };
      /** Account one finished batch (n images) and log every --log-freq batches, as validate.py. */
      const finishBatch = (n: number, s: { lossSum: number; hit1: number; hitK: number } | null, share = 1): void => {
        batchIdx++;
        const now = performance.now();
        const dt = (share * (now - end)) / 1000; // a read of k batches at once gives each 1/k of the time since the last
        end = share === 1 ? now : end + share * (now - end);
        timeSum += dt;
        progress.update(1, n);
        hooks.onBatch?.(totals.count, batchIdx, end);
        if (s && batchIdx % a.logFreq === 0) {
          const avgT = timeSum / (batchIdx + 1);
          const c = totals.count;
          logger.info(
            `Test: [${padL(String(batchIdx), 4)}/${nBatches}]  Time: ${pyFixed(dt, 3)}s (${pyFixed(avgT, 3)}s, ${padL(pyFixed(B / avgT, 2), 7)}/s)  ` +
              `Loss: ${padL(pyFixed(s.lossSum / n, 4), 7)} (${padL(pyFixed(totals.lossSum / c, 4), 6)})  ` +
              `Acc@1: ${padL(pyFixed((100 * s.hit1) / n, 3), 7)} (${padL(pyFixed((100 * totals.hit1) / c, 3), 7)})  ` +
              `Acc@5: ${padL(pyFixed((100 * s.hitK) / n, 3), 7)} (${padL(pyFixed((100 * totals.hit5) / c, 3), 7)})`,
            { event: 'validate_batch', step: batchIdx, steps: nBatches, loss: totals.lossSum / c, top1: (100 * totals.hit1) / c, top5: (100 * totals.hit5) / c, img_per_sec: B / avgT },
          );
        }
      };
      const it = started ?? start();
      try {
        // --valid-labels and --real-labels need the logits on the host (column selection, per-file ReaL scoring).
        if (engine.forward && !validCols && !real) {
          await validateOnDevice(engine, it, B, nBatches, cfg, numClasses, a.logFreq, totals, finishBatch, (b) => loader.recycle(b));
        } else {
          const score = (raw: Float32Array, n: number, batch: Batch<Uint8Array>) => {
            const logits = validCols ? selectColumns(raw, n, numClasses, validCols) : raw;
            real?.addResult(logits, outClasses, batch.paths);
            return scoreLogits(logits, batch.labels, outClasses, 5);
          };
          await validateOnHost(engine, it, B, cfg, score, totals, finishBatch, (b) => loader.recycle(b));
        }
      } finally {
        progress.stop();
      }
      const { count, hit1, hit5, lossSum } = totals;
      if (count === 0) throw new UserError(`no readable images in ${root} (${skippedPaths.length} skipped)`);
      const secs = (performance.now() - t0) / 1000;
      // ReaL mode replaces top-1/top-5 at the end (timm); the loss stays the folder labels'.
      const top1 = pyRoundTo(real ? real.accuracy(1) : (100 * hit1) / count, 4);
      const top5 = pyRoundTo(real ? real.accuracy(5) : (100 * hit5) / count, 4);
      const result: ValidateResult = {
        model: modelName,
        top1,
        top1_err: pyRoundTo(100 - top1, 4),
        top5,
        top5_err: pyRoundTo(100 - top5, 4),
        param_count: pyRoundTo(classifier.paramCount / 1e6, 2),
        img_size: W,
        crop_pct: cfg.cropPct,
        interpolation: cfg.interpolation,
        images: count,
        skipped: skippedPaths.length,
        loss: pyRoundTo(lossSum / count, 6),
      };
      logger.info(` * Acc@1 ${pyFixed(top1, 3)} (${pyFixed(result.top1_err, 3)}) Acc@5 ${pyFixed(top5, 3)} (${pyFixed(result.top5_err, 3)})`, {
        event: 'validate_result', model: modelName, top1, top5, loss: result.loss, images: count,
      });
      logger.info(`${count} images in ${pyFixed(secs, 1)} s (${pyFixed(count / secs, 1)} img/s)${skippedPaths.length ? `, ${skippedPaths.length} unreadable image(s) skipped` : ''}`);
      return result;
    } finally {
      engine.dispose();
    }
  } finally {
    await (started as AsyncIterator<Batch<Uint8Array>> | null)?.return?.(undefined);
    await loader.close();
  }
}

type FinishBatch = (n: number, s: { lossSum: number; hit1: number; hitK: number } | null, share?: number) => void;

/**
 * CPU engines (onnxruntime): each chunk is normalized on the host and run as it arrives (a run holds the main
 * thread, so short runs keep the loader's workers supplied); results are summed per batch of B.
 */
async function validateOnHost(
  engine: InferenceEngine, chunks: AsyncIterator<Batch<Uint8Array>>, B: number, cfg: DataConfig,
  score: (logits: Float32Array, n: number, chunk: Batch<Uint8Array>) => { lossSum: number; hit1: number; hitK: number },
  totals: Totals, finish: FinishBatch, recycleChunk?: (b: Batch<Uint8Array>) => void,
): Promise<void> {
  const [, H, W] = cfg.inputSize;
  const lut = normalizeTable(cfg.mean, cfg.std);
  let x: Float32Array | null = null;
  let cur = { id: -1, n: 0, lossSum: 0, hit1: 0, hitK: 0 };
  for (;;) {
    const r = await chunks.next();
    if (r.done) break;
    const c = r.value;
    const id = Math.floor(c.indices[0] / B);
    if (id !== cur.id && cur.n) {
      finish(cur.n, cur);
      cur = { id, n: 0, lossSum: 0, hit1: 0, hitK: 0 };
    }
    cur.id = id;
    const n = c.shape[0];
    // one float buffer for every full chunk (each run is awaited before the next), the chunk's bytes back to the loader
    if (!x || x.length !== n * H * W * 3) x = new Float32Array(n * H * W * 3);
    normalizeInto(c.images, lut, x);
    recycleChunk?.(c);
    const logits = await engine.infer(x, n, H, W);
    const s = score(logits, n, c);
    cur.n += n;
    cur.lossSum += s.lossSum;
    cur.hit1 += s.hit1;
    cur.hitK += s.hitK;
    totals.lossSum += s.lossSum;
    totals.hit1 += s.hit1;
    totals.hit5 += s.hitK;
    totals.count += n;
  }
  if (cur.n) finish(cur.n, cur);
}

/**
 * tfjs engines: batches of B through the prefetcher (uint8 upload, normalization on the device), loss sum and
 * hit counts kept on the device and read at --log-freq and at the end; at most 2 batches in flight.
 */
async function validateOnDevice(
  engine: InferenceEngine, chunks: AsyncIterator<Batch<Uint8Array>>, B: number, nBatches: number, cfg: DataConfig,
  numClasses: number, logFreq: number, totals: Totals, finish: FinishBatch, recycleChunk?: (b: Batch<Uint8Array>) => void,
): Promise<void> {
  const pool: Regrouped = { spare: [], joined: new WeakSet() };
  const source: BatchSource = {
    batchSize: B, length: nBatches, setEpoch: () => undefined,
    [Symbol.asyncIterator]: () => regroup(chunks, B, pool, recycleChunk),
    // after the upload: a joined batch's buffer goes back to regroup, a batch that was a single chunk to the loader
    recycle: (b) => {
      const buf = b.images.buffer as ArrayBuffer;
      if (!pool.joined.has(buf)) recycleChunk?.(b);
      else if (pool.spare.length < 4) pool.spare.push(buf);
    },
  };
  const prefetch = new PrefetchLoader(source, { mean: cfg.mean, std: cfg.std });
  const inFlight = new InFlight(2);
  const k = Math.min(5, numClasses);
  const unread: { stats: tf.Tensor1D; n: number; log: boolean }[] = [];
  /** Read the pending batches; the per-batch log needs each logged batch's own values. */
  const read = async (): Promise<void> => {
    if (!unread.length) return;
    const items = unread.splice(0);
    const v = await readBack(items.map((u) => u.stats));
    items.forEach((u, i) => {
      const s = { lossSum: v[3 * i] * u.n, hit1: v[3 * i + 1], hitK: v[3 * i + 2] };
      totals.lossSum += s.lossSum;
      totals.hit1 += s.hit1;
      totals.hit5 += s.hitK;
      totals.count += u.n;
      finish(u.n, u.log ? s : null, 1 / (items.length - i));
    });
  };
  let idx = -1;
  try {
    for await (const { input, target, n } of prefetch) {
      idx++;
      try {
        const stats = tf.tidy(() => {
          const logits = engine.forward!(input);
          return tf.concat([crossEntropy(logits, target).reshape([1]), accuracyCounts(logits, target, [1, k])]) as tf.Tensor1D;
        });
        unread.push({ stats, n, log: idx % logFreq === 0 });
      } finally {
        tf.dispose([input, target]);
      }
      await inFlight.push();
      if (idx % logFreq === 0) await read();
    }
    await read();
  } finally {
    for (const u of unread) u.stats.dispose();
    prefetch.dispose();
  }
}

/**
 * Models named by `--model`: a name, 'all', a wildcard, or a text file with one name per line. No --model (null):
 * one job whose model comes from the checkpoint (or the default model).
 */
export async function expandModels(spec: string | null): Promise<{ names: (string | null)[]; bulk: boolean }> {
  if (spec === null || spec === '') return { names: [null], bulk: false };
  if (spec === 'all') return { names: listModels().filter((n) => n !== 'mambaout_test'), bulk: true };
  if (spec.includes('*')) {
    const names = listModels(spec);
    if (!names.length) throw new UserError(`no model matches '${spec}'; known models: ${listModels().join(', ')}`);
    return { names, bulk: true };
  }
  if (existsSync(spec) && statSync(spec).isFile()) {
    const names = (await fsp.readFile(spec, 'utf8')).split('\n').map((l) => l.trim()).filter(Boolean);
    if (!names.length) throw new UserError(`model list file '${spec}' is empty`);
    return { names, bulk: true };
  }
  return { names: [spec], bulk: false };
}

/** Checkpoint files of a directory (bulk mode): *.pth.tar, *.pth, *.safetensors. */
export async function checkpointsIn(dir: string): Promise<string[]> {
  const files = (await fsp.readdir(dir)).filter((f) => /\.(pth\.tar|pth|safetensors)$/.test(f)).sort();
  return files.map((f) => join(dir, f));
}

/** Write results as CSV (header = keys of the first result) or JSON, by extension; atomically. Floats print as Python's. */
export async function writeResults(file: string, results: ValidateResult[]): Promise<void> {
  if (extname(file).toLowerCase() === '.json') {
    await writeFileAtomic(file, resultJson(results) + '\n');
    return;
  }
  if (!results.length) {
    await writeFileAtomic(file, '');
    return;
  }
  const keys = Object.keys(results[0]);
  const esc = (k: string, v: unknown) => {
    const s = v === undefined || v === null ? '' : typeof v === 'number' && RESULT_FLOAT_KEYS.has(k) ? pyRepr(v) : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [keys.join(','), ...results.map((r) => keys.map((k) => esc(k, (r as unknown as Record<string, unknown>)[k])).join(','))];
  await writeFileAtomic(file, lines.join('\n') + '\n');
}
