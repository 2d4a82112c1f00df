/**
 * timm's training transform (`transforms_imagenet_train` / `transforms_noaug_train`, v0.6.11) on
 * uint8 RGB images, up to the uint8 image the prefetcher collates (no ToTensor / Normalize here):
 *
 *   RandomResizedCropAndInterpolation(size, scale, ratio, interpolation)
 *   → RandomHorizontalFlip(hflip) (if hflip > 0) → RandomVerticalFlip(vflip) (if vflip > 0)
 *   → RandAugment (if `aa` is set)  |  ColorJitter (otherwise, if colorJitter is set)
 *
 * `noAug`: Resize(img_size) (shorter side for a square size) + CenterCrop(img_size); 'random'
 * interpolation becomes bilinear there, as in timm. (timm ignores crop_pct for this path; `cropPct`
 * is honoured when given, and 1.0 — timm's behaviour — when absent.)
 *
 * Pure and synchronous: safe to call from worker threads. All randomness comes from `rng`, which the
 * caller seeds per (seed, epoch, sample index).
 */
import { Rng } from '../../utils/rng.js';
import { UserError } from '../../errors.js';
import { settings } from '../../settings.js';
import type { ImageArray, SampleContext, TransformDef } from './types.js';
import { evalCropUint8, evalSourceRegion } from './eval.js';
import type { Interpolation, RGBImage, Region } from './resize.js';
import { adjustHue, enhanceBrightness, enhanceColor, enhanceContrast, flipLeftRight, flipTopBottom } from './pil.js';
import { makeAugHparams, parseRandAugment, randAugment, type RandAugmentConfig } from './randaugment.js';
import type { DecodeGeometry, JpegScale } from '../jpeg.js';
import {
  parseTrainInterpolation, pickInterpolation, resizedCropScaled, resizedCropSourceRegion, sampleRrcParams, shrinkOnLoadScale,
  type TrainInterpolation,
} from './rrc.js';

/** JSON-serialisable description of the train transform (what the loader sends to its workers). */
export interface TrainTransformSpec {
  /** output size: S (square) or [H, W] */
  imgSize: number | [number, number];
  /** RRC area range (--scale), default [0.08, 1] */
  scale: [number, number];
  /** RRC aspect range (--ratio), default [3/4, 4/3] */
  ratio: [number, number];
  /** horizontal flip probability (--hflip) */
  hflip: number;
  /** vertical flip probability (--vflip) */
  vflip: number;
  /** auto-augment spec (--aa), e.g. 'rand-m9-mstd0.5-inc1'; null / '' / 'none' = off */
  aa: string | null;
  /** ColorJitter (--color-jitter): one value for brightness/contrast/saturation, or 3–4 values; used only without aa */
  colorJitter: number | number[] | null;
  /** --train-interpolation: 'random' or a Pillow filter name */
  interpolation: string;
  /** --no-aug: resize + centre crop only */
  noAug: boolean;
  /** crop fraction for the no-aug path (default 1.0 = timm's transforms_noaug_train) */
  cropPct?: number | null;
  /** dataset mean (fill colour of RandAugment's geometric ops); default ImageNet */
  mean?: [number, number, number];
  /**
   * JPEG shrink-on-load for large crops (rrc.ts): default true (unless MAMBAOUT_NO_SHRINK_ON_LOAD=1). false gives
   * timm's pixels exactly (full decode always).
   */
  shrinkOnLoad?: boolean;
}

export const DEFAULT_TRAIN_SPEC: Readonly<TrainTransformSpec> = Object.freeze({
  imgSize: 224,
  scale: [0.08, 1.0],
  ratio: [3 / 4, 4 / 3],
  hflip: 0.5,
  vflip: 0.0,
  aa: 'rand-m9-mstd0.5-inc1',
  colorJitter: 0.4,
  interpolation: 'random',
  noAug: false,
  cropPct: null,
}) as Readonly<TrainTransformSpec>;

/**
 * Parse an --aa value. Returns null when augmentation is off (null, '', 'none'); RandAugment specs
 * ('rand-…') are supported; other timm policies (AutoAugment 'original'/'v0', AugMix) are refused.
 */
export function parseAaSpec(aa: string | null | undefined): RandAugmentConfig | null {
  if (aa === null || aa === undefined) return null;
  const s = aa.trim();
  if (s === '' || s.toLowerCase() === 'none') return null;
  if (s.startsWith('rand')) return parseRandAugment(s);
  if (s.startsWith('augmix')) throw new UserError(`--aa '${aa}': AugMix is not supported; use a RandAugment spec such as rand-m9-mstd0.5-inc1.`);
  throw new UserError(`--aa '${aa}': AutoAugment policies are not supported; use a RandAugment spec such as rand-m9-mstd0.5-inc1.`);
}

/** ColorJitter ranges as torchvision's _check_input builds them (null = that jitter is off). */
export interface ColorJitterRanges {
  brightness: [number, number] | null;
  contrast: [number, number] | null;
  saturation: [number, number] | null;
  hue: [number, number] | null;
}

export function colorJitterRanges(cj: number | readonly number[]): ColorJitterRanges {
  const vals = typeof cj === 'number' ? [cj, cj, cj] : [...cj];
  if (vals.length !== 3 && vals.length !== 4) {
    throw new UserError(`--color-jitter takes 1, 3 or 4 values, got ${vals.length}.`);
  }
  for (const v of vals) {
    if (!(v >= 0)) throw new UserError(`--color-jitter values must be non-negative, got ${v}.`);
  }
  const around1 = (v: number): [number, number] | null => (v === 0 ? null : [Math.max(0, 1 - v), 1 + v]);
  let hue: [number, number] | null = null;
  if (vals.length === 4 && vals[3] !== 0) {
    if (vals[3] > 0.5) throw new UserError(`--color-jitter hue must be in [0, 0.5], got ${vals[3]}.`);
    hue = [-vals[3], vals[3]];
  }
  return { brightness: around1(vals[0]), contrast: around1(vals[1]), saturation: around1(vals[2]), hue };
}

/** torchvision ColorJitter.forward on a PIL image: the four adjustments in a random order. */
export function colorJitter(img: RGBImage, r: ColorJitterRanges, rng: Rng): RGBImage {
  const order = rng.permutation(4);
  const b = r.brightness ? rng.uniform(r.brightness[0], r.brightness[1]) : null;
  const c = r.contrast ? rng.uniform(r.contrast[0], r.contrast[1]) : null;
  const s = r.saturation ? rng.uniform(r.saturation[0], r.saturation[1]) : null;
  const h = r.hue ? rng.uniform(r.hue[0], r.hue[1]) : null;
  for (const fn of order) {
    if (fn === 0 && b !== null) img = enhanceBrightness(img, b);
    else if (fn === 1 && c !== null) img = enhanceContrast(img, c);
    else if (fn === 2 && s !== null) img = enhanceColor(img, s);
    else if (fn === 3 && h !== null) img = adjustHue(img, h);
  }
  return img;
}

/** A spec checked and pre-parsed once (parse errors surface as UserError before any worker runs). */
export interface CompiledTrainTransform {
  spec: TrainTransformSpec;
  size: [number, number];
  interpolation: TrainInterpolation;
  aa: RandAugmentConfig | null;
  aaHparams: ReturnType<typeof makeAugHparams> | null;
  jitter: ColorJitterRanges | null;
}

const compiledCache = new Map<string, CompiledTrainTransform>();

/** Validate and pre-parse a spec (cached by its JSON form). */
export function compileTrainTransform(spec: TrainTransformSpec): CompiledTrainTransform {
  const key = JSON.stringify(spec);
  const hit = compiledCache.get(key);
  if (hit) return hit;
  const size: [number, number] = typeof spec.imgSize === 'number' ? [spec.imgSize, spec.imgSize] : [spec.imgSize[0], spec.imgSize[1]];
  if (!(Number.isInteger(size[0]) && Number.isInteger(size[1]) && size[0] > 0 && size[1] > 0)) {
    throw new UserError(`Image size must be a positive integer (or two), got ${JSON.stringify(spec.imgSize)}.`);
  }
  for (const [name, r] of [['--scale', spec.scale], ['--ratio', spec.ratio]] as const) {
    if (!(Array.isArray(r) && r.length === 2 && r[0] > 0 && r[1] > 0)) {
      throw new UserError(`${name} needs two positive numbers, got ${JSON.stringify(r)}.`);
    }
  }
  const interpolation = parseTrainInterpolation(spec.interpolation || 'random');
  const aa = spec.noAug ? null : parseAaSpec(spec.aa);
  const aaHparams = aa ? makeAugHparams(spec.imgSize, spec.mean ?? [0.485, 0.456, 0.406], interpolation) : null;
  // timm: `elif color_jitter is not None` — ColorJitter only without AA
  const jitter = spec.noAug || aa || spec.colorJitter === null || spec.colorJitter === undefined
    ? null
    : colorJitterRanges(spec.colorJitter);
  const c: CompiledTrainTransform = { spec, size, interpolation, aa, aaHparams, jitter };
  if (compiledCache.size > 64) compiledCache.clear();
  compiledCache.set(key, c);
  return c;
}

/** settings.noShrinkOnLoad (MAMBAOUT_NO_SHRINK_ON_LOAD=1) turns shrink-on-load off process-wide (timm's training pixels exactly). */
const SHRINK_ON_LOAD = !settings.noShrinkOnLoad;

/** An image as the loader may hand it over: decoded at 1/scale of a fullWidth×fullHeight file (see decode.ts). */
export interface ScaledImage extends RGBImage {
  scale?: JpegScale;
  fullWidth?: number;
  fullHeight?: number;
}

/**
 * The decode scale the train transform wants for a file of `width`×`height` with per-sample seed `seed`: it draws
 * the RRC box exactly as `trainTransform` will (the first draws of `new Rng(seed)`) and applies shrinkOnLoadScale.
 */
export function trainDecodeScale(width: number, height: number, spec: TrainTransformSpec, seed: number): JpegScale {
  if (spec.noAug || spec.shrinkOnLoad === false || !SHRINK_ON_LOAD) return 1;
  const c = compileTrainTransform(spec);
  return shrinkOnLoadScale(sampleRrcParams(width, height, spec.scale, spec.ratio, new Rng(seed)), c.size);
}

/**
 * The part of the decoded image (`g`: decoded at 1/g.scale of a g.fullWidth×g.fullHeight file) that `trainTransform`
 * with per-sample seed `seed` reads: the same first draws of `new Rng(seed)` (RRC box, then filter) give the box and
 * the taps (rrc.ts resizedCropSourceRegion); for no-aug, the eval crop's taps. Only that part of a JPEG is decoded.
 */
export function trainDecodeRegion(g: DecodeGeometry, spec: TrainTransformSpec, seed: number): Region {
  const c = compileTrainTransform(spec);
  if (spec.noAug) return evalSourceRegion(g.width, g.height, noAugConfig(c));
  const rng = new Rng(seed);
  const box = sampleRrcParams(g.fullWidth, g.fullHeight, spec.scale, spec.ratio, rng);
  return resizedCropSourceRegion(g.width, g.height, box, c.size, pickInterpolation(c.interpolation, rng), g.scale);
}

/** The no-aug path's eval crop: timm's transforms_noaug_train ('random' interpolation becomes bilinear). */
function noAugConfig(c: CompiledTrainTransform) {
  const [H, W] = c.size;
  const interpolation: Interpolation = c.interpolation === 'random' ? 'bilinear' : c.interpolation;
  return { inputSize: [3, H, W] as [number, number, number], cropPct: c.spec.cropPct || 1.0, interpolation };
}

/**
 * The train transform of one image: uint8 RGB HWC of imgSize (S×S, or H×W).
 * Draw order: RRC box, RRC filter, hflip, vflip, then RandAugment or ColorJitter.
 * An image decoded at 1/scale (`img.scale` > 1) has its RRC box drawn on the full size and resampled from the
 * smaller image (shrink-on-load, rrc.ts); the draws, and so everything after the crop, are the same.
 */
export function trainTransform(img: ScaledImage, spec: TrainTransformSpec, rng: Rng): RGBImage {
  const c = compileTrainTransform(spec);
  const scale = img.scale ?? 1;
  if (spec.noAug) {
    if (scale !== 1) throw new Error('internal: the no-aug train transform needs a full-size decode');
    return evalCropUint8(img, noAugConfig(c));
  }
  const fw = scale === 1 ? img.width : img.fullWidth!;
  const fh = scale === 1 ? img.height : img.fullHeight!;
  const box = sampleRrcParams(fw, fh, spec.scale, spec.ratio, rng);
  let out = resizedCropScaled(img, box, c.size, pickInterpolation(c.interpolation, rng), scale);
  if (spec.hflip > 0 && rng.random() < spec.hflip) out = flipLeftRight(out);
  if (spec.vflip > 0 && rng.random() < spec.vflip) out = flipTopBottom(out);
  if (c.aa && c.aaHparams) out = randAugment(out, c.aa, c.aaHparams, rng);
  else if (c.jitter) out = colorJitter(out, c.jitter, rng);
  return out;
}

/** The loader's spec for this transform: `{ kind: 'train', ...TrainTransformSpec }`. */
export interface TrainKindSpec extends TrainTransformSpec {
  kind: 'train';
}

/**
 * Worker-registry entry (see data/worker.ts): uint8 H×W×3 output (the prefetcher path; the
 * training loop mixes, normalizes and erases whole batches). The per-sample Rng is seeded from
 * `ctx.seed`, which the loader derives from (seed, epoch, position).
 */
export const TRAIN_TRANSFORM: TransformDef<TrainKindSpec> = {
  output(spec) {
    const [h, w] = compileTrainTransform(spec).size;
    return { shape: [h, w, 3], dtype: 'uint8' };
  },
  decodeScale: (width, height, spec, ctx) => trainDecodeScale(width, height, spec, ctx.seed),
  decodeRegion: (g, spec, ctx) => trainDecodeRegion(g, spec, ctx.seed),
  apply(img: ScaledImage, spec: TrainKindSpec, ctx: SampleContext, out: ImageArray, offset: number): void {
    if (!(out instanceof Uint8Array)) throw new Error('the train transform writes uint8 images');
    out.set(trainTransform(img, spec, new Rng(ctx.seed)).data, offset);
  },
};
