/**
 * Conv2DBackpropInput (the input gradient of a convolution) for the tfjs WebGPU backend, as an implicit GEMM on the
 * shared tile code of ./gemm.ts.
 *
 * x [N,H,W,Cin], filter [KH,KW,Cin,Cout], dy [N,OH,OW,Cout] (NHWC, dilation 1):
 *   dx[n, ih, iw, ci] = Σ_{kh,kw,co} dy[n, (ih + padT - kh)/s, (iw + padL - kw)/s, co] · W[kh, kw, ci, co]
 * over the taps where both divisions are exact and in range. With stride s only the taps kh ≡ (ih + padT) mod s
 * contribute, so the input positions are split into s² parity classes (ih mod s, iw mod s); within a class the tap set
 * is fixed (for MambaOut's 3x3 stride-2 pad-1 convs: 1, 2, 2 and 4 of the 9 taps) and the gradient is a dense product
 * [positions of the class] x [taps·Cout] · [taps·Cout] x [Cin]. Workgroup z = class; each class has its own row count
 * and K length (uniform per workgroup, so the tile loop's barriers stay in uniform control flow).
 * tfjs's kernel took 34 ms of tiny's 234 ms GPU step (4 calls: stem conv2 and the three downsampling convs).
 *
 * Not covered (tfjs's kernel is used): NCHW, dilations > 1, non-float32 inputs, grids that do not fit one dispatch.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { Conv2DBackpropInputAttrs, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { runCustomProgram, type CustomProgram } from './dispatch.js';
import { GEMM_UNIFORMS, NO_EPILOGUE, gemmKey, gemmSource, type GemmSpec } from './gemm.js';
import { gemmLimits } from './matmul.js';
import { chooseTile, gemmTuning, tileByName } from './matmul_tiles.js';
import { webgpuKernelSettings } from './settings.js';
import type { KernelArgs } from './util.js';

const EXTRA = ['H', 'W', 'OH', 'OW', 'Cout', 'KH', 'KW', 'padT', 'padL', 'batch'];

/** Per-class quantities from z (stride s compiled in). */
function prologue(s: number): string {
  return `
  let ph = z / ${s};
  let pw = z % ${s};
  let kh0 = (ph + u.padT) % ${s};
  let kw0 = (pw + u.padL) % ${s};
  let tapsH = max(u.KH - kh0 + ${s - 1}, 0) / ${s};
  let tapsW = max(u.KW - kw0 + ${s - 1}, 0) / ${s};
  let rowsA = max(u.H - ph + ${s - 1}, 0) / ${s};
  let colsB = max(u.W - pw + ${s - 1}, 0) / ${s};
  cls = vec4<i32>(ph, pw, tapsW, colsB);
  cls2 = vec4<i32>(kh0, kw0, rowsA, 0);`;
}

function extraCode(s: number): string {
  return `
var<private> cls : vec4<i32>;
var<private> cls2 : vec4<i32>;
/** Position (n, ih, iw) of row m of the current class. */
fn rowPos(m : i32) -> vec3<i32> {
  let b = m % cls.w;
  let t = m / cls.w;
  let a = t % cls2.z;
  let n = t / cls2.z;
  return vec3<i32>(n, cls.x + ${s} * a, cls.y + ${s} * b);
}
/** Tap (kh, kw) and output channel of K index k. */
fn tapOf(k : i32) -> vec3<i32> {
  let t = k / u.Cout;
  let co = k - t * u.Cout;
  let th = t / cls.z;
  let tw = t - th * cls.z;
  return vec3<i32>(cls2.x + ${s} * th, cls2.y + ${s} * tw, co);
}`;
}

export function conv2dBackpropInputWebGPU(args: KernelArgs, fallback?: KernelFunc): TensorInfo {
  const { dy, filter } = args.inputs;
  const attrs = (args.attrs ?? {}) as unknown as Conv2DBackpropInputAttrs;
  const backend = args.backend as WebGPUBackend;
  const useFallback = (): TensorInfo => {
    if (!fallback) throw new Error('Conv2DBackpropInput: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  };
  if (!webgpuKernelSettings.convBackpropInput || (attrs.dataFormat ?? 'NHWC') !== 'NHWC' || dy.dtype !== 'float32' ||
    filter.dtype !== 'float32' || dy.shape.length !== 4 || filter.shape.length !== 4) return useFallback();
  const conv = backend_util.computeConv2DInfo(attrs.inputShape, filter.shape as [number, number, number, number], attrs.strides, 1,
    attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
  const sh = conv.strideHeight;
  const sw = conv.strideWidth;
  if (sh !== sw || sh < 1 || sh > 4 || conv.dilationHeight !== 1 || conv.dilationWidth !== 1) return useFallback();
  if (conv.outHeight !== dy.shape[1] || conv.outWidth !== dy.shape[2]) return useFallback();
  const s = sh;
  const [N, H, W, Cin] = attrs.inputShape;
  const [KH, KW, , Cout] = filter.shape;
  const { top: padT, left: padL } = conv.padInfo;
  if (padT < 0 || padL < 0) return useFallback();
  const outShape = [N, H, W, Cin];
  const size = N * H * W * Cin;
  if (size === 0) return backend.makeTensorInfo(outShape, 'float32', new Float32Array(0));
  // Largest class (ph = pw = 0 has the most rows; the most taps may be in another class).
  const maxRows = N * Math.ceil(H / s) * Math.ceil(W / s);
  const maxK = Math.ceil(KH / s) * Math.ceil(KW / s) * Cout;
  if (maxK === 0) return useFallback();
  const forced = gemmTuning.forceTile ? tileByName(gemmTuning.forceTile) : undefined;
  const tile = forced ?? chooseTile({ M: maxRows, N: Cin, K: maxK, batch: 1, longK: false }, gemmLimits(backend));
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const tilesM = Math.ceil(maxRows / tile.bm);
  const tilesN = Math.ceil(Cin / tile.bn);
  if (tilesM > maxDim || tilesN > maxDim || size >= 2 ** 31 || dy.shape.reduce((a, b) => a * b, 1) >= 2 ** 31) return useFallback();
  const vec = Cout % 4 === 0;
  const spec: GemmSpec = {
    tile,
    a: {
      contig: 'k',
      vec4: vec,
      index: `let p = rowPos(m); let t = tapOf(k);
  let oh = (p.y + u.padT - t.x) / ${s}; let ow = (p.z + u.padL - t.y) / ${s};
  if (oh < 0 || oh >= u.OH || ow < 0 || ow >= u.OW) { return -1; }
  return ((p.x * u.OH + oh) * u.OW + ow) * u.Cout + t.z;`,
    },
    b: {
      contig: 'k',
      vec4: vec,
      index: 'let t = tapOf(k); return ((t.x * u.KW + t.y) * u.N + n) * u.Cout + t.z;',
    },
    split: false,
    epilogue: NO_EPILOGUE,
    vec4Out: Cin % 4 === 0,
    outIndex: 'let p = rowPos(m); return ((p.x * u.H + p.y) * u.W + p.z) * u.N;',
    extraUniforms: EXTRA,
    extraCode: extraCode(s),
    prologue: prologue(s),
    mLength: 'u.batch * cls2.z * cls.w',
    kLength: 'tapsH * tapsW * u.Cout',
  };
  const vals: Record<string, number> = {
    M: maxRows, N: Cin, K: maxK, kChunk: 0, aBatchStride: 0, bBatchStride: 0,
    H, W, OH: conv.outHeight, OW: conv.outWidth, Cout, KH, KW, padT, padL, batch: N,
  };
  const prog: CustomProgram = {
    name: 'Conv2DBackpropInputGemm',
    key: `${gemmKey(spec)}_convdx_s${s}`,
    code: () => gemmSource(spec),
    outputShapes: [outShape],
    dispatch: [tilesN, tilesM, s * s],
    uniforms: [...GEMM_UNIFORMS, ...EXTRA].map((name) => ({ name, type: 'i32' as const, value: vals[name] })),
  };
  return runCustomProgram(backend, prog, [dy, filter])[0];
}
