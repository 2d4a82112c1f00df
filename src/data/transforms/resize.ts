/**
 * Pillow-exact image resampling for 8-bit RGB images (HWC, 3 channels).
 *
 * torchvision's Resize / RandomResizedCrop on PIL images call `Image.resize(size, filter)`, which
 * runs Pillow's `ImagingResample` (libImaging/Resample.c). This file is a line-by-line port of
 * that algorithm, so our eval/train transforms produce the same uint8 pixels as timm does:
 *
 * - separable convolution, horizontal pass first, then vertical; the intermediate image is uint8;
 * - filters: box (support 0.5), bilinear (1), hamming (1), bicubic (2, a = -0.5), lanczos (3);
 * - antialiasing when shrinking: the filter is stretched by `scale = in/out` (support·scale taps);
 * - coefficients normalised to sum 1 in double precision, then converted to fixed point with
 *   PRECISION_BITS = 22 (round half away from zero), accumulated in integers starting from
 *   1 << 21 (so the final `>> 22` rounds) and clipped to [0, 255];
 * - NEAREST does not convolve: it is an affine scaling that samples `floor((x + 0.5)·scale)`,
 *   accumulating the source coordinate by repeated addition as Pillow does.
 *
 * `region` lets a caller compute only a window of the resized image (e.g. the centre crop that
 * follows the resize). Every output pixel depends only on its own filter window, so the window is
 * bit-identical to cropping the full resize, at a fraction of the cost.
 *
 * Speed: both passes run as WebAssembly SIMD kernels (resample_simd.wat: the vertical pass 16 bytes at a time, the
 * horizontal one a pixel at a time, four taps per step as i16 dot products) when the runtime has SIMD, else as the
 * plain-JS loops below (the reference: the tests check that both give the same bytes). Same integer arithmetic, so
 * the same pixels. Measured on the 2-core box, timm's eval resize of 375-500 px images to 224 (bicubic): JS 3.6 ms
 * per image, SIMD see docs/BENCHMARKS.md.
 *
 * Note for crop-then-resize transforms (torchvision `resized_crop`, used by RandomResizedCrop): PIL
 * crops first and resizes the cropped image, so filter taps are clamped at the crop's edges. Do
 * `resizeRGB(cropRGB(img, box), w, h, interp)` for that; `opts.box` is Pillow's resize(box=...),
 * whose taps may reach outside the box, which is a different result near the edges.
 */

import { RESAMPLE_SIMD_WASM } from './resample_simd.js';

export type Interpolation = 'nearest' | 'bilinear' | 'bicubic' | 'lanczos' | 'box' | 'hamming';

export const INTERPOLATIONS: readonly Interpolation[] = ['nearest', 'bilinear', 'bicubic', 'lanczos', 'box', 'hamming'];

/** An 8-bit RGB image, row-major HWC, `data.length === width * height * 3`. */
export interface RGBImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** A window of the (virtual) resized image: columns [left, left+width), rows [top, top+height). */
export interface Region {
  left: number;
  top: number;
  width: number;
  height: number;
}

interface Filter {
  support: number;
  fn: (x: number) => number;
}

function sinc(x: number): number {
  if (x === 0.0) return 1.0;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

const FILTERS: Record<Exclude<Interpolation, 'nearest'>, Filter> = {
  box: { support: 0.5, fn: (x) => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0) },
  bilinear: {
    support: 1.0,
    fn: (x) => {
      if (x < 0.0) x = -x;
      return x < 1.0 ? 1.0 - x : 0.0;
    },
  },
  hamming: {
    support: 1.0,
    fn: (x) => {
      if (x < 0.0) x = -x;
      if (x === 0.0) return 1.0;
      if (x >= 1.0) return 0.0;
      x = x * Math.PI;
      return (Math.sin(x) / x) * (0.54 + 0.46 * Math.cos(x));
    },
  },
  bicubic: {
    support: 2.0,
    // Keys cubic with a = -0.5 (Catmull-Rom), exactly as Pillow writes it.
    fn: (x) => {
      const a = -0.5;
      if (x < 0.0) x = -x;
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
  lanczos: { support: 3.0, fn: (x) => (-3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0) },
};

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

/** Fixed-point filter coefficients for one axis (Pillow's precompute_coeffs + normalize_coeffs_8bpc). */
interface Coeffs {
  ksize: number;
  /** per output index: first input index */
  xmin: Int32Array;
  /** per output index: number of taps */
  xlen: Int32Array;
  /** fixed-point weights, ksize per output index */
  k: Int32Array;
}

/**
 * Which of Pillow's two passes a resize runs (ImagingResample: horizontal when the width or the box's x range
 * changes, vertical likewise): resizeRGB and resizeSourceRegion must agree on it, so both ask here.
 */
function passesNeeded(W: number, H: number, outW: number, outH: number, box: readonly number[]): [boolean, boolean] {
  return [outW !== W || box[0] !== 0 || box[2] !== outW, outH !== H || box[1] !== 0 || box[3] !== outH];
}

/** Pillow's precompute_coeffs geometry of one axis: input step per output pixel, filter stretch and support. */
function axisGeometry(in0: number, in1: number, outSize: number, filter: Filter): { scale: number; filterscale: number; support: number } {
  const scale = (in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  return { scale, filterscale, support: filter.support * filterscale };
}

/** The taps of output index xx (precompute_coeffs): centre and input indices [xmin, xmax), written into `tap`. */
const tap = { center: 0, xmin: 0, xmax: 0 };
function tapWindow(inSize: number, in0: number, scale: number, support: number, xx: number): typeof tap {
  const center = in0 + (xx + 0.5) * scale;
  // C `(int)` truncates toward zero.
  let xmin = Math.trunc(center - support + 0.5);
  if (xmin < 0) xmin = 0;
  let xmax = Math.trunc(center + support + 0.5);
  if (xmax > inSize) xmax = inSize;
  tap.center = center;
  tap.xmin = xmin;
  tap.xmax = xmax;
  return tap;
}

/**
 * precomputeCoeffs, remembered for the last COEFF_CACHE geometries of this thread: a dataset's images come in a few
 * sizes (ImageNet's validation set mostly 500x375 and 375x500), and a loader worker then computes an axis' taps once,
 * not per image (~35 us per image, more while the worker's JS still runs in the interpreter). The coefficients are
 * only read (sliceCoeffs makes views), so sharing them is safe.
 */
function cachedCoeffs(inSize: number, in0: number, in1: number, outSize: number, filter: Filter): Coeffs {
  const key = `${inSize},${in0},${in1},${outSize},${filter.support}`;
  let c = coeffCache.get(key);
  if (c && c.filter === filter) return c.coeffs;
  c = { filter, coeffs: precomputeCoeffs(inSize, in0, in1, outSize, filter) };
  if (coeffCache.size >= COEFF_CACHE) coeffCache.delete(coeffCache.keys().next().value!);
  coeffCache.set(key, c);
  return c.coeffs;
}
const COEFF_CACHE = 16;
const coeffCache = new Map<string, { filter: Filter; coeffs: Coeffs }>();

function precomputeCoeffs(inSize: number, in0: number, in1: number, outSize: number, filter: Filter): Coeffs {
  const { scale, filterscale, support } = axisGeometry(in0, in1, outSize, filter);
  const ksize = Math.ceil(support) * 2 + 1;
  const xminArr = new Int32Array(outSize);
  const xlenArr = new Int32Array(outSize);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const ss = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const { center, xmin, xmax: end } = tapWindow(inSize, in0, scale, support, xx);
    const xmax = end - xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      const v = filter.fn((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? w[x] / ww : w[x];
      // normalize_coeffs_8bpc: round half away from zero, then C truncation
      kk[xx * ksize + x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    xminArr[xx] = xmin;
    xlenArr[xx] = xmax;
  }
  return { ksize, xmin: xminArr, xlen: xlenArr, k: kk };
}

/** clip8(ss): (ss >> 22) clamped to [0, 255]. Sums are kept in int32 (Math.imul, `| 0`) as in
 * Pillow's C code; for 8-bit data they stay well inside the int32 range. */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

export interface ResizeOptions {
  /** Pillow's `box` argument: source rectangle [x0, y0, x1, y1] (floats allowed); default whole image. */
  box?: [number, number, number, number];
  /** Compute only this window of the output (default: all of it). */
  region?: Region;
  /**
   * Resize this window of `img` as if it were the whole image — PIL's `img.crop(...).resize(...)`, taps clamped at
   * the window's edges — without copying the window out first (box and region refer to the window).
   */
  crop?: Region;
  /**
   * Write the output (region.width x region.height x 3 bytes) here, from byte `offset`, and return a view of it: a
   * loader worker resizes straight into its batch buffer. Without it the output is a fresh array. Why: that array
   * was 150 KB per 224 px image, fresh pages each time in a worker (~37 page faults at ~10 us each on the CPU box,
   * plus malloc and a second copy into the batch). The loader alone as validate runs it (-j 4, chunks of 16, 480
   * photos; 2026-11-30, 2-core box, load ~2.1, 3 alternating runs): 5.53-5.74 -> 5.09-5.40 ms CPU per image, page
   * faults per worker ~11k -> ~7k.
   */
  into?: { data: Uint8Array; offset: number };
}

/** `img` written to `into` (when given; a view of it is returned) or returned as it is. */
function deliver(img: RGBImage, into: ResizeOptions['into']): RGBImage {
  if (!into) return img;
  const n = img.width * img.height * 3;
  const dst = into.data.subarray(into.offset, into.offset + n);
  if (dst.length !== n) throw new Error(`resize output of ${n} bytes does not fit at ${into.offset} in ${into.data.length}`);
  if (img.data !== dst) dst.set(img.data);
  return { data: dst, width: img.width, height: img.height };
}

/**
 * `Image.resize((outW, outH), filter, box)` of Pillow for an RGB image.
 * Returns the full output, or only `opts.region` of it.
 */
export function resizeRGB(
  img: RGBImage,
  outW: number,
  outH: number,
  interpolation: Interpolation,
  opts: ResizeOptions = {},
): RGBImage {
  const c = opts.crop;
  if (c) {
    const whole = c.left === 0 && c.top === 0 && c.width === img.width && c.height === img.height;
    // Without the SIMD passes (or for NEAREST) copy the window out and resize that.
    if (whole || interpolation === 'nearest' || !simdKernels()) {
      return resizeRGB(whole ? img : cropRGB(img, c), outW, outH, interpolation, { box: opts.box, region: opts.region, into: opts.into });
    }
    checkImage(img);
    if (c.left < 0 || c.top < 0 || c.width <= 0 || c.height <= 0 || c.left + c.width > img.width || c.top + c.height > img.height) {
      throw new Error(`crop ${JSON.stringify(c)} is outside the ${img.width}x${img.height} image`);
    }
  }
  const W = c ? c.width : img.width;
  const H = c ? c.height : img.height;
  const box = opts.box ?? [0, 0, W, H];
  const region = opts.region ?? { left: 0, top: 0, width: outW, height: outH };
  if (!c) checkImage(img);
  checkArgs(W, H, outW, outH, box, region);
  // Pillow returns a copy when nothing changes.
  if (outW === W && outH === H && box[0] === 0 && box[1] === 0 && box[2] === W && box[3] === H) {
    return deliver(cropRGB(img, c ? { ...region, left: c.left + region.left, top: c.top + region.top } : region), opts.into);
  }
  if (interpolation === 'nearest') return deliver(resizeNearest(img, outW, outH, box, region), opts.into);
  const filter = FILTERS[interpolation];
  if (!filter) throw new Error(`unknown interpolation '${interpolation as string}'`);

  const [needH, needV] = passesNeeded(W, H, outW, outH, box);

  // Coefficients only for the output columns/rows inside the region (each row of coefficients is
  // independent of the others, so slicing the output range is exact).
  const ch = needH ? sliceCoeffs(cachedCoeffs(W, box[0], box[2], outW, filter), region.left, region.width) : null;
  const cv = needV ? sliceCoeffs(cachedCoeffs(H, box[1], box[3], outH, filter), region.top, region.height) : null;

  // Rows of the source that the vertical pass reads.
  let yFirst: number, yLast: number;
  if (cv) {
    yFirst = cv.xmin[0];
    yLast = cv.xmin[region.height - 1] + cv.xlen[region.height - 1];
  } else {
    yFirst = region.top;
    yLast = region.top + region.height;
  }

  const simd = ch || cv ? simdKernels() : null;
  if (simd) {
    const src: Source = c
      ? { data: img.data, width: W, stride: img.width * 3, origin: (c.top * img.width + c.left) * 3 }
      : { data: img.data, width: W, stride: W * 3, origin: 0 };
    return resampleWasm(simd, src, yFirst, yLast, ch, cv, region, opts.into);
  }

  // Horizontal pass -> temp (uint8), rows yFirst..yLast-1, region.width columns.
  let tmp: Uint8Array;
  let tmpW: number;
  let tmpX0: number; // column of `tmp` that corresponds to region.left
  if (ch) {
    tmpW = region.width;
    tmpX0 = 0;
    tmp = new Uint8Array(tmpW * (yLast - yFirst) * 3);
    horizontalPass(img.data, img.width, yFirst, yLast, ch, tmp, tmpW);
  } else {
    // No horizontal resampling: read the source rows directly (columns offset by region.left).
    tmp = img.data.subarray(yFirst * img.width * 3, yLast * img.width * 3);
    tmpW = img.width;
    tmpX0 = region.left;
  }

  if (!cv) {
    if (tmpX0 === 0 && tmpW === region.width) return deliver({ data: ch ? tmp : tmp.slice(), width: region.width, height: region.height }, opts.into);
    return deliver(cropRGB({ data: tmp, width: tmpW, height: yLast - yFirst }, { left: tmpX0, top: 0, width: region.width, height: region.height }), opts.into);
  }
  const outBytes = region.width * region.height * 3;
  const out = opts.into ? opts.into.data.subarray(opts.into.offset, opts.into.offset + outBytes) : new Uint8Array(outBytes);
  if (out.length !== outBytes) throw new Error(`resize output of ${outBytes} bytes does not fit at ${opts.into!.offset} in ${opts.into!.data.length}`);
  verticalPass(tmp, tmpW, tmpX0, yFirst, cv, out, region.width, region.height);
  return { data: out, width: region.width, height: region.height };
}

/**
 * The part of a W×H source that `resizeRGB(img, outW, outH, interpolation, opts)` reads: the pixels its output depends
 * on (the filter taps of the output region's columns and rows, NEAREST's sampled pixels, or for `opts.crop` the crop
 * window). An image of which only this part is defined (a JPEG decoded in that region, src/data/jpeg.ts) gives the same
 * output. (The SIMD passes copy whole source rows into their memory; bytes outside the taps are copied, never used.)
 */
export function resizeSourceRegion(
  W: number, H: number, outW: number, outH: number, interpolation: Interpolation, opts: ResizeOptions = {},
): Region {
  if (opts.crop) return { ...opts.crop };
  const box = opts.box ?? [0, 0, W, H];
  const region = opts.region ?? { left: 0, top: 0, width: outW, height: outH };
  checkArgs(W, H, outW, outH, box, region);
  if (outW === W && outH === H && box[0] === 0 && box[1] === 0 && box[2] === W && box[3] === H) return { ...region };
  let x0: number, x1: number, y0: number, y1: number;
  if (interpolation === 'nearest') {
    [x0, x1] = nearestSpan(nearestIndices(box[0], box[2], outW, region.left + region.width), region.left, W);
    [y0, y1] = nearestSpan(nearestIndices(box[1], box[3], outH, region.top + region.height), region.top, H);
  } else {
    const filter = FILTERS[interpolation];
    if (!filter) throw new Error(`unknown interpolation '${interpolation as string}'`);
    // as resizeRGB decides which passes run
    const [needH, needV] = passesNeeded(W, H, outW, outH, box);
    [x0, x1] = needH ? tapSpan(W, box[0], box[2], outW, filter, region.left, region.width) : [region.left, region.left + region.width];
    [y0, y1] = needV ? tapSpan(H, box[1], box[3], outH, filter, region.top, region.height) : [region.top, region.top + region.height];
  }
  return { left: x0, top: y0, width: x1 - x0, height: y1 - y0 };
}

/**
 * Input indices [first, end) that output indices [start, start + len) of one axis read (taps move right with xx).
 * `| 0`: Math.trunc gives -0 for a first tap just left of 0, and a -0 stored in a Region would make V8 widen the
 * field representation of every {left, top, width, height} object (they share one map) and, through the images built
 * from them, of RGBImage's width: pil.ts's loops then deoptimized and ran ~25% slower (`--trace-deopt`: "not a Smi").
 */
function tapSpan(inSize: number, in0: number, in1: number, outSize: number, filter: Filter, start: number, len: number): [number, number] {
  const { scale, support } = axisGeometry(in0, in1, outSize, filter);
  const first = tapWindow(inSize, in0, scale, support, start).xmin | 0;
  return [first, tapWindow(inSize, in0, scale, support, start + len - 1).xmax | 0];
}

/** The in-image indices among idx[from..] (non-decreasing), as [first, end); at least one pixel. */
function nearestSpan(idx: Int32Array, from: number, size: number): [number, number] {
  const lo = Math.min(Math.max(0, idx[from]), size - 1);
  const hi = Math.min(size, idx[idx.length - 1] + 1);
  return [lo, Math.max(hi, lo + 1)];
}

// ---------------------------------------------------------------------------------------------
// WebAssembly SIMD passes (one instance per thread; its memory grows to the largest image seen and is reused)

interface SimdKernels {
  mem: WebAssembly.Memory;
  hpass(src: number, srcStride: number, rows: number, xmin: number, xlen: number, kv: number, quads: number, dstW: number, dst: number): void;
  /** hpass's swizzle masks and coefficient vectors (32 + quads = ceil(ksize / 4) blocks of 64 bytes per output column) */
  hprep(k: number, ksize: number, dstW: number, kv: number): void;
  vpass(src: number, srcStride: number, ymin: number, ylen: number, k: number, ksize: number, outRows: number, rowBytes: number, dst: number): void;
}

let kernels: SimdKernels | null | undefined;
let simdEnabled = true;

/** Whether resizeRGB uses the WebAssembly SIMD passes; `enabled` switches them on/off (tests compare both). */
export function resampleSimd(enabled?: boolean): boolean {
  if (enabled !== undefined) simdEnabled = enabled;
  return simdEnabled && simdKernels() !== null;
}

function simdKernels(): SimdKernels | null {
  if (!simdEnabled) return null;
  if (kernels === undefined) {
    kernels = null;
    try {
      const bytes = Buffer.from(RESAMPLE_SIMD_WASM, 'base64');
      if (typeof WebAssembly !== 'undefined' && WebAssembly.validate(bytes)) {
        const mem = new WebAssembly.Memory({ initial: 16 });
        const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { m: { mem } });
        const e = inst.exports as unknown as Omit<SimdKernels, 'mem'>;
        kernels = { mem, hpass: e.hpass, hprep: e.hprep, vpass: e.vpass };
      }
    } catch {
      kernels = null; // no SIMD: the JS passes
    }
  }
  return kernels;
}

/**
 * Bump allocator over the kernel memory for one call; 16-byte aligned blocks with 32 bytes of slack after each (the
 * horizontal pass reads up to 16 bytes past its last tap).
 */
function layout(sizes: number[]): { offsets: number[]; total: number } {
  const offsets: number[] = [];
  let at = 0;
  for (const n of sizes) {
    offsets.push(at);
    at += (n + 32 + 15) & ~15;
  }
  return { offsets, total: at };
}

/** Source pixels for the SIMD passes: rows of `width` pixels, `stride` bytes apart, starting at byte `origin`. */
interface Source {
  data: Uint8Array;
  width: number;
  stride: number;
  origin: number;
}

function resampleWasm(
  k: SimdKernels, img: Source, yFirst: number, yLast: number, ch: Coeffs | null, cv: Coeffs | null, region: Region,
  into?: ResizeOptions['into'],
): RGBImage {
  const srcStride = img.width * 3; // rows are copied packed into the kernel memory
  const rows = yLast - yFirst;
  const rw = region.width;
  const tmpBytes = ch ? rw * 3 * rows : 0;
  const outBytes = rw * 3 * region.height;
  const quads = ch ? (ch.ksize + 3) >> 2 : 0;
  const { offsets, total } = layout([
    rows * srcStride, tmpBytes, cv ? outBytes : 0,
    ch ? ch.xmin.length * 4 : 0, ch ? ch.xlen.length * 4 : 0, ch ? ch.k.length * 4 : 0, 32 + rw * quads * 64,
    cv ? cv.xmin.length * 4 : 0, cv ? cv.xlen.length * 4 : 0, cv ? cv.k.length * 4 : 0,
  ]);
  const [oSrc, oTmp, oOut, oHx, oHl, oHk, oHv, oVy, oVl, oVk] = offsets;
  const need = total - k.mem.buffer.byteLength;
  if (need > 0) k.mem.grow(Math.ceil(need / 65536));
  const buf = k.mem.buffer;
  const u8 = new Uint8Array(buf);
  if (img.stride === srcStride) {
    const from = img.origin + yFirst * srcStride;
    u8.set(img.data.subarray(from, from + rows * srcStride), oSrc);
  } else {
    for (let y = yFirst; y < yLast; y++) {
      const from = img.origin + y * img.stride;
      u8.set(img.data.subarray(from, from + srcStride), oSrc + (y - yFirst) * srcStride);
    }
  }
  const i32 = (o: number, a: Int32Array) => new Int32Array(buf, o, a.length).set(a);
  let vSrc = oSrc + region.left * 3;
  let vStride = srcStride;
  if (ch) {
    i32(oHx, ch.xmin);
    i32(oHl, ch.xlen);
    i32(oHk, ch.k);
    k.hprep(oHk, ch.ksize, rw, oHv);
    k.hpass(oSrc, srcStride, rows, oHx, oHl, oHv, quads, rw, oTmp);
    vSrc = oTmp;
    vStride = rw * 3;
  }
  // The result leaves the kernel memory by one copy: into the caller's buffer when given (a loader worker's batch),
  // else into a fresh array.
  const take = (o: number): RGBImage => deliver({ data: into ? u8.subarray(o, o + outBytes) : u8.slice(o, o + outBytes), width: rw, height: region.height }, into);
  if (!cv) return take(oTmp);
  // vertical taps are relative to the first copied row
  const ymin = new Int32Array(buf, oVy, cv.xmin.length);
  for (let i = 0; i < ymin.length; i++) ymin[i] = cv.xmin[i] - yFirst;
  i32(oVl, cv.xlen);
  i32(oVk, cv.k);
  k.vpass(vSrc, vStride, oVy, oVl, oVk, cv.ksize, region.height, rw * 3, oOut);
  return take(oOut);
}

function checkImage(img: RGBImage): void {
  if (img.data.length !== img.width * img.height * 3) {
    throw new Error(`RGB image data has ${img.data.length} bytes, expected ${img.width}x${img.height}x3`);
  }
}

/** Checks the target, `box` (inside the width x height source) and `region` (inside the output). */
function checkArgs(width: number, height: number, outW: number, outH: number, box: number[], region: Region): void {
  if (!(outW > 0 && outH > 0 && Number.isInteger(outW) && Number.isInteger(outH))) {
    throw new Error(`invalid resize target ${outW}x${outH}`);
  }
  if (box[0] < 0 || box[1] < 0 || box[2] > width || box[3] > height || box[2] <= box[0] || box[3] <= box[1]) {
    throw new Error(`resize box [${box.join(', ')}] is outside the ${width}x${height} image`);
  }
  if (
    region.left < 0 || region.top < 0 || region.width <= 0 || region.height <= 0 ||
    region.left + region.width > outW || region.top + region.height > outH
  ) {
    throw new Error(`region ${JSON.stringify(region)} is outside the ${outW}x${outH} output`);
  }
}

function sliceCoeffs(c: Coeffs, start: number, len: number): Coeffs {
  return {
    ksize: c.ksize,
    xmin: c.xmin.subarray(start, start + len),
    xlen: c.xlen.subarray(start, start + len),
    k: c.k.subarray(start * c.ksize, (start + len) * c.ksize),
  };
}

function horizontalPass(
  src: Uint8Array, srcW: number, y0: number, y1: number, c: Coeffs, dst: Uint8Array, dstW: number,
): void {
  const { ksize, xmin, xlen, k } = c;
  let o = 0;
  for (let y = y0; y < y1; y++) {
    const row = y * srcW * 3;
    for (let xx = 0; xx < dstW; xx++) {
      const kb = xx * ksize;
      const n = xlen[xx];
      let p = row + xmin[xx] * 3;
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let x = 0; x < n; x++, p += 3) {
        const w = k[kb + x];
        s0 = (s0 + Math.imul(src[p], w)) | 0;
        s1 = (s1 + Math.imul(src[p + 1], w)) | 0;
        s2 = (s2 + Math.imul(src[p + 2], w)) | 0;
      }
      dst[o++] = clip8(s0);
      dst[o++] = clip8(s1);
      dst[o++] = clip8(s2);
    }
  }
}

/** `src` holds rows starting at source row `yOffset`; columns [x0, x0+outW) are used. */
function verticalPass(
  src: Uint8Array, srcW: number, x0: number, yOffset: number, c: Coeffs, dst: Uint8Array, outW: number, outH: number,
): void {
  const { ksize, xmin, xlen, k } = c;
  const stride = srcW * 3;
  let o = 0;
  for (let yy = 0; yy < outH; yy++) {
    const kb = yy * ksize;
    const n = xlen[yy];
    const base = (xmin[yy] - yOffset) * stride + x0 * 3;
    for (let xx = 0; xx < outW; xx++) {
      let p = base + xx * 3;
      let s0 = HALF, s1 = HALF, s2 = HALF;
      for (let y = 0; y < n; y++, p += stride) {
        const w = k[kb + y];
        s0 = (s0 + Math.imul(src[p], w)) | 0;
        s1 = (s1 + Math.imul(src[p + 1], w)) | 0;
        s2 = (s2 + Math.imul(src[p + 2], w)) | 0;
      }
      dst[o++] = clip8(s0);
      dst[o++] = clip8(s1);
      dst[o++] = clip8(s2);
    }
  }
}

/**
 * NEAREST's source index of output pixels 0..n-1 of an axis of outSize pixels (ImagingScaleAffine: the source
 * coordinate accumulated by repeated addition of (b1 - b0) / outSize, as Pillow does; -1 left of the image).
 */
function nearestIndices(b0: number, b1: number, outSize: number, n = outSize): Int32Array {
  const a = (b1 - b0) / outSize;
  const idx = new Int32Array(n);
  let v = b0 + a * 0.5;
  for (let i = 0; i < n; i++) {
    idx[i] = v < 0.0 ? -1 : Math.trunc(v);
    v += a;
  }
  return idx;
}

/** Pillow NEAREST resize = ImagingScaleAffine with a = [(x1-x0)/w, 0, x0, 0, (y1-y0)/h, y0]. */
function resizeNearest(img: RGBImage, outW: number, outH: number, box: number[], region: Region): RGBImage {
  const xin = nearestIndices(box[0], box[2], outW);
  const yin = nearestIndices(box[1], box[3], outH, region.top + region.height);
  const out = new Uint8Array(region.width * region.height * 3);
  for (let y = 0; y < region.top + region.height; y++) {
    if (y >= region.top) {
      const yi = yin[y];
      if (yi >= 0 && yi < img.height) {
        const row = yi * img.width * 3;
        let o = (y - region.top) * region.width * 3;
        for (let x = region.left; x < region.left + region.width; x++, o += 3) {
          const xi = xin[x];
          if (xi < 0 || xi >= img.width) continue; // Pillow leaves these black (fill)
          const p = row + xi * 3;
          out[o] = img.data[p];
          out[o + 1] = img.data[p + 1];
          out[o + 2] = img.data[p + 2];
        }
      }
    }
  }
  return { data: out, width: region.width, height: region.height };
}

/** Copy a window of an RGB image (the window must lie inside it). */
export function cropRGB(img: RGBImage, r: Region): RGBImage {
  if (r.left < 0 || r.top < 0 || r.left + r.width > img.width || r.top + r.height > img.height) {
    throw new Error(`crop ${JSON.stringify(r)} is outside the ${img.width}x${img.height} image`);
  }
  if (r.left === 0 && r.width === img.width) {
    const start = r.top * img.width * 3;
    return { data: img.data.slice(start, start + r.height * img.width * 3), width: r.width, height: r.height };
  }
  const out = new Uint8Array(r.width * r.height * 3);
  const rowBytes = r.width * 3;
  for (let y = 0; y < r.height; y++) {
    const s = ((r.top + y) * img.width + r.left) * 3;
    out.set(img.data.subarray(s, s + rowBytes), y * rowBytes);
  }
  return { data: out, width: r.width, height: r.height };
}
