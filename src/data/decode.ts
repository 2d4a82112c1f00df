/**
 * Image decoding with sharp (libvips) into 8-bit RGB, matching what timm gets from
 * `PIL.Image.open(f).convert('RGB')`:
 *
 * - grayscale (with or without alpha) -> the gray value replicated into R, G, B;
 * - palette images -> palette colours (transparency ignored);
 * - alpha is dropped, NOT composited over a background (PIL's convert('RGB') discards it);
 * - 16-bit PNGs -> the high byte of each sample (libvips' rgb16/grey16 -> 8-bit conversion; for
 *   16-bit RGB this equals Pillow, which reads the "RGB;16B" raw mode as the high byte. Pillow's
 *   convert('RGB') of a 16-bit *grayscale* PNG clips values to 255 instead, which whitens nearly every
 *   pixel; we keep the high byte there — a deliberate, documented difference);
 * - CMYK JPEGs -> Pillow's naive formula `R = (255-K) - (C·(255-K))/255` (no colour management),
 *   computed here from the raw CMYK samples, since libvips would otherwise apply an ICC transform;
 * - embedded ICC profiles are ignored (Pillow does not colour-manage on convert);
 * - NO EXIF auto-rotation (Pillow does not rotate either);
 * - multi-frame files: first frame only (as Image.open).
 *
 * Decoding fails (DecodeError) on anything libvips reports as an error, including truncated files
 * (Pillow raises "image file is truncated" too); mere warnings such as extraneous JPEG bytes are
 * tolerated, as Pillow tolerates them.
 *
 * Two decoders, one result: plain JPEGs (YCbCr / RGB / gray, no libjpeg warning) are decoded synchronously on the
 * calling thread by our libjpeg-turbo build in WebAssembly SIMD (jpeg.ts: scales with the data workers, and can decode
 * at 1/2, 1/4, 1/8 by DCT scaling); everything else goes through sharp. Both give the same pixels for a file the first one takes.
 *
 * Decompression bombs (issue 15): the pixel count is read from the header before anything is decoded and an
 * image above the limit (src/limits.ts: 2 x Pillow's MAX_IMAGE_PIXELS by default, `--max-image-pixels`) fails
 * with ImageTooLargeError; libvips gets the same limit (limitInputPixels) as a second line. Callers that only
 * need a small image (predict, demo: `reduceTo`) get large JPEGs (over 16.8 MP, and at least 4x the size they
 * resize to) decoded at reduced scale: libjpeg's DCT scaling (shrink-on-load) plus a lanczos3 step to twice the
 * size they resize to. Measured (2026-11-30, 2 cores): a 12000x8000 JPEG for a 224 model decodes in 143 ms of CPU
 * to 1.2 MB instead of 1471 ms to 288 MB; after the eval transform its pixels differ from the full decode by at most
 * 0.053 (mean 0.004) in normalized units, i.e. 3 levels of 255. Smaller images are decoded exactly as timm does,
 * and validate and train never ask for it.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import type { SharpOptions } from 'sharp';
import { jpegDecoder, type DecodeGeometry, type JpegScale } from './jpeg.js';
import type { RGBImage, Region } from './transforms/resize.js';
import { describePixels, limits } from '../limits.js';
import { errMessage, oneLine } from '../errors.js';

export type { RGBImage } from './transforms/resize.js';
export type { DecodeGeometry, JpegScale } from './jpeg.js';

/** A decoded image; `scale` > 1 when it was decoded at 1/scale of the file's size (JPEG DCT scaling). */
export interface DecodedImage extends RGBImage {
  /** 1, 2, 4 or 8: width = ceil(fullWidth / scale), height = ceil(fullHeight / scale) */
  scale: JpegScale;
  /** size of the image in the file */
  fullWidth: number;
  fullHeight: number;
  /**
   * Set when only this part of the image was decoded (DecodeOptions.regionFor): its pixels equal the whole decode's,
   * the image keeps its whole size, and the bytes outside the region are undefined.
   */
  region?: Region;
}


/** An image that could not be read or decoded. `path` names the file (or '<buffer>'). */
export class DecodeError extends Error {
  readonly path: string;
  readonly reason: string;
  constructor(path: string, reason: string) {
    super(`cannot decode image ${path}: ${reason}`);
    this.name = 'DecodeError';
    this.path = path;
    this.reason = reason;
  }
}

/** An image whose header declares more pixels than the limit; nothing was decoded. */
export class ImageTooLargeError extends DecodeError {
  constructor(path: string, readonly width: number, readonly height: number, readonly limit: number) {
    super(
      path,
      `it is ${width}x${height} pixels (${describePixels(width * height)}), above the limit of ${describePixels(limit)} ` +
        `against decompression bombs (raise it with --max-image-pixels)`,
    );
    this.name = 'ImageTooLargeError';
  }
}

/** JPEGs above this many pixels (4096 x 4096) may be decoded at reduced scale (DecodeOptions.reduceTo). */
export const REDUCE_ABOVE_PIXELS = 1 << 24;

export interface DecodeOptions {
  /**
   * Called with the file's size before decoding; a JPEG that the synchronous decoder takes is decoded at
   * 1/returned value. Other files, and the sharp fallback, decode at full size (check `scale` of the result).
   */
  scaleFor?: (width: number, height: number) => JpegScale;
  /**
   * Called with the decode's geometry (size at the chosen scale, scale, file size): the only part of the image the
   * caller will read, or null for all of it. A JPEG that the synchronous decoder takes is then decoded in that region
   * only (src/data/jpeg.ts; the result's `region`). Other files, and the sharp fallback, decode whole.
   */
  regionFor?: (g: DecodeGeometry) => Region | null;
  /** Refuse images with more pixels than this (default: limits.maxImagePixels, see src/limits.ts). */
  maxPixels?: number;
  /**
   * The shortest side the caller resizes to (predict/demo). A JPEG of more than REDUCE_ABOVE_PIXELS whose shorter
   * side is at least 4x that is decoded at reduced scale, to a shorter side of 2x it.
   */
  reduceTo?: number;
}

const SHARP_INPUT: SharpOptions = {
  failOn: 'error',
  ignoreIcc: true,
  limitInputPixels: false,
  autoOrient: false,
};

/** Pillow's MULDIV255(a, b) = round(a·b/255) in integer arithmetic. */
function mulDiv255(a: number, b: number): number {
  const tmp = a * b + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

/** Pillow Convert.c cmyk2rgb. `src` is CMYK (ink amounts, 0 = none), 4 bytes per pixel. */
export function cmykToRgb(src: Uint8Array, pixels: number): Uint8Array {
  const out = new Uint8Array(pixels * 3);
  for (let i = 0, p = 0, o = 0; i < pixels; i++, p += 4, o += 3) {
    const nk = 255 - src[p + 3];
    // nk - MULDIV255(c, nk) is always within [0, 255], so Pillow's CLIP8 is a no-op.
    out[o] = nk - mulDiv255(src[p], nk);
    out[o + 1] = nk - mulDiv255(src[p + 1], nk);
    out[o + 2] = nk - mulDiv255(src[p + 2], nk);
  }
  return out;
}

/**
 * The synchronous path: decode a plain JPEG on this thread, or return null (then use decodeRGB). The pixels are a
 * view of this thread's decoder memory, valid until its next decode: consume them before anything else decodes.
 */
export function decodeRGBSync(buf: Uint8Array, opts: DecodeOptions = {}, label = '<buffer>'): DecodedImage | null {
  const maxPixels = opts.maxPixels ?? limits.maxImagePixels;
  return jpegDecoder().decode(buf, (w, h) => {
    // The same pixel limit as the sharp path, from the header, before anything is decoded.
    if (w * h > maxPixels) throw new ImageTooLargeError(label, w, h, maxPixels);
    // A caller's reduced decode (predict/demo, reduceTo) is sharp's shrink-on-load + lanczos3 step.
    if (opts.reduceTo && w * h > REDUCE_ABOVE_PIXELS && Math.min(w, h) >= 4 * opts.reduceTo) return null;
    return opts.scaleFor ? opts.scaleFor(w, h) : 1;
  }, opts.regionFor);
}

/**
 * Decode a file (path) or an in-memory encoded image into 8-bit sRGB HWC.
 * `name` is used in error messages for buffer inputs.
 */
export async function decodeRGB(input: string | Uint8Array, name?: string, opts: DecodeOptions = {}): Promise<DecodedImage> {
  const label = typeof input === 'string' ? input : name ?? '<buffer>';
  const maxPixels = opts.maxPixels ?? limits.maxImagePixels;
  let buf: Uint8Array;
  try {
    buf = typeof input === 'string' ? await readFile(input) : input;
  } catch (e) {
    throw new DecodeError(label, oneLine(errMessage(e)));
  }
  const fast = decodeRGBSync(buf, opts, label);
  if (fast) return { ...fast, data: fast.data.slice() };
  return decodeWithSharp(buf, label, opts, maxPixels);
}

/**
 * sharp, loaded on first use: importing it (libvips) costs ~100 ms of CPU per thread (2-core box, 2026-11-30), paid by
 * every data worker at start-up although plain JPEGs never reach it; validate's start-up on 2 cores with 4 workers is
 * what that delayed (issue 12 part 4).
 */
type Sharp = typeof import('sharp').default;
let sharpModule: Sharp | null = null;
/**
 * Synchronously (require), not by import(): a data worker terminated while an import() of sharp was still pending
 * could leave the loader's close() unresolved with nothing keeping the event loop alive (3 runs in 16 of the loader's
 * transform-error test; 0 in 16 with a load at start-up, and with this).
 */
function loadSharp(): Sharp {
  sharpModule ??= createRequire(import.meta.url)('sharp') as Sharp;
  return sharpModule;
}

/** The sharp (libvips) path, full size: CMYK, PNG, WebP, and JPEGs that libjpeg warns about or fails on. */
async function decodeWithSharp(buf: Uint8Array, label: string, opts: DecodeOptions, maxPixels: number): Promise<DecodedImage> {
  const full = (data: Uint8Array, width: number, height: number): DecodedImage =>
    ({ data, width, height, scale: 1, fullWidth: width, fullHeight: height });
  const sharp = loadSharp();
  try {
    // metadata() reads the header only; the limit is ours to check (a clearer message than libvips').
    const meta = await sharp(buf, SHARP_INPUT).metadata();
    const w = meta.width ?? 0;
    const h = meta.pageHeight ?? meta.height ?? 0;
    if (w * h > maxPixels) throw new ImageTooLargeError(label, w, h, maxPixels);
    const input: SharpOptions = { ...SHARP_INPUT, limitInputPixels: maxPixels };
    if (meta.space === 'cmyk') {
      // Keep the samples as CMYK (no ICC import) and convert with Pillow's formula.
      const { data, info } = await sharp(buf, input)
        .pipelineColourspace('cmyk')
        .toColourspace('cmyk')
        .raw({ depth: 'uchar' })
        .toBuffer({ resolveWithObject: true });
      if (info.channels < 4) throw new Error(`unexpected CMYK decode with ${info.channels} channels`);
      const cmyk = info.channels === 4 ? data : keepFirstChannels(data, info.width * info.height, info.channels, 4);
      return full(cmykToRgb(cmyk, info.width * info.height), info.width, info.height);
    }
    let img = sharp(buf, input);
    const short = Math.min(w, h);
    if (opts.reduceTo && meta.format === 'jpeg' && w * h > REDUCE_ABOVE_PIXELS && short >= 4 * opts.reduceTo) {
      const scale = (2 * opts.reduceTo) / short;
      img = img.resize(Math.max(1, Math.round(w * scale)), Math.max(1, Math.round(h * scale)), {
        fit: 'fill', kernel: 'lanczos3', fastShrinkOnLoad: true,
      });
    }
    const { data, info } = await img
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`unexpected decode with ${info.channels} channels`);
    // sharp returns a Buffer, possibly a slice of a pooled allocation; hand out a plain view.
    return full(new Uint8Array(data.buffer, data.byteOffset, data.length), info.width, info.height);
  } catch (e) {
    if (e instanceof DecodeError) throw e;
    throw new DecodeError(label, oneLine(errMessage(e)));
  }
}

function keepFirstChannels(src: Uint8Array, pixels: number, channels: number, keep: number): Uint8Array {
  const out = new Uint8Array(pixels * keep);
  for (let i = 0; i < pixels; i++) {
    for (let c = 0; c < keep; c++) out[i * keep + c] = src[i * channels + c];
  }
  return out;
}
