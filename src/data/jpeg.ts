/**
 * Synchronous JPEG decoding with our own build of libjpeg-turbo 2.1.5 in WebAssembly (src/data/jpegwasm/: decoder.c,
 * a small API in the spirit of TurboJPEG's tjDecompressHeader3 / tjDecompress2; jsimd_wasm.c, WebAssembly SIMD
 * versions of the islow IDCT, the reduced 4x4 / 2x2 IDCTs of DCT-scaled decodes, h2v1/h2v2 fancy upsampling and
 * YCbCr->RGB; built by scripts/build_jpeg_wasm.sh into
 * jpeg_wasm.ts), one decoder per thread.
 *
 * Why not sharp for JPEGs: every sharp call runs on libuv's thread pool, which is one pool of 4 threads for the whole
 * process (UV_THREADPOOL_SIZE is read when the pool starts, and an ES-module program has started it before its first
 * line runs). With 15 data workers at most 4 decodes ran at once, which is why bench:data flattened past -j 4
 * (-j 8: 575 img/s, -j 15: 839 on the 32-core host, issue 12). Here each worker decodes on its own thread, so decoding
 * scales with the workers. Sharp raw decode costs 3.3-4.4 ms CPU per 375-500 px q90 JPEG on the 2-core box (only a
 * third of it in libjpeg: libvips pipeline set-up, a copy, page faults on a fresh output buffer every image).
 *
 * Why our own build (2026-11-30, 2-core box, load 2.2-5.9, the 256 q90 4:2:0 375-500 px JPEGs of bench:data's val
 * folder, CPU ms per image, fastest of 6-10 passes alternating with the previous decoder in the same process):
 * @cwasm/jpeg-turbo (TurboJPEG, plain C, emscripten) 2.06-2.16; our plain C build (clang -O3 wasm32-wasi) 1.87, and
 * -msimd128 autovectorization alone changes nothing; with the SIMD stages 1.11-1.18, i.e. 1.8x less, at 1/2 scale
 * 1.36 -> 1.08, at 1/4 0.99 -> 0.82; the fixture photos (512-600 px) 3.4 -> 1.9. Letting the Huffman decoder use its
 * 64-bit bit buffer (wasm32 has 32-bit size_t but native i64; the build script patches jdhuff.h/.c) is part of this:
 * 1.28 with the 32-bit one. Pillow 9.4 with the system libjpeg-turbo (native x86 SIMD) decodes these in ~1.75 ms.
 * Profile now: Huffman decoding 47% (scalar, as in every libjpeg-turbo), IDCT 22%, colour conversion 12%,
 * upsampling 5%. The reduced IDCTs of 1/2 and 1/4 decodes (jidctred.c, 21% of a 1/2 decode in plain C) in SIMD too:
 * 1/2 1.32 -> 1.14, 1/4 0.80-1.09 -> 0.71-0.97 ms (load 1.4-7.5; docs/BENCHMARKS.md "Reduced IDCTs").
 *
 * Exactness: the SIMD stages compute the C code's integer arithmetic lane by lane, so the pixels equal sharp's
 * (libvips' libjpeg-turbo), Pillow's and djpeg's to the bit: test/data.test.ts compares with sharp on generated
 * 4:2:0 / 4:4:4 / progressive / gray JPEGs of odd sizes and cjpeg-made 4:2:2, 4:4:0, 4:1:1 and arithmetic-coded
 * ones; outside the tests, 1,918 cjpeg files (13 sizes from 1x1 to 1001x17, 8 samplings, q50/90/100, baseline,
 * progressive, arithmetic, restart markers, gray, RGB) x scales 1/1, 1/2, 1/4, 1/8 all equal native djpeg -dct int
 * (libjpeg-turbo 2.1.5, x86 SIMD), and the 1,024 bench JPEGs and fixture photos equal @cwasm/jpeg-turbo's output.
 *
 * Region decode (`decode`'s `region`): the loader's transforms name the part of the image they read (the RRC box, the
 * taps under the eval crop) and only that part is decoded — libjpeg-turbo's jpeg_crop_scanline / jpeg_skip_scanlines,
 * with the margins and the end-of-data handling decoder.c describes — with the whole decode's pixels there (tests
 * poison the rest). Why: the Huffman pass must still read everything (47% of a decode), but IDCT, upsampling and colour
 * conversion run on the region only. Measured 2026-11-30 (2-core box, load 1.1-1.9, CPU ms per image, best of 7 passes
 * alternating with the previous decoder in one process, 512 bench JPEGs of 375-500 px q90 4:2:0): training's decodes
 * 1.12-1.18 -> 0.91-0.93 (regions average 47% of the image), on 4:3 photos (500x375) 1.02 -> 0.79 and eval 1.03 ->
 * 0.95 (76% of the image; on the bench's near-square mix 92%: unchanged). docs/BENCHMARKS.md "Region decode".
 *
 * Scope: baseline, progressive and arithmetic-coded JPEGs in YCbCr, RGB or grayscale with any sampling factors libjpeg
 * takes (gray is replicated into R, G, B, as Pillow's convert('RGB')). Everything else — CMYK/YCCK, anything libjpeg
 * reports as an error OR a warning (truncated data, extraneous bytes), a file over MAX_PIXELS — returns null and the
 * caller decodes with sharp, which owns the exact error semantics (decode.ts). (As before, some corrupt entropy-coded
 * data decodes without a warning: libjpeg-turbo's fast Huffman path substitutes zeros silently; the pixels are then
 * those of native libjpeg-turbo.) The output of `decode` is a view of this decoder's memory, valid until its next call.
 */
import { JPEG_WASM } from './jpegwasm/jpeg_wasm.js';
import type { Region } from './transforms/resize.js';
import { settings, type RegionDecodeSetting } from '../settings.js';

/** TurboJPEG colorspace codes, as decoder.c reports them. */
const TJCS_RGB = 0;
const TJCS_YCbCr = 1;
const TJCS_GRAY = 2;

/** Larger images go to sharp (and its limits) rather than growing this thread's WebAssembly memory past ~300 MB. */
export const MAX_PIXELS = 100_000_000;
/** After an output larger than this, the next smaller image gets a fresh instance (WebAssembly memory never shrinks). */
const KEEP_BYTES = 64 << 20;

/** DCT scale denominators libjpeg can decode at (1/1, 1/2, 1/4, 1/8). */
export type JpegScale = 1 | 2 | 4 | 8;

export interface JpegHeader {
  width: number;
  height: number;
  /** TurboJPEG colorspace code (0 RGB, 1 YCbCr, 2 gray, 3 CMYK, 4 YCCK, -1 other) */
  colorspace: number;
}

/** What src/data/jpegwasm/decoder.c exports. */
interface DecoderExports {
  memory: WebAssembly.Memory;
  malloc(n: number): number;
  free(p: number): void;
  /** Reads the header into meta[0..2] (width, height, colorspace); 0, or -1 when incomplete or libjpeg warned. */
  mj_header(buf: number, size: number, meta: number): number;
  /**
   * Decodes the image mj_header read at 1/denom into packed RGB (a w x h frame), columns [x0, x1) of rows [y0, y1)
   * at least; 0, or -1 when libjpeg warned.
   */
  mj_decode(dst: number, denom: number, w: number, h: number, x0: number, y0: number, x1: number, y1: number): number;
}

/** libjpeg's error exit calls the imported jpeg_error_exit; we unwind out of WebAssembly by throwing this. */
class JpegAbort extends Error {}

let wasmModule: WebAssembly.Module | undefined;

function loadModule(): WebAssembly.Module {
  wasmModule ??= new WebAssembly.Module(Buffer.from(JPEG_WASM, 'base64'));
  return wasmModule;
}

function instantiate(module: WebAssembly.Module): DecoderExports {
  const unsupported = () => {
    throw new JpegAbort('libjpeg called an unsupported system function');
  };
  const inst = new WebAssembly.Instance(module, {
    // An error exit throws out of the WebAssembly frames, and the instance is dropped (JpegDecoder.reset).
    env: { jpeg_error_exit: () => { throw new JpegAbort('libjpeg error exit'); } },
    // Referenced by libjpeg's default message printer, which decoder.c replaces: never called.
    wasi_snapshot_preview1: { proc_exit: unsupported, fd_close: unsupported, fd_seek: unsupported, fd_write: unsupported },
  });
  return inst.exports as unknown as DecoderExports;
}

/** What a caller's region callback gets: the size decoded (at 1/scale) and the file's size. */
export interface DecodeGeometry {
  width: number;
  height: number;
  scale: JpegScale;
  fullWidth: number;
  fullHeight: number;
}

let regionMode: RegionDecodeSetting | undefined;

/**
 * Whether regions are decoded ('on'), ignored ('off': whole decodes, for A/B runs) or decoded with every other byte
 * of the frame overwritten by noise ('poison', for tests: a transform that reads outside its declared region then
 * gives other pixels). Read from settings.regionDecode (MAMBAOUT_REGION_DECODE) on first use; `mode` sets it for this
 * thread.
 */
export function regionDecoding(mode?: RegionDecodeSetting): RegionDecodeSetting {
  if (mode !== undefined) regionMode = mode;
  regionMode ??= settings.regionDecode;
  return regionMode;
}

let poisonSeed = 0x9e3779b9;

/** Overwrite every byte of the w x h RGB frame outside `r` with noise that differs from call to call. */
function poisonOutside(data: Uint8Array, w: number, h: number, r: Region): void {
  let x = (poisonSeed = (poisonSeed + 0x6d2b79f5) >>> 0);
  const fill = (from: number, to: number) => {
    for (let i = from; i < to; i++) {
      x ^= x << 13; x ^= x >>> 17; x ^= x << 5; // xorshift32
      data[i] = x & 255;
    }
  };
  const stride = w * 3;
  fill(0, r.top * stride);
  for (let y = r.top; y < r.top + r.height; y++) {
    fill(y * stride, (y * stride) + r.left * 3);
    fill(y * stride + (r.left + r.width) * 3, (y + 1) * stride);
  }
  fill((r.top + r.height) * stride, h * stride);
}

/** Size of a dimension decoded at 1/scale (TurboJPEG's TJSCALED: ceil). */
export function scaledSize(n: number, scale: JpegScale): number {
  return Math.ceil(n / scale);
}

export function isJpeg(buf: Uint8Array): boolean {
  return buf.length > 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff;
}

/** One libjpeg-turbo instance; reuses its input/output buffers across images. Not reentrant (one per thread). */
export class JpegDecoder {
  private x: DecoderExports | null = null;
  private meta = 0;
  private inPtr = 0;
  private inCap = 0;
  private outPtr = 0;
  private outCap = 0;

  private ready(): DecoderExports {
    if (!this.x) {
      const x = instantiate(loadModule());
      this.meta = x.malloc(16);
      if (!this.meta) throw new Error('libjpeg-turbo (WebAssembly) could not be initialised');
      this.x = x;
      this.inPtr = this.inCap = this.outPtr = this.outCap = 0;
    }
    return this.x;
  }

  /** Forget the instance after an error exit (its heap may hold the aborted decode's allocations). */
  private reset(): void {
    this.x = null;
  }

  private reserve(which: 'in' | 'out', n: number): number {
    const x = this.x!;
    if (which === 'in' ? n > this.inCap : n > this.outCap) {
      const cap = Math.max(n, 1 << 16) + (n >> 2);
      const old = which === 'in' ? this.inPtr : this.outPtr;
      if (old) x.free(old);
      const p = x.malloc(cap);
      if (!p) throw new JpegAbort('out of WebAssembly memory');
      if (which === 'in') [this.inPtr, this.inCap] = [p, cap];
      else [this.outPtr, this.outCap] = [p, cap];
    }
    return which === 'in' ? this.inPtr : this.outPtr;
  }

  private load(buf: Uint8Array): void {
    const p = this.reserve('in', buf.length);
    new Uint8Array(this.x!.memory.buffer, p, buf.length).set(buf);
  }

  /** The JPEG header, or null when libjpeg cannot read one (not a JPEG, or damaged). */
  header(buf: Uint8Array): JpegHeader | null {
    if (!isJpeg(buf)) return null;
    try {
      const x = this.ready();
      this.load(buf);
      if (x.mj_header(this.inPtr, buf.length, this.meta) !== 0) return null;
      const m = new Int32Array(x.memory.buffer, this.meta, 3);
      return { width: m[0], height: m[1], colorspace: m[2] };
    } catch (e) {
      if (!(e instanceof JpegAbort)) throw e;
      this.reset();
      return null;
    }
  }

  /**
   * Decode at 1/scale into packed RGB. Returns null when this decoder does not handle the file (see the file
   * header) or `scale` returns null; the caller then decodes it with sharp. `scale` may throw to refuse the file.
   * `region`, given the decode's geometry, may name the only part of the image the caller reads (null: all of it):
   * then only that part is decoded (region decode, see the file header) and the result's `region` says so; the frame
   * keeps the whole size and the bytes outside the region are undefined. The pixels are a view valid until the next
   * call.
   */
  decode(
    buf: Uint8Array,
    scale: JpegScale | ((width: number, height: number) => JpegScale | null) = 1,
    region?: (g: DecodeGeometry) => Region | null,
  ): (DecodeGeometry & { data: Uint8Array; region?: Region }) | null {
    const h = this.header(buf);
    if (!h || (h.colorspace !== TJCS_YCbCr && h.colorspace !== TJCS_GRAY && h.colorspace !== TJCS_RGB)) return null;
    if (h.width * h.height > MAX_PIXELS) return null;
    const s = typeof scale === 'function' ? scale(h.width, h.height) : scale;
    if (s === null) return null; // the caller wants this one decoded elsewhere
    const g: DecodeGeometry = { width: scaledSize(h.width, s), height: scaledSize(h.height, s), scale: s, fullWidth: h.width, fullHeight: h.height };
    const { width: w, height: hh } = g;
    let r = region && regionDecoding() !== 'off' ? region(g) : null;
    if (r) {
      const { left, top, width, height } = r;
      if (![left, top, width, height].every(Number.isInteger) || left < 0 || top < 0 || width <= 0 || height <= 0 ||
          left + width > w || top + height > hh) {
        throw new Error(`internal: decode region ${JSON.stringify(r)} is not inside the ${w}x${hh} image`);
      }
      if (width === w && height === hh) r = null;
    }
    if (this.outCap > KEEP_BYTES && w * hh * 3 <= KEEP_BYTES) {
      this.reset(); // give a huge image's memory back
      if (!this.header(buf)) return null;
    }
    try {
      const x = this.x!;
      const out = this.reserve('out', w * hh * 3);
      const x0 = r ? r.left : 0, y0 = r ? r.top : 0;
      const x1 = r ? r.left + r.width : w, y1 = r ? r.top + r.height : hh;
      if (x.mj_decode(out, s, w, hh, x0, y0, x1, y1) !== 0) return null;
      const data = new Uint8Array(x.memory.buffer, out, w * hh * 3);
      if (!r) return { ...g, data };
      if (regionDecoding() === 'poison') poisonOutside(data, w, hh, r);
      return { ...g, data, region: { ...r } };
    } catch (e) {
      if (!(e instanceof JpegAbort)) throw e;
      this.reset();
      return null;
    }
  }
}

let threadDecoder: JpegDecoder | null = null;

/** This thread's decoder (module state is per thread: each worker thread gets its own). */
export function jpegDecoder(): JpegDecoder {
  threadDecoder ??= new JpegDecoder();
  return threadDecoder;
}
