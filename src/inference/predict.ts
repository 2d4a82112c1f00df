/**
 * Classify images: the shared core of `mambaout-predict` and `mambaout-demo`.
 *
 * Pipeline per image, identical to validate (timm eval transform with the checkpoint's data config, or the model's
 * default cfg — 224 px, crop_pct 1.0, bicubic, ImageNet mean/std — for release weights, unless overridden):
 *   decodeRGB (sharp, PIL-compatible) -> evalTransform (Resize + CenterCrop + Normalize, NHWC float32)
 *   -> engine.infer on a batch -> softmax over the logits (float64) -> top-k.
 *
 * Files are processed in batches; while one batch runs through the engine the next one is already being decoded
 * (sharp decodes on libuv threads), so decoding and inference overlap. An image that cannot be decoded is
 * reported through `onSkip` and left out; the others are still classified.
 */
import { readdir, realpath, stat } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { UserError } from '../errors.js';
import { DecodeError, decodeRGB, type DecodeOptions, type RGBImage } from '../data/decode.js';
import { resolveDataConfig, type DataConfig } from '../data/config.js';
import { evalTransform } from '../data/transforms/eval.js';
import { loadClassifier, type LoadedClassifier, type LoadOptions } from './load.js';
import { resolveClassNames } from './labels.js';

/** One of the k most probable classes of an image. */
export interface TopKEntry {
  index: number;
  name: string;
  /** Softmax probability in [0, 1]. */
  probability: number;
}

/** What `mambaout-predict --json` prints per image. */
export interface Prediction {
  path: string;
  topk: TopKEntry[];
}

export interface SkippedImage {
  path: string;
  reason: string;
}

/** File extensions picked up when walking a folder (case-insensitive). Files named explicitly are always tried. */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp'];

export const DEFAULT_TOPK = 5;
export const DEFAULT_BATCH_SIZE = 16;

/**
 * Softmax of `n` logits starting at `offset`, in float64: exp(x - max) / sum, which cannot overflow and gives
 * probabilities that sum to 1 up to rounding.
 */
export function softmax(logits: ArrayLike<number>, offset = 0, n = logits.length - offset): Float64Array {
  if (n <= 0) throw new RangeError('softmax of an empty vector');
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, logits[offset + i]);
  const out = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(logits[offset + i] - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) out[i] /= sum;
  return out;
}

/**
 * The `k` most probable classes, most probable first; equal probabilities are ordered by class index.
 * `k` is clamped to the number of classes (as timm inference.py: topk = min(topk, num_classes)).
 */
export function topK(probs: ArrayLike<number>, k: number, names: readonly string[]): TopKEntry[] {
  const idx = Array.from({ length: probs.length }, (_, i) => i);
  idx.sort((a, b) => probs[b] - probs[a] || a - b);
  return idx.slice(0, Math.min(k, probs.length)).map((i) => ({ index: i, name: names[i] ?? `class_${i}`, probability: probs[i] }));
}

function isImageFile(name: string): boolean {
  return IMAGE_EXTENSIONS.includes(extname(name).toLowerCase());
}

/**
 * Expand the command-line inputs into image files: files are kept as given; folders are walked recursively
 * (sorted, symlinks followed, each real folder visited once) for files with an image extension.
 * A path that does not exist is a UserError; an empty folder is a warning (an error if nothing at all is found).
 */
export async function collectImagePaths(inputs: readonly string[], opts: { onWarning?: (msg: string) => void } = {}): Promise<string[]> {
  if (inputs.length === 0) throw new UserError('no images given; name one or more image files or folders');
  const out: string[] = [];
  const seenDirs = new Set<string>();
  const walk = async (dir: string): Promise<number> => {
    const real = await realpath(dir);
    if (seenDirs.has(real)) return 0;
    seenDirs.add(real);
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (e) {
      throw new UserError(`cannot read folder '${dir}' (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    let found = 0;
    for (const ent of entries) {
      const p = join(dir, ent.name);
      let isDir = ent.isDirectory();
      let isFile = ent.isFile();
      if (ent.isSymbolicLink()) {
        const st = await stat(p).catch(() => null); // dangling links are ignored
        isDir = Boolean(st?.isDirectory());
        isFile = Boolean(st?.isFile());
      }
      if (isDir) found += await walk(p);
      else if (isFile && isImageFile(ent.name)) {
        out.push(p);
        found++;
      }
    }
    return found;
  };
  for (const input of inputs) {
    let st;
    try {
      st = await stat(input);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') throw new UserError(`image or folder '${input}' does not exist`);
      throw new UserError(`cannot open '${input}' (${code ?? (e as Error).message})`);
    }
    if (st.isDirectory()) {
      const n = await walk(input);
      if (n === 0) opts.onWarning?.(`folder '${input}' holds no images (${IMAGE_EXTENSIONS.join(', ')})`);
    } else {
      out.push(input);
    }
  }
  if (out.length === 0) throw new UserError(`no images found in ${inputs.map((i) => `'${i}'`).join(', ')}`);
  return out;
}

export interface PredictorOptions extends LoadOptions {
  /** --img-size: square input size (default: the model's, 224). */
  imgSize?: number | null;
  /** --crop-pct (default: the model's, 1.0). */
  cropPct?: number | null;
  /** --interpolation (default: the model's, bicubic). */
  interpolation?: string | null;
  /** --class-map: one class name per line. */
  classMap?: string | null;
}

export interface PredictFilesOptions {
  topk?: number;
  batchSize?: number;
  /** Called for each image that could not be decoded (it is left out of the results). */
  onSkip?: (skipped: SkippedImage) => void;
  /** Called with each batch's predictions as soon as they are ready. */
  onBatch?: (predictions: Prediction[]) => void;
}

export function checkTopK(k: number): number {
  if (!Number.isInteger(k) || k < 1) throw new UserError(`--topk must be a positive integer, got ${k}`);
  return k;
}

type Decoded = { path: string; image: RGBImage } | { path: string; error: string };

/** A loaded classifier plus its data config and class names. Use `Predictor.create`. */
export class Predictor {
  private constructor(
    readonly loaded: LoadedClassifier,
    readonly dataConfig: DataConfig,
    readonly classNames: readonly string[],
  ) {}

  /** Load the weights and the engine, resolve the eval data config and the class names. */
  static async create(opts: PredictorOptions): Promise<Predictor> {
    const loaded = await loadClassifier(opts);
    try {
      // The checkpoint's own preprocessing and class names (it was trained with them); flags override.
      const dataConfig = resolveDataConfig(loaded.dataDefaults, {
        imgSize: opts.imgSize,
        cropPct: opts.cropPct,
        interpolation: opts.interpolation,
      });
      const names = opts.classMap ? resolveClassNames(loaded.numClasses, opts.classMap) : (loaded.classNames ?? resolveClassNames(loaded.numClasses));
      return new Predictor(loaded, dataConfig, names);
    } catch (e) {
      loaded.engine.dispose();
      throw e;
    }
  }

  /** Wrap an already loaded classifier (tests, embedding). */
  static fromLoaded(loaded: LoadedClassifier, dataConfig: DataConfig, classNames?: readonly string[]): Predictor {
    return new Predictor(loaded, dataConfig, classNames ?? resolveClassNames(loaded.numClasses));
  }

  get modelName(): string {
    return this.loaded.config.name;
  }

  /** Engine identifier, e.g. 'onnxruntime' or 'tfjs-wasm'. */
  get engineName(): string {
    return this.loaded.engine.name;
  }

  /** First log line: engine and backend in use. */
  get description(): string {
    return this.loaded.description;
  }

  get numClasses(): number {
    return this.loaded.numClasses;
  }

  /** Raw logits [n, numClasses] for decoded images (eval transform applied here). */
  async logits(images: readonly RGBImage[]): Promise<Float32Array> {
    const [, h, w] = this.dataConfig.inputSize;
    const per = h * w * 3;
    const batch = new Float32Array(images.length * per);
    images.forEach((img, i) => evalTransform(img, this.dataConfig, batch, i * per));
    return this.loaded.engine.infer(batch, images.length, h, w);
  }

  /** Top-k classes of each decoded image. */
  async classifyImages(images: readonly RGBImage[], topk = DEFAULT_TOPK): Promise<TopKEntry[][]> {
    checkTopK(topk);
    if (images.length === 0) return [];
    const logits = await this.logits(images);
    const c = this.numClasses;
    return images.map((_, i) => topK(softmax(logits, i * c, c), topk, this.classNames));
  }

  /**
   * How images are decoded for this predictor: the pixel limit (src/limits.ts unless given) and, since only the
   * eval resize size is needed, large JPEGs at reduced scale (decode.ts `reduceTo`).
   */
  decodeOptions(maxPixels?: number): DecodeOptions {
    const [, h, w] = this.dataConfig.inputSize;
    return { maxPixels, reduceTo: Math.ceil(Math.max(h, w) / (this.dataConfig.cropPct || 1)) };
  }

  /**
   * Top-k classes of one encoded image (JPEG, PNG, WebP, ...). Throws DecodeError when it cannot be decoded
   * (ImageTooLargeError above `maxPixels`, default limits.maxImagePixels).
   */
  async classifyBuffer(data: Uint8Array, name = '<upload>', topk = DEFAULT_TOPK, maxPixels?: number): Promise<TopKEntry[]> {
    const image = await decodeRGB(data, name, this.decodeOptions(maxPixels));
    return (await this.classifyImages([image], topk))[0];
  }

  /**
   * Classify files in batches, in input order. Undecodable images are passed to `onSkip` and left out.
   */
  async predictFiles(paths: readonly string[], opts: PredictFilesOptions = {}): Promise<{ predictions: Prediction[]; skipped: SkippedImage[] }> {
    const topk = checkTopK(opts.topk ?? DEFAULT_TOPK);
    const bs = opts.batchSize ?? DEFAULT_BATCH_SIZE;
    if (!Number.isInteger(bs) || bs < 1) throw new UserError(`batch size must be a positive integer, got ${bs}`);
    const predictions: Prediction[] = [];
    const skipped: SkippedImage[] = [];
    const decodeBatch = (start: number): Promise<Decoded[]> =>
      Promise.all(
        paths.slice(start, start + bs).map((path) =>
          decodeRGB(path, undefined, this.decodeOptions()).then(
            (image): Decoded => ({ path, image }),
            (e: unknown): Decoded => {
              if (e instanceof DecodeError) return { path, error: e.reason };
              throw e;
            },
          ),
        ),
      );
    let next: Promise<Decoded[]> | null = paths.length ? decodeBatch(0) : null;
    for (let start = 0; next; start += bs) {
      const decoded = await next;
      // Prefetch: decode the following batch while this one is transformed and inferred.
      next = start + bs < paths.length ? decodeBatch(start + bs) : null;
      const ok: { path: string; image: RGBImage }[] = [];
      for (const d of decoded) {
        if ('error' in d) {
          const s = { path: d.path, reason: d.error };
          skipped.push(s);
          opts.onSkip?.(s);
        } else ok.push(d);
      }
      let results: TopKEntry[][];
      try {
        results = await this.classifyImages(ok.map((d) => d.image), topk);
      } catch (e) {
        // Do not leave the prefetch promise unobserved.
        next?.catch(() => undefined);
        throw e;
      }
      const batchPreds = ok.map((d, i) => ({ path: d.path, topk: results[i] }));
      predictions.push(...batchPreds);
      if (batchPreds.length) opts.onBatch?.(batchPreds);
    }
    return { predictions, skipped };
  }

  dispose(): void {
    this.loaded.engine.dispose();
  }
}

/** Text lines for one prediction: the path, then `rank. probability  name (index)`. */
export function formatPrediction(p: Prediction): string {
  const lines = [p.path];
  p.topk.forEach((t, r) => {
    const pct = `${(t.probability * 100).toFixed(2)}%`.padStart(7);
    lines.push(`  ${String(r + 1).padStart(2)}. ${pct}  ${t.name} (${t.index})`);
  });
  return lines.join('\n');
}
