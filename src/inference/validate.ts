/**
 * timm validate.py on mambaout: top-1 / top-5 / loss of a model over an ImageNet-style folder.
 * The CLI (bin/validate.ts) is a thin shell over `validateOne` and `validateBulk`.
 *
 * How the work is fed (measurements in docs/BENCHMARKS.md):
 * - The folder is scanned and the loader starts decoding before the model is loaded: on the 2-core box the
 *   ONNX export, session creation and warm-up take ~1-2 s of one core, during which the other decodes.
 * - The loader decodes small pieces (CHUNK images, a divisor of --batch-size): with torch's one-worker-per-batch,
 *   inference waits for a whole 256-image batch to be decoded by one worker before it starts, and the workers
 *   run dry while a long inference call holds the main thread. Logs and meters still count batches of -b.
 * - The loader hands over uint8 pixels. onnxruntime (CPU) gets them normalized on the host, one chunk per run;
 *   tfjs engines get them through the prefetcher (src/data/prefetch.ts: uint8 upload, normalization on the GPU on
 *   webgpu) and keep loss and hit counts on the device, read back at --log-freq and at the end.
 */
import { existsSync, promises as fsp, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { Progress } from '../log/progress.js';
import { getModelConfig, listModels } from '../models/registry.js';
import { resolveSplit, scanImageFolder } from '../data/folder.js';
import { describeDataConfig, resolveDataConfig, type DataConfig } from '../data/config.js';
import { DataLoader, type Batch } from '../data/loader.js';
import { normalizeInto, normalizeTable, PrefetchLoader, type BatchSource } from '../data/prefetch.js';
import { InFlight } from '../backend/fence.js';
import { crossEntropy } from '../train/loss.js';
import { accuracyCounts } from '../train/metrics.js';
import { padL } from '../utils/format.js';
import type { InferenceEngine } from '../engine/index.js';
import { loadClassifier, type EngineChoice } from './load.js';
import { writeFileAtomic } from '../checkpoint/atomic.js';

export interface ValidateArgs {
  data: string;
  split: string;
  model: string;
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

const round = (v: number, d: number): number => {
  const f = 10 ** d;
  return Math.round(v * f) / f;
};

/** Images per loader task: the largest divisor of the batch size up to this (onnxruntime runs 8 at a time). */
const CHUNK = 16;

export function chunkSize(batchSize: number, max = CHUNK): number {
  for (let c = Math.min(max, batchSize); c > 1; c--) if (batchSize % c === 0) return c;
  return 1;
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
async function* regroup(chunks: AsyncIterator<Batch<Uint8Array>>, B: number): AsyncGenerator<Batch<Uint8Array>> {
  let parts: Batch<Uint8Array>[] = [];
  let id = -1;
  const join = (): Batch<Uint8Array> => {
    if (parts.length === 1) return parts[0];
    const [, h, w, c] = parts[0].shape;
    const n = parts.reduce((a, p) => a + p.shape[0], 0);
    const images = new Uint8Array(n * h * w * c);
    let o = 0;
    for (const p of parts) {
      images.set(p.images.subarray(0, p.shape[0] * h * w * c), o);
      o += p.shape[0] * h * w * c;
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
  // Data before the model: a missing folder fails first, and decoding starts while the model loads.
  const modelConfig = getModelConfig(a.model);
  const cfg: DataConfig = resolveDataConfig(modelConfig.defaultCfg, {
    imgSize: a.imgSize,
    inputSize: a.inputSize,
    cropPct: a.cropPct,
    mean: a.mean,
    std: a.std,
    interpolation: a.interpolation || undefined,
  });
  if (!existsSync(a.data)) throw new UserError(`data folder '${a.data}' does not exist`);
  const root = resolveSplit(a.data, a.split);
  const ds = await scanImageFolder(root, { classMap: a.classMap || undefined });
  const skippedPaths: string[] = [];
  const B = a.batchSize;
  const loader = new DataLoader<Uint8Array>({
    samples: ds.samples,
    transform: { kind: 'eval', ...cfg, output: 'uint8' },
    batchSize: chunkSize(B),
    workers: a.workers,
    onSkip: (p, why) => {
      skippedPaths.push(p);
      logger.warn(`skipping unreadable image ${p}: ${why}`);
    },
  });
  const chunks = loader[Symbol.asyncIterator]();
  const first = chunks.next(); // starts the workers
  first.catch(() => undefined); // (a failure is rethrown when the loop reads it)
  const started: AsyncIterator<Batch<Uint8Array>> = (async function* () {
    const r = await first;
    if (r.done) return;
    yield r.value;
    yield* { [Symbol.asyncIterator]: () => chunks };
  })();

  try {
    const classifier = await loadClassifier({
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
    });
    const { engine, numClasses } = classifier;
    try {
      logger.info(classifier.description);
      if (a.amp) logger.warn(`--amp: ${engine.name} runs in float32 here (no half precision on this path); continuing in float32.`);
      logger.info(`Loaded ${a.checkpoint ? `checkpoint '${a.checkpoint}'` : `pretrained weights '${classifier.source}'`}`);
      logger.info(`Model ${a.model} created, param count: ${classifier.paramCount}`);
      for (const line of describeDataConfig(cfg)) logger.info(line);
      if (!a.classMap && ds.classes.length !== numClasses) {
        throw new UserError(
          `the dataset in ${root} has ${ds.classes.length} classes but the model has ${numClasses} (from the checkpoint or --num-classes); ` +
            `pass --class-map to map folder names to the model's class indices`,
        );
      }
      if (ds.classes.length > numClasses) {
        throw new UserError(`the class map has ${ds.classes.length} classes but the model has ${numClasses}`);
      }
      const [, H, W] = cfg.inputSize;
      // timm runs one warm-up forward on random input before timing.
      await engine.infer(new Float32Array(Math.min(B, 2) * H * W * 3), Math.min(B, 2), H, W);

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
          logger.info(
            `Test: [${padL(String(batchIdx), 4)}/${nBatches}]  Time: ${dt.toFixed(3)}s (${avgT.toFixed(3)}s, ${padL((B / avgT).toFixed(2), 7)}/s)  ` +
              `Loss: ${padL((s.lossSum / n).toFixed(4), 7)} (${padL((totals.lossSum / totals.count).toFixed(4), 6)})  ` +
              `Acc@1: ${padL(((100 * s.hit1) / n).toFixed(3), 7)} (${padL(((100 * totals.hit1) / totals.count).toFixed(3), 7)})  ` +
              `Acc@5: ${padL(((100 * s.hitK) / n).toFixed(3), 7)} (${padL(((100 * totals.hit5) / totals.count).toFixed(3), 7)})`,
          );
        }
      };
      try {
        if (engine.forward) {
          await validateOnDevice(engine, started, B, nBatches, cfg, numClasses, a.logFreq, totals, finishBatch);
        } else {
          await validateOnHost(engine, started, B, cfg, numClasses, totals, finishBatch);
        }
      } finally {
        progress.stop();
      }
      const { count, hit1, hit5, lossSum } = totals;
      if (count === 0) throw new UserError(`no readable images in ${root} (${skippedPaths.length} skipped)`);
      const secs = (performance.now() - t0) / 1000;
      const top1 = round((100 * hit1) / count, 4);
      const top5 = round((100 * hit5) / count, 4);
      const result: ValidateResult = {
        model: a.model,
        top1,
        top1_err: round(100 - top1, 4),
        top5,
        top5_err: round(100 - top5, 4),
        param_count: round(classifier.paramCount / 1e6, 2),
        img_size: W,
        crop_pct: cfg.cropPct,
        interpolation: cfg.interpolation,
        images: count,
        skipped: skippedPaths.length,
        loss: round(lossSum / count, 6),
      };
      logger.info(` * Acc@1 ${top1.toFixed(3)} (${result.top1_err.toFixed(3)}) Acc@5 ${top5.toFixed(3)} (${result.top5_err.toFixed(3)})`);
      logger.info(`${count} images in ${secs.toFixed(1)} s (${(count / secs).toFixed(1)} img/s)${skippedPaths.length ? `, ${skippedPaths.length} unreadable image(s) skipped` : ''}`);
      return result;
    } finally {
      engine.dispose();
    }
  } finally {
    await started.return?.(undefined);
    await loader.close();
  }
}

type FinishBatch = (n: number, s: { lossSum: number; hit1: number; hitK: number } | null, share?: number) => void;

/**
 * CPU engines (onnxruntime): each chunk is normalized on the host and run as it arrives (a run holds the main
 * thread, so short runs keep the loader's workers supplied); results are summed per batch of B.
 */
async function validateOnHost(
  engine: InferenceEngine, chunks: AsyncIterator<Batch<Uint8Array>>, B: number, cfg: DataConfig, numClasses: number,
  totals: Totals, finish: FinishBatch,
): Promise<void> {
  const [, H, W] = cfg.inputSize;
  const lut = normalizeTable(cfg.mean, cfg.std);
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
    const logits = await engine.infer(normalizeInto(c.images, lut, new Float32Array(n * H * W * 3)), n, H, W);
    const s = scoreLogits(logits, c.labels, numClasses, 5);
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
  numClasses: number, logFreq: number, totals: Totals, finish: FinishBatch,
): Promise<void> {
  const source: BatchSource = { batchSize: B, length: nBatches, setEpoch: () => undefined, [Symbol.asyncIterator]: () => regroup(chunks, B) };
  const prefetch = new PrefetchLoader(source, { mean: cfg.mean, std: cfg.std });
  const inFlight = new InFlight(2);
  const k = Math.min(5, numClasses);
  const unread: { stats: tf.Tensor1D; n: number; log: boolean }[] = [];
  /** Read the pending batches; the per-batch log needs each logged batch's own values. */
  const read = async (): Promise<void> => {
    if (!unread.length) return;
    const items = unread.splice(0);
    const all = tf.concat(items.map((u) => u.stats));
    let v: Float32Array;
    try {
      v = (await all.data()) as Float32Array;
    } finally {
      all.dispose();
      for (const u of items) u.stats.dispose();
    }
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

/** Models named by `--model`: a name, 'all', a wildcard, or a text file with one name per line. */
export async function expandModels(spec: string): Promise<{ names: string[]; bulk: boolean }> {
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

/** Write results as CSV (header = keys of the first result) or JSON, by extension; atomically. */
export async function writeResults(file: string, results: ValidateResult[]): Promise<void> {
  if (extname(file).toLowerCase() === '.json') {
    await writeFileAtomic(file, JSON.stringify(results, null, 4) + '\n');
    return;
  }
  if (!results.length) {
    await writeFileAtomic(file, '');
    return;
  }
  const keys = Object.keys(results[0]);
  const esc = (v: unknown) => {
    const s = v === undefined || v === null ? '' : String(v);
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  const lines = [keys.join(','), ...results.map((r) => keys.map((k) => esc((r as unknown as Record<string, unknown>)[k])).join(','))];
  await writeFileAtomic(file, lines.join('\n') + '\n');
}
