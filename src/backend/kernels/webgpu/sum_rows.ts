/**
 * Sum over the leading axes of a tensor (column sums of a [rows, cols] view) for the tfjs WebGPU backend.
 *
 * Bias gradients are exactly this: dbias = Σ over (N, H, W) of dy [N, H, W, C]. tfjs's reduction program gives
 * each output a workgroup that walks all rows (401408 of them for femto's stage 0 at batch 128): 64 such sums
 * took 14 ms of a 120 ms training step on an H200. Here:
 *   pass 1: thread = (column, chunk of rows), 64 threads along the columns (coalesced row reads), partial sums
 *           [S, cols];
 *   pass 2: `sumSplits` (shared with the conv filter kernel) adds the S partials (skipped when S = 1).
 *
 * When cols % 4 == 0 (every MambaOut bias), pass 1 reads vec4: a workgroup of 256 threads covers up to 64 column
 * quads x L = 256 / quads row lanes (lane l sums rows l, l + L, ... of its chunk, so a warp reads whole consecutive
 * rows), and the L lane sums meet in shared memory. The scalar version (one thread per column, 64 per workgroup)
 * ran at ~1 TB/s on the H200: 64 sums, 8.7 ms of tiny's 172 ms training step for ~8 GB read.
 *
 * Covered: float32, reduction axes = a leading prefix of the shape with at least 256 rows; everything else goes
 * to tfjs's kernel.
 */
import { util } from '@tensorflow/tfjs-core';
import type { KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { sumSplits, type KernelArgs } from './util.js';
import { runCustomProgram, uniformStruct } from './dispatch.js';
import { WGSL_BF16 } from './bf16.js';

/** Aim for about this many threads in pass 1. */
const TARGET_THREADS = 131072;
/** Each thread sums at least this many rows. */
const MIN_ROWS_PER_THREAD = 32;
/** Smallest row count handled here. */
export const MIN_ROWS = 256;

function source(): string {
  return `
${uniformStruct([{ name: 'rows', type: 'i32', value: 0 }, { name: 'cols', type: 'i32', value: 0 }, { name: 'rowsPerChunk', type: 'i32', value: 0 }], 2)}
@group(0) @binding(0) var<storage, read_write> result : array<f32>;
@group(0) @binding(1) var<storage, read> x : array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lidx : u32) {
  let c = i32(wid.x) * 64 + i32(lidx);
  let chunk = i32(wid.y);
  if (c >= u.cols) { return; }
  let r0 = chunk * u.rowsPerChunk;
  let r1 = min(r0 + u.rowsPerChunk, u.rows);
  var s = 0.0;
  for (var r = r0; r < r1; r = r + 1) { s = s + x[r * u.cols + c]; }
  result[chunk * u.cols + c] = s;
}
`;
}

/** Pass 1 of the vec4 version: QW column quads x (256 / QW) row lanes per workgroup. */
function sourceVec4(QW: number, bf16: boolean): string {
  const L = Math.floor(256 / QW);
  return `
${uniformStruct([{ name: 'rows', type: 'i32', value: 0 }, { name: 'cols4', type: 'i32', value: 0 }, { name: 'rowsPerChunk', type: 'i32', value: 0 }], 2)}
@group(0) @binding(0) var<storage, read_write> result : array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> x : array<${bf16 ? 'vec2<u32>' : 'vec4<f32>'}>;
${bf16 ? WGSL_BF16 : ''}
var<workgroup> part : array<vec4<f32>, ${L * QW}>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(workgroup_id) wid : vec3<u32>, @builtin(local_invocation_index) lidx : u32) {
  let li = i32(lidx);
  let q = li % ${QW};
  let lane = li / ${QW};
  let c = i32(wid.x) * ${QW} + q;
  let chunk = i32(wid.y);
  let r0 = chunk * u.rowsPerChunk;
  let r1 = min(r0 + u.rowsPerChunk, u.rows);
  var s = vec4<f32>(0.0);
  if (lane < ${L} && c < u.cols4) {
    for (var r = r0 + lane; r < r1; r = r + ${L}) { s = s + ${bf16 ? 'unpackBf16x4(x[r * u.cols4 + c])' : 'x[r * u.cols4 + c]'}; }
  }
  if (lane < ${L}) { part[lane * ${QW} + q] = s; }
  workgroupBarrier();
  if (lane == 0 && c < u.cols4) {
    var t = part[q];
    for (var l = 1; l < ${L}; l = l + 1) { t = t + part[l * ${QW} + q]; }
    result[chunk * u.cols4 + c] = t;
  }
}
`;
}

/** Our Sum; `fallback` (tfjs's kernel) handles what it does not cover. */
export function sumRowsKernel(args: KernelArgs, fallback?: KernelFunc): TensorInfo {
  const { x } = args.inputs;
  const attrs = (args.attrs ?? {}) as { axis?: number | number[]; keepDims?: boolean };
  const backend = args.backend as WebGPUBackend;
  const useFallback = (): TensorInfo => {
    if (!fallback) throw new Error('Sum: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  };
  const rank = x.shape.length;
  if (x.dtype !== 'float32' || rank < 2) return useFallback();
  let axes: number[];
  try {
    axes = util.parseAxisParam(attrs.axis ?? [], x.shape);
  } catch {
    return useFallback();
  }
  axes = [...new Set(axes)].sort((a, b) => a - b);
  const k = axes.length;
  if (k === 0 || k >= rank || axes.some((a, i) => a !== i)) return useFallback();
  const rows = util.sizeFromShape(x.shape.slice(0, k));
  const cols = util.sizeFromShape(x.shape.slice(k));
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const colGroups = Math.ceil(cols / 64);
  if (rows < MIN_ROWS || cols === 0 || colGroups > maxDim) return useFallback();
  const outShape = attrs.keepDims ? [...x.shape.slice(0, k).map(() => 1), ...x.shape.slice(k)] : x.shape.slice(k);
  if (cols % 4 === 0) return sumRowsVec4(backend, x, rows, cols, outShape, false);
  let chunks = Math.max(1, Math.min(Math.ceil(TARGET_THREADS / (colGroups * 64)), Math.floor(rows / MIN_ROWS_PER_THREAD), maxDim));
  const rowsPerChunk = Math.ceil(rows / chunks);
  chunks = Math.ceil(rows / rowsPerChunk);
  const [partial] = runCustomProgram(backend, {
    name: 'SumRows',
    key: 'mambaout_sum_rows',
    code: source,
    outputShapes: [chunks === 1 ? outShape : [chunks, cols]],
    dispatch: [colGroups, chunks, 1],
    uniforms: [
      { name: 'rows', type: 'i32', value: rows },
      { name: 'cols', type: 'i32', value: cols },
      { name: 'rowsPerChunk', type: 'i32', value: rowsPerChunk },
    ],
  }, [x]);
  if (chunks === 1) return partial;
  return sumSplits(backend, partial, chunks, outShape);
}

/** Column sums of a [rows, cols] view (cols % 4 == 0), float32 or packed bf16 input; float32 result of `outShape`. */
function sumRowsVec4(backend: WebGPUBackend, x: TensorInfo, rows: number, cols: number, outShape: number[], bf16: boolean): TensorInfo {
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const cols4 = cols / 4;
  const QW = Math.min(64, cols4);
  const lanes = Math.floor(256 / QW);
  const groupsX = Math.ceil(cols4 / QW);
  // ~2 x TARGET_THREADS threads in flight, each lane summing at least MIN_ROWS_PER_THREAD rows.
  let chunks = Math.max(1, Math.min(Math.ceil((2 * TARGET_THREADS) / (groupsX * 256)), Math.floor(rows / (lanes * MIN_ROWS_PER_THREAD)), maxDim));
  const rowsPerChunk = Math.ceil(rows / chunks);
  chunks = Math.ceil(rows / rowsPerChunk);
  const [partial] = runCustomProgram(backend, {
    name: 'SumRows',
    key: `mambaout_sum_rows4_${QW}${bf16 ? '_bf16' : ''}`,
    code: () => sourceVec4(QW, bf16),
    outputShapes: [chunks === 1 ? outShape : [chunks, cols]],
    dispatch: [groupsX, chunks, 1],
    uniforms: [
      { name: 'rows', type: 'i32', value: rows },
      { name: 'cols4', type: 'i32', value: cols4 },
      { name: 'rowsPerChunk', type: 'i32', value: rowsPerChunk },
    ],
  }, [x]);
  return chunks === 1 ? partial : sumSplits(backend, partial, chunks, outShape);
}

/**
 * Kernel MambaoutSumRowsBf16 (--amp): column sums of packed bf16 x (int32 [..., cols / 2]) over all leading axes;
 * float32 [cols]. cols % 4 == 0.
 */
export function sumRowsBf16Kernel(args: KernelArgs): TensorInfo {
  const { x } = args.inputs;
  const cols = x.shape[x.shape.length - 1] * 2;
  const rows = util.sizeFromShape(x.shape.slice(0, -1));
  if (cols % 4 !== 0 || x.dtype !== 'int32') throw new Error(`MambaoutSumRowsBf16: [${x.shape}] is not packed bf16 with cols % 4 == 0`);
  if (rows === 0) return (args.backend as WebGPUBackend).makeTensorInfo([cols], 'float32', new Float32Array(cols));
  return sumRowsVec4(args.backend as WebGPUBackend, x, rows, cols, [cols], true);
}
