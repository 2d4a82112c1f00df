/**
 * timm's eval transform (`transforms_imagenet_eval` of timm 0.6.11). The data config it takes is resolved in
 * src/data/config.ts; EVAL_TRANSFORM (end of file) is its entry in the registry of ./index.ts.
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
import { DEFAULT_CROP_PCT, type DataConfig } from '../config.js';
import { pyRound } from '../../utils/pyformat.js';
import { resizeRGB, resizeSourceRegion, type RGBImage, type Region } from './resize.js';
import type { ImageDType, TransformDef } from './types.js';

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
  return { padLeft, padTop, left: pyRound((pw - cw) / 2), top: pyRound((ph - ch) / 2) };
}

/**
 * Where the centre crop of `evalCropUint8` lies in the resized image (rw x rh): `region` is the part of the resized
 * image inside the crop, (x0, y0) the resized pixel of the crop's top-left corner (negative when padded).
 */
function evalCropGeometry(w: number, h: number, cfg: Pick<DataConfig, 'inputSize' | 'cropPct'>): {
  rw: number; rh: number; region: Region; x0: number; y0: number;
} {
  const [, H, W] = cfg.inputSize;
  const [rw, rh] = evalResizeSize(w, h, cfg);
  const c = centerCropBox(rw, rh, W, H);
  // Output pixel (y, x) comes from resized pixel (y + top - padTop, x + left - padLeft) when inside.
  const x0 = c.left - c.padLeft;
  const y0 = c.top - c.padTop;
  const ix0 = Math.max(0, x0), iy0 = Math.max(0, y0);
  const ix1 = Math.min(rw, x0 + W), iy1 = Math.min(rh, y0 + H);
  return { rw, rh, region: { left: ix0, top: iy0, width: ix1 - ix0, height: iy1 - iy0 }, x0, y0 };
}

/**
 * Resize + center crop in uint8 (the PIL image timm hands to ToTensor). HWC RGB, H×W of inputSize. With `into`, the
 * pixels are written there (H·W·3 bytes from `offset`: a loader batch) and the result is a view of them.
 */
export function evalCropUint8(
  img: RGBImage, cfg: Pick<DataConfig, 'inputSize' | 'cropPct' | 'interpolation'>, into?: { data: Uint8Array; offset: number },
): RGBImage {
  const [, H, W] = cfg.inputSize;
  const { rw, rh, region, x0, y0 } = evalCropGeometry(img.width, img.height, cfg);
  const whole = region.width === W && region.height === H;
  const part = resizeRGB(img, rw, rh, cfg.interpolation, { region, into: whole ? into : undefined });
  if (whole) return part;
  // zero padding (black), as torchvision's pad(fill=0)
  const out = into ? into.data.subarray(into.offset, into.offset + W * H * 3).fill(0) : new Uint8Array(W * H * 3);
  for (let y = 0; y < region.height; y++) {
    const d = ((region.top - y0 + y) * W + (region.left - x0)) * 3;
    out.set(part.data.subarray(y * region.width * 3, (y + 1) * region.width * 3), d);
  }
  return { data: out, width: W, height: H };
}

/**
 * The pixels of a `w`×`h` image that `evalCropUint8` reads: the filter taps under the centre crop (resize.ts
 * resizeSourceRegion). For a 4:3 image at crop_pct 1.0, ~75% of the columns plus the filter's reach, all rows.
 */
export function evalSourceRegion(w: number, h: number, cfg: Pick<DataConfig, 'inputSize' | 'cropPct' | 'interpolation'>): Region {
  const { rw, rh, region } = evalCropGeometry(w, h, cfg);
  return resizeSourceRegion(w, h, rw, rh, cfg.interpolation, { region });
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

/** timm eval transform; `output: 'uint8'` gives the resized + cropped pixels before normalization. */
export interface EvalTransformSpec extends DataConfig {
  kind: 'eval';
  output?: ImageDType;
}

export const EVAL_TRANSFORM: TransformDef<EvalTransformSpec> = {
  output: (spec) => ({ shape: [spec.inputSize[1], spec.inputSize[2], 3], dtype: spec.output ?? 'float32' }),
  // Only the columns and rows under the centre crop's filter taps are decoded (src/data/jpeg.ts, region decode).
  decodeRegion: (g, spec) => (g.scale === 1 ? evalSourceRegion(g.width, g.height, spec) : null),
  apply(img, spec, _ctx, out, offset) {
    if (out instanceof Float32Array) {
      evalTransform(img, spec, out, offset);
    } else {
      evalCropUint8(img, spec, { data: out, offset }); // resized straight into the batch
    }
  },
};
