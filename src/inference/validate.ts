/**
 * timm validate.py on mambaout: top-1 / top-5 / loss of a model over an ImageNet-style folder.
 * The CLI (bin/validate.ts) is a thin shell over `validateOne` and `validateBulk`.
 */
import { existsSync, promises as fsp, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { UserError } from '../errors.js';
import type { Logger } from '../log/logger.js';
import { Progress } from '../log/progress.js';
import { listModels } from '../models/registry.js';
import { resolveSplit, scanImageFolder } from '../data/folder.js';
import { resolveDataConfig, type DataConfig } from '../data/transforms/eval.js';
import { DataLoader } from '../data/loader.js';
import { loadClassifier, type EngineChoice } from './load.js';
import { RealLabels, readValidLabels, selectColumns } from './real_labels.js';
import { writeFileAtomic } from '../checkpoint/atomic.js';
import { pyFixed, pyJson, pyRepr, pyRoundTo } from '../utils/pyformat.js';

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

const round = pyRoundTo; // Python's round(x, n)
const padL = (s: string, n: number): string => s.padStart(n);

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

export async function validateOne(a: ValidateArgs, logger: Logger): Promise<ValidateResult> {
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
    interactive: logger.interactive,
    log: (m) => logger.info(m),
  });
  const { engine, numClasses } = classifier;
  try {
    logger.info(classifier.description);
    if (a.amp) logger.warn(`--amp: ${engine.name} runs in float32 here (no half precision on this path); continuing in float32.`);
    logger.info(`Loaded ${a.checkpoint ? `checkpoint '${a.checkpoint}'` : `pretrained weights '${classifier.source}'`}`);
    const modelName = classifier.config.name;
    logger.info(`Model ${modelName} created, param count: ${classifier.paramCount}`);
    // The checkpoint's own data config (input size, crop, mean/std); flags override as in timm.
    const cfg: DataConfig = resolveDataConfig(classifier.dataDefaults, {
      imgSize: a.imgSize,
      inputSize: a.inputSize,
      cropPct: a.cropPct,
      mean: a.mean,
      std: a.std,
      interpolation: a.interpolation || undefined,
    });
    logger.info('Data processing configuration for current model + dataset:');
    logger.info(`\tinput_size: (${cfg.inputSize.join(', ')})`);
    logger.info(`\tinterpolation: ${cfg.interpolation}`);
    logger.info(`\tmean: (${cfg.mean.map(pyRepr).join(', ')})`);
    logger.info(`\tstd: (${cfg.std.map(pyRepr).join(', ')})`);
    logger.info(`\tcrop_pct: ${pyRepr(cfg.cropPct)}`);

    if (!existsSync(a.data)) throw new UserError(`data folder '${a.data}' does not exist`);
    const root = resolveSplit(a.data, a.split);
    const ds = await scanImageFolder(root, { classMap: a.classMap || undefined });
    // --valid-labels: the logits are cut to these columns and the folder's labels index them (timm)
    const validCols = a.validLabels ? await readValidLabels(a.validLabels, numClasses) : null;
    const outClasses = validCols ? validCols.length : numClasses;
    // A checkpoint that knows its class names maps the folder's classes by name (a subset of them included).
    const byName = !a.classMap && !validCols && classifier.classNames ? labelsByName(ds.classes, classifier.classNames) : null;
    if (byName) {
      for (const smp of ds.samples) smp.label = byName[smp.label];
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
    // timm runs one warm-up forward on random input before timing.
    await engine.infer(new Float32Array(Math.min(a.batchSize, 2) * H * W * 3), Math.min(a.batchSize, 2), H, W);

    const skippedPaths: string[] = [];
    const loader = new DataLoader<Float32Array>({
      samples: ds.samples,
      transform: { kind: 'eval', ...cfg },
      batchSize: a.batchSize,
      workers: a.workers,
      onSkip: (p, why) => {
        skippedPaths.push(p);
        logger.warn(`skipping unreadable image ${p}: ${why}`);
      },
    });
    let lossSum = 0;
    let hit1 = 0;
    let hit5 = 0;
    let count = 0;
    let batchIdx = -1;
    const progress = new Progress(logger, loader.length, 'Validate');
    const t0 = performance.now();
    let end = t0;
    let timeSum = 0;
    try {
      for await (const batch of loader) {
        batchIdx++;
        const n = batch.labels.length;
        const raw = await engine.infer(batch.images, n, H, W);
        const logits = validCols ? selectColumns(raw, n, numClasses, validCols) : raw;
        real?.addResult(logits, outClasses, batch.paths);
        const s = scoreLogits(logits, batch.labels, outClasses, 5);
        lossSum += s.lossSum;
        hit1 += s.hit1;
        hit5 += s.hitK;
        count += n;
        const dt = (performance.now() - end) / 1000;
        end = performance.now();
        timeSum += dt;
        const avgT = timeSum / (batchIdx + 1);
        progress.update(1, n);
        if (batchIdx % a.logFreq === 0) {
          logger.info(
            `Test: [${padL(String(batchIdx), 4)}/${loader.length}]  Time: ${pyFixed(dt, 3)}s (${pyFixed(avgT, 3)}s, ${padL(pyFixed(a.batchSize / avgT, 2), 7)}/s)  ` +
              `Loss: ${padL(pyFixed(s.lossSum / n, 4), 7)} (${padL(pyFixed(lossSum / count, 4), 6)})  ` +
              `Acc@1: ${padL(pyFixed((100 * s.hit1) / n, 3), 7)} (${padL(pyFixed((100 * hit1) / count, 3), 7)})  ` +
              `Acc@5: ${padL(pyFixed((100 * s.hitK) / n, 3), 7)} (${padL(pyFixed((100 * hit5) / count, 3), 7)})`,
            { event: 'validate_batch', step: batchIdx, steps: loader.length, loss: lossSum / count, top1: (100 * hit1) / count, top5: (100 * hit5) / count, img_per_sec: a.batchSize / avgT },
          );
        }
      }
    } finally {
      progress.stop();
      await loader.close();
    }
    if (count === 0) throw new UserError(`no readable images in ${root} (${skippedPaths.length} skipped)`);
    const secs = (performance.now() - t0) / 1000;
    // ReaL mode replaces top-1/top-5 at the end (timm); the loss stays the folder labels'.
    const top1 = round(real ? real.accuracy(1) : (100 * hit1) / count, 4);
    const top5 = round(real ? real.accuracy(5) : (100 * hit5) / count, 4);
    const result: ValidateResult = {
      model: modelName,
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
    logger.info(` * Acc@1 ${pyFixed(top1, 3)} (${pyFixed(result.top1_err, 3)}) Acc@5 ${pyFixed(top5, 3)} (${pyFixed(result.top5_err, 3)})`, {
      event: 'validate_result', model: modelName, top1, top5, loss: result.loss, images: count,
    });
    logger.info(`${count} images in ${pyFixed(secs, 1)} s (${pyFixed(count / secs, 1)} img/s)${skippedPaths.length ? `, ${skippedPaths.length} unreadable image(s) skipped` : ''}`);
    return result;
  } finally {
    engine.dispose();
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
