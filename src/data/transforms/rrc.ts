/**
 * timm `RandomResizedCropAndInterpolation` (timm/data/transforms.py, v0.6.11).
 *
 * Parameters (`get_params`), for an image of W₀×H₀ and area A = W₀·H₀, up to 10 attempts:
 *   target_area = U(scale_min, scale_max)·A,  aspect = exp(U(ln r_min, ln r_max)),
 *   w = round(√(target_area·aspect)),  h = round(√(target_area/aspect))   (Python round: half to even)
 *   accept when w ≤ W₀ and h ≤ H₀ → top = randint(0, H₀−h), left = randint(0, W₀−w) (inclusive).
 * Fallback (no attempt accepted): in_ratio = W₀/H₀;
 *   in_ratio < min(ratio) → w = W₀, h = round(w / min(ratio));
 *   in_ratio > max(ratio) → h = H₀, w = round(h·max(ratio));
 *   otherwise the whole image; centred: top = (H₀−h)//2, left = (W₀−w)//2.
 * Then the interpolation is chosen (uniformly between bilinear and bicubic for 'random'), the box
 * is cropped and resized to the output size with Pillow's antialiased resampling (resize.ts).
 *
 * One deliberate deviation: an attempt with w or h rounding to 0 (only possible for images of a
 * few pixels) is rejected, as torchvision does, instead of producing an empty crop that PIL
 * cannot resize.
 *
 * Shrink-on-load (training only, an approximation of timm's pixels): when the sampled box is at least twice the output
 * size on both axes, the loader decodes the JPEG at 1/2, 1/4 or 1/8 (libjpeg DCT scaling, what PIL's draft() and
 * NVIDIA DALI do) — the largest factor that leaves the box at least as large as the output — and the box, divided by
 * that factor, is resampled from the smaller image (`resizedCropScaled`). The random draws are those of the full-size
 * image, so the crop geometry is unchanged; the pixels differ from a full decode by the DCT-domain reduction (a
 * box-like filter) before Pillow's antialiased resample. See docs/ARCHITECTURE.md for how often it applies and the
 * accuracy check.
 */
import type { Rng } from '../../utils/rng.js';
import { UserError } from '../../errors.js';
import type { JpegScale } from '../jpeg.js';
import { resizeRGB, resizeSourceRegion, INTERPOLATIONS, type Interpolation, type RGBImage, type Region } from './resize.js';
import { pyRound } from '../../utils/pyformat.js';

/** Crop box in the source image (torchvision's (i, j, h, w)). */
export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/** Train interpolation: a Pillow filter, or 'random' = bilinear or bicubic chosen per image. */
export type TrainInterpolation = Interpolation | 'random';

export const RANDOM_INTERPOLATIONS: readonly Interpolation[] = ['bilinear', 'bicubic'];

/** Parse an interpolation name as timm's `str_to_pil_interp` accepts it (plus 'random'). */
export function parseTrainInterpolation(name: string): TrainInterpolation {
  if (name === 'random') return 'random';
  if ((INTERPOLATIONS as readonly string[]).includes(name)) return name as Interpolation;
  throw new UserError(
    `Unknown interpolation '${name}'; use one of random, ${INTERPOLATIONS.join(', ')}.`,
  );
}

/**
 * RandomResizedCropAndInterpolation.get_params for an image of `width`×`height`.
 * `scale` and `ratio` are (min, max) ranges; randomness from `rng` (uniform draws, inclusive randint).
 */
export function sampleRrcParams(
  width: number,
  height: number,
  scale: readonly [number, number],
  ratio: readonly [number, number],
  rng: Rng,
): CropBox {
  const area = width * height;
  const logRatio0 = Math.log(ratio[0]);
  const logRatio1 = Math.log(ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const targetArea = rng.uniform(scale[0], scale[1]) * area;
    const aspect = Math.exp(rng.uniform(logRatio0, logRatio1));
    const w = pyRound(Math.sqrt(targetArea * aspect));
    const h = pyRound(Math.sqrt(targetArea / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const top = rng.randint(0, height - h);
      const left = rng.randint(0, width - w);
      return { top, left, height: h, width: w };
    }
  }
  return rrcFallback(width, height, ratio);
}

/** The fallback central crop of get_params. */
export function rrcFallback(width: number, height: number, ratio: readonly [number, number]): CropBox {
  const inRatio = width / height;
  const rMin = Math.min(ratio[0], ratio[1]);
  const rMax = Math.max(ratio[0], ratio[1]);
  let w: number;
  let h: number;
  if (inRatio < rMin) {
    w = width;
    h = pyRound(w / rMin);
  } else if (inRatio > rMax) {
    h = height;
    w = pyRound(h * rMax);
  } else {
    w = width;
    h = height;
  }
  return { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
}

export interface RrcOptions {
  /** output [height, width] */
  size: readonly [number, number];
  scale: readonly [number, number];
  ratio: readonly [number, number];
  interpolation: TrainInterpolation;
}

/** Pick the resampling filter of one call ('random' → bilinear or bicubic with equal probability). */
export function pickInterpolation(interp: TrainInterpolation, rng: Rng): Interpolation {
  if (interp !== 'random') return interp;
  return RANDOM_INTERPOLATIONS[rng.randrange(0, RANDOM_INTERPOLATIONS.length)];
}

/** Crop `box` out of `img` and resize it to `size` ([h, w]) with Pillow's resampling. */
export function resizedCrop(img: RGBImage, box: CropBox, size: readonly [number, number], interp: Interpolation): RGBImage {
  const [oh, ow] = size;
  // F.resized_crop = img.crop((left, top, left + w, top + h)).resize((ow, oh), interp): taps are clamped at the
  // crop's edges, so this is not resize(box=...) of the whole image.
  // (`crop` resamples the window in place: no copy of it on the SIMD path.)
  return resizeRGB(img, ow, oh, interp, { crop: { left: box.left, top: box.top, width: box.width, height: box.height } });
}

/** The whole transform: sample the box, choose the filter, crop and resize. */
export function randomResizedCrop(img: RGBImage, opts: RrcOptions, rng: Rng): RGBImage {
  const box = sampleRrcParams(img.width, img.height, opts.scale, opts.ratio, rng);
  const interp = pickInterpolation(opts.interpolation, rng);
  return resizedCrop(img, box, opts.size, interp);
}

/**
 * The JPEG decode scale for a crop `box` (full-size coordinates) resized to `size` ([h, w]): the largest of 8, 4, 2
 * that keeps the scaled box at least as large as the output on both axes, else 1 (no shrink-on-load).
 */
export function shrinkOnLoadScale(box: Pick<CropBox, 'width' | 'height'>, size: readonly [number, number]): JpegScale {
  const [oh, ow] = size;
  for (const s of [8, 4, 2] as const) {
    if (box.width >= s * ow && box.height >= s * oh) return s;
  }
  return 1;
}

/** The box (full-size coordinates) divided by `scale`, as Pillow's resize(box=...) of an image decoded at 1/scale. */
function scaledBox(box: CropBox, scale: JpegScale, width: number, height: number): [number, number, number, number] {
  const s = scale;
  return [box.left / s, box.top / s, Math.min(width, (box.left + box.width) / s), Math.min(height, (box.top + box.height) / s)];
}

/**
 * `resizedCrop` from an image decoded at 1/scale: the box (full-size coordinates) is divided by `scale` and resampled
 * with Pillow's resize(box=...) (fractional box; taps near its edges may read just outside it, real image pixels).
 */
export function resizedCropScaled(
  img: RGBImage, box: CropBox, size: readonly [number, number], interp: Interpolation, scale: JpegScale,
): RGBImage {
  if (scale === 1) return resizedCrop(img, box, size, interp);
  const [oh, ow] = size;
  return resizeRGB(img, ow, oh, interp, { box: scaledBox(box, scale, img.width, img.height) });
}

/**
 * The pixels `resizedCropScaled` reads from a `width`×`height` image (decoded at 1/scale): the box itself at full
 * scale (taps clamped at its edges), else the taps of resize(box=...), which may reach just outside the scaled box.
 */
export function resizedCropSourceRegion(
  width: number, height: number, box: CropBox, size: readonly [number, number], interp: Interpolation, scale: JpegScale,
): Region {
  if (scale === 1) return { left: box.left, top: box.top, width: box.width, height: box.height };
  const [oh, ow] = size;
  return resizeSourceRegion(width, height, ow, oh, interp, { box: scaledBox(box, scale, width, height) });
}
