/**
 * Conv2D / FusedConv2D (the forward convolution, bias fused) for the tfjs WebGPU backend, as an implicit GEMM on the
 * shared tile code of ./gemm.ts, as ./conv2d_backprop_input.ts does for the input gradient.
 *
 * x [N,H,W,Cin], filter [KH,KW,Cin,Cout] (HWIO), y [N,OH,OW,Cout] (NHWC, dilation 1):
 *   y[n, oh, ow, co] = Σ_{kh,kw,ci} x[n, oh·s - padT + kh, ow·s - padL + kw, ci] · W[kh, kw, ci, co] (+ bias[co])
 * is the product [N·OH·OW] x [KH·KW·Cin] · [KH·KW·Cin] x [Cout]: A gathered from x (k = (kh, kw, ci), ci fastest, so
 * A is read as vec4 along Cin when Cin % 4 == 0; padding taps read as implicit zeros), B = the filter as it is stored
 * ([K, Cout] row-major), bias in the GEMM epilogue. MambaOut runs five of these per forward (the stem's two 3x3
 * stride-2 convs and the three downsampling convs): tfjs's conv program took 10.5 ms of tiny's 51.8 ms inference
 * forward on an H200 (batch 128), ~12 TFLOP/s on 129 GFLOP.
 *
 * Not covered (tfjs's kernel is used): NCHW, dilations > 1, activations other than none / 'linear', prelu weights,
 * non-float32 inputs, grids that do not fit one dispatch.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend } from '@tensorflow/tfjs-backend-webgpu';
import { runCustomProgram, type CustomProgram } from './dispatch.js';
import { GEMM_UNIFORMS, NO_EPILOGUE, gemmKey, gemmSource, type GemmSpec } from './gemm.js';
import { gemmLimits } from './matmul.js';
import { chooseTile } from './matmul_tiles.js';
import { webgpuKernelSettings } from './settings.js';
import type { KernelArgs } from './util.js';

const EXTRA = ['H', 'W', 'Cin', 'OH', 'OW', 'KW', 'padT', 'padL'];

interface ConvAttrs {
  strides: number | [number, number];
  pad: 'valid' | 'same' | number | backend_util.ExplicitPadding;
  dataFormat?: 'NHWC' | 'NCHW';
  dilations?: number | [number, number];
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  activation?: string;
}

/** Kernel Conv2D and FusedConv2D (inputs x, filter [, bias]); `fallback` (tfjs's kernel) handles the rest. */
export function conv2dForwardWebGPU(args: KernelArgs, fallback?: KernelFunc): TensorInfo {
  const { x, filter, bias, preluActivationWeights } = args.inputs;
  const attrs = (args.attrs ?? {}) as unknown as ConvAttrs;
  const backend = args.backend as WebGPUBackend;
  const useFallback = (): TensorInfo => {
    if (!fallback) throw new Error('Conv2D: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  };
  const act = attrs.activation ?? 'linear';
  if (!webgpuKernelSettings.convForward || (attrs.dataFormat ?? 'NHWC') !== 'NHWC' || act !== 'linear' || preluActivationWeights ||
    x.dtype !== 'float32' || filter.dtype !== 'float32' || x.shape.length !== 4 || filter.shape.length !== 4) return useFallback();
  if (bias && (bias.dtype !== 'float32' || bias.shape.length !== 1 || bias.shape[0] !== filter.shape[3])) return useFallback();
  const conv = backend_util.computeConv2DInfo(x.shape as [number, number, number, number], filter.shape as [number, number, number, number],
    attrs.strides, attrs.dilations ?? 1, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
  if (conv.dilationHeight !== 1 || conv.dilationWidth !== 1) return useFallback();
  const [N, H, W, Cin] = x.shape;
  const [KH, KW, , Cout] = filter.shape;
  const { outHeight: OH, outWidth: OW, strideHeight: sh, strideWidth: sw } = conv;
  const { top: padT, left: padL } = conv.padInfo;
  const outShape = [N, OH, OW, Cout];
  const M = N * OH * OW;
  const K = KH * KW * Cin;
  if (M === 0 || Cout === 0) return backend.makeTensorInfo(outShape, 'float32', new Float32Array(0));
  if (K === 0) return useFallback();
  const tile = chooseTile({ M, N: Cout, K, batch: 1, longK: false }, gemmLimits(backend));
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const tilesM = Math.ceil(M / tile.bm);
  const tilesN = Math.ceil(Cout / tile.bn);
  if (tilesM > maxDim || tilesN > maxDim || M * Cout >= 2 ** 31 || x.shape.reduce((a, b) => a * b, 1) >= 2 ** 31) return useFallback();
  const spec: GemmSpec = {
    tile,
    a: {
      contig: 'k',
      vec4: Cin % 4 === 0,
      // Row m = (n, oh, ow); column k = (kh, kw, ci).
      index: `let ow = m % u.OW; let t = m / u.OW; let oh = t % u.OH; let n = t / u.OH;
  let ci = k % u.Cin; let t2 = k / u.Cin; let kw = t2 % u.KW; let kh = t2 / u.KW;
  let ih = oh * ${sh} - u.padT + kh; let iw = ow * ${sw} - u.padL + kw;
  if (ih < 0 || ih >= u.H || iw < 0 || iw >= u.W) { return -1; }
  return ((n * u.H + ih) * u.W + iw) * u.Cin + ci;`,
    },
    b: { contig: 'mn', vec4: Cout % 4 === 0, index: 'return k * u.N + n;' },
    split: false,
    epilogue: bias ? { ...NO_EPILOGUE, bias: true } : NO_EPILOGUE,
    vec4Out: Cout % 4 === 0,
    extraUniforms: EXTRA,
  };
  const vals: Record<string, number> = {
    M, N: Cout, K, kChunk: 0, aBatchStride: 0, bBatchStride: 0, H, W, Cin, OH, OW, KW, padT, padL,
  };
  const prog: CustomProgram = {
    name: 'Conv2DGemm',
    key: `${gemmKey(spec)}_conv_s${sh}x${sw}`,
    code: () => gemmSource(spec),
    outputShapes: [outShape],
    dispatch: [tilesN, tilesM, 1],
    uniforms: [...GEMM_UNIFORMS, ...EXTRA].map((name) => ({ name, type: 'i32' as const, value: vals[name] })),
  };
  return runCustomProgram(backend, prog, bias ? [x, filter, bias] : [x, filter])[0];
}
