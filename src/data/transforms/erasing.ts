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
 */
import type { Rng } from '../../utils/rng.js';
import { UserError } from '../../errors.js';
import { pyRound } from './pil.js';

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

interface Resolved {
  probability: number;
  mode: EraseMode;
  minArea: number;
  maxArea: number;
  logAspect: [number, number];
  minCount: number;
  maxCount: number;
  numSplits: number;
}

export function resolveErasingOptions(o: RandomErasingOptions): Resolved {
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

/** One erased rectangle (for tests and logging). */
export interface EraseBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

/**
 * RandomErasing._erase on one NHWC image stored in `data` starting at `offset` (H·W·C floats).
 * Returns the boxes that were erased (empty when the image was skipped).
 */
export function eraseImage(
  data: Float32Array,
  offset: number,
  H: number,
  W: number,
  C: number,
  opts: RandomErasingOptions | Resolved,
  rng: Rng,
): EraseBox[] {
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
        fillBox(data, offset, W, C, top, left, h, w, o.mode, rng);
        boxes.push({ top, left, height: h, width: w });
        break;
      }
    }
  }
  return boxes;
}

function fillBox(
  data: Float32Array, offset: number, W: number, C: number,
  top: number, left: number, h: number, w: number, mode: EraseMode, rng: Rng,
): void {
  if (h <= 0 || w <= 0) return;
  if (mode === 'pixel') {
    // timm draws a (C, h, w) normal tensor; draw in the same order (channel-major).
    for (let c = 0; c < C; c++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) data[offset + ((top + y) * W + left + x) * C + c] = rng.normal();
    return;
  }
  const colour = new Float32Array(C);
  if (mode === 'rand') for (let c = 0; c < C; c++) colour[c] = rng.normal();
  for (let y = 0; y < h; y++) {
    let p = offset + ((top + y) * W + left) * C;
    for (let x = 0; x < w; x++) for (let c = 0; c < C; c++) data[p++] = colour[c];
  }
}

/**
 * RandomErasing.__call__ on a batch (NHWC, B images of H×W×C) in place. With numSplits > 1 the
 * first floor(B / numSplits) images (the clean split) are skipped. Returns the boxes per image.
 */
export function eraseBatch(
  batch: Float32Array,
  B: number,
  H: number,
  W: number,
  C: number,
  opts: RandomErasingOptions,
  rng: Rng,
): EraseBox[][] {
  if (batch.length < B * H * W * C) throw new Error(`erase: batch holds ${batch.length} values, expected ${B * H * W * C}`);
  const o = resolveErasingOptions(opts);
  const start = o.numSplits > 1 ? Math.floor(B / o.numSplits) : 0;
  const out: EraseBox[][] = [];
  for (let i = 0; i < B; i++) {
    out.push(i < start ? [] : eraseImage(batch, i * H * W * C, H, W, C, o, rng));
  }
  return out;
}
