/**
 * Mixup / CutMix as timm's `FastCollateMixup` (timm/data/mixup.py, v0.6.11): mixing happens on the
 * uint8 batch, before normalization, and the soft targets carry the label smoothing.
 *
 * - Partner of image i is image B−1−i (the batch reversed); mixing always reads the originals.
 * - Mixup: out = rint(lam·a + (1−lam)·b) in float32 (round half to even), as uint8.
 * - CutMix box (rand_bbox): r = √(1−lam); cut_h = int(H·r), cut_w = int(W·r); centre
 *   cy ∈ [0, H), cx ∈ [0, W) (exclusive high); y1 = clip(cy − cut_h//2, 0, H), y2 = clip(cy + cut_h//2, 0, H),
 *   likewise x. With cutmix_minmax: cut_h = randrange(int(H·min), int(H·max)), y1 = randrange(0, H − cut_h),
 *   no clipping. The partner's pixels replace [y1, y2) × [x1, x2) (all channels).
 *   correct_lam (or minmax): lam = 1 − (y2−y1)(x2−x1)/(H·W).
 * - Modes: 'batch' one draw for the batch; 'elem' one per image; 'pair' one per pair (i, B−1−i),
 *   applied symmetrically, lam vector = [lam_0 .. lam_{B/2−1}, reversed].
 * - Sampling (per batch / element): with prob `prob`: if both alphas > 0, cutmix when
 *   random() < switch_prob with lam ~ Beta(α_cut, α_cut), else lam ~ Beta(α_mix, α_mix); a single
 *   active alpha selects that method. Otherwise (or when mixupEnabled is false) lam = 1.
 * - Targets (mixup_target): off = s/C, on = 1 − s + off; y = lam·onehot(t) + (1−lam)·onehot(flip(t)),
 *   float32 like torch.
 * Batch size must be even.
 */
import type { Rng } from '../utils/rng.js';
import { UserError } from '../errors.js';

export type MixupMode = 'batch' | 'pair' | 'elem';

export interface MixupOptions {
  /** --mixup α (0 = off) */
  mixupAlpha: number;
  /** --cutmix α (0 = off) */
  cutmixAlpha: number;
  /** --cutmix-minmax [min, max] ratios, or null */
  cutmixMinmax?: readonly [number, number] | null;
  /** --mixup-prob */
  prob?: number;
  /** --mixup-switch-prob */
  switchProb?: number;
  /** --mixup-mode */
  mode?: MixupMode;
  /** correct lam by the clipped CutMix box area */
  correctLam?: boolean;
  /** --smoothing */
  labelSmoothing?: number;
  numClasses: number;
}

/** timm: mixup is active when either alpha is > 0 or cutmix_minmax is set. */
export function mixupActive(o: Pick<MixupOptions, 'mixupAlpha' | 'cutmixAlpha' | 'cutmixMinmax'>): boolean {
  return o.mixupAlpha > 0 || o.cutmixAlpha > 0 || (o.cutmixMinmax !== null && o.cutmixMinmax !== undefined);
}

export type CutBox = [yl: number, yh: number, xl: number, xh: number];

/**
 * timm `rand_bbox` (no margin): the CutMix box for `lam` in an H×W image. `float32` mirrors the
 * elem/pair modes, where lam is a numpy float32 and sqrt(1 − lam), S·ratio are float32 too.
 */
export function randBbox(H: number, W: number, lam: number, rng: Rng, float32 = false): CutBox {
  const f = float32 ? Math.fround : (v: number) => v;
  const ratio = f(Math.sqrt(f(1 - lam)));
  const cutH = Math.trunc(f(H * ratio));
  const cutW = Math.trunc(f(W * ratio));
  const cy = rng.randrange(0, H);
  const cx = rng.randrange(0, W);
  const clip = (v: number, hi: number) => (v < 0 ? 0 : v > hi ? hi : v);
  const hh = Math.floor(cutH / 2);
  const hw = Math.floor(cutW / 2);
  return [clip(cy - hh, H), clip(cy + hh, H), clip(cx - hw, W), clip(cx + hw, W)];
}

/** timm `rand_bbox_minmax`: box sides uniform in [int(S·min), int(S·max)) (exclusive), placed inside. */
export function randBboxMinmax(H: number, W: number, minmax: readonly [number, number], rng: Rng): CutBox {
  const cutH = rng.randrange(Math.trunc(H * minmax[0]), Math.trunc(H * minmax[1]));
  const cutW = rng.randrange(Math.trunc(W * minmax[0]), Math.trunc(W * minmax[1]));
  const yl = rng.randrange(0, H - cutH);
  const xl = rng.randrange(0, W - cutW);
  return [yl, yl + cutH, xl, xl + cutW];
}

/** timm `cutmix_bbox_and_lam`: the box and the (corrected) lam. */
export function cutmixBboxAndLam(
  H: number,
  W: number,
  lam: number,
  minmax: readonly [number, number] | null | undefined,
  correctLam: boolean,
  rng: Rng,
  float32 = false,
): { box: CutBox; lam: number } {
  const box = minmax ? randBboxMinmax(H, W, minmax, rng) : randBbox(H, W, lam, rng, float32);
  if (correctLam || minmax) {
    const area = (box[1] - box[0]) * (box[3] - box[2]);
    lam = 1 - area / (H * W);
  }
  return { box, lam };
}

/**
 * timm `mixup_target`: soft targets [B, C] (row-major) from class indices. `lam` is one value for
 * the whole batch or one per row. Arithmetic in float32 as torch does.
 */
export function mixupTarget(
  targets: ArrayLike<number>,
  numClasses: number,
  lam: number | ArrayLike<number>,
  smoothing: number,
): Float32Array {
  const B = targets.length;
  const off = smoothing / numClasses;
  const on = 1 - smoothing + off;
  const onF = Math.fround(on);
  const offF = Math.fround(off);
  const out = new Float32Array(B * numClasses);
  for (let i = 0; i < B; i++) {
    const t1 = targets[i];
    const t2 = targets[B - 1 - i];
    for (const t of [t1, t2]) {
      if (!(Number.isInteger(t) && t >= 0 && t < numClasses)) {
        throw new UserError(`Label ${t} is outside [0, ${numClasses}); check --num-classes against the dataset.`);
      }
    }
    const l = typeof lam === 'number' ? lam : lam[i];
    // torch: y1 * lam + y2 * (1 - lam) with float32 tensors and a double scalar cast to float32
    const lf = Math.fround(l);
    const ml = Math.fround(1 - l);
    const row = i * numClasses;
    for (let c = 0; c < numClasses; c++) {
      const y1 = c === t1 ? onF : offF;
      const y2 = c === t2 ? onF : offF;
      out[row + c] = Math.fround(Math.fround(y1 * lf) + Math.fround(y2 * ml));
    }
  }
  return out;
}

export interface MixResult {
  /** mixed images, uint8 NHWC, same shape as the input */
  images: Uint8Array;
  /** soft targets [B, numClasses] */
  targets: Float32Array;
  /** the lam of each row (after CutMix correction) */
  lam: Float32Array;
  /** for batch mode: whether CutMix was used (false for mixup or no mixing) */
  cutmix: boolean[];
  /** CutMix boxes per row (null where no box was pasted) */
  boxes: (CutBox | null)[];
}

/** How image i of a batch is mixed with its partner B−1−i. */
export const MIX_NONE = 0;
export const MIX_BLEND = 1;
export const MIX_CUT = 2;

/**
 * Every random decision of FastCollateMixup for one batch, without touching pixels: what the host
 * (`applyMixPlan`) and the device paths (src/data/prefetch.ts) execute identically.
 */
export interface MixPlan extends Omit<MixResult, 'images'> {
  B: number;
  /** per image: MIX_NONE, MIX_BLEND (rint(lam·a + (1−lam)·b)) or MIX_CUT (partner pixels inside boxes[i]) */
  kind: Uint8Array;
  /** per image: the lam of the blend (float64 in batch mode, float32 values in elem/pair mode), 1 if not blended */
  blend: number[];
}

/** One draw of (lam, useCutmix) as timm's _params_per_batch. */
interface Params {
  lam: number;
  cutmix: boolean;
}

export class Mixup {
  readonly mixupAlpha: number;
  readonly cutmixAlpha: number;
  readonly cutmixMinmax: readonly [number, number] | null;
  readonly prob: number;
  readonly switchProb: number;
  readonly mode: MixupMode;
  readonly correctLam: boolean;
  readonly labelSmoothing: number;
  readonly numClasses: number;
  /** false → no mixing (lam = 1), targets still smoothed; set when epoch ≥ mixup_off_epoch */
  mixupEnabled = true;

  constructor(o: MixupOptions) {
    this.mixupAlpha = o.mixupAlpha;
    this.cutmixMinmax = o.cutmixMinmax ?? null;
    if (this.cutmixMinmax && this.cutmixMinmax.length !== 2) throw new UserError('--cutmix-minmax needs two values.');
    // timm forces cutmix alpha 1.0 when minmax is active
    this.cutmixAlpha = this.cutmixMinmax ? 1.0 : o.cutmixAlpha;
    this.prob = o.prob ?? 1.0;
    this.switchProb = o.switchProb ?? 0.5;
    this.mode = o.mode ?? 'batch';
    if (this.mode !== 'batch' && this.mode !== 'pair' && this.mode !== 'elem') {
      throw new UserError(`Unknown mixup mode '${this.mode as string}'; use batch, pair or elem.`);
    }
    this.correctLam = o.correctLam ?? true;
    this.labelSmoothing = o.labelSmoothing ?? 0.1;
    this.numClasses = o.numClasses;
    if (!(this.mixupAlpha > 0 || this.cutmixAlpha > 0)) {
      throw new UserError('Mixup needs --mixup > 0, --cutmix > 0 or --cutmix-minmax.');
    }
  }

  /** One (lam, cutmix) draw; lam = 1 when disabled or when the prob gate fails. */
  private drawParams(rng: Rng, asFloat32: boolean): Params {
    if (!this.mixupEnabled || !(rng.random() < this.prob)) return { lam: 1, cutmix: false };
    let cutmix = false;
    let lam: number;
    if (this.mixupAlpha > 0 && this.cutmixAlpha > 0) {
      cutmix = rng.random() < this.switchProb;
      lam = cutmix ? rng.beta(this.cutmixAlpha, this.cutmixAlpha) : rng.beta(this.mixupAlpha, this.mixupAlpha);
    } else if (this.mixupAlpha > 0) {
      lam = rng.beta(this.mixupAlpha, this.mixupAlpha);
    } else {
      cutmix = true;
      lam = rng.beta(this.cutmixAlpha, this.cutmixAlpha);
    }
    // elem/pair modes keep lam in a float32 numpy array
    return { lam: asFloat32 ? Math.fround(lam) : lam, cutmix };
  }

  /**
   * The random draws of FastCollateMixup.__call__ for a batch of B images of H×W (labels: class indices): what
   * to mix, and the soft targets.
   */
  plan(labels: ArrayLike<number>, B: number, H: number, W: number, rng: Rng): MixPlan {
    if (B % 2 !== 0) throw new UserError(`Mixup/CutMix needs an even batch size, got ${B}.`);
    if (labels.length !== B) throw new Error(`mixup: ${labels.length} labels for a batch of ${B}`);
    const lam = new Float32Array(B);
    const cutmix = new Array<boolean>(B).fill(false);
    const boxes = new Array<CutBox | null>(B).fill(null);
    const kind = new Uint8Array(B);
    const blend = new Array<number>(B).fill(1);
    // batch mode passes the scalar lam (a Python float) to mixup_target, elem/pair the float32 vector
    const done = (targetLam: number | Float32Array): MixPlan => ({
      B, kind, blend, lam, cutmix, boxes, targets: mixupTarget(labels, this.numClasses, targetLam, this.labelSmoothing),
    });

    if (this.mode === 'batch') {
      const p = this.drawParams(rng, false);
      let l = p.lam;
      let box: CutBox | null = null;
      if (p.cutmix) {
        const r = cutmixBboxAndLam(H, W, l, this.cutmixMinmax, this.correctLam, rng);
        box = r.box;
        l = r.lam;
      }
      if (l !== 1) {
        for (let i = 0; i < B; i++) {
          kind[i] = box ? MIX_CUT : MIX_BLEND;
          if (!box) blend[i] = l;
          cutmix[i] = p.cutmix;
          boxes[i] = box;
        }
      }
      lam.fill(l);
      return done(l);
    }

    if (this.mode === 'elem') {
      // _params_per_elem draws for all elements; the draw order differs from numpy's vectorised
      // one but each element's (lam, cutmix) has the same distribution.
      const params = Array.from({ length: B }, () => this.drawParams(rng, true));
      for (let i = 0; i < B; i++) {
        let l = params[i].lam;
        if (l !== 1) {
          if (params[i].cutmix) {
            const r = cutmixBboxAndLam(H, W, l, this.cutmixMinmax, this.correctLam, rng, true);
            kind[i] = MIX_CUT;
            l = Math.fround(r.lam);
            cutmix[i] = true;
            boxes[i] = r.box;
          } else {
            kind[i] = MIX_BLEND;
            blend[i] = l;
          }
        }
        lam[i] = l;
      }
      return done(lam);
    }

    // pair
    const half = B / 2;
    const params = Array.from({ length: half }, () => this.drawParams(rng, true));
    for (let i = 0; i < half; i++) {
      const j = B - 1 - i;
      let l = params[i].lam;
      if (l < 1) {
        if (params[i].cutmix) {
          const r = cutmixBboxAndLam(H, W, l, this.cutmixMinmax, this.correctLam, rng, true);
          kind[i] = kind[j] = MIX_CUT;
          l = Math.fround(r.lam);
          cutmix[i] = cutmix[j] = true;
          boxes[i] = boxes[j] = r.box;
        } else {
          kind[i] = kind[j] = MIX_BLEND;
          blend[i] = blend[j] = l;
        }
      }
      lam[i] = l;
      lam[j] = l;
    }
    return done(lam);
  }

  /**
   * FastCollateMixup.__call__ on a uint8 NHWC batch (B·H·W·C). `images` is not modified; the mixed
   * batch is written to `out` (a new array by default; must not alias `images`).
   */
  apply(
    images: Uint8Array,
    labels: ArrayLike<number>,
    B: number,
    H: number,
    W: number,
    C: number,
    rng: Rng,
    out?: Uint8Array,
  ): MixResult {
    const plan = this.plan(labels, B, H, W, rng);
    const { lam, cutmix, boxes, targets } = plan;
    return { images: applyMixPlan(images, plan, H, W, C, out), targets, lam, cutmix, boxes };
  }
}

/**
 * Execute a MixPlan on the host: the mixed uint8 batch (a new array by default; `out` must not alias `images`).
 * Every image reads the un-mixed originals.
 */
export function applyMixPlan(images: Uint8Array, plan: MixPlan, H: number, W: number, C: number, out?: Uint8Array): Uint8Array {
  const B = plan.B;
  const n = B * H * W * C;
  if (images.length < n) throw new Error(`mixup: batch holds ${images.length} bytes, expected ${n}`);
  const dst = out ?? new Uint8Array(n);
  if (dst === images) throw new Error('mixup: out must not alias the input batch');
  dst.set(images.subarray(0, n));
  const img = H * W * C;
  for (let i = 0; i < B; i++) {
    const j = B - 1 - i;
    if (plan.kind[i] === MIX_BLEND) mixInto(images, i * img, j * img, dst, i * img, img, plan.blend[i]);
    else if (plan.kind[i] === MIX_CUT) pasteBox(images, j * img, dst, i * img, W, C, plan.boxes[i]!);
  }
  return dst;
}

/**
 * The blend of image i as two float32 product tables: table[v] = float32(v·float32(lam)),
 * table[256 + v] = float32(v·float32(1 − lam)), so that the mixed value is rint(table[a] + table[256 + b]) with a
 * single float32 addition — the same value as `mixInto`, and what the device paths compute (a GPU may fuse a
 * multiply and an add into one fma; an addition of two loaded values leaves it nothing to fuse).
 * Writes 512 floats at out[offset..]; images that are not blended get zeros.
 */
export function mixTables(plan: MixPlan, i: number, out: Float32Array, offset: number): void {
  if (plan.kind[i] !== MIX_BLEND) {
    out.fill(0, offset, offset + 512);
    return;
  }
  const lf = Math.fround(plan.blend[i]);
  const ml = Math.fround(1 - plan.blend[i]);
  for (let v = 0; v < 256; v++) {
    out[offset + v] = v * lf; // Float32Array stores round to float32
    out[offset + 256 + v] = v * ml;
  }
}

/** Round half to even (np.rint) for non-negative values. */
function rint(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * dst[d..] = rint(a·lam + b·(1 − lam)) in float32: numpy multiplies a float32 array by the scalar
 * cast to float32 (lam and 1 − lam are formed in the scalar's own precision first).
 */
function mixInto(src: Uint8Array, a: number, b: number, dst: Uint8Array, d: number, n: number, lam: number): void {
  const lf = Math.fround(lam);
  const ml = Math.fround(1 - lam);
  for (let k = 0; k < n; k++) {
    const v = Math.fround(Math.fround(src[a + k] * lf) + Math.fround(src[b + k] * ml));
    const r = rint(v);
    dst[d + k] = r < 0 ? 0 : r > 255 ? 255 : r;
  }
}

/** Copy the box [yl, yh) × [xl, xh) of the image at `s` in `src` into the image at `d` in `dst`. */
function pasteBox(src: Uint8Array, s: number, dst: Uint8Array, d: number, W: number, C: number, box: CutBox): void {
  const [yl, yh, xl, xh] = box;
  if (yh <= yl || xh <= xl) return;
  const rowLen = (xh - xl) * C;
  for (let y = yl; y < yh; y++) {
    const o = (y * W + xl) * C;
    dst.set(src.subarray(s + o, s + o + rowLen), d + o);
  }
}
