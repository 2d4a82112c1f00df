/**
 * Typed-array JavaScript kernels for MambaOut training on tfjs's CPU-side backends.
 *
 *  - 'cpu', `registerCpuKernels()`: replaces tfjs's convolution-gradient kernels, which read every element through
 *    TensorBuffer accessors (Conv2DBackpropFilter took 1.3 s and DepthwiseConv2dNativeBackpropFilter 0.3 s of a
 *    2.2 s step of mambaout_test at batch 8, 64 px), and the float32 paths of BatchMatMul (matmul.ts: 82% of a
 *    mambaout_femto step once the gradients were fixed), the broadcasting binary ops (Add, Sub, Multiply, RealDiv),
 *    Sum and SplitV (elementwise.ts), which index through per-element coordinate conversions or generic transposes.
 *  - 'wasm', `registerWasmGradKernels()`: supplies the gradient kernels tfjs-backend-wasm 4.22 lacks
 *    (Conv2DBackpropFilter, DepthwiseConv2dNativeBackpropFilter, DepthwiseConv2dNativeBackpropInput), so MambaOut
 *    can train there, replaces the native Conv2DBackpropInput (a direct loop, 2x slower than ours) and wraps the
 *    native BatchMatMul, which is 4-20x slower with transposeA/transposeB, to transpose the operand first.
 *
 * Both register functions are idempotent and return the kernel names now served by our code. Configurations our
 * code does not cover (NCHW, dilation > 1, non-float32) fall back to tfjs's original kernel on cpu; on wasm, where
 * no original exists, they throw a UserError naming the limitation.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import { UserError } from '../../../errors.js';
import '../../tfjs.js';
import { conv2dBackpropFilterNHWC, type ConvGeometry } from './conv2d_backprop_filter.js';
import { depthwiseBackpropFilterNHWC, depthwiseBackpropInputNHWC } from './depthwise_backprop.js';
import { broadcastBinary, broadcastShape, reduceSum, splitAlongAxis, type BinaryOp } from './elementwise.js';
import { batchMatMulF32 } from './matmul.js';
import { conv2dBackpropInputNHWC, conv2dNHWC, depthwiseConv2dNHWC } from './conv_forward.js';

export { conv2dBackpropFilterNHWC, type ConvGeometry } from './conv2d_backprop_filter.js';
export { depthwiseBackpropFilterNHWC, depthwiseBackpropInputNHWC } from './depthwise_backprop.js';
export { broadcastBinary, broadcastShape, reduceSum, splitAlongAxis, type BinaryOp } from './elementwise.js';
export { batchMatMulF32, type MatMulDims } from './matmul.js';
export { conv2dBackpropInputNHWC, conv2dNHWC, depthwiseConv2dNHWC } from './conv_forward.js';

/** The arguments tfjs passes to a kernel function. */
interface KernelArgs {
  inputs: Record<string, TensorInfo>;
  backend: unknown;
  attrs: Record<string, unknown>;
}

/** The parts of tfjs's cpu (MathBackendCPU) and wasm (BackendWasm) backends we use. */
interface HostBackend {
  readSync(dataId: object): unknown;
  /** wasm: a Float32Array view on the wasm heap (no copy). */
  typedArrayFromHeap?(t: TensorInfo): Float32Array;
  /** wasm: allocate an output on the heap and copy `values` into it. */
  makeOutput?(shape: number[], dtype: 'float32', memoryOffset?: number, values?: Float32Array): TensorInfo;
  /** cpu: wrap `values` (taken over, not copied) as a tensor. */
  makeTensorInfo?(shape: number[], dtype: 'float32', values: Float32Array): TensorInfo;
}

function readF32(backend: HostBackend, t: TensorInfo): Float32Array {
  if (typeof backend.typedArrayFromHeap === 'function') return backend.typedArrayFromHeap(t);
  const v = backend.readSync(t.dataId);
  if (v instanceof Float32Array) return v;
  // Some tfjs cpu kernels store float32 results in another container (a plain Array, another typed array).
  if (Array.isArray(v) || ArrayBuffer.isView(v)) return Float32Array.from(v as ArrayLike<number>);
  throw new Error(`internal: no numeric data for a ${t.dtype} tensor`);
}

function output(backend: HostBackend, shape: number[], values: Float32Array): TensorInfo {
  // Tell wasm from cpu by typedArrayFromHeap: the cpu backend has a makeOutput too, with another signature.
  if (typeof backend.typedArrayFromHeap === 'function' && typeof backend.makeOutput === 'function') {
    return backend.makeOutput(shape, 'float32', undefined, values);
  }
  if (typeof backend.makeTensorInfo === 'function') return backend.makeTensorInfo(shape, 'float32', values);
  throw new Error('internal: backend has neither makeOutput (wasm) nor makeTensorInfo (cpu)');
}

type Conv2DInfo = ReturnType<typeof tf.backend_util.computeConv2DInfo>;

function geometry(c: Conv2DInfo): ConvGeometry {
  return {
    batch: c.batchSize, inH: c.inHeight, inW: c.inWidth, inC: c.inChannels,
    outH: c.outHeight, outW: c.outWidth, outC: c.outChannels,
    filterH: c.filterHeight, filterW: c.filterWidth, strideH: c.strideHeight, strideW: c.strideWidth,
    padTop: c.padInfo.top, padLeft: c.padInfo.left,
  };
}

type Pad = Parameters<typeof tf.backend_util.computeConv2DInfo>[4];
type Rounding = Parameters<typeof tf.backend_util.computeConv2DInfo>[5];
type Shape4 = [number, number, number, number];

/**
 * Our implementation of one kernel: returns the output, or a string saying why this configuration is not covered
 * (the caller then falls back to tfjs's kernel or throws). `original` is tfjs's kernel we replaced, if any.
 */
type Impl = (args: KernelArgs, original?: KernelFunc) => TensorInfo | TensorInfo[] | string;

const conv2DBackpropFilter: Impl = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs;
  const format = tf.backend_util.convertConv2DDataFormat((attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC');
  if (format !== 'channelsLast') return 'NCHW data format';
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') return `dtype ${x.dtype}/${dy.dtype}`;
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as Shape4, attrs.filterShape as Shape4, attrs.strides as number | [number, number], 1,
    attrs.pad as Pad, attrs.dimRoundingMode as Rounding, false, 'channelsLast');
  const b = backend as HostBackend;
  const out = new Float32Array(info.filterHeight * info.filterWidth * info.inChannels * info.outChannels);
  conv2dBackpropFilterNHWC(readF32(b, x), readF32(b, dy), geometry(info), out);
  return output(b, [info.filterHeight, info.filterWidth, info.inChannels, info.outChannels], out);
};

/** null when the dilations attribute is 1 (all our kernels need that), else the reason string. */
function dilationsOne(attrs: Record<string, unknown>): string | null {
  const dil = (attrs.dilations ?? 1) as number | [number, number];
  const [dh, dw] = typeof dil === 'number' ? [dil, dil] : dil;
  return dh === 1 && dw === 1 ? null : `dilations [${dh}, ${dw}]`;
}

function depthwiseInfo(inShape: Shape4, filterShape: Shape4, attrs: Record<string, unknown>): Conv2DInfo | string {
  const dil = dilationsOne(attrs);
  if (dil) return dil;
  return tf.backend_util.computeConv2DInfo(
    inShape, filterShape, attrs.strides as number | [number, number], 1, attrs.pad as Pad, attrs.dimRoundingMode as Rounding, true);
}

const depthwiseBackpropFilter: Impl = ({ inputs, backend, attrs }) => {
  const { x, dy } = inputs;
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') return `dtype ${x.dtype}/${dy.dtype}`;
  const info = depthwiseInfo(x.shape as Shape4, attrs.filterShape as Shape4, attrs);
  if (typeof info === 'string') return info;
  const b = backend as HostBackend;
  const fShape = attrs.filterShape as Shape4;
  const out = new Float32Array(fShape[0] * fShape[1] * fShape[2] * fShape[3]);
  depthwiseBackpropFilterNHWC(readF32(b, x), readF32(b, dy), geometry(info), out);
  return output(b, [...fShape], out);
};

const depthwiseBackpropInput: Impl = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs;
  if (dy.dtype !== 'float32' || filter.dtype !== 'float32') return `dtype ${dy.dtype}/${filter.dtype}`;
  const inShape = attrs.inputShape as Shape4;
  const info = depthwiseInfo(inShape, filter.shape as Shape4, attrs);
  if (typeof info === 'string') return info;
  const b = backend as HostBackend;
  const out = new Float32Array(inShape[0] * inShape[1] * inShape[2] * inShape[3]);
  depthwiseBackpropInputNHWC(readF32(b, dy), readF32(b, filter), geometry(info), out);
  return output(b, [...inShape], out);
};

// ---- cpu only: broadcasting binary ops, Sum, SplitV (elementwise.ts), BatchMatMul (matmul.ts), forward convs
// and Conv2DBackpropInput (conv_forward.ts; Conv2DBackpropInput is also used on wasm)

function binary(op: BinaryOp): Impl {
  return ({ inputs, backend }) => {
    const { a, b } = inputs;
    if (a.dtype !== 'float32' || b.dtype !== 'float32') return `dtype ${a.dtype}/${b.dtype}`;
    const shape = broadcastShape(a.shape, b.shape);
    if (!shape) return `shapes [${a.shape}] and [${b.shape}]`; // tfjs's kernel raises the proper error
    const be = backend as HostBackend;
    const out = new Float32Array(shape.reduce((p, n) => p * n, 1));
    broadcastBinary(op, readF32(be, a), a.shape, readF32(be, b), b.shape, out);
    return output(be, shape, out);
  };
}

const sum: Impl = ({ inputs, backend, attrs }) => {
  const { x } = inputs;
  if (x.dtype !== 'float32') return `dtype ${x.dtype}`;
  const axes = tf.util.parseAxisParam(attrs.axis as number | number[], x.shape);
  const red = new Set(axes);
  const kept = x.shape.filter((_, i) => !red.has(i));
  const shape = attrs.keepDims ? x.shape.map((n, i) => (red.has(i) ? 1 : n)) : kept;
  const be = backend as HostBackend;
  const out = new Float32Array(kept.reduce((p, n) => p * n, 1));
  reduceSum(readF32(be, x), x.shape, axes, out);
  return output(be, shape, out);
};

const splitV: Impl = ({ inputs, backend, attrs }) => {
  const { x } = inputs;
  if (x.dtype !== 'float32' && x.dtype !== 'int32' && x.dtype !== 'bool') return `dtype ${x.dtype}`;
  const axis = tf.util.parseAxisParam(attrs.axis as number, x.shape)[0];
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, attrs.numOrSizeSplits as number | number[], axis);
  const values = (backend as HostBackend).readSync(x.dataId) as Float32Array | Int32Array | Uint8Array;
  const pieces = splitAlongAxis(values, x.shape, axis, sizes);
  const cpu = backend as { makeTensorInfo(shape: number[], dtype: string, values: unknown): TensorInfo };
  return pieces.map((v, i) => cpu.makeTensorInfo(x.shape.map((n, d) => (d === axis ? sizes[i] : n)), x.dtype, v));
};

const batchMatMul: Impl = ({ inputs, backend, attrs }) => {
  const { a, b } = inputs;
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return `dtype ${a.dtype}/${b.dtype}`;
  const transposeA = Boolean(attrs.transposeA);
  const transposeB = Boolean(attrs.transposeB);
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) return `ranks ${ra}/${rb}`;
  const M = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
  const K = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
  const Kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
  const outer = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const batchA = a.shape.slice(0, -2).reduce((p, n) => p * n, 1);
  const batchB = b.shape.slice(0, -2).reduce((p, n) => p * n, 1);
  // tfjs's kernel raises the shape errors; it also owns the rare partial broadcasts ([2,1] with [1,3]).
  if (K !== Kb || !outer || (batchA !== batchB && batchA !== 1 && batchB !== 1)) return 'these shapes';
  const be = backend as HostBackend;
  const out = new Float32Array(Math.max(batchA, batchB) * M * N);
  batchMatMulF32(readF32(be, a), readF32(be, b), { batchA, batchB, M, K, N, transposeA, transposeB }, out);
  return output(be, [...outer, M, N], out);
};

const conv2D: Impl = ({ inputs, backend, attrs }) => {
  const { x, filter } = inputs;
  const format = tf.backend_util.convertConv2DDataFormat((attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC');
  if (format !== 'channelsLast') return 'NCHW data format';
  if (x.dtype !== 'float32' || filter.dtype !== 'float32') return `dtype ${x.dtype}/${filter.dtype}`;
  const dil = dilationsOne(attrs);
  if (dil) return dil;
  const info = tf.backend_util.computeConv2DInfo(
    x.shape as Shape4, filter.shape as Shape4, attrs.strides as number | [number, number], 1,
    attrs.pad as Pad, attrs.dimRoundingMode as Rounding, false, 'channelsLast');
  const be = backend as HostBackend;
  const out = new Float32Array(info.outShape.reduce((p, n) => p * n, 1));
  conv2dNHWC(readF32(be, x), readF32(be, filter), geometry(info), out);
  return output(be, [...info.outShape], out);
};

const conv2DBackpropInput: Impl = ({ inputs, backend, attrs }) => {
  const { dy, filter } = inputs;
  const format = tf.backend_util.convertConv2DDataFormat((attrs.dataFormat as 'NHWC' | 'NCHW' | undefined) ?? 'NHWC');
  if (format !== 'channelsLast') return 'NCHW data format';
  if (dy.dtype !== 'float32' || filter.dtype !== 'float32') return `dtype ${dy.dtype}/${filter.dtype}`;
  const inShape = attrs.inputShape as Shape4;
  const info = tf.backend_util.computeConv2DInfo(
    inShape, filter.shape as Shape4, attrs.strides as number | [number, number], 1,
    attrs.pad as Pad, attrs.dimRoundingMode as Rounding, false, 'channelsLast');
  const be = backend as HostBackend;
  const out = new Float32Array(inShape[0] * inShape[1] * inShape[2] * inShape[3]);
  conv2dBackpropInputNHWC(readF32(be, dy), readF32(be, filter), geometry(info), out);
  return output(be, [...inShape], out);
};

const depthwiseConv2D: Impl = ({ inputs, backend, attrs }) => {
  const { x, filter } = inputs;
  if (x.dtype !== 'float32' || filter.dtype !== 'float32') return `dtype ${x.dtype}/${filter.dtype}`;
  const info = depthwiseInfo(x.shape as Shape4, filter.shape as Shape4, attrs);
  if (typeof info === 'string') return info;
  const be = backend as HostBackend;
  const out = new Float32Array(info.outShape.reduce((p, n) => p * n, 1));
  depthwiseConv2dNHWC(readF32(be, x), readF32(be, filter), geometry(info), out);
  return output(be, [...info.outShape], out);
};

/**
 * wasm BatchMatMul: tfjs-backend-wasm's kernel is fast (XNNPACK) without transposes but 4-20x slower with transposeA
 * or transposeB (e.g. 135 ms instead of 25 ms for [25088, 48]·[128, 48]ᵀ), and every Linear layer uses one
 * (forward x·Wᵀ, weight gradient dYᵀ·X). So the transposed operand is first materialised with the native Transpose
 * kernel and the native matmul then runs without flags.
 */
const wasmBatchMatMul: Impl = ({ inputs, backend, attrs }, original) => {
  const { a, b } = inputs;
  const transposeA = Boolean(attrs.transposeA);
  const transposeB = Boolean(attrs.transposeB);
  if (!original) return 'missing native BatchMatMul';
  if (!transposeA && !transposeB) return 'no transpose'; // the native kernel as is
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return `dtype ${a.dtype}/${b.dtype}`;
  const transpose = tf.getKernel('Transpose', 'wasm');
  if (!transpose) return 'missing native Transpose';
  const temps: TensorInfo[] = [];
  const swapLast2 = (t: TensorInfo): TensorInfo => {
    const r = t.shape.length;
    const perm = [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2];
    const out = transpose.kernelFunc({ inputs: { x: t }, backend: backend as tf.KernelBackend, attrs: { perm } }) as TensorInfo;
    temps.push(out);
    return out;
  };
  try {
    const a2 = transposeA ? swapLast2(a) : a;
    const b2 = transposeB ? swapLast2(b) : b;
    return original({ inputs: { a: a2, b: b2 }, backend: backend as tf.KernelBackend, attrs: { ...attrs, transposeA: false, transposeB: false } }) as TensorInfo;
  } finally {
    for (const t of temps) (backend as tf.KernelBackend).disposeData(t.dataId);
  }
};

/** Gradient kernels: ours on cpu (replacing tfjs's) and on wasm (where tfjs has none). */
const GRAD_IMPLS: ReadonlyArray<{ kernelName: string; impl: Impl }> = [
  { kernelName: 'Conv2DBackpropFilter', impl: conv2DBackpropFilter },
  { kernelName: 'DepthwiseConv2dNativeBackpropFilter', impl: depthwiseBackpropFilter },
  { kernelName: 'DepthwiseConv2dNativeBackpropInput', impl: depthwiseBackpropInput },
];
/** cpu-only replacements (wasm has fast native versions of these). */
const CPU_EXTRA_IMPLS: ReadonlyArray<{ kernelName: string; impl: Impl }> = [
  { kernelName: 'Conv2D', impl: conv2D },
  { kernelName: 'Conv2DBackpropInput', impl: conv2DBackpropInput },
  { kernelName: 'DepthwiseConv2dNative', impl: depthwiseConv2D },
  { kernelName: 'BatchMatMul', impl: batchMatMul },
  { kernelName: 'Add', impl: binary('add') },
  { kernelName: 'Sub', impl: binary('sub') },
  { kernelName: 'Multiply', impl: binary('mul') },
  { kernelName: 'RealDiv', impl: binary('div') },
  { kernelName: 'Sum', impl: sum },
  { kernelName: 'SplitV', impl: splitV },
];
/**
 * How a kernel is installed: 'replace' tfjs's (or add it when missing), 'add' only when tfjs has none (a later
 * tfjs-backend-wasm may bring native gradient kernels: keep those), 'wrap' only when tfjs has one (ours calls it).
 */
type Mode = 'replace' | 'add' | 'wrap';

/** Per backend: the kernels we install. */
const SETS: Record<'cpu' | 'wasm', ReadonlyArray<{ kernelName: string; impl: Impl; mode: Mode }>> = {
  cpu: [...GRAD_IMPLS, ...CPU_EXTRA_IMPLS].map((k) => ({ ...k, mode: 'replace' as const })),
  wasm: [
    ...GRAD_IMPLS.map((k) => ({ ...k, mode: 'add' as const })),
    { kernelName: 'BatchMatMul', impl: wasmBatchMatMul, mode: 'wrap' },
    // tfjs-backend-wasm's own Conv2DBackpropInput is a direct loop, ~2x slower than ours (femto, batch 4, 224 px:
    // 620 ms vs ~300 ms per step)
    { kernelName: 'Conv2DBackpropInput', impl: conv2DBackpropInput, mode: 'replace' },
  ],
};

/** Kernel names we replace on 'cpu'. */
export const CPU_KERNEL_NAMES: readonly string[] = SETS.cpu.map((k) => k.kernelName);
/** Kernel names we install on 'wasm': the three missing gradients, the BatchMatMul wrapper, Conv2DBackpropInput. */
export const WASM_KERNEL_NAMES: readonly string[] = SETS.wasm.map((k) => k.kernelName);

/** Per backend: tfjs's configs we replaced (to restore and fall back to), and our registered configs. */
const originals = new Map<string, KernelConfig>();
const ours = new Map<string, KernelConfig>();
const key = (backendName: string, kernelName: string) => `${backendName}/${kernelName}`;

function isOurs(backendName: string, kernelName: string): boolean {
  const mine = ours.get(key(backendName, kernelName));
  return mine !== undefined && tf.getKernel(kernelName, backendName)?.kernelFunc === mine.kernelFunc;
}

function install(backendName: string, kernelName: string, impl: Impl, mode: Mode): boolean {
  if (isOurs(backendName, kernelName)) return true;
  const current = tf.getKernel(kernelName, backendName);
  if ((current && mode === 'add') || (!current && mode === 'wrap')) return false;
  const fallback = current?.kernelFunc;
  if (current) {
    originals.set(key(backendName, kernelName), current);
    tf.unregisterKernel(kernelName, backendName);
  }
  const kernelFunc = ((args: KernelArgs) => {
    const r = impl(args, fallback);
    if (typeof r !== 'string') return r;
    // not covered by our code: tfjs's kernel, or (wasm, none) a clear error
    if (fallback) return fallback(args as unknown as Parameters<KernelFunc>[0]);
    throw new UserError(`${kernelName} on the ${backendName} backend does not support ${r} (only NHWC float32 with dilation 1); use --backend cpu`);
  }) as unknown as KernelFunc;
  // Keep the original's setupFunc/disposeFunc: a wasm kernel binds its C++ function in setupFunc, which tfjs runs
  // for the kernels registered when the backend initialises (ours then, if registered before).
  const config: KernelConfig = { kernelName, backendName, kernelFunc, setupFunc: current?.setupFunc, disposeFunc: current?.disposeFunc };
  tf.registerKernel(config);
  ours.set(key(backendName, kernelName), config);
  return true;
}

function uninstall(backendName: 'cpu' | 'wasm'): void {
  for (const { kernelName } of SETS[backendName]) {
    if (!isOurs(backendName, kernelName)) continue;
    tf.unregisterKernel(kernelName, backendName);
    ours.delete(key(backendName, kernelName));
    const orig = originals.get(key(backendName, kernelName));
    if (orig) tf.registerKernel(orig);
    originals.delete(key(backendName, kernelName));
  }
}

/**
 * Replace tfjs's 'cpu' kernels by ours (idempotent): Conv2DBackpropFilter, DepthwiseConv2dNativeBackpropFilter,
 * DepthwiseConv2dNativeBackpropInput, and the float32 paths of BatchMatMul, Add, Sub, Multiply, RealDiv, Sum, SplitV.
 * Returns the kernel names now ours.
 */
export function registerCpuKernels(): string[] {
  return SETS.cpu.filter(({ kernelName, impl, mode }) => install('cpu', kernelName, impl, mode)).map((k) => k.kernelName);
}

/** Put tfjs's original 'cpu' kernels back (idempotent). */
export function unregisterCpuKernels(): void {
  uninstall('cpu');
}

/**
 * Register on 'wasm' the gradient kernels tfjs-backend-wasm lacks (Conv2DBackpropFilter,
 * DepthwiseConv2dNativeBackpropFilter, DepthwiseConv2dNativeBackpropInput; a native one, should a later tfjs add it,
 * is kept), replace the native Conv2DBackpropInput by ours (2x faster) and wrap the native BatchMatMul so that
 * transposed operands are transposed first (4-20x faster; helps training and inference alike). Call it after `import('@tensorflow/tfjs-backend-wasm')` (importing the package registers its
 * kernels and would overwrite the wrapper; without the package there is nothing to wrap and only the gradients are
 * added), before or after `tf.setBackend('wasm')`. Idempotent. Returns the kernel names now ours.
 */
export function registerWasmGradKernels(): string[] {
  return SETS.wasm.filter(({ kernelName, impl, mode }) => install('wasm', kernelName, impl, mode)).map((k) => k.kernelName);
}

/** Remove our 'wasm' kernels again, restoring tfjs's BatchMatMul (idempotent). */
export function unregisterWasmGradKernels(): void {
  uninstall('wasm');
}

/** tfjs's original kernel config that ours replaced on `backendName` (undefined when none or not replaced). */
export function originalKernel(kernelName: string, backendName: string): KernelConfig | undefined {
  return originals.get(key(backendName, kernelName));
}
