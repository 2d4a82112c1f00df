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
const padL = (s: string, n: number): string => s.padStart(n);

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
    logger.info(`Model ${a.model} created, param count: ${classifier.paramCount}`);
    const cfg: DataConfig = resolveDataConfig(classifier.config.defaultCfg, {
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
    logger.info(`\tmean: (${cfg.mean.join(', ')})`);
    logger.info(`\tstd: (${cfg.std.join(', ')})`);
    logger.info(`\tcrop_pct: ${Number.isInteger(cfg.cropPct) ? cfg.cropPct.toFixed(1) : cfg.cropPct}`);

    if (!existsSync(a.data)) throw new UserError(`data folder '${a.data}' does not exist`);
    const root = resolveSplit(a.data, a.split);
    const ds = await scanImageFolder(root, { classMap: a.classMap || undefined });
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
        const logits = await engine.infer(batch.images, n, H, W);
        const s = scoreLogits(logits, batch.labels, numClasses, 5);
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
            `Test: [${padL(String(batchIdx), 4)}/${loader.length}]  Time: ${dt.toFixed(3)}s (${avgT.toFixed(3)}s, ${padL((a.batchSize / avgT).toFixed(2), 7)}/s)  ` +
              `Loss: ${padL((s.lossSum / n).toFixed(4), 7)} (${padL((lossSum / count).toFixed(4), 6)})  ` +
              `Acc@1: ${padL(((100 * s.hit1) / n).toFixed(3), 7)} (${padL(((100 * hit1) / count).toFixed(3), 7)})  ` +
              `Acc@5: ${padL(((100 * s.hitK) / n).toFixed(3), 7)} (${padL(((100 * hit5) / count).toFixed(3), 7)})`,
          );
        }
      }
    } finally {
      progress.stop();
      await loader.close();
    }
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
