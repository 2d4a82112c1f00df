/**
 * timm RandAugment (timm/data/auto_augment.py, v0.6.11) with Pillow pixel semantics (pil.ts).
 *
 * Config string `rand-m9-mstd0.5-inc1[-n2][-mmax10][-w0]`: split on '-', the first token must be
 * 'rand'; every other token is split at its first digit into (key, value); tokens without a digit
 * are ignored (as timm's `re.split(r'(\d.*)', c)` does).
 *   m    → magnitude (int, default 10)         n    → ops per image (int, default 2)
 *   mstd → magnitude noise std (float; > 100 means uniform sampling in [0, m])
 *   mmax → magnitude upper bound (int; 0 or absent → 10)
 *   inc  → use the "increasing" op list; quirk: any value selects it, even inc0 (bool('0') is True)
 *   w    → weighted op choice without replacement (weight set 0 is the only one)
 *
 * Per image: `numLayers` ops are picked uniformly with replacement (weighted, without replacement,
 * with `w`). Each picked op (AugmentOp.__call__):
 *   1. is skipped when random() > 0.5;
 *   2. magnitude m ~ Normal(m, mstd) when mstd > 0 (Uniform(0, m) when mstd = inf), clipped to
 *      [0, mmax || 10];
 *   3. m is mapped to the op's arguments (level functions below; "±" = negate when random() > 0.5);
 *   4. the op runs; geometric ops use the fixed interpolation, or with 'random' draw bilinear or
 *      bicubic for this call; outside pixels get the fill colour (the rounded dataset mean).
 */
import type { Rng } from '../../utils/rng.js';
import { pyRound } from '../../utils/pyformat.js';
import { UserError } from '../../errors.js';
import {
  affine,
  autocontrast,
  enhanceBrightness,
  enhanceColor,
  enhanceContrast,
  enhanceSharpness,
  equalize,
  invert,
  posterize,
  rotate,
  solarize,
  solarizeAdd,
  type RGBImage,
  type Rgb,
  type TransformInterp,
} from './pil.js';

export type RandOpName =
  | 'AutoContrast' | 'Equalize' | 'Invert' | 'Rotate'
  | 'Posterize' | 'PosterizeIncreasing' | 'PosterizeOriginal'
  | 'Solarize' | 'SolarizeIncreasing' | 'SolarizeAdd'
  | 'Color' | 'ColorIncreasing' | 'Contrast' | 'ContrastIncreasing'
  | 'Brightness' | 'BrightnessIncreasing' | 'Sharpness' | 'SharpnessIncreasing'
  | 'ShearX' | 'ShearY' | 'TranslateX' | 'TranslateY' | 'TranslateXRel' | 'TranslateYRel';

/** timm `_RAND_TRANSFORMS`. */
export const RAND_TRANSFORMS: readonly RandOpName[] = [
  'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd',
  'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel',
];

/** timm `_RAND_INCREASING_TRANSFORMS`. */
export const RAND_INCREASING_TRANSFORMS: readonly RandOpName[] = [
  'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing', 'SolarizeIncreasing', 'SolarizeAdd',
  'ColorIncreasing', 'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing',
  'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel',
];

/** timm `_RAND_CHOICE_WEIGHTS_0`, indexed by the names of `_RAND_TRANSFORMS`. */
const RAND_CHOICE_WEIGHTS_0: Readonly<Record<string, number>> = {
  Rotate: 0.3, ShearX: 0.2, ShearY: 0.2, TranslateXRel: 0.1, TranslateYRel: 0.1,
  Color: 0.025, Sharpness: 0.025, AutoContrast: 0.025,
  Solarize: 0.005, SolarizeAdd: 0.005, Contrast: 0.005, Brightness: 0.005, Equalize: 0.005,
  Posterize: 0, Invert: 0,
};

/** timm `_LEVEL_DENOM`. */
export const LEVEL_DENOM = 10.0;

export interface RandAugmentConfig {
  /** the config string it was parsed from */
  spec: string;
  magnitude: number;
  numLayers: number;
  /** 0 = fixed magnitude; Infinity = uniform in [0, magnitude] */
  magnitudeStd: number;
  /** upper clip of the magnitude; null → LEVEL_DENOM (10) */
  magnitudeMax: number | null;
  /** whether the increasing op list is used */
  increasing: boolean;
  /** weighted choice index (only 0 exists) or null for uniform choice */
  weightIdx: number | null;
  /** the op list */
  ops: readonly RandOpName[];
}

function parseIntStrict(key: string, val: string, spec: string): number {
  if (!/^\d+$/.test(val)) throw new UserError(`RandAugment spec '${spec}': '${key}${val}' needs an integer value.`);
  return parseInt(val, 10);
}

/** Parse `rand-m9-mstd0.5-inc1` style strings (timm `rand_augment_transform`). */
export function parseRandAugment(spec: string): RandAugmentConfig {
  const parts = spec.split('-');
  if (parts[0] !== 'rand') {
    throw new UserError(`Unsupported augmentation '${spec}': only RandAugment specs ('rand-m9-mstd0.5-inc1') are supported.`);
  }
  const cfg: RandAugmentConfig = {
    spec,
    magnitude: LEVEL_DENOM,
    numLayers: 2,
    magnitudeStd: 0,
    magnitudeMax: null,
    increasing: false,
    weightIdx: null,
    ops: RAND_TRANSFORMS,
  };
  let stdSet = false;
  let maxSet = false;
  for (const c of parts.slice(1)) {
    const m = /\d/.exec(c);
    if (!m) continue; // no numeric part: ignored, like timm
    const key = c.slice(0, m.index);
    const val = c.slice(m.index);
    switch (key) {
      case 'mstd': {
        const v = Number(val);
        if (Number.isNaN(v)) throw new UserError(`RandAugment spec '${spec}': 'mstd${val}' needs a number.`);
        // hparams.setdefault: the first occurrence wins
        if (!stdSet) cfg.magnitudeStd = v > 100 ? Infinity : v;
        stdSet = true;
        break;
      }
      case 'mmax':
        if (!maxSet) cfg.magnitudeMax = parseIntStrict(key, val, spec);
        maxSet = true;
        break;
      case 'inc':
        // timm: `if bool(val)` on the string, so any value (even '0') selects the increasing list
        cfg.increasing = true;
        cfg.ops = RAND_INCREASING_TRANSFORMS;
        break;
      case 'm':
        cfg.magnitude = parseIntStrict(key, val, spec);
        break;
      case 'n':
        cfg.numLayers = parseIntStrict(key, val, spec);
        break;
      case 'w': {
        const w = parseIntStrict(key, val, spec);
        if (w !== 0) throw new UserError(`RandAugment spec '${spec}': only weight set w0 exists.`);
        cfg.weightIdx = w;
        break;
      }
      default:
        throw new UserError(`RandAugment spec '${spec}': unknown section '${c}' (known: m, n, mstd, mmax, inc, w).`);
    }
  }
  if (cfg.weightIdx !== null) {
    const nonzero = RAND_TRANSFORMS.filter((n) => RAND_CHOICE_WEIGHTS_0[n] > 0).length;
    if (cfg.numLayers > nonzero) {
      throw new UserError(`RandAugment spec '${spec}': n${cfg.numLayers} exceeds the ${nonzero} ops with non-zero weight.`);
    }
  }
  return cfg;
}

/** Hyper-parameters timm passes to the ops (`aa_params` in transforms_factory). */
export interface AugHparams {
  /** translate_const = int(min(img_size)·0.45), used by TranslateX/Y (absolute) only */
  translateConst: number;
  /** translate_pct for the *Rel ops (0.45) */
  translatePct: number;
  /** fill colour for geometric ops: (min(255, round(255·mean_c))) */
  fill: Rgb;
  /** a fixed filter for geometric ops, or 'random' = bilinear/bicubic drawn per op call */
  interpolation: TransformInterp | 'random';
}

/** The hparams timm builds for an image size, mean and train interpolation. */
export function makeAugHparams(
  imgSize: number | readonly [number, number],
  mean: readonly number[] = [0.485, 0.456, 0.406],
  interpolation: string = 'random',
): AugHparams {
  const minSize = typeof imgSize === 'number' ? imgSize : Math.min(imgSize[0], imgSize[1]);
  let interp: TransformInterp | 'random';
  if (!interpolation || interpolation === 'random') interp = 'random';
  else if (interpolation === 'nearest' || interpolation === 'bilinear' || interpolation === 'bicubic') interp = interpolation;
  else {
    throw new UserError(
      `RandAugment's geometric ops support only nearest, bilinear or bicubic interpolation, not '${interpolation}'.`,
    );
  }
  return {
    translateConst: Math.trunc(minSize * 0.45),
    translatePct: 0.45,
    fill: [0, 1, 2].map((c) => Math.min(255, pyRound(255 * mean[c]))) as unknown as Rgb,
    interpolation: interp,
  };
}

// ---------------------------------------------------------------------------------------------
// Level (magnitude) → argument mapping
// ---------------------------------------------------------------------------------------------

/** timm `_randomly_negate`: −v when random() > 0.5. */
function randomlyNegate(v: number, rng: Rng): number {
  return rng.random() > 0.5 ? -v : v;
}

/**
 * The op arguments for magnitude `level` (timm LEVEL_TO_ARG). Ops without arguments return [].
 * Uses `rng` only for the sign of signed arguments.
 */
export function levelToArgs(name: RandOpName, level: number, hp: AugHparams, rng: Rng): number[] {
  switch (name) {
    case 'AutoContrast':
    case 'Equalize':
    case 'Invert':
      return [];
    case 'Rotate':
      return [randomlyNegate((level / LEVEL_DENOM) * 30.0, rng)];
    case 'Posterize':
      return [Math.trunc((level / LEVEL_DENOM) * 4)];
    case 'PosterizeIncreasing':
      return [4 - Math.trunc((level / LEVEL_DENOM) * 4)];
    case 'PosterizeOriginal':
      return [Math.trunc((level / LEVEL_DENOM) * 4) + 4];
    case 'Solarize':
      return [Math.trunc((level / LEVEL_DENOM) * 256)];
    case 'SolarizeIncreasing':
      return [256 - Math.trunc((level / LEVEL_DENOM) * 256)];
    case 'SolarizeAdd':
      return [Math.trunc((level / LEVEL_DENOM) * 110)];
    case 'Color':
    case 'Contrast':
    case 'Brightness':
    case 'Sharpness':
      return [(level / LEVEL_DENOM) * 1.8 + 0.1];
    case 'ColorIncreasing':
    case 'ContrastIncreasing':
    case 'BrightnessIncreasing':
    case 'SharpnessIncreasing':
      return [Math.max(0.1, 1.0 + randomlyNegate((level / LEVEL_DENOM) * 0.9, rng))];
    case 'ShearX':
    case 'ShearY':
      return [randomlyNegate((level / LEVEL_DENOM) * 0.3, rng)];
    case 'TranslateX':
    case 'TranslateY':
      return [randomlyNegate((level / LEVEL_DENOM) * hp.translateConst, rng)];
    case 'TranslateXRel':
    case 'TranslateYRel':
      return [randomlyNegate((level / LEVEL_DENOM) * hp.translatePct, rng)];
  }
}

/** timm `_interpolation`: the fixed filter, or bilinear/bicubic drawn uniformly. */
function pickTransformInterp(hp: AugHparams, rng: Rng): TransformInterp {
  if (hp.interpolation !== 'random') return hp.interpolation;
  return rng.randrange(0, 2) === 0 ? 'bilinear' : 'bicubic';
}

/**
 * Apply op `name` with its arguments (as levelToArgs returns them). `rng` is used only by the
 * geometric ops with 'random' interpolation.
 */
export function applyOp(name: RandOpName, img: RGBImage, args: readonly number[], hp: AugHparams, rng: Rng): RGBImage {
  const w = img.width;
  const h = img.height;
  switch (name) {
    case 'AutoContrast':
      return autocontrast(img);
    case 'Equalize':
      return equalize(img);
    case 'Invert':
      return invert(img);
    case 'Rotate':
      return rotate(img, args[0], pickTransformInterp(hp, rng), hp.fill);
    case 'Posterize':
    case 'PosterizeIncreasing':
    case 'PosterizeOriginal':
      // timm returns the image unchanged for bits >= 8
      return args[0] >= 8 ? img : posterize(img, args[0]);
    case 'Solarize':
    case 'SolarizeIncreasing':
      return solarize(img, args[0]);
    case 'SolarizeAdd':
      return solarizeAdd(img, args[0], 128);
    case 'Color':
    case 'ColorIncreasing':
      return enhanceColor(img, args[0]);
    case 'Contrast':
    case 'ContrastIncreasing':
      return enhanceContrast(img, args[0]);
    case 'Brightness':
    case 'BrightnessIncreasing':
      return enhanceBrightness(img, args[0]);
    case 'Sharpness':
    case 'SharpnessIncreasing':
      return enhanceSharpness(img, args[0]);
    case 'ShearX':
      return affine(img, [1, args[0], 0, 0, 1, 0], pickTransformInterp(hp, rng), hp.fill);
    case 'ShearY':
      return affine(img, [1, 0, 0, args[0], 1, 0], pickTransformInterp(hp, rng), hp.fill);
    case 'TranslateX':
      return affine(img, [1, 0, args[0], 0, 1, 0], pickTransformInterp(hp, rng), hp.fill);
    case 'TranslateY':
      return affine(img, [1, 0, 0, 0, 1, args[0]], pickTransformInterp(hp, rng), hp.fill);
    case 'TranslateXRel':
      return affine(img, [1, 0, args[0] * w, 0, 1, 0], pickTransformInterp(hp, rng), hp.fill);
    case 'TranslateYRel':
      return affine(img, [1, 0, 0, 0, 1, args[0] * h], pickTransformInterp(hp, rng), hp.fill);
  }
}

/** Magnitude of one op application: noise (if any) then clip to [0, mmax || 10]. */
export function sampleMagnitude(cfg: Pick<RandAugmentConfig, 'magnitude' | 'magnitudeStd' | 'magnitudeMax'>, rng: Rng): number {
  let m = cfg.magnitude;
  if (cfg.magnitudeStd > 0) {
    m = cfg.magnitudeStd === Infinity ? rng.uniform(0, m) : rng.normal(m, cfg.magnitudeStd);
  }
  const upper = cfg.magnitudeMax || LEVEL_DENOM;
  return Math.max(0.0, Math.min(m, upper));
}

/** timm AugmentOp.__call__ for one op: probability gate, magnitude, arguments, apply. */
export function augmentOp(
  name: RandOpName,
  img: RGBImage,
  cfg: Pick<RandAugmentConfig, 'magnitude' | 'magnitudeStd' | 'magnitudeMax'>,
  hp: AugHparams,
  rng: Rng,
  prob = 0.5,
): RGBImage {
  if (prob < 1.0 && rng.random() > prob) return img;
  const m = sampleMagnitude(cfg, rng);
  const args = levelToArgs(name, m, hp, rng);
  return applyOp(name, img, args, hp, rng);
}

/** Indices of the ops applied to one image (np.random.choice with/without replacement). */
export function chooseOps(cfg: RandAugmentConfig, rng: Rng): number[] {
  const n = cfg.ops.length;
  const picks: number[] = [];
  if (cfg.weightIdx === null) {
    for (let i = 0; i < cfg.numLayers; i++) picks.push(rng.randrange(0, n));
    return picks;
  }
  // Weighted, without replacement: weights follow _RAND_TRANSFORMS positions (timm looks them up
  // by the non-increasing names even for the increasing list). Sequential draws with the already
  // chosen ops removed give the same distribution as numpy's choice(replace=False, p=...).
  const p = RAND_TRANSFORMS.map((k) => RAND_CHOICE_WEIGHTS_0[k]);
  for (let i = 0; i < cfg.numLayers; i++) {
    let total = 0;
    for (const v of p) total += v;
    let u = rng.random() * total;
    let k = 0;
    while (k < n - 1 && (p[k] === 0 || u >= p[k])) {
      u -= p[k];
      k++;
    }
    while (p[k] === 0) k--; // guard against rounding at the end of the table
    picks.push(k);
    p[k] = 0;
  }
  return picks;
}

/** RandAugment.__call__: choose the ops, apply each with probability 0.5. */
export function randAugment(img: RGBImage, cfg: RandAugmentConfig, hp: AugHparams, rng: Rng): RGBImage {
  for (const k of chooseOps(cfg, rng)) img = augmentOp(cfg.ops[k], img, cfg, hp, rng);
  return img;
}
