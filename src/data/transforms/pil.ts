/**
 * Pillow-semantics pixel operations on 8-bit RGB images (HWC, 3 channels), as used by timm's
 * training augmentations (RandAugment, ColorJitter, flips). Each function mirrors one Pillow
 * routine (libImaging C code or the Python in ImageOps / ImageEnhance) including its integer and
 * float32 rounding, so the uint8 results equal what `PIL` produces:
 *
 * - `point`/LUT ops (ImageOps.autocontrast, equalize, invert, posterize, solarize): lookup tables
 *   built exactly as the Python code does; table values are clipped to [0, 255] (CLIP8) as
 *   `Image.point` does.
 * - `blend` (ImagingBlend): `out = in1 + alpha·(in2 − in1)` evaluated in float32 (`alpha` is a C
 *   float), truncated to uint8; clipped to [0, 255] first when alpha is outside [0, 1].
 * - RGB → L (ITU-R 601-2 luma in 16.16 fixed point): `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`.
 * - `smooth` (ImageFilter.SMOOTH, ImagingFilter3x3): kernel [1 1 1; 1 5 1; 1 1 1] / 13 in float32
 *   with +0.5 for rounding; the first/last row and column are copied unchanged.
 * - `affine` (Image.transform(AFFINE) with a fill colour): the output pixel centre (x + 0.5, y + 0.5)
 *   is mapped through the matrix to a source position. NEAREST uses Pillow's fast paths (pure
 *   scaling/translation: double accumulation; otherwise 16.16 fixed point); BILINEAR / BICUBIC use
 *   Pillow's transform filters (edge-clamped taps, a = −1 cubic, truncation to uint8). Positions
 *   outside the source image keep the fill colour.
 * - `rotate` (Image.rotate, expand=False): counter-clockwise about (w/2, h/2), matrix entries
 *   rounded to 15 decimals as Pillow does; 0/180 degrees (and 90/270 on square images) are exact
 *   transposes.
 *
 * Speed (issue 12 part 3): the straightforward per-pixel ports (kept in test/helpers/pil_reference.ts,
 * which the tests compare against byte for byte on random images and parameters) made the train
 * transform cost 2.81 ms per image against Pillow + timm's 2.01 ms. Now: one loop per affine filter
 * with the 4×4 / 2×2 taps read unclamped inside the image and zero weights skipped (Shear/Translate
 * have dx or dy exactly 0), Color/Contrast/Brightness without intermediate images, SMOOTH's outer
 * row sums computed once per row, FLIP_LEFT_RIGHT by 32-bit words, and no property reads after the
 * long loops (AFTER_LOOP below). 2-core CPU box, 2026-11-30: train transform stage 1.91-1.96 ->
 * 1.45-1.48 ms per image in `npm run bench:data -- --n 512 --workers 1 --mode train` (load 2.8-3.5);
 * in-process CPU time of RRC + flip + RandAugment from a 500×375 image 1.49-1.84 -> 0.93-0.97 ms.
 */
import type { RGBImage } from './resize.js';
import { pyRoundTo } from '../../utils/pyformat.js';

export type { RGBImage } from './resize.js';

/** Resampling filters that Pillow's geometric transforms (affine/rotate) accept. */
export type TransformInterp = 'nearest' | 'bilinear' | 'bicubic';

export type Rgb = readonly [number, number, number];

const f32 = Math.fround;
const trunc = Math.trunc;

/*
 * AFTER_LOOP: the loops here run long enough that V8 optimizes them on-stack (OSR) in the first
 * call, and a property read that comes only after the loop (`img.width`, `Math.trunc`) then has no
 * type feedback; under Node 20 the optimized code deoptimized there again and again (dozens of
 * "Insufficient type feedback for generic named access" deopts per 600 train transforms, each
 * sending the next call's loop back to the interpreter until it was re-optimized). Such reads are
 * made, and the result object built, before the loop.
 */

// ---------------------------------------------------------------------------------------------
// Python number semantics
// ---------------------------------------------------------------------------------------------

/** Python `x % m` for floats (result has the sign of m). */
export function pyMod(x: number, m: number): number {
  const r = x % m;
  return r !== 0 && r < 0 !== m < 0 ? r + m : r;
}

// ---------------------------------------------------------------------------------------------
// Basic images
// ---------------------------------------------------------------------------------------------

export function checkImage(img: RGBImage): void {
  if (!(img.width > 0 && img.height > 0) || img.data.length !== img.width * img.height * 3) {
    throw new Error(`RGB image data has ${img.data.length} bytes, expected ${img.width}x${img.height}x3`);
  }
}

/** `Image.new('RGB', (w, h), fill)`. */
export function newImage(width: number, height: number, fill: Rgb = [0, 0, 0]): RGBImage {
  const data = new Uint8Array(width * height * 3);
  const res = { data, width, height }; // before the loop: see AFTER_LOOP
  if (fill[0] !== 0 || fill[1] !== 0 || fill[2] !== 0) {
    for (let i = 0; i < data.length; i += 3) {
      data[i] = fill[0];
      data[i + 1] = fill[1];
      data[i + 2] = fill[2];
    }
  }
  return res;
}

export function cloneImage(img: RGBImage): RGBImage {
  return { data: img.data.slice(), width: img.width, height: img.height };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * `Image.transpose(FLIP_LEFT_RIGHT)`. When rows are a whole number of 32-bit words (width a
 * multiple of 4, e.g. 224) four pixels (12 bytes) move as three little-endian words with their
 * bytes rearranged, a quarter of the loads and stores of the byte loop.
 */
export function flipLeftRight(img: RGBImage): RGBImage {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  if (w % 4 === 0 && data.byteOffset % 4 === 0 && LITTLE_ENDIAN) {
    flipWords(new Uint32Array(data.buffer, data.byteOffset, data.length >> 2), new Uint32Array(out.buffer), (w * 3) >> 2);
  } else {
    flipBytes(data, out, w * 3);
  }
  return { data: out, width: w, height: h };
}

function flipWords(src: Uint32Array, dst: Uint32Array, words: number): void {
  for (let row = 0; row < src.length; row += words) {
    // source block of pixels p0..p3 (bytes r0 g0 b0 r1 | g1 b1 r2 g2 | b2 r3 g3 b3) lands at the
    // mirrored block as p3..p0 (r3 g3 b3 r2 | g2 b2 r1 g1 | b1 r0 g0 b0)
    for (let s = row, d = row + words - 3, end = row + words; s < end; s += 3, d -= 3) {
      const A = src[s];
      const B = src[s + 1];
      const C = src[s + 2];
      dst[d] = (C >>> 8) | (((B >>> 16) & 0xff) << 24);
      dst[d + 1] = (B >>> 24) | ((C & 0xff) << 8) | ((A >>> 24) << 16) | ((B & 0xff) << 24);
      dst[d + 2] = ((B >>> 8) & 0xff) | (A << 8);
    }
  }
}

function flipBytes(data: Uint8Array, out: Uint8Array, stride: number): void {
  for (let row = 0; row < data.length; row += stride) {
    // source walks forward from the row start, destination backward from the row's last pixel
    for (let s = row, d = row + stride - 3, end = row + stride; s < end; s += 3, d -= 3) {
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
    }
  }
}

/** `Image.transpose(FLIP_TOP_BOTTOM)`. */
export function flipTopBottom(img: RGBImage): RGBImage {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  const stride = w * 3;
  for (let y = 0; y < h; y++) out.set(data.subarray(y * stride, (y + 1) * stride), (h - 1 - y) * stride);
  return { data: out, width: w, height: h };
}

/**
 * `Image.transpose(ROTATE_90 | ROTATE_180 | ROTATE_270)` (counter-clockwise quarter turns).
 * ROTATE_90: out[r][c] = in[c][W−1−r]; ROTATE_270: out[r][c] = in[H−1−c][r]. 90/270 swap W and H.
 */
export function rotateQuarter(img: RGBImage, quarterTurns: 1 | 2 | 3): RGBImage {
  const { width: w, height: h, data } = img;
  if (quarterTurns === 2) {
    const out = new Uint8Array(data.length);
    const n = w * h;
    for (let i = 0; i < n; i++) {
      const s = i * 3;
      const d = (n - 1 - i) * 3;
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
    }
    return { data: out, width: w, height: h };
  }
  const ow = h;
  const oh = w;
  const out = new Uint8Array(data.length);
  for (let r = 0; r < oh; r++) {
    for (let c = 0; c < ow; c++) {
      const s = quarterTurns === 1 ? (c * w + (w - 1 - r)) * 3 : ((h - 1 - c) * w + r) * 3;
      const d = (r * ow + c) * 3;
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
    }
  }
  return { data: out, width: ow, height: oh };
}

// ---------------------------------------------------------------------------------------------
// Histograms, lookup tables, ImageOps
// ---------------------------------------------------------------------------------------------

/** `Image.histogram()` of an RGB image: 768 counts, 256 per channel (R, G, B). */
export function histogram(img: RGBImage): Int32Array {
  const h = new Int32Array(768);
  const d = img.data;
  for (let i = 0; i < d.length; i += 3) {
    h[d[i]]++;
    h[256 + d[i + 1]]++;
    h[512 + d[i + 2]]++;
  }
  return h;
}

/**
 * `Image.point(lut)`: `lut` has 256 entries (same table for all channels) or 768 (one per
 * channel). Entries are clipped to [0, 255] like Pillow's CLIP8 when the table is loaded.
 */
export function point(img: RGBImage, lut: ArrayLike<number>): RGBImage {
  if (lut.length !== 256 && lut.length !== 768) throw new Error(`lookup table needs 256 or 768 entries, got ${lut.length}`);
  const t = new Uint8Array(768);
  for (let i = 0; i < 768; i++) {
    const v = Math.trunc(lut[lut.length === 256 ? i & 255 : i]);
    t[i] = v <= 0 ? 0 : v < 256 ? v : 255;
  }
  const { data: d, width, height } = img; // read before the loop: see AFTER_LOOP
  const out = new Uint8Array(d.length);
  const res = { data: out, width, height };
  for (let i = 0; i < d.length; i += 3) {
    out[i] = t[d[i]];
    out[i + 1] = t[256 + d[i + 1]];
    out[i + 2] = t[512 + d[i + 2]];
  }
  return res;
}

/**
 * `ImageOps.autocontrast(img)` (cutoff 0): per channel, lo/hi = lowest/highest value present;
 * if hi > lo, v ↦ clamp(int(v·scale + offset), 0, 255) with scale = 255/(hi−lo), offset = −lo·scale.
 */
export function autocontrast(img: RGBImage): RGBImage {
  const h = histogram(img);
  const lut: number[] = [];
  for (let b = 0; b < 768; b += 256) {
    let lo = 0;
    while (lo < 255 && h[b + lo] === 0) lo++;
    let hi = 255;
    while (hi > 0 && h[b + hi] === 0) hi--;
    if (hi <= lo) {
      for (let i = 0; i < 256; i++) lut.push(i);
    } else {
      const scale = 255.0 / (hi - lo);
      const offset = -lo * scale;
      for (let i = 0; i < 256; i++) {
        let v = Math.trunc(i * scale + offset); // Python int(): toward zero
        if (v < 0) v = 0;
        else if (v > 255) v = 255;
        lut.push(v);
      }
    }
  }
  return point(img, lut);
}

/**
 * `ImageOps.equalize(img)`: per channel, with h the histogram and `histo` its non-zero bins,
 * step = (sum(histo) − histo[-1]) // 255; identity if ≤ 1 non-zero bin or step == 0; otherwise
 * lut[i] = n // step with n starting at step // 2 and growing by h[i] after each entry.
 * (The last occupied value can map above 255; Image.point clips it to 255.)
 */
export function equalize(img: RGBImage): RGBImage {
  const h = histogram(img);
  const lut: number[] = [];
  for (let b = 0; b < 768; b += 256) {
    let sum = 0;
    let last = 0;
    let nonzero = 0;
    for (let i = 0; i < 256; i++) {
      const c = h[b + i];
      if (c) {
        sum += c;
        last = c;
        nonzero++;
      }
    }
    const step = nonzero <= 1 ? 0 : Math.floor((sum - last) / 255);
    if (step === 0) {
      for (let i = 0; i < 256; i++) lut.push(i);
    } else {
      let n = Math.floor(step / 2);
      for (let i = 0; i < 256; i++) {
        lut.push(Math.floor(n / step));
        n += h[b + i];
      }
    }
  }
  return point(img, lut);
}

/** `ImageOps.invert`: v ↦ 255 − v. */
export function invert(img: RGBImage): RGBImage {
  const lut = new Array<number>(256);
  for (let i = 0; i < 256; i++) lut[i] = 255 - i;
  return point(img, lut);
}

/** `ImageOps.posterize(img, bits)`: v ↦ v & ~(2^(8−bits) − 1) (bits ≤ 0 → 0, bits ≥ 8 → v). */
export function posterize(img: RGBImage, bits: number): RGBImage {
  const lut = new Array<number>(256);
  const mask = bits >= 8 ? 255 : bits <= 0 ? 0 : ~(2 ** (8 - bits) - 1) & 255;
  for (let i = 0; i < 256; i++) lut[i] = i & mask;
  return point(img, lut);
}

/** `ImageOps.solarize(img, threshold)`: v ≥ threshold ↦ 255 − v. */
export function solarize(img: RGBImage, threshold: number): RGBImage {
  const lut = new Array<number>(256);
  for (let i = 0; i < 256; i++) lut[i] = i < threshold ? i : 255 - i;
  return point(img, lut);
}

/** timm `solarize_add`: v < threshold ↦ min(255, v + add). */
export function solarizeAdd(img: RGBImage, add: number, threshold = 128): RGBImage {
  const lut = new Array<number>(256);
  for (let i = 0; i < 256; i++) lut[i] = i < threshold ? Math.min(255, i + add) : i;
  return point(img, lut);
}

// ---------------------------------------------------------------------------------------------
// Colour conversion, blending, enhancement
// ---------------------------------------------------------------------------------------------

/** `img.convert('L')`: ITU-R 601-2 luma in fixed point, (19595 R + 38470 G + 7471 B + 0x8000) >> 16. */
export function toGray(img: RGBImage): Uint8Array {
  const d = img.data;
  const n = img.width * img.height;
  const out = new Uint8Array(n);
  for (let i = 0, p = 0; i < n; i++, p += 3) {
    out[i] = (d[p] * 19595 + d[p + 1] * 38470 + d[p + 2] * 7471 + 0x8000) >>> 16;
  }
  return out;
}

/** `L.convert('RGB')`: replicate the luma in all three channels. */
export function grayToRgb(gray: Uint8Array, width: number, height: number): RGBImage {
  const out = new Uint8Array(width * height * 3);
  for (let i = 0, p = 0; i < gray.length; i++, p += 3) {
    out[p] = out[p + 1] = out[p + 2] = gray[i];
  }
  return { data: out, width, height };
}

/**
 * `Image.blend(im1, im2, alpha)` (ImagingBlend): alpha is a C float; for 0 ≤ alpha ≤ 1,
 * out = (uint8)(in1 + alpha·(in2 − in1)) in float32 arithmetic; otherwise the float32 result is
 * clipped to [0, 255] before truncation. alpha == 0 / 1 return copies of im1 / im2.
 */
export function blend(im1: RGBImage, im2: RGBImage, alpha: number): RGBImage {
  if (im1.width !== im2.width || im1.height !== im2.height) throw new Error('blend: images differ in size');
  const a = f32(alpha);
  if (im1 === im2 || a === 0) return cloneImage(im1);
  if (a === 1) return cloneImage(im2);
  const { data: p, width, height } = im1; // read before the loop: see AFTER_LOOP
  const q = im2.data;
  const out = new Uint8Array(p.length);
  const res = { data: out, width, height };
  const prod = blendProducts(a);
  if (a >= 0 && a <= 1) {
    for (let i = 0; i < p.length; i++) out[i] = Math.trunc(f32(p[i] + prod[q[i] - p[i] + 255]));
  } else {
    for (let i = 0; i < p.length; i++) {
      const t = f32(p[i] + prod[q[i] - p[i] + 255]);
      out[i] = t <= 0 ? 0 : t >= 255 ? 255 : Math.trunc(t);
    }
  }
  return res;
}

/** (float)alpha · (in2 − in1) for every difference in [−255, 255], rounded to float32 (index diff + 255). */
function blendProducts(a: number): Float64Array {
  const prod = new Float64Array(511);
  for (let diff = -255; diff <= 255; diff++) prod[diff + 255] = f32(a * diff);
  return prod;
}

/**
 * `blend(constant image c, img, alpha)` without building the constant image: with in1 fixed the
 * result depends on in2 alone, so ImagingBlend's float32 expression (clip, truncation) is
 * evaluated once per uint8 value into a 256-entry table (alpha 0 and 1 give c and in2, as
 * blend's copies do).
 */
function blendFromConstant(c: number, img: RGBImage, alpha: number): RGBImage {
  const prod = blendProducts(f32(alpha));
  const t = new Uint8Array(256);
  for (let v = 0; v < 256; v++) {
    const r = f32(c + prod[v - c + 255]);
    t[v] = r <= 0 ? 0 : r >= 255 ? 255 : Math.trunc(r);
  }
  const { data: d, width, height } = img; // read before the loop: see AFTER_LOOP
  const out = new Uint8Array(d.length);
  const res = { data: out, width, height };
  for (let i = 0; i < d.length; i++) out[i] = t[d[i]];
  return res;
}

/**
 * `ImageEnhance.Color(img).enhance(f)`: blend(gray replicated to RGB, img, f), with the luma of
 * each pixel computed in the blend loop instead of as two intermediate images.
 */
export function enhanceColor(img: RGBImage, factor: number): RGBImage {
  const a = f32(factor);
  if (a === 0) return grayToRgb(toGray(img), img.width, img.height);
  if (a === 1) return cloneImage(img);
  const { data: d, width, height } = img; // read before the loop: see AFTER_LOOP
  const out = new Uint8Array(d.length);
  const res = { data: out, width, height };
  const prod = blendProducts(a);
  const clip = !(a >= 0 && a <= 1);
  for (let p = 0; p < d.length; p += 3) {
    const r = d[p], g = d[p + 1], b = d[p + 2];
    const l = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
    const o = 255 - l;
    const vr = f32(l + prod[r + o]);
    const vg = f32(l + prod[g + o]);
    const vb = f32(l + prod[b + o]);
    if (clip) {
      out[p] = vr <= 0 ? 0 : vr >= 255 ? 255 : Math.trunc(vr);
      out[p + 1] = vg <= 0 ? 0 : vg >= 255 ? 255 : Math.trunc(vg);
      out[p + 2] = vb <= 0 ? 0 : vb >= 255 ? 255 : Math.trunc(vb);
    } else {
      out[p] = Math.trunc(vr);
      out[p + 1] = Math.trunc(vg);
      out[p + 2] = Math.trunc(vb);
    }
  }
  return res;
}

/** `int(ImageStat.Stat(img.convert('L')).mean[0] + 0.5)`: the mean used by ImageEnhance.Contrast. */
export function contrastMean(img: RGBImage): number {
  const d = img.data;
  const n = img.width * img.height;
  let s = 0;
  for (let p = 0; p < d.length; p += 3) s += (d[p] * 19595 + d[p + 1] * 38470 + d[p + 2] * 7471 + 0x8000) >>> 16;
  return trunc(s / n + 0.5); // a module constant, not Math.trunc: see AFTER_LOOP
}

/** `ImageEnhance.Contrast(img).enhance(f)`: blend(constant grey = rounded mean luma, img, f). */
export function enhanceContrast(img: RGBImage, factor: number): RGBImage {
  return blendFromConstant(contrastMean(img), img, factor);
}

/** `ImageEnhance.Brightness(img).enhance(f)`: blend(black, img, f). */
export function enhanceBrightness(img: RGBImage, factor: number): RGBImage {
  return blendFromConstant(0, img, factor);
}

/** `ImageEnhance.Sharpness(img).enhance(f)`: blend(img.filter(SMOOTH), img, f). */
export function enhanceSharpness(img: RGBImage, factor: number): RGBImage {
  return blend(smooth(img), img, factor);
}

/**
 * `img.filter(ImageFilter.SMOOTH)`: 3×3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 (float32 weights),
 * float32 accumulation starting at 0.5 (rounding), clamped and truncated; border rows/columns are
 * copied. Images smaller than 3×3 are returned unchanged (Pillow returns a copy).
 */
export function smooth(img: RGBImage): RGBImage {
  const { width: w, height: h, data } = img;
  const out = data.slice();
  const res = { data: out, width: w, height: h }; // before the loops: see AFTER_LOOP
  if (w < 3 || h < 3) return res;
  const k1 = f32(1 / 13);
  const k5 = f32(5 / 13);
  // (float)v · k for every uint8 v (the products are rounded to float32 before the sums)
  const t1 = new Float64Array(256);
  const t5 = new Float64Array(256);
  for (let v = 0; v < 256; v++) {
    t1[v] = f32(v * k1);
    t5[v] = f32(v * k5);
  }
  const stride = w * 3;
  const d = data;
  // KERNEL1x3(row, x, k) = ((float)row[x-1]·k0 + (float)row[x]·k1) + (float)row[x+1]·k2, all float32.
  // The outer kernel rows are all 1/13, so a source row's sum is the same float32 number when the
  // row is "below" output row y−1 and "above" output row y+1: each is computed once (index: byte
  // in the row) and the three row buffers rotate.
  let above = new Float64Array(stride);
  let mid = new Float64Array(stride);
  let below = new Float64Array(stride);
  for (let j = 3; j < stride - 3; j++) {
    above[j] = f32(f32(t1[d[j - 3]] + t1[d[j]]) + t1[d[j + 3]]);
    mid[j] = f32(f32(t1[d[stride + j - 3]] + t1[d[stride + j]]) + t1[d[stride + j + 3]]);
  }
  for (let y = 1; y < h - 1; y++) {
    const nb = (y + 1) * stride; // row below: kernel[0..2]; `above` is row y−1: kernel[6..8]
    for (let j = 3; j < stride - 3; j++) below[j] = f32(f32(t1[d[nb + j - 3]] + t1[d[nb + j]]) + t1[d[nb + j + 3]]);
    const r = y * stride;
    for (let j = 3; j < stride - 3; j++) {
      const p = r + j;
      const centre = f32(f32(t1[d[p - 3]] + t5[d[p]]) + t1[d[p + 3]]);
      // offset 0 + 0.5 for rounding, then the three rows in Pillow's order
      const ss = f32(f32(f32(0.5 + below[j]) + centre) + above[j]);
      out[p] = ss <= 0 ? 0 : ss >= 255 ? 255 : Math.trunc(ss);
    }
    const t = above;
    above = mid;
    mid = below;
    below = t;
  }
  return res;
}

// ---------------------------------------------------------------------------------------------
// HSV (for torchvision's adjust_hue on PIL images)
// ---------------------------------------------------------------------------------------------

const clip8i = (v: number): number => (v <= 0 ? 0 : v < 256 ? v : 255);
/** C `round()`: half away from zero. */
const cRound = (v: number): number => (v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5));

/** `img.convert('HSV')` (Pillow rgb2hsv, float32/double mix as in Convert.c). Returns H, S, V planes interleaved. */
export function rgbToHsv(img: RGBImage): Uint8Array {
  const d = img.data;
  const out = new Uint8Array(d.length);
  for (let p = 0; p < d.length; p += 3) {
    const r = d[p], g = d[p + 1], b = d[p + 2];
    const maxc = Math.max(r, g, b);
    const minc = Math.min(r, g, b);
    let uh = 0, us = 0;
    if (minc !== maxc) {
      const cr = f32(maxc - minc);
      const s = f32(cr / maxc);
      const rc = f32((maxc - r) / cr);
      const gc = f32((maxc - g) / cr);
      const bc = f32((maxc - b) / cr);
      let h: number;
      if (r === maxc) h = f32(bc - gc);
      else if (g === maxc) h = f32(2.0 + rc - bc);
      else h = f32(4.0 + gc - rc);
      h = f32(cFmod(h / 6.0 + 1.0, 1.0));
      uh = clip8i(Math.trunc(h * 255.0));
      us = clip8i(Math.trunc(s * 255.0));
    }
    out[p] = uh;
    out[p + 1] = us;
    out[p + 2] = maxc;
  }
  return out;
}

/** C fmod (sign of the dividend). */
function cFmod(x: number, m: number): number {
  return x % m;
}

/** `Image.merge('HSV', ...).convert('RGB')` (Pillow hsv2rgb). */
export function hsvToRgb(hsv: Uint8Array, width: number, height: number): RGBImage {
  const out = new Uint8Array(hsv.length);
  for (let p = 0; p < hsv.length; p += 3) {
    const h = hsv[p], s = hsv[p + 1], v = hsv[p + 2];
    if (s === 0) {
      out[p] = out[p + 1] = out[p + 2] = v;
      continue;
    }
    const i = Math.floor((h * 6.0) / 255.0);
    const f = f32((h * 6.0) / 255.0 - i);
    const fs = f32(s / 255.0);
    const up = clip8i(cRound(v * (1.0 - fs)));
    const uq = clip8i(cRound(v * (1.0 - f32(fs * f))));
    // fs · (1.0 − f) is a float times a double: evaluated in double
    const ut = clip8i(cRound(v * (1.0 - fs * (1.0 - f))));
    let r: number, g: number, b: number;
    switch (i % 6) {
      case 0: r = v; g = ut; b = up; break;
      case 1: r = uq; g = v; b = up; break;
      case 2: r = up; g = v; b = ut; break;
      case 3: r = up; g = uq; b = v; break;
      case 4: r = ut; g = up; b = v; break;
      default: r = v; g = up; b = uq; break;
    }
    out[p] = r;
    out[p + 1] = g;
    out[p + 2] = b;
  }
  return { data: out, width, height };
}

/**
 * torchvision `adjust_hue` for PIL images: convert to HSV, add uint8(hue_factor·255) to H with
 * uint8 wrap-around, convert back. hue_factor ∈ [−0.5, 0.5].
 */
export function adjustHue(img: RGBImage, hueFactor: number): RGBImage {
  if (!(hueFactor >= -0.5 && hueFactor <= 0.5)) throw new Error(`hue factor ${hueFactor} is not in [-0.5, 0.5]`);
  const hsv = rgbToHsv(img);
  const shift = ((Math.trunc(hueFactor * 255) % 256) + 256) % 256;
  for (let p = 0; p < hsv.length; p += 3) hsv[p] = (hsv[p] + shift) & 255;
  return hsvToRgb(hsv, img.width, img.height);
}

// ---------------------------------------------------------------------------------------------
// Affine transforms (Image.transform(size, AFFINE, matrix, resample, fillcolor=fill))
// ---------------------------------------------------------------------------------------------

/** C `COORD(v)`: −1 for negatives, truncation otherwise. */
const coord = (v: number): number => (v < 0.0 ? -1 : Math.trunc(v));

/**
 * `img.transform((outW, outH), Image.AFFINE, a, resample, fillcolor=fill)`.
 * Output pixel (x, y) samples the source at (a0·(x+.5) + a1·(y+.5) + a2, a3·(x+.5) + a4·(y+.5) + a5).
 */
export function affine(
  img: RGBImage,
  a: readonly number[],
  resample: TransformInterp,
  fill: Rgb,
  outW = img.width,
  outH = img.height,
): RGBImage {
  if (a.length < 6) throw new Error('affine matrix needs 6 coefficients');
  if (resample !== 'nearest') {
    const out = { data: new Uint8Array(outW * outH * 3), width: outW, height: outH, fill0: fill[0], fill1: fill[1], fill2: fill[2] };
    if (resample === 'bilinear') affineBilinear(img, a, out);
    else affineBicubic(img, a, out);
    return { data: out.data, width: outW, height: outH };
  }
  const out = newImage(outW, outH, fill);
  if (a[1] === 0 && a[3] === 0) scaleAffine(img, out, a);
  else if (
    checkFixed(a, 0, 0) && checkFixed(a, outW, outH) && checkFixed(a, 0, outH) && checkFixed(a, outW, 0)
  ) affineFixed(img, out, a);
  else affineNearestDouble(img, out, a);
  return out;
}

/** An output image with the fill colour for pixels that map outside the source. */
interface FillTarget extends RGBImage {
  fill0: number;
  fill1: number;
  fill2: number;
}

/**
 * ImagingGenericTransform + affine_transform + bilinear_filter32RGB, one loop per filter.
 * The source position is Pillow's per-pixel double expression `a0·(x+.5) + a1·(y+.5) + a2`
 * (a1·(y+.5) is the same product for the whole row, so it is taken once per row; the sum is
 * evaluated in the same order). Pixels whose 2×2 taps all lie inside the image are sampled
 * inline; those at the border go through `bilinearSample` (edge clamping) and those outside get
 * the fill colour (the output is not pre-filled). A weight of exactly 0 (dx for ShearY and
 * TranslateY, dy for ShearX and TranslateX: x + .5 − .5 is exact) skips its interpolation,
 * since `v + (w − v)·0` is `v`.
 */
function affineBilinear(img: RGBImage, a: readonly number[], out: FillTarget): void {
  const { width: w, height: h, data } = img;
  const { width: outW, height: outH, data: od } = out;
  const stride = w * 3;
  const a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
  const { fill0, fill1, fill2 } = out;
  let o = 0;
  for (let y = 0; y < outH; y++) {
    const yc = y + 0.5;
    const rx = a1 * yc;
    const ry = a4 * yc;
    for (let x = 0; x < outW; x++, o += 3) {
      const xc = x + 0.5;
      const xin = a0 * xc + rx + a2;
      const yin = a3 * xc + ry + a5;
      if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) {
        od[o] = fill0;
        od[o + 1] = fill1;
        od[o + 2] = fill2;
        continue;
      }
      const xs = xin - 0.5;
      const ys = yin - 0.5;
      const xi = Math.floor(xs);
      const yi = Math.floor(ys);
      if (xi < 0 || xi + 1 >= w || yi < 0 || yi + 1 >= h) {
        bilinearSample(img, xin, yin, od, o);
        continue;
      }
      const dx = xs - xi;
      const dy = ys - yi;
      const p = yi * stride + xi * 3;
      if (dy === 0) {
        if (dx === 0) {
          od[o] = data[p];
          od[o + 1] = data[p + 1];
          od[o + 2] = data[p + 2];
        } else {
          for (let b = 0; b < 3; b++) od[o + b] = Math.trunc(data[p + b] + (data[p + 3 + b] - data[p + b]) * dx);
        }
      } else if (dx === 0) {
        for (let b = 0; b < 3; b++) od[o + b] = Math.trunc(data[p + b] + (data[p + stride + b] - data[p + b]) * dy);
      } else {
        for (let b = 0; b < 3; b++) {
          const q = p + b;
          const v1 = data[q] + (data[q + 3] - data[q]) * dx;
          const v2 = data[q + stride] + (data[q + stride + 3] - data[q + stride]) * dx;
          od[o + b] = Math.trunc(v1 + (v2 - v1) * dy);
        }
      }
    }
  }
}

/** Pillow's transform cubic of the four taps data[i], data[i+3], data[i+6], data[i+9] (integers: p2..p4 are exact). */
function cubicTaps(data: Uint8Array, i: number, d: number): number {
  const v1 = data[i], v2 = data[i + 3], v3 = data[i + 6], v4 = data[i + 9];
  return v2 + d * (v3 - v1 + d * (2 * (v1 - v2) + v3 - v4 + d * (v2 - v1 - v3 + v4)));
}

/** Pillow's transform cubic of four column taps `step` apart (integers, exact as in cubicTaps). */
function cubicColumn(data: Uint8Array, i: number, step: number, d: number): number {
  const v1 = data[i], v2 = data[i + step], v3 = data[i + 2 * step], v4 = data[i + 3 * step];
  return v2 + d * (v3 - v1 + d * (2 * (v1 - v2) + v3 - v4 + d * (v2 - v1 - v3 + v4)));
}

/**
 * ImagingGenericTransform + affine_transform + bicubic_filter32RGB, one loop (see affineBilinear
 * for the coordinates, the border and the fill). Inside the image the 4×4 taps are read without
 * clamping. dy == 0 (ShearX, TranslateX) leaves only the horizontal cubic of row y, dx == 0
 * (ShearY, TranslateY) only the vertical cubic of column x: `cubic(v1..v4, 0)` is `v2` exactly.
 */
function affineBicubic(img: RGBImage, a: readonly number[], out: FillTarget): void {
  const { width: w, height: h, data } = img;
  const { width: outW, height: outH, data: od } = out;
  const stride = w * 3;
  const a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3], a4 = a[4], a5 = a[5];
  const { fill0, fill1, fill2 } = out;
  let o = 0;
  for (let y = 0; y < outH; y++) {
    const yc = y + 0.5;
    const rx = a1 * yc;
    const ry = a4 * yc;
    for (let x = 0; x < outW; x++, o += 3) {
      const xc = x + 0.5;
      const xin = a0 * xc + rx + a2;
      const yin = a3 * xc + ry + a5;
      if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) {
        od[o] = fill0;
        od[o + 1] = fill1;
        od[o + 2] = fill2;
        continue;
      }
      const xs = xin - 0.5;
      const ys = yin - 0.5;
      const xi = Math.floor(xs);
      const yi = Math.floor(ys);
      if (xi < 1 || xi + 2 >= w || yi < 1 || yi + 2 >= h) {
        bicubicSample(img, xin, yin, od, o);
        continue;
      }
      const dx = xs - xi;
      const dy = ys - yi;
      const p = (yi - 1) * stride + (xi - 1) * 3; // top-left tap
      for (let b = 0; b < 3; b++) {
        const q = p + b;
        let v: number;
        if (dy === 0) v = dx === 0 ? data[q + stride + 3] : cubicTaps(data, q + stride, dx);
        else if (dx === 0) v = cubicColumn(data, q + 3, stride, dy);
        else {
          v = cubic(
            cubicTaps(data, q, dx),
            cubicTaps(data, q + stride, dx),
            cubicTaps(data, q + 2 * stride, dx),
            cubicTaps(data, q + 3 * stride, dx),
            dy,
          );
        }
        od[o + b] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : Math.trunc(v);
      }
    }
  }
}

function copyPixel(src: Uint8Array, s: number, dst: Uint8Array, d: number): void {
  dst[d] = src[s];
  dst[d + 1] = src[s + 1];
  dst[d + 2] = src[s + 2];
}

/** ImagingScaleAffine (a1 == a3 == 0): nearest, source coordinates accumulated in double. */
function scaleAffine(img: RGBImage, out: RGBImage, a: readonly number[]): void {
  const { width: ow, height: oh } = out;
  const xintab = new Int32Array(ow);
  let xo = a[2] + a[0] * 0.5;
  let yo = a[5] + a[4] * 0.5;
  let xmin = ow;
  let xmax = 0;
  for (let x = 0; x < ow; x++) {
    const xin = coord(xo);
    if (xin >= 0 && xin < img.width) {
      xmax = x + 1;
      if (x < xmin) xmin = x;
      xintab[x] = xin;
    }
    xo += a[0];
  }
  for (let y = 0; y < oh; y++) {
    const yi = coord(yo);
    if (yi >= 0 && yi < img.height) {
      const row = yi * img.width * 3;
      for (let x = xmin; x < xmax; x++) copyPixel(img.data, row + xintab[x] * 3, out.data, (y * ow + x) * 3);
    }
    yo += a[4];
  }
}

function checkFixed(a: readonly number[], x: number, y: number): boolean {
  return Math.abs(x * a[0] + y * a[1] + a[2]) < 32768.0 && Math.abs(x * a[3] + y * a[4] + a[5]) < 32768.0;
}

/** affine_fixed: nearest neighbour in 16.16 fixed point (Pillow's general NEAREST affine path). */
function affineFixed(img: RGBImage, out: RGBImage, a: readonly number[]): void {
  const FIX = (v: number): number => Math.floor(v * 65536.0 + 0.5);
  const a0 = FIX(a[0]);
  const a1 = FIX(a[1]);
  const a3 = FIX(a[3]);
  const a4 = FIX(a[4]);
  let a2 = FIX(a[2] + a[0] * 0.5 + a[1] * 0.5);
  let a5 = FIX(a[5] + a[3] * 0.5 + a[4] * 0.5);
  const { width: ow, height: oh } = out;
  for (let y = 0; y < oh; y++) {
    let xx = a2;
    let yy = a5;
    for (let x = 0; x < ow; x++) {
      const xin = xx >> 16;
      if (xin >= 0 && xin < img.width) {
        const yin = yy >> 16;
        if (yin >= 0 && yin < img.height) copyPixel(img.data, (yin * img.width + xin) * 3, out.data, (y * ow + x) * 3);
      }
      xx += a0;
      yy += a3;
    }
    a2 += a1;
    a5 += a4;
  }
}

/** Pillow's double-precision NEAREST affine (only reached for coordinates beyond ±32768). */
function affineNearestDouble(img: RGBImage, out: RGBImage, a: readonly number[]): void {
  let xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
  let yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
  const { width: ow, height: oh } = out;
  for (let y = 0; y < oh; y++) {
    let xx = xo;
    let yy = yo;
    for (let x = 0; x < ow; x++) {
      const xin = coord(xx);
      if (xin >= 0 && xin < img.width) {
        const yin = coord(yy);
        if (yin >= 0 && yin < img.height) copyPixel(img.data, (yin * img.width + xin) * 3, out.data, (y * ow + x) * 3);
      }
      xx += a[0];
      yy += a[3];
    }
    xo += a[1];
    yo += a[4];
  }
}

const clampIdx = (v: number, n: number): number => (v < 0 ? 0 : v < n ? v : n - 1);

/** bilinear_filter32RGB: taps clamped to the edge, result truncated. Leaves `out` alone outside the image. */
function bilinearSample(img: RGBImage, xin: number, yin: number, out: Uint8Array, o: number): void {
  const { width: w, height: h, data } = img;
  if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) return;
  xin -= 0.5;
  yin -= 0.5;
  const x = Math.floor(xin);
  const y = Math.floor(yin);
  const dx = xin - x;
  const dy = yin - y;
  const r0 = clampIdx(y, h) * w * 3;
  const hasR1 = y + 1 >= 0 && y + 1 < h;
  const r1 = (y + 1) * w * 3;
  const x0 = clampIdx(x, w) * 3;
  const x1 = clampIdx(x + 1, w) * 3;
  for (let b = 0; b < 3; b++) {
    let v1 = data[r0 + x0 + b] + (data[r0 + x1 + b] - data[r0 + x0 + b]) * dx;
    const v2 = hasR1 ? data[r1 + x0 + b] + (data[r1 + x1 + b] - data[r1 + x0 + b]) * dx : v1;
    v1 = v1 + (v2 - v1) * dy;
    out[o + b] = Math.trunc(v1);
  }
}

/** Pillow's transform cubic (a = −1): p1 + d·(p2 + d·(p3 + d·p4)). */
function cubic(v1: number, v2: number, v3: number, v4: number, d: number): number {
  const p1 = v2;
  const p2 = -v1 + v3;
  const p3 = 2 * (v1 - v2) + v3 - v4;
  const p4 = -v1 + v2 - v3 + v4;
  return p1 + d * (p2 + d * (p3 + d * p4));
}

/** bicubic_filter32RGB: 4×4 taps clamped to the edge, result clipped to [0, 255] and truncated. */
function bicubicSample(img: RGBImage, xin: number, yin: number, out: Uint8Array, o: number): void {
  const { width: w, height: h, data } = img;
  if (xin < 0.0 || xin >= w || yin < 0.0 || yin >= h) return;
  xin -= 0.5;
  yin -= 0.5;
  let x = Math.floor(xin);
  let y = Math.floor(yin);
  const dx = xin - x;
  const dy = yin - y;
  x--;
  y--;
  const x0 = clampIdx(x, w) * 3;
  const x1 = clampIdx(x + 1, w) * 3;
  const x2 = clampIdx(x + 2, w) * 3;
  const x3 = clampIdx(x + 3, w) * 3;
  const stride = w * 3;
  // Row y is edge-clamped; rows y+1..y+3 outside the image repeat the previous row's value.
  const r0 = clampIdx(y, h) * stride;
  const in1 = y + 1 >= 0 && y + 1 < h;
  const in2 = y + 2 >= 0 && y + 2 < h;
  const in3 = y + 3 >= 0 && y + 3 < h;
  const r1 = (y + 1) * stride;
  const r2 = (y + 2) * stride;
  const r3 = (y + 3) * stride;
  for (let b = 0; b < 3; b++) {
    const v1 = cubic(data[r0 + x0 + b], data[r0 + x1 + b], data[r0 + x2 + b], data[r0 + x3 + b], dx);
    const v2 = in1 ? cubic(data[r1 + x0 + b], data[r1 + x1 + b], data[r1 + x2 + b], data[r1 + x3 + b], dx) : v1;
    const v3 = in2 ? cubic(data[r2 + x0 + b], data[r2 + x1 + b], data[r2 + x2 + b], data[r2 + x3 + b], dx) : v2;
    const v4 = in3 ? cubic(data[r3 + x0 + b], data[r3 + x1 + b], data[r3 + x2 + b], data[r3 + x3 + b], dx) : v3;
    const v = cubic(v1, v2, v3, v4, dy);
    out[o + b] = v <= 0.0 ? 0 : v >= 255.0 ? 255 : Math.trunc(v);
  }
}

/**
 * `img.rotate(angle, resample, expand=False, fillcolor=fill)`: counter-clockwise by `angle`
 * degrees about the image centre (w/2, h/2), same output size.
 */
export function rotate(img: RGBImage, angle: number, resample: TransformInterp, fill: Rgb): RGBImage {
  angle = pyMod(angle, 360.0);
  const { width: w, height: h } = img;
  if (angle === 0) return cloneImage(img);
  if (angle === 180) return rotateQuarter(img, 2);
  if ((angle === 90 || angle === 270) && w === h) return rotateQuarter(img, angle === 90 ? 1 : 3);
  const rad = -(angle * (Math.PI / 180.0)); // CPython math.radians(x) = x · (π/180)
  // Pillow: round(math.cos(angle), 15) etc.
  const m = [pyRoundTo(Math.cos(rad), 15), pyRoundTo(Math.sin(rad), 15), 0.0, pyRoundTo(-Math.sin(rad), 15), pyRoundTo(Math.cos(rad), 15), 0.0];
  const cx = w / 2;
  const cy = h / 2;
  // matrix[2], matrix[5] = transform(-cx, -cy, matrix); then += centre
  const t2 = m[0] * -cx + m[1] * -cy + m[2];
  const t5 = m[3] * -cx + m[4] * -cy + m[5];
  m[2] = t2 + cx;
  m[5] = t5 + cy;
  return affine(img, m, resample, fill);
}
