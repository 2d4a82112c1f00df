/**
 * timm `RandomErasing` (timm/data/random_erasing.py, v0.6.11), applied to normalized float images.
 *
 * Per image: with probability 1 − p nothing happens (`random() > p` → skip). Otherwise
 * count = min_count, or randint(min_count, max_count) when they differ, and for each box up to 10
 * attempts:
 *   target_area = U(min_area, max_area)·H·W / count,  aspect = exp(U(ln min_aspect, ln max_aspect)),
 *   h = round(√(target_area·aspect)),  w = round(√(target_area/aspect))   (h takes ·aspect here,
 *   the opposite of RandomResizedCrop; Python round, half to even)
 *   accepted when w < W and h < H (strict): top = randint(0, H−h), left = randint(0, W−w) (inclusive),
 *   and the box [top, top+h) × [left, left+w) is filled:
 *     'const' → 0; 'rand' → one N(0, 1) value per channel; 'pixel' → i.i.d. N(0, 1) per channel and pixel.
 * Layout here is NHWC (the batch tfjs consumes); erasing is in place.
 *
 * The draws that decide the boxes (and 'rand' colours) come from a sequential `Rng`, a few per image, planned on the
 * host (`planEraseBatch`); the per-pixel noise comes from the counter-based generator of src/utils/counter_rng.ts,
 * so the device paths of src/data/prefetch.ts fill the same boxes with the same noise as `fillErase` here.
 */
import type { Rng } from '../../utils/rng.js';
import { UserError } from '../../errors.js';
import { pyRound } from '../../utils/pyformat.js';
import { counterNormal } from '../../utils/counter_rng.js';

export type EraseMode = 'const' | 'rand' | 'pixel';

export interface RandomErasingOptions {
  /** probability that an image is erased (--reprob) */
  probability: number;
  /** fill mode (--remode); '' means const, as in timm */
  mode?: EraseMode | '';
  /** area fraction range per image (before dividing by count) */
  minArea?: number;
  maxArea?: number;
  /** aspect range; maxAspect defaults to 1 / minAspect */
  minAspect?: number;
  maxAspect?: number;
  /** number of boxes: min_count (1) .. max_count (--recount, default = min_count) */
  minCount?: number;
  maxCount?: number;
  /** with numSplits > 1 the first B / numSplits images of a batch are left alone (--resplit) */
  numSplits?: number;
}

export interface ResolvedErasing {
  probability: number;
  mode: EraseMode;
  minArea: number;
  maxArea: number;
  logAspect: [number, number];
  minCount: number;
  maxCount: number;
  numSplits: number;
}

export function resolveErasingOptions(o: RandomErasingOptions): ResolvedErasing {
  const mode = (o.mode || 'const').toLowerCase();
  if (mode !== 'const' && mode !== 'rand' && mode !== 'pixel') {
    throw new UserError(`Unknown random erasing mode '${o.mode}'; use const, rand or pixel.`);
  }
  const minAspect = o.minAspect ?? 0.3;
  const maxAspect = o.maxAspect || 1 / minAspect;
  const minCount = o.minCount ?? 1;
  return {
    probability: o.probability,
    mode,
    minArea: o.minArea ?? 0.02,
    maxArea: o.maxArea ?? 1 / 3,
    logAspect: [Math.log(minAspect), Math.log(maxAspect)],
    minCount,
    maxCount: o.maxCount || minCount,
    numSplits: o.numSplits ?? 0,
  };
}

/** One erased rectangle (for tests and logging); `colour` holds the per-channel fill of 'rand' mode. */
export interface EraseBox {
  top: number;
  left: number;
  height: number;
  width: number;
  colour?: number[];
}

/** Where the 'pixel' noise of an image comes from: counterNormal(key, pos, element index in the image). */
export interface EraseNoise {
  key: number;
  /** position of the first image of the batch in the epoch; image i uses posBase + i */
  posBase: number;
}

/**
 * The random draws of RandomErasing._erase for one image (gate, count, boxes and, in 'rand' mode, the colours),
 * without touching pixels: the boxes to fill, empty when the image is skipped.
 */
export function planErase(H: number, W: number, C: number, opts: RandomErasingOptions | ResolvedErasing, rng: Rng): EraseBox[] {
  const o = 'logAspect' in opts ? opts : resolveErasingOptions(opts);
  const boxes: EraseBox[] = [];
  if (rng.random() > o.probability) return boxes;
  const area = H * W;
  const count = o.minCount === o.maxCount ? o.minCount : rng.randint(o.minCount, o.maxCount);
  for (let n = 0; n < count; n++) {
    for (let attempt = 0; attempt < 10; attempt++) {
      const targetArea = (rng.uniform(o.minArea, o.maxArea) * area) / count;
      const aspect = Math.exp(rng.uniform(o.logAspect[0], o.logAspect[1]));
      const h = pyRound(Math.sqrt(targetArea * aspect));
      const w = pyRound(Math.sqrt(targetArea / aspect));
      if (w < W && h < H) {
        const top = rng.randint(0, H - h);
        const left = rng.randint(0, W - w);
        const box: EraseBox = { top, left, height: h, width: w };
        if (o.mode === 'rand') box.colour = Array.from({ length: C }, () => Math.fround(rng.normal()));
        boxes.push(box);
        break;
      }
    }
  }
  return boxes;
}

/**
 * Fill planned boxes of one NHWC image at `offset` (later boxes over earlier ones): 'const' 0, 'rand' the box's
 * colour, 'pixel' counterNormal(noise.key, pos, (y·W + x)·C + c).
 */
export function fillErase(
  data: Float32Array, offset: number, W: number, C: number,
  boxes: readonly EraseBox[], mode: EraseMode, noise: { key: number; pos: number } | null,
): void {
  for (const { top, left, height: h, width: w, colour } of boxes) {
    if (h <= 0 || w <= 0) continue;
    for (let y = top; y < top + h; y++) {
      let e = (y * W + left) * C;
      for (let x = 0; x < w; x++) {
        for (let c = 0; c < C; c++, e++) {
          data[offset + e] = mode === 'pixel' ? counterNormal(noise!.key, noise!.pos, e) : mode === 'rand' ? colour![c] : 0;
        }
      }
    }
  }
}

/**
 * RandomErasing._erase on one NHWC image stored in `data` starting at `offset` (H·W·C floats). Returns the boxes
 * that were erased (empty when the image was skipped). 'pixel' noise comes from `noise` (default: a key drawn from
 * `rng` after the boxes, position 0).
 */
export function eraseImage(
  data: Float32Array,
  offset: number,
  H: number,
  W: number,
  C: number,
  opts: RandomErasingOptions | ResolvedErasing,
  rng: Rng,
  noise?: { key: number; pos: number },
): EraseBox[] {
  const o = 'logAspect' in opts ? opts : resolveErasingOptions(opts);
  const boxes = planErase(H, W, C, o, rng);
  if (boxes.length && o.mode === 'pixel' && !noise) noise = { key: rng.nextU32(), pos: 0 };
  fillErase(data, offset, W, C, boxes, o.mode, noise ?? null);
  return boxes;
}

/**
 * The plan of RandomErasing.__call__ on a batch of B images: boxes per image. With numSplits > 1 the first
 * floor(B / numSplits) images (the clean split) are left alone.
 */
export function planEraseBatch(B: number, H: number, W: number, C: number, opts: RandomErasingOptions | ResolvedErasing, rng: Rng): EraseBox[][] {
  const o = 'logAspect' in opts ? opts : resolveErasingOptions(opts);
  const start = o.numSplits > 1 ? Math.floor(B / o.numSplits) : 0;
  const out: EraseBox[][] = [];
  for (let i = 0; i < B; i++) out.push(i < start ? [] : planErase(H, W, C, o, rng));
  return out;
}

/**
 * RandomErasing.__call__ on a batch (NHWC, B images of H×W×C) in place. Returns the boxes per image. 'pixel' noise
 * comes from `noise` (default: a key drawn from `rng` after the boxes, positions 0..B−1).
 */
export function eraseBatch(
  batch: Float32Array,
  B: number,
  H: number,
  W: number,
  C: number,
  opts: RandomErasingOptions,
  rng: Rng,
  noise?: EraseNoise,
): EraseBox[][] {
  if (batch.length < B * H * W * C) throw new Error(`erase: batch holds ${batch.length} values, expected ${B * H * W * C}`);
  const o = resolveErasingOptions(opts);
  const plan = planEraseBatch(B, H, W, C, o, rng);
  if (o.mode === 'pixel' && !noise) noise = { key: rng.nextU32(), posBase: 0 };
  for (let i = 0; i < B; i++) {
    if (plan[i].length) fillErase(batch, i * H * W * C, W, C, plan[i], o.mode, noise ? { key: noise.key, pos: noise.posBase + i } : null);
  }
  return plan;
}
