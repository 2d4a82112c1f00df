/**
 * The tile table of the register-tiled GEMM (./gemm.ts): every tile shape the kernels may use, and the rules that pick
 * one for a problem (M, N, K, layouts). Kept in one place so that a sweep on the GPU (`scripts/gpu_kernels.ts --matmul`)
 * can time every entry on MambaOut's exact shapes and the rules below can be re-tuned from its table.
 *
 * Background (H200, fp32 on CUDA cores, ~60 TFLOP/s peak; PyTorch eager fp32 uses no TF32 for matmuls by default):
 * our first kernel (./matmul.ts v1, 16 x 16 threads, scalar shared-memory reads, tile 32-128 from M and N alone)
 * reached 17-23 TFLOP/s on fc1 but 3-5 TFLOP/s on the narrow fc2 products (N = 48 .. 576), where a 64- or
 * 128-wide tile wastes up to half its columns, and matmuls were ~45% (femto) / ~53% (tiny) of the GPU step.
 * The tiles here read shared memory as vec4, give each thread 4-8 rows x 4-8 columns held in vec4 registers, and
 * come in widths that fit MambaOut's channel counts (24, 48, 96, 192, 288 ... and multiples of 32).
 */
import { fromSettingsOnFirstUse, settings } from '../../../settings.js';

/** One tile shape: the workgroup computes bm x bn outputs, each thread tm x tn, stepping K by bk. */
export interface GemmTile {
  name: string;
  bm: number;
  bn: number;
  bk: number;
  /** Rows per thread (a multiple of 4). */
  tm: number;
  /** Columns per thread (a multiple of 4). */
  tn: number;
  /** Load the next K step's operands into registers while computing the current one. */
  prefetch: boolean;
}

const t = (bm: number, bn: number, bk: number, tm: number, tn: number, prefetch = true): GemmTile =>
  ({ name: `${bm}x${bn}x${bk}_${tm}x${tn}${prefetch ? '' : '_np'}`, bm, bn, bk, tm, tn, prefetch });

/**
 * All tiles. Threads per workgroup = (bm / tm) * (bn / tn), at most 256; shared memory = 4 * bk * (bm + bn) bytes.
 */
export const GEMM_TILES: readonly GemmTile[] = [
  // Wide outputs (fc1 forward: N = 2h = 256 .. 2304; dX of fc2: N = h).
  t(128, 128, 8, 8, 8),
  t(128, 128, 16, 8, 8),
  t(128, 128, 8, 8, 8, false),
  t(64, 128, 16, 4, 8),
  t(128, 64, 16, 8, 4),
  t(64, 64, 16, 4, 4),
  t(64, 64, 16, 4, 4, false),
  // Narrow outputs (fc2 forward and dX of fc1: N = C = 48 .. 576; conv input gradients N = Cin).
  t(128, 96, 16, 8, 8), // 16 x 12 threads
  t(128, 48, 16, 8, 4), // 16 x 12 threads
  t(256, 48, 8, 16, 4), // 16 x 12 threads
  t(128, 32, 16, 4, 4), // 32 x 8 threads
  t(256, 32, 8, 8, 4), // 32 x 8 threads
  t(128, 24, 16, 4, 4), // 32 x 6 threads (stem: Cin 24)
  t(256, 64, 8, 8, 8), // 32 x 8 threads
  // Small outputs with a long K (weight gradients, split over K): output [C, h] etc.
  t(32, 32, 32, 4, 4),
  t(64, 32, 32, 4, 4),
  t(32, 64, 32, 4, 4),
  t(64, 64, 32, 4, 4),
  t(32, 32, 16, 4, 4), // 8 x 8 threads: tiny products (the head at small batch)
];

export function tileByName(name: string): GemmTile | undefined {
  return GEMM_TILES.find((x) => x.name === name);
}

/** Problem description the rules look at. */
export interface GemmProblem {
  M: number;
  N: number;
  K: number;
  batch: number;
  /** Whether the result will be split over K (decided by `splitFor`, which needs the tile: rules see `longK`). */
  longK: boolean;
}

/**
 * Rules, first match wins. `when` sees the problem; `tile` names a GEMM_TILES entry.
 * Tuned from the GPU sweep of 2026-11-30 (H200, batch 128, every distinct product of a femto and a tiny step;
 * gpu_results run 1, `scripts/gemm_sweep.ts`): the phase-1 rules summed to 709.5 ms over the sweep's problems, the
 * best tile per problem to 585.3 ms. The sweep times one kernel at a time, so its milliseconds are ~2-3.5x the
 * per-kernel times inside a busy step (profile); the rules below use only its ranking of tiles within a problem.
 * Figures quoted are sweep ms (rule chosen vs phase-1 rule).
 */
export const GEMM_RULES: ReadonlyArray<{ when: (p: GemmProblem) => boolean; tile: string; why: string }> = [
  { when: (p) => p.M * p.N <= 64 * 64 && !p.longK, tile: '32x32x16_4x4', why: 'tiny output, short K' },
  // Weight gradients dW = dyᵀ · x, split over the rows (K = B·H·W). Output [C, h] (N > M, fc2's dW): the 64-row x
  // 128-column tile, e.g. [401408,48]ᵀ x [.,128] 1.26 vs 2.09 (32x32x32), [25088,384]ᵀ x [.,1024] 1.40 vs 1.53.
  { when: (p) => p.longK && p.N > p.M, tile: '64x128x16_4x8', why: 'weight gradient, wide output: split K' },
  // Output [2h, C] (fc1's dW) with C = 48: [401408,256]ᵀ x [.,48] 2.08 vs 4.20.
  { when: (p) => p.longK && p.N <= 48, tile: '128x48x16_8x4', why: 'weight gradient, 48 columns: split K' },
  // C = 96: [401408,512]ᵀ x [.,96] 5.88 vs 9.55 (64x64x32), [100352,512]ᵀ x [.,96] 2.19 vs 2.51.
  { when: (p) => p.longK && p.N <= 96, tile: '128x32x16_4x4', why: 'weight gradient, 96 columns: split K' },
  // C >= 192: [100352,1024]ᵀ x [.,192] 3.75 vs 3.86, [6272,3072]ᵀ x [.,576] 2.64 vs 2.94 (then unsplit).
  { when: (p) => p.longK, tile: '128x64x16_8x4', why: 'weight gradient: split K' },
  // Few rows (the head at batch <= 1024): more workgroups; [128,288] x [1152,288]ᵀ 0.10, [128,2304] x [1000,2304]ᵀ 0.38.
  { when: (p) => p.M <= 1024, tile: '64x64x16_4x4', why: 'few rows: more workgroups' },
  { when: (p) => p.N <= 24, tile: '128x24x16_4x4', why: 'N = 24 (stem conv)' },
  { when: (p) => p.N <= 32, tile: '128x32x16_4x4', why: 'N <= 32' },
  // N = 48 (femto stage 0 fc2 and fc1's dX): [401408,128] x [48,128]ᵀ 0.58, best of 6.
  { when: (p) => p.N <= 48, tile: '128x48x16_8x4', why: 'N = 48' },
  // N = 96: 128x96, 128x48 and 128x32 are within 3% of each other summed over the four N = 96 products.
  { when: (p) => p.N === 96, tile: '128x96x16_8x8', why: 'N = 96: no wasted columns' },
  // Fewer than two waves of 128x64 tiles on 132 SMs (stage 3 at M = 6272, N = 288): narrower tiles, e.g.
  // [6272,1536] x [1536,288] 1.36 vs 1.74 (128x96), [6272,768] x [288,768]ᵀ 0.75 vs 0.90.
  { when: (p) => Math.ceil(p.M / 128) * Math.ceil(p.N / 64) < 264 && p.N % 48 === 0, tile: '128x48x16_8x4', why: 'few 128x64 tiles, N % 48 == 0' },
  { when: (p) => Math.ceil(p.M / 128) * Math.ceil(p.N / 64) < 264, tile: '64x64x16_4x4', why: 'few 128x64 tiles' },
  // Everything else (fc1 forward, fc2's dX, wide convs): 128x64x16 won 17 of 24 such products, e.g.
  // [401408,96] x [512,96]ᵀ 5.37 vs 7.04 (128x128x8), [25088,2048] x [2048,384] 3.45 vs 5.73, [25088,512] x [192,512]ᵀ
  // 0.84 vs 1.16 (128x96); it lost by at most 12% ([25088,1024] x [384,1024]ᵀ: 2.09 vs 1.86 for 128x128x16).
  { when: () => true, tile: '128x64x16_8x4', why: 'large M and N >= 64' },
];

/** The rules of phase 1 (guesses before any GPU sweep), kept for A/B runs: MAMBAOUT_GEMM_RULES=phase1. */
export const GEMM_RULES_PHASE1: ReadonlyArray<{ when: (p: GemmProblem) => boolean; tile: string; why: string }> = [
  { when: (p) => p.M * p.N <= 64 * 64 && !p.longK, tile: '32x32x16_4x4', why: 'tiny output, short K' },
  { when: (p) => p.longK && p.M * p.N <= 192 * 192, tile: '32x32x32_4x4', why: 'weight gradient, small output: split K' },
  { when: (p) => p.longK, tile: '64x64x32_4x4', why: 'weight gradient: split K' },
  { when: (p) => p.N <= 24, tile: '128x24x16_4x4', why: 'N = 24 (stem conv)' },
  { when: (p) => p.N <= 32, tile: '128x32x16_4x4', why: 'N <= 32' },
  { when: (p) => p.N <= 48, tile: '128x48x16_8x4', why: 'N = 48 (femto stage 0)' },
  { when: (p) => p.N % 96 === 0 && p.N <= 288, tile: '128x96x16_8x8', why: 'N = 96 / 192 / 288' },
  { when: (p) => p.N <= 64, tile: '128x64x16_8x4', why: 'N <= 64' },
  { when: (p) => p.M <= 4096, tile: '64x64x16_4x4', why: 'few rows: more workgroups' },
  { when: () => true, tile: '128x128x8_8x8', why: 'large M and N' },
];

/** Settings the sweep can change: force one tile for every product, or change the split-K policy. */
export interface GemmTuning {
  /** Name of a GEMM_TILES entry used for every product (empty: the rules decide). */
  forceTile: string;
  /** Which rule table decides: this phase's (default) or phase 1's (A/B runs; MAMBAOUT_GEMM_RULES=phase1). */
  rules: 'current' | 'phase1';
  /** A K at least this long (and >= longKRatio x max(M, N)) counts as long: the product is split over K. */
  minSplitK: number;
  /**
   * K >= longKRatio x max(M, N) counts as long. Phase 1 used 8, which left stage 3's weight gradients (K = 6272,
   * output 576 x 1536 or 3072 x 576) unsplit in 100-250 workgroups, one or two waves on 132 SMs.
   */
  longKRatio: number;
  /** Aim for at least this many workgroups before splitting K. */
  targetWorkgroups: number;
  /** Each split gets at least this many K steps of the tile (bk each). */
  minStepsPerSplit: number;
  /** Cap on the partial-sum buffer (S * M * N floats). */
  maxPartialFloats: number;
}

/** The live tuning (settings.gemmRules, MAMBAOUT_GEMM_RULES, read when first used); change it with setGemmTuning. */
export const gemmTuning: GemmTuning = fromSettingsOnFirstUse(
  ['forceTile', 'rules', 'minSplitK', 'longKRatio', 'targetWorkgroups', 'minStepsPerSplit', 'maxPartialFloats'],
  () => {
    const phase1 = settings.gemmRules === 'phase1';
    return {
      forceTile: '',
      rules: phase1 ? 'phase1' : 'current',
      minSplitK: phase1 ? 2048 : 1024,
      longKRatio: phase1 ? 8 : 2,
      targetWorkgroups: 1056, // 8 per SM on an H200 (132 SMs)
      minStepsPerSplit: 16,
      maxPartialFloats: 8 * 1024 * 1024,
    };
  },
);

export function setGemmTuning(t: Partial<GemmTuning>): GemmTuning {
  const prev = { ...gemmTuning };
  Object.assign(gemmTuning, t);
  return prev;
}

/** Whether K is long enough, relative to the output, that splitting it is worth considering. */
export function isLongK(M: number, N: number, K: number, batch: number): boolean {
  return batch === 1 && K >= gemmTuning.minSplitK && K >= gemmTuning.longKRatio * Math.max(M, N);
}

/**
 * The tile for a problem: `forceTile`, else the first rule whose tile fits the device's shared memory and thread
 * limits, else the smallest tile that fits.
 */
export function chooseTile(p: GemmProblem, limits: { sharedBytes: number; threads: number }): GemmTile {
  const fits = (x: GemmTile) => tileShared(x) <= limits.sharedBytes && tileThreads(x) <= limits.threads;
  if (gemmTuning.forceTile) {
    const f = tileByName(gemmTuning.forceTile);
    if (f && fits(f)) return f;
  }
  for (const r of gemmTuning.rules === 'phase1' ? GEMM_RULES_PHASE1 : GEMM_RULES) {
    if (!r.when(p)) continue;
    const x = tileByName(r.tile);
    if (x && fits(x)) return x;
  }
  return tileByName('32x32x16_4x4')!;
}

export function tileThreads(x: GemmTile): number {
  return (x.bm / x.tm) * (x.bn / x.tn);
}

export function tileShared(x: GemmTile): number {
  return 4 * x.bk * (x.bm + x.bn);
}
