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
 * Rules, first match wins. `when` sees the problem; `tile` names a GEMM_TILES entry. Tuned from nothing yet but the
 * arithmetic of waste (a tile width that divides N) and occupancy (>= ~2 workgroups per SM on 132 SMs); the GPU sweep
 * is meant to replace these guesses.
 */
export const GEMM_RULES: ReadonlyArray<{ when: (p: GemmProblem) => boolean; tile: string; why: string }> = [
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
  /** A K at least this long (and >= 8 x max(M, N)) counts as long: the product is split over K. */
  minSplitK: number;
  /** Aim for at least this many workgroups before splitting K. */
  targetWorkgroups: number;
  /** Each split gets at least this many K steps of the tile (bk each). */
  minStepsPerSplit: number;
  /** Cap on the partial-sum buffer (S * M * N floats). */
  maxPartialFloats: number;
}

export const gemmTuning: GemmTuning = {
  forceTile: '',
  minSplitK: 2048,
  targetWorkgroups: 1056, // 8 per SM on an H200 (132 SMs)
  minStepsPerSplit: 16,
  maxPartialFloats: 8 * 1024 * 1024,
};

export function setGemmTuning(t: Partial<GemmTuning>): GemmTuning {
  const prev = { ...gemmTuning };
  Object.assign(gemmTuning, t);
  return prev;
}

/** Whether K is long enough, relative to the output, that splitting it is worth considering. */
export function isLongK(M: number, N: number, K: number, batch: number): boolean {
  return batch === 1 && K >= gemmTuning.minSplitK && K >= 8 * Math.max(M, N);
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
  for (const r of GEMM_RULES) {
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
