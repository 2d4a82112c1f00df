/**
 * BatchMatMul for the tfjs WebGPU backend: register-tiled matrix product with optional split-K.
 *
 * MambaOut's Linear layers are tall-skinny: x [M, C] with M = B*H*W (401408 rows for femto's stage 0 at batch 128)
 * and C, N between 48 and 1536. Their three products per training step are
 *   forward  y  = x · Wᵀ            [M, K] x [N, K]ᵀ   (transposeB; tfjs then cannot use its vec4 program)
 *   dX       dx = dy · W            [M, N] x [N, K]
 *   dW       dw = dyᵀ · x           [M, N]ᵀ x [M, K]    (transposeA, reduction over the huge M, tiny output)
 * tfjs's programs reach 1.6-3.5 TFLOP/s on the first two and tile the small dW output into a handful of
 * workgroups that each loop over all M rows (51 ms for femto's stage-0 fc1 dW at batch 128 on an H200).
 *
 * One WGSL generator covers every transpose combination:
 *   - a workgroup of 16 x 16 threads computes a BM x BN output tile (BM, BN in {32, 64, 128}); thread (tx, ty)
 *     owns rows ty + 16 i and columns tx + 16 j (TM = BM/16, TN = BN/16 accumulators each way), so its reads
 *     of the shared tiles are broadcasts (A) or consecutive words (B);
 *   - K advances BK = 16 at a time through shared memory; global loads are mapped so that consecutive threads
 *     read consecutive addresses for the operand's storage order; tiles stored k-major, padded by one word where
 *     the store pattern would otherwise hit one bank;
 *   - split-K: when the output has too few tiles to fill the GPU and K is long, workgroup z takes one chunk of K
 *     and writes partial sums [S, M, N]; `sumSplits` (shared with the conv filter kernel) adds them. Sums are
 *     deterministic (no atomics).
 * Batched products (rank 3+) use z for the batch when there is no split; operands with batch 1 are broadcast.
 *
 * Not covered (tfjs's kernel is used): non-float32 inputs, batch shapes that broadcast other than 1-vs-n.
 *
 * v2 (default; `webgpuKernelSettings.gemm`): the vec4 register-tiled generator of ./gemm.ts with the tile table of
 * ./matmul_tiles.ts, and the fused Linear kernel (MambaoutLinear: x · Wᵀ + bias [, gelu] [+ residual]). The v1
 * kernel above stays for A/B runs (MAMBAOUT_WEBGPU_KERNELS=v1).
 */
import { broadcast_util, util } from '@tensorflow/tfjs-core';
import type { KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { range, sumSplits, wgslTileMainHeader, type KernelArgs } from './util.js';
import { runCustomProgram, uniformStruct, type CustomProgram } from './dispatch.js';
import { GEMM_UNIFORMS, NO_EPILOGUE, PLAIN_INDEX, gemmBindings, gemmKey, gemmSource, type GemmEpilogue, type GemmSpec } from './gemm.js';
import { chooseTile, gemmTuning, isLongK, type GemmTile } from './matmul_tiles.js';
import { webgpuKernelSettings } from './settings.js';

export interface MatMulTuning {
  /** Aim for at least this many workgroups before splitting K. */
  targetWorkgroups: number;
  /** Only split when K is at least this long. */
  minSplitK: number;
  /** Each split gets at least this many K steps. */
  minKPerSplit: number;
  /** Cap on the partial-sum buffer (S * M * N floats). */
  maxPartialFloats: number;
  /** Shared-memory depth per step (8 or 16). */
  tileK: number;
}

const tuning: MatMulTuning = {
  targetWorkgroups: 1024,
  minSplitK: 2048,
  minKPerSplit: 512,
  maxPartialFloats: 8 * 1024 * 1024,
  tileK: 16,
};

export function setMatMulTuning(t: Partial<MatMulTuning>): MatMulTuning {
  const prev = { ...tuning };
  Object.assign(tuning, t);
  return prev;
}

export function getMatMulTuning(): MatMulTuning {
  return { ...tuning };
}

interface TileConfig {
  bm: number;
  bn: number;
  bk: number;
  transA: boolean;
  transB: boolean;
  /** Write partial sums of one K chunk per z (else z is the batch index). */
  split: boolean;
}

const WX = 16;
const WY = 16;
const WG = WX * WY;

function tileFor(dim: number): number {
  if (dim > 64) return 128;
  if (dim > 32) return 64;
  return 32;
}

/** WGSL of one tile configuration. */
export function matMulSource(cfg: TileConfig): string {
  const { bm, bn, bk, transA, transB, split } = cfg;
  const tm = bm / WY;
  const tn = bn / WX;
  // Shared tiles are k-major: As[k][m], Bs[k][n]. Row length padded by 1 when consecutive threads store along k.
  const aLd = transA ? bm : bm + 1;
  const bLd = transB ? bn + 1 : bn;
  const aLoads = (bm * bk) / WG;
  const bLoads = (bn * bk) / WG;

  const aLoad = range(aLoads).map((e) => {
    const flat = `li + ${e * WG}`;
    // transA: A stored [K, M] (m contiguous): consecutive threads take consecutive m.
    // else:   A stored [M, K] (k contiguous): consecutive threads take consecutive k.
    return transA
      ? `{ let f = ${flat}; let r = f % ${bm}; let c = f / ${bm}; let m = m0 + r; let k = k0 + c;
           var v = 0.0; if (m < u.M && k < kEnd) { v = A[aOff + k * u.M + m]; } As[c * ${aLd} + r] = v; }`
      : `{ let f = ${flat}; let c = f % ${bk}; let r = f / ${bk}; let m = m0 + r; let k = k0 + c;
           var v = 0.0; if (m < u.M && k < kEnd) { v = A[aOff + m * u.K + k]; } As[c * ${aLd} + r] = v; }`;
  }).join('\n          ');
  const bLoad = range(bLoads).map((e) => {
    const flat = `li + ${e * WG}`;
    // transB: B stored [N, K] (k contiguous); else B stored [K, N] (n contiguous).
    return transB
      ? `{ let f = ${flat}; let c = f % ${bk}; let r = f / ${bk}; let n = n0 + r; let k = k0 + c;
           var v = 0.0; if (n < u.N && k < kEnd) { v = B[bOff + n * u.K + k]; } Bs[c * ${bLd} + r] = v; }`
      : `{ let f = ${flat}; let r = f % ${bn}; let c = f / ${bn}; let n = n0 + r; let k = k0 + c;
           var v = 0.0; if (n < u.N && k < kEnd) { v = B[bOff + k * u.N + n]; } Bs[c * ${bLd} + r] = v; }`;
  }).join('\n          ');

  const decl: string[] = [];
  const inner: string[] = [];
  const store: string[] = [];
  for (let i = 0; i < tm; i++) inner.push(`let a${i} = As[kk * ${aLd} + ty + ${i * WY}];`);
  for (let j = 0; j < tn; j++) inner.push(`let b${j} = Bs[kk * ${bLd} + tx + ${j * WX}];`);
  for (let i = 0; i < tm; i++) {
    store.push(`{ let m = m0 + ty + ${i * WY}; if (m < u.M) { let row = oOff + m * u.N;`);
    for (let j = 0; j < tn; j++) {
      decl.push(`var c${i}_${j} = 0.0;`);
      inner.push(`c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
      store.push(`  if (n0 + tx + ${j * WX} < u.N) { result[row + n0 + tx + ${j * WX}] = c${i}_${j}; }`);
    }
    store.push('} }');
  }

  return `
${uniformStruct(UNIFORMS.map((name) => ({ name, type: 'i32', value: 0 })), 3)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> A : array<f32>;
@group(0) @binding(2) var<storage, read> B : array<f32>;

var<workgroup> As : array<f32, ${bk * aLd}>;
var<workgroup> Bs : array<f32, ${bk * bLd}>;

${wgslTileMainHeader(WG, WX, bm, bn)}
  ${split
    ? `let kBegin = z * u.kChunk;
  let kEnd = min(kBegin + u.kChunk, u.K);
  let aOff = 0;
  let bOff = 0;
  let oOff = z * u.M * u.N;`
    : `let kBegin = 0;
  let kEnd = u.K;
  let aOff = z * u.aBatchStride;
  let bOff = z * u.bBatchStride;
  let oOff = z * u.M * u.N;`}
  ${decl.join(' ')}
  // The step count depends on uniforms only, so the barriers stay in uniform control flow.
  for (var st = 0; st < u.steps; st = st + 1) {
    let k0 = kBegin + st * ${bk};
    ${aLoad}
    ${bLoad}
    workgroupBarrier();
    for (var kk = 0; kk < ${bk}; kk = kk + 1) {
      ${inner.join('\n      ')}
    }
    workgroupBarrier();
  }
  ${store.join('\n  ')}
}
`;
}

const UNIFORMS = ['M', 'N', 'K', 'kChunk', 'steps', 'aBatchStride', 'bBatchStride'];

/**
 * out[z] = op(A[z]) · op(B[z]) for a [batchA, ., .] and b [batchB, ., .] (3-D views), with op = transpose when asked.
 * Returns a new tensor of shape `outShape` (whose size is batch * M * N).
 */
export function batchMatMulWebGPU(
  backend: WebGPUBackend, a: TensorInfo, b: TensorInfo, transA: boolean, transB: boolean,
  M: number, N: number, K: number, batchA: number, batchB: number, outShape: number[],
): TensorInfo {
  const batch = Math.max(batchA, batchB);
  const bm = tileFor(M);
  const bn = tileFor(N);
  const bk = tuning.tileK === 8 ? 8 : 16;
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const tilesM = Math.ceil(M / bm);
  const tilesN = Math.ceil(N / bn);
  const tiles = tilesM * tilesN * batch;
  let splits = 1;
  if (batch === 1 && tiles < tuning.targetWorkgroups && K >= tuning.minSplitK) {
    splits = Math.min(
      Math.ceil(tuning.targetWorkgroups / tiles),
      Math.floor(K / tuning.minKPerSplit),
      Math.floor(tuning.maxPartialFloats / (M * N)),
      maxDim,
    );
    splits = Math.max(1, splits);
  }
  let kChunk = Math.ceil(Math.ceil(K / splits) / bk) * bk;
  splits = Math.ceil(K / kChunk);
  if (splits === 1) kChunk = Math.ceil(K / bk) * bk;
  const split = splits > 1;
  const cfg: TileConfig = { bm, bn, bk, transA, transB, split };
  const key = `mambaout_matmul_${bm}_${bn}_${bk}_${transA ? 1 : 0}${transB ? 1 : 0}_${split ? 's' : 'b'}`;
  const vals = [M, N, K, kChunk, kChunk / bk, batchA === 1 ? 0 : M * K, batchB === 1 ? 0 : K * N];
  const prog: CustomProgram = {
    name: split ? 'MatMulSplitK' : 'MatMulTiled',
    key,
    code: () => matMulSource(cfg),
    outputShapes: [split ? [splits, M, N] : outShape],
    dispatch: [tilesN, tilesM, split ? splits : batch],
    uniforms: UNIFORMS.map((name, i) => ({ name, type: 'i32' as const, value: vals[i] })),
  };
  const [out] = runCustomProgram(backend, prog, [a, b]);
  if (!split) return out;
  return sumSplits(backend, out, splits, outShape);
}

/** Our BatchMatMul; `fallback` (tfjs's kernel) handles what it does not cover. */
export function batchMatMulKernel(args: KernelArgs, fallback?: KernelFunc): TensorInfo {
  const { a, b } = args.inputs;
  const attrs = (args.attrs ?? {}) as { transposeA?: boolean; transposeB?: boolean };
  const backend = args.backend as WebGPUBackend;
  const transA = attrs.transposeA ?? false;
  const transB = attrs.transposeB ?? false;
  const useFallback = (): TensorInfo => {
    if (!fallback) throw new Error('BatchMatMul: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  };
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return useFallback();
  const ar = a.shape.length;
  const br = b.shape.length;
  const M = transA ? a.shape[ar - 1] : a.shape[ar - 2];
  const K = transA ? a.shape[ar - 2] : a.shape[ar - 1];
  const Kb = transB ? b.shape[br - 1] : b.shape[br - 2];
  const N = transB ? b.shape[br - 2] : b.shape[br - 1];
  if (K !== Kb) return useFallback(); // let tfjs raise its error
  const batchA = util.sizeFromShape(a.shape.slice(0, -2));
  const batchB = util.sizeFromShape(b.shape.slice(0, -2));
  let outer: number[];
  try {
    outer = broadcast_util.assertAndGetBroadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  } catch {
    return useFallback();
  }
  if (!(batchA === batchB || batchA === 1 || batchB === 1)) return useFallback();
  if (batchA !== batchB && util.sizeFromShape(outer) !== Math.max(batchA, batchB)) return useFallback();
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  if (Math.ceil(M / 32) > maxDim || Math.ceil(N / 32) > maxDim || Math.max(batchA, batchB) > maxDim) return useFallback();
  // Flat indices are i32 in the shader.
  if (Math.max(batchA, batchB) * Math.max(M * N, M * K, K * N) >= 2 ** 31) return useFallback();
  const outShape = [...outer, M, N];
  if (M === 0 || N === 0) return backend.makeTensorInfo(outShape, 'float32', new Float32Array(0));
  if (K === 0) {
    const info = backend.makeTensorInfo(outShape, 'float32', new Float32Array(util.sizeFromShape(outShape)));
    return info;
  }
  if (webgpuKernelSettings.gemm) {
    const out = gemmMatMul(backend, a, b, { transA, transB, M, N, K, batchA, batchB, outShape });
    if (out) return out[0];
  }
  return batchMatMulWebGPU(backend, a, b, transA, transB, M, N, K, batchA, batchB, outShape);
}

/** One GEMM problem on row-major operands. */
export interface GemmCall {
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  batchA: number;
  batchB: number;
  outShape: number[];
  epilogue?: GemmEpilogue;
  /** bias [N] and residual [M, N] when the epilogue asks for them. */
  bias?: TensorInfo;
  residual?: TensorInfo;
  /** Use this tile instead of the table's choice (sweeps). */
  tile?: GemmTile;
  /** Operands / result stored as packed bf16 (--amp; ./bf16.ts). The result is then int32 [..., N / 2]. */
  aBf16?: boolean;
  bBf16?: boolean;
  outBf16?: boolean;
}

/** Device limits the tile choice respects. */
export function gemmLimits(backend: WebGPUBackend): { sharedBytes: number; threads: number } {
  const l = backend.device.limits;
  return { sharedBytes: l.maxComputeWorkgroupStorageSize, threads: Math.min(l.maxComputeInvocationsPerWorkgroup, l.maxComputeWorkgroupSizeX) };
}

/** The tile and split count the v2 kernel uses for a problem (exported for the sweep's report). */
export function gemmPlan(backend: WebGPUBackend, c: Pick<GemmCall, 'M' | 'N' | 'K' | 'batchA' | 'batchB' | 'epilogue' | 'tile'>): { tile: GemmTile; splits: number; kChunk: number } {
  const batch = Math.max(c.batchA, c.batchB);
  const epi = c.epilogue ?? NO_EPILOGUE;
  const hasEpilogue = epi.bias || epi.gelu || epi.residual;
  const longK = !hasEpilogue && isLongK(c.M, c.N, c.K, batch);
  const tile = c.tile ?? chooseTile({ M: c.M, N: c.N, K: c.K, batch, longK }, gemmLimits(backend));
  let splits = 1;
  if (longK) {
    const tiles = Math.ceil(c.M / tile.bm) * Math.ceil(c.N / tile.bn);
    if (tiles < gemmTuning.targetWorkgroups) {
      splits = Math.max(1, Math.min(
        Math.ceil(gemmTuning.targetWorkgroups / tiles),
        Math.floor(c.K / (gemmTuning.minStepsPerSplit * tile.bk)),
        Math.floor(gemmTuning.maxPartialFloats / (c.M * c.N)),
        backend.device.limits.maxComputeWorkgroupsPerDimension,
      ));
    }
  }
  let kChunk = Math.ceil(Math.ceil(c.K / splits) / tile.bk) * tile.bk;
  splits = Math.ceil(c.K / kChunk);
  if (splits === 1) kChunk = Math.ceil(c.K / tile.bk) * tile.bk;
  return { tile, splits, kChunk };
}

/**
 * out = op(A) · op(B) (+ epilogue) with the v2 generator: [out] or, with gelu + saveZ, [out, pre-activation].
 * Returns null when the problem does not fit it (the caller then uses another kernel): too many tiles for one
 * dispatch dimension, or an epilogue on a split or batched product.
 */
export function gemmMatMul(backend: WebGPUBackend, a: TensorInfo, b: TensorInfo, c: GemmCall): TensorInfo[] | null {
  const { transA, transB, M, N, K, batchA, batchB } = c;
  const epilogue = c.epilogue ?? NO_EPILOGUE;
  const batch = Math.max(batchA, batchB);
  const { tile, splits, kChunk } = gemmPlan(backend, c);
  const split = splits > 1;
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const tilesM = Math.ceil(M / tile.bm);
  const tilesN = Math.ceil(N / tile.bn);
  if (tilesM > maxDim || tilesN > maxDim || (split ? splits : batch) > maxDim) return null;
  if ((epilogue.bias || epilogue.gelu || epilogue.residual) && (split || batch > 1)) return null;
  const aContig = transA ? 'mn' : 'k';
  const bContig = transB ? 'k' : 'mn';
  const spec: GemmSpec = {
    tile,
    a: { contig: aContig, vec4: (transA ? M : K) % 4 === 0, index: PLAIN_INDEX.a(aContig), bf16: c.aBf16 },
    b: { contig: bContig, vec4: (transB ? K : N) % 4 === 0, index: PLAIN_INDEX.b(bContig), bf16: c.bBf16 },
    split,
    epilogue,
    vec4Out: N % 4 === 0,
    bf16Out: c.outBf16,
  };
  if ((spec.a.bf16 && !spec.a.vec4) || (spec.b.bf16 && !spec.b.vec4) || (c.outBf16 && (split || !spec.vec4Out))) return null;
  const { outputs } = gemmBindings(spec);
  const vals = [M, N, K, kChunk, split || batchA === 1 ? 0 : M * K, split || batchB === 1 ? 0 : K * N];
  const outShape = split ? [splits, M, N] : c.outBf16 ? [...c.outShape.slice(0, -1), N / 2] : c.outShape;
  const prog: CustomProgram = {
    name: split ? 'GemmSplitK' : epilogue.bias ? 'GemmLinear' : 'Gemm',
    key: gemmKey(spec),
    code: () => gemmSource(spec),
    outputShapes: outputs.map(() => outShape),
    outputDtypes: outputs.map(() => (c.outBf16 ? 'int32' : 'float32')),
    dispatch: [tilesN, tilesM, split ? splits : batch],
    uniforms: GEMM_UNIFORMS.map((name, i) => ({ name, type: 'i32' as const, value: vals[i] })),
  };
  const inputs = [a, b, ...(epilogue.bias ? [c.bias!] : []), ...(epilogue.residual ? [c.residual!] : [])];
  const outs = runCustomProgram(backend, prog, inputs);
  return split ? [sumSplits(backend, outs[0], splits, c.outShape)] : outs;
}

interface LinearAttrs {
  gelu?: boolean;
  saveZ?: boolean;
}

/**
 * Kernel MambaoutLinear: inputs x [M, K], weight [N, K] (PyTorch layout), bias [N], optional residual [M, N]; attrs
 * gelu, saveZ. Output y = [gelu](x · Wᵀ + bias) [+ residual] [M, N], and with gelu + saveZ also the pre-activation.
 */
export function linearKernel(args: KernelArgs): TensorInfo | TensorInfo[] {
  const { x, weight, bias, residual } = args.inputs;
  const attrs = (args.attrs ?? {}) as LinearAttrs;
  const backend = args.backend as WebGPUBackend;
  const [M, K] = x.shape;
  const N = weight.shape[0];
  if (x.shape.length !== 2 || weight.shape.length !== 2 || weight.shape[1] !== K || bias.shape[0] !== N) {
    throw new Error(`MambaoutLinear: shapes x [${x.shape}], weight [${weight.shape}], bias [${bias.shape}] do not fit`);
  }
  const epilogue: GemmEpilogue = { bias: true, gelu: !!attrs.gelu, saveZ: !!attrs.gelu && !!attrs.saveZ, residual: residual !== undefined };
  const y = gemmMatMul(backend, x, weight, { transA: false, transB: true, M, N, K, batchA: 1, batchB: 1, outShape: [M, N], epilogue, bias, residual });
  if (!y) throw new Error(`MambaoutLinear: [${M}, ${K}] x [${N}, ${K}]ᵀ does not fit one dispatch`);
  return epilogue.saveZ ? y : y[0];
}

interface GemmAttrs {
  transA: boolean;
  transB: boolean;
  M: number;
  N: number;
  K: number;
  aBf16: boolean;
  bBf16: boolean;
  outBf16: boolean;
}

/**
 * Kernel MambaoutGemm (the --amp block, src/ops/gated_cnn_bf16.ts): out = op(a) · op(b) [+ bias] [+ residual] on
 * 2-D operands, any of them packed bf16 (int32 tensors of half the last dimension); M, N, K given as attributes
 * (element counts). Output float32 [M, N] or, with outBf16, int32 [M, N / 2].
 */
export function gemmKernel(args: KernelArgs): TensorInfo {
  const { a, b, bias, residual } = args.inputs;
  const at = args.attrs as unknown as GemmAttrs;
  const backend = args.backend as WebGPUBackend;
  const epilogue: GemmEpilogue = { bias: bias !== undefined, gelu: false, saveZ: false, residual: residual !== undefined };
  const y = gemmMatMul(backend, a, b, {
    transA: at.transA, transB: at.transB, M: at.M, N: at.N, K: at.K, batchA: 1, batchB: 1, outShape: [at.M, at.N], epilogue, bias, residual,
    aBf16: at.aBf16, bBf16: at.bBf16, outBf16: at.outBf16,
  });
  if (!y) throw new Error(`MambaoutGemm: [${at.M}, ${at.K}] x [${at.K}, ${at.N}] (bf16 ${at.aBf16}/${at.bBf16}/${at.outBf16}) is not supported`);
  return y[0];
}
