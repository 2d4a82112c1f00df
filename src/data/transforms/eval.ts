/**
 * timm's eval transform (`transforms_imagenet_eval` of timm 0.6.11) and data-config resolution
 * (`resolve_data_config`).
 *
 *   Resize(scale_size, interpolation) -> CenterCrop(input_size[1:]) -> ToTensor -> Normalize(mean, std)
 *
 * - square target S: scale_size = floor(S / crop_pct); the SHORTER side is resized to scale_size and
 *   the longer one to int(scale_size · long / short) (torchvision; no-op when short == scale_size);
 * - non-square target (H, W): Resize((int(H / crop_pct), int(W / crop_pct))) — both sides, aspect
 *   ratio not kept (timm 0.6.11);
 * - CenterCrop: top = round((h - H) / 2), left = round((w - W) / 2) with Python's round half to even;
 *   a side smaller than the crop is zero-padded first (torchvision pads (d // 2, (d + 1) // 2));
 * - resampling is Pillow's, bit-exact (see resize.ts); only the pixels of the crop are computed;
 * - ToTensor + Normalize in float32: ((v / 255) - mean) / std, each step rounded to float32 as torch
 *   does — done through a 256-entry lookup table per channel.
 *
 * Output layout is NHWC (H·W·3) because the tfjs model takes NHWC.
 */
import { UserError } from '../../errors.js';
import { pyRound as roundHalfEven } from '../../utils/pyformat.js';
import { INTERPOLATIONS, resizeRGB, type Interpolation, type RGBImage, type Region } from './resize.js';

export const IMAGENET_DEFAULT_MEAN: readonly [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_DEFAULT_STD: readonly [number, number, number] = [0.229, 0.224, 0.225];
export const DEFAULT_CROP_PCT = 0.875;

/** Resolved data config (timm `data_config`). */
export interface DataConfig {
  /** [channels, height, width]; channels is always 3 here. */
  inputSize: [number, number, number];
  interpolation: Interpolation;
  mean: [number, number, number];
  std: [number, number, number];
  cropPct: number;
}

/** A model's pretrained-config defaults (timm `default_cfg`), all optional. */
export interface ModelDataDefaults {
  inputSize?: readonly [number, number, number];
  testInputSize?: readonly [number, number, number];
  interpolation?: string;
  mean?: readonly number[];
  std?: readonly number[];
  cropPct?: number;
  testCropPct?: number;
}

/** MambaOut's `_cfg` (models/mambaout.py). */
export const MAMBAOUT_DATA_DEFAULTS: Readonly<ModelDataDefaults> = Object.freeze({
  inputSize: [3, 224, 224] as const,
  interpolation: 'bicubic',
  mean: IMAGENET_DEFAULT_MEAN,
  std: IMAGENET_DEFAULT_STD,
  cropPct: 1.0,
});

/** User overrides (CLI flags); null/undefined/'' mean "not given", as argparse's None/''. */
export interface DataConfigOverrides {
  /** --img-size */
  imgSize?: number | null;
  /** --input-size C H W (beats --img-size) */
  inputSize?: readonly number[] | null;
  /** --interpolation ('' -> model default) */
  interpolation?: string | null;
  /** --mean (one value is broadcast to all channels) */
  mean?: readonly number[] | null;
  /** --std (one value is broadcast) */
  std?: readonly number[] | null;
  /** --crop-pct */
  cropPct?: number | null;
  /** prefer the model's test_input_size / test_crop_pct (validate.py without --use-train-size) */
  useTestSize?: boolean;
}

const given = <T>(v: T | null | undefined): v is T => v !== null && v !== undefined;

/** timm `resolve_data_config` (plus `crop_pct or DEFAULT_CROP_PCT` of the eval transform). */
export function resolveDataConfig(model: ModelDataDefaults = {}, args: DataConfigOverrides = {}): DataConfig {
  let inChans = 3;
  let inputSize: readonly number[] = [inChans, 224, 224];
  if (given(args.inputSize)) {
    if (args.inputSize.length !== 3) {
      throw new UserError(`--input-size takes 3 numbers (channels height width), got ${args.inputSize.length}.`);
    }
    inputSize = args.inputSize;
    inChans = inputSize[0];
  } else if (given(args.imgSize)) {
    inputSize = [inChans, args.imgSize, args.imgSize];
  } else if (args.useTestSize && model.testInputSize) {
    inputSize = model.testInputSize;
  } else if (model.inputSize) {
    inputSize = model.inputSize;
  }
  if (inputSize[0] !== 3) {
    throw new UserError(`only 3-channel (RGB) input is supported, but the input size asks for ${inputSize[0]} channels.`);
  }
  for (const v of inputSize.slice(1)) {
    if (!Number.isInteger(v) || v <= 0) throw new UserError(`image size must be a positive integer, got ${v}.`);
  }

  let interpolation = 'bicubic';
  if (args.interpolation) interpolation = args.interpolation;
  else if (model.interpolation) interpolation = model.interpolation;
  if (!(INTERPOLATIONS as readonly string[]).includes(interpolation)) {
    throw new UserError(
      `unknown interpolation '${interpolation}' for evaluation; use one of ${INTERPOLATIONS.join(', ')}.`,
    );
  }

  const channels = (name: string, v: readonly number[] | null | undefined, def: readonly number[] | undefined,
    fallback: readonly number[]): [number, number, number] => {
    let r: readonly number[] = fallback;
    if (given(v)) {
      r = v.length === 1 ? [v[0], v[0], v[0]] : v;
      if (r.length !== inChans) throw new UserError(`--${name} takes 1 or ${inChans} values, got ${v.length}.`);
    } else if (def) {
      r = def;
    }
    if (r.length !== 3 || r.some((x) => !Number.isFinite(x))) {
      throw new UserError(`${name} must be 3 finite numbers, got ${JSON.stringify(r)}.`);
    }
    return [r[0], r[1], r[2]];
  };
  const mean = channels('mean', args.mean, model.mean, IMAGENET_DEFAULT_MEAN);
  const std = channels('std', args.std, model.std, IMAGENET_DEFAULT_STD);
  if (std.some((s) => s === 0)) throw new UserError('std must not contain 0.');

  let cropPct = DEFAULT_CROP_PCT;
  if (given(args.cropPct)) cropPct = args.cropPct;
  else if (args.useTestSize && given(model.testCropPct)) cropPct = model.testCropPct;
  else if (given(model.cropPct)) cropPct = model.cropPct;
  // transforms_imagenet_eval: `crop_pct = crop_pct or DEFAULT_CROP_PCT`
  if (!cropPct) cropPct = DEFAULT_CROP_PCT;
  if (!(cropPct > 0) || !Number.isFinite(cropPct)) throw new UserError(`crop-pct must be a positive number, got ${cropPct}.`);

  return {
    inputSize: [3, inputSize[1], inputSize[2]],
    interpolation: interpolation as Interpolation,
    mean,
    std,
    cropPct,
  };
}

/** Python's round(): half to even (one definition, in utils/pyformat.ts). */
export { roundHalfEven };

/** Size [width, height] that timm's eval Resize produces for an image of `w`×`h`. */
export function evalResizeSize(w: number, h: number, cfg: Pick<DataConfig, 'inputSize' | 'cropPct'>): [number, number] {
  const [, H, W] = cfg.inputSize;
  const cropPct = cfg.cropPct || DEFAULT_CROP_PCT;
  if (H === W) {
    const s = Math.floor(H / cropPct);
    // torchvision: short, long = (w, h) if w <= h else (h, w); if short == size: unchanged
    if (w <= h) return w === s ? [w, h] : [s, Math.trunc((s * h) / w)];
    return h === s ? [w, h] : [Math.trunc((s * w) / h), s];
  }
  return [Math.trunc(W / cropPct), Math.trunc(H / cropPct)];
}

/**
 * torchvision CenterCrop geometry on an image of `w`×`h` for a crop `cw`×`ch`: padding added first
 * (left/top) and the window of the (padded) image; window coordinates refer to the padded image.
 */
export function centerCropBox(w: number, h: number, cw: number, ch: number): {
  padLeft: number; padTop: number; left: number; top: number;
} {
  const padLeft = cw > w ? Math.floor((cw - w) / 2) : 0;
  const padTop = ch > h ? Math.floor((ch - h) / 2) : 0;
  const pw = cw > w ? cw : w; // padded sizes (pad left + right fills the gap exactly)
  const ph = ch > h ? ch : h;
  return { padLeft, padTop, left: roundHalfEven((pw - cw) / 2), top: roundHalfEven((ph - ch) / 2) };
}

/** Resize + center crop in uint8 (the PIL image timm hands to ToTensor). HWC RGB, H×W of inputSize. */
export function evalCropUint8(img: RGBImage, cfg: Pick<DataConfig, 'inputSize' | 'cropPct' | 'interpolation'>): RGBImage {
  const [, H, W] = cfg.inputSize;
  const [rw, rh] = evalResizeSize(img.width, img.height, cfg);
  const c = centerCropBox(rw, rh, W, H);
  // Output pixel (y, x) comes from resized pixel (y + top - padTop, x + left - padLeft) when inside.
  const x0 = c.left - c.padLeft;
  const y0 = c.top - c.padTop;
  const ix0 = Math.max(0, x0), iy0 = Math.max(0, y0);
  const ix1 = Math.min(rw, x0 + W), iy1 = Math.min(rh, y0 + H);
  const region: Region = { left: ix0, top: iy0, width: ix1 - ix0, height: iy1 - iy0 };
  const part = resizeRGB(img, rw, rh, cfg.interpolation, { region });
  if (region.width === W && region.height === H) return part;
  const out = new Uint8Array(W * H * 3); // zero padding (black), as torchvision's pad(fill=0)
  for (let y = 0; y < region.height; y++) {
    const d = ((iy0 - y0 + y) * W + (ix0 - x0)) * 3;
    out.set(part.data.subarray(y * region.width * 3, (y + 1) * region.width * 3), d);
  }
  return { data: out, width: W, height: H };
}

/**
 * ToTensor + Normalize lookup table: lut[c * 256 + v] = float32(float32(float32(v / 255) - mean_c) / std_c),
 * the exact float32 operations torch performs.
 */
export function normalizeLut(mean: readonly number[], std: readonly number[]): Float32Array {
  const f = Math.fround;
  const lut = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    const m = f(mean[c]);
    const s = f(std[c]);
    for (let v = 0; v < 256; v++) lut[c * 256 + v] = f(f(f(v) / 255) - m) / s;
  }
  return lut;
}

/** Normalize uint8 HWC RGB into `out` (float32 HWC) at `offset`, using a table from normalizeLut. */
export function normalizeInto(src: Uint8Array, lut: Float32Array, out: Float32Array, offset = 0): void {
  const n = src.length;
  for (let i = 0; i < n; i += 3) {
    out[offset + i] = lut[src[i]];
    out[offset + i + 1] = lut[256 + src[i + 1]];
    out[offset + i + 2] = lut[512 + src[i + 2]];
  }
}

const lutCache = new Map<string, Float32Array>();
function cachedLut(mean: readonly number[], std: readonly number[]): Float32Array {
  const key = `${mean.join(',')}|${std.join(',')}`;
  let lut = lutCache.get(key);
  if (!lut) {
    lut = normalizeLut(mean, std);
    lutCache.set(key, lut);
  }
  return lut;
}

/** The full eval transform: normalized float32, NHWC for one image (H·W·3). */
export function evalTransform(img: RGBImage, cfg: DataConfig, out?: Float32Array, offset = 0): Float32Array {
  const crop = evalCropUint8(img, cfg);
  const dst = out ?? new Float32Array(crop.data.length);
  normalizeInto(crop.data, cachedLut(cfg.mean, cfg.std), dst, offset);
  return dst;
}
