/**
 * DepthwiseConv2dNativeBackpropFilter for the tfjs WebGPU backend, with the reduction split across the GPU.
 *
 * x [N,H,W,C], dy [N,OH,OW,C*M] (NHWC, dilation 1), filter gradient [FH,FW,C,M]:
 *   dW[kh,kw,c,m] = sum over (n,oh,ow) of x[n, oh*sh - padT + kh, ow*sw - padL + kw, c] * dy[n,oh,ow,c*M+m]
 * tfjs runs one thread per filter weight looping over all N*OH*OW positions (2352 threads for 7x7x48), which
 * leaves an H200 almost idle. Here:
 *   pass 1: one thread per (kh, output channel d = c*M+m) and per chunk of "rows" r = (n, oh). For each row it
 *           walks ow = 0..OW-1 keeping the FW input values x[n, ih, ow*sw-padL .. +FW-1, c] in registers as a
 *           sliding window (sw new loads per step) and accumulates FW partial sums dW[kh, 0..FW-1, d]; threads
 *           with consecutive d read consecutive addresses. Each chunk writes its FH*FW*C*M partial sums;
 *   pass 2: `SplitSumProgram` adds the chunks (skipped when there is one chunk).
 * FW and sw are compiled into the shader (unrolled window); everything else is a uniform.
 *
 * Not covered (falls back to tfjs's kernel): dilations > 1, filter width > 32, non-float32 inputs.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { DepthwiseConv2dNativeBackpropFilterAttrs, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { sumSplits, type KernelArgs } from './util.js';
import { WGSL_BF16 } from './bf16.js';

export interface DepthwiseBackpropFilterTuning {
  /** Aim for about this many threads in pass 1 (chunks x FH x C*M). */
  targetThreads: number;
  /** Threads per workgroup in pass 1 (64, 128 or 256). */
  workgroupSize: number;
  /** Each thread handles at least this many output positions. */
  minPositionsPerThread: number;
}

const tuning: DepthwiseBackpropFilterTuning = {
  targetThreads: 262144,
  workgroupSize: 256,
  minPositionsPerThread: 32,
};

/** Change the kernel's split parameters (for benchmarking); returns the previous values. */
export function setDepthwiseBackpropFilterTuning(t: Partial<DepthwiseBackpropFilterTuning>): DepthwiseBackpropFilterTuning {
  const prev = { ...tuning };
  Object.assign(tuning, t);
  return prev;
}

export function getDepthwiseBackpropFilterTuning(): DepthwiseBackpropFilterTuning {
  return { ...tuning };
}

/** Widest filter we unroll; wider ones use tfjs's kernel. */
export const MAX_FILTER_WIDTH = 32;

/**
 * Pass 1. Output: [S, FH*FW*C*M] partial sums (or the final [FH,FW,C,M] when S = 1: same flat layout).
 * Thread t of the (FH * C*M) threads of a chunk handles kh = t / (C*M), d = t % (C*M).
 */
export class DepthwiseBackpropFilterSplitProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0], y: [1] };
  dispatch: [number, number, number];
  variableNames = ['x', 'dy'];
  uniforms = 'inH : i32, inW : i32, inC : i32, outH : i32, outW : i32, outC : i32, chMul : i32, ' +
    'strideH : i32, padT : i32, padL : i32, filterH : i32, numRows : i32, rowsPerSplit : i32, xPix : i32, xOff : i32,';
  workgroupSize: [number, number, number];

  constructor(outputShape: number[], dispatch: [number, number, number], wg: number, private fw: number, private sw: number,
    private bf16 = false) {
    this.outputShape = outputShape;
    this.dispatch = dispatch;
    this.workgroupSize = [wg, 1, 1];
    this.shaderKey = `mambaout_dw_bpf_split_${fw}_${sw}${bf16 ? '_bf16' : ''}`;
  }

  getUserCode(): string {
    const { fw, sw } = this;
    const wg = this.workgroupSize[0];
    const range = (n: number) => Array.from({ length: n }, (_, i) => i);
    const accDecl = range(fw).map((k) => `var a${k} = 0.0;`).join(' ');
    const winInit = range(fw).map((k) => `var w${k} = loadX(xRow, iw + ${k});`).join(' ');
    const fmas = range(fw).map((k) => `a${k} = fma(g, w${k}, a${k});`).join(' ');
    // Advance the window by sw: keep the overlapping FW - sw values, load the sw new ones.
    const shift: string[] = [];
    if (sw < fw) {
      for (let k = 0; k < fw - sw; k++) shift.push(`w${k} = w${k + sw};`);
      for (let k = fw - sw; k < fw; k++) shift.push(`w${k} = loadX(xRow, iw + ${k});`);
    } else {
      for (let k = 0; k < fw; k++) shift.push(`w${k} = loadX(xRow, iw + ${k});`);
    }
    const stores = range(fw).map((k) => `result[outBase + ${k} * uniforms.outC] = a${k};`).join('\n        ');
    return `
      ${this.bf16 ? WGSL_BF16 : ''}
      fn loadX(rowBase : i32, col : i32) -> f32 {
        if (col < 0 || col >= uniforms.inW) { return 0.0; }
        ${this.bf16
    ? `let e = rowBase + col * uniforms.xPix;
        let w = bitcast<u32>(x[e / 2]);
        return select(bf16lo(w), bf16hi(w), (e & 1) == 1);`
    : 'return x[rowBase + col * uniforms.xPix];'}
      }

      fn main() {
        let t = i32(workgroupId.x) * ${wg} + i32(localIndex);
        let split = i32(workgroupId.y);
        let perRowThreads = uniforms.filterH * uniforms.outC;
        if (t >= perRowThreads) { return; }
        let kh = t / uniforms.outC;
        let d = t - kh * uniforms.outC;
        let c = d / uniforms.chMul;
        ${accDecl}
        let r0 = split * uniforms.rowsPerSplit;
        let r1 = min(r0 + uniforms.rowsPerSplit, uniforms.numRows);
        for (var r = r0; r < r1; r = r + 1) {
          let n = r / uniforms.outH;
          let oh = r - n * uniforms.outH;
          let ih = oh * uniforms.strideH - uniforms.padT + kh;
          if (ih < 0 || ih >= uniforms.inH) { continue; }
          let xRow = (n * uniforms.inH + ih) * uniforms.inW * uniforms.xPix + uniforms.xOff + c;
          var dyIdx = r * uniforms.outW * uniforms.outC + d;
          var iw = -uniforms.padL;
          ${winInit}
          for (var ow = 0; ow < uniforms.outW; ow = ow + 1) {
            let g = dy[dyIdx];
            ${fmas}
            dyIdx = dyIdx + uniforms.outC;
            iw = iw + ${sw};
            ${shift.join(' ')}
          }
        }
        let outBase = split * perRowThreads * ${fw} + kh * ${fw} * uniforms.outC + d;
        ${stores}
      }
    `;
  }
}

/** Our DepthwiseConv2dNativeBackpropFilter; `fallback` (tfjs's kernel) handles what it does not cover. */
export function depthwiseBackpropFilterWebGPU(args: KernelArgs, fallback?: KernelFunc): TensorInfo {
  const { x, dy } = args.inputs;
  const attrs = (args.attrs ?? {}) as unknown as DepthwiseConv2dNativeBackpropFilterAttrs;
  const backend = args.backend as WebGPUBackend;
  const dil = attrs.dilations ?? 1;
  const [dh, dw] = typeof dil === 'number' ? [dil, dil] : dil;
  const fw = attrs.filterShape[1];
  const useFallback = (): TensorInfo => {
    if (!fallback) throw new Error('DepthwiseConv2dNativeBackpropFilter: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  };
  if (dh !== 1 || dw !== 1 || fw > MAX_FILTER_WIDTH || x.dtype !== 'float32' || dy.dtype !== 'float32' || x.shape.length !== 4) {
    return useFallback();
  }
  return depthwiseFilterGradImpl(backend, x, dy, attrs.filterShape, x.shape as [number, number, number, number], attrs, { pixelStride: x.shape[3], channelOffset: 0 })
    ?? useFallback();
}

/** Where a depthwise conv's input channels sit in its buffer: pixel stride and channel offset (floats). */
export interface StridedInput {
  pixelStride: number;
  channelOffset: number;
  /** x is packed bf16 (int32 pairs, ./bf16.ts; --amp). Offsets and strides stay in elements. */
  bf16?: boolean;
}

/**
 * Filter gradient of a stride-1 'same' depthwise conv (multiplier 1) whose input channels are `channelOffset ..
 * + C` of a [N, H, W, pixelStride] tensor (the gate's conv reading fc1's output, ./gate_conv.ts).
 */
export function depthwiseFilterGradStrided(backend: WebGPUBackend, x: TensorInfo, dy: TensorInfo,
  filterShape: [number, number, number, number], where: StridedInput): TensorInfo {
  const [N, H, W] = x.shape;
  const out = depthwiseFilterGradImpl(backend, x, dy, filterShape, [N, H, W, filterShape[2]], { strides: 1, pad: 'same' }, where);
  if (!out) throw new Error(`depthwise filter gradient: [${x.shape}] does not fit one dispatch`);
  return out;
}

function depthwiseFilterGradImpl(backend: WebGPUBackend, x: TensorInfo, dy: TensorInfo, filterShape: [number, number, number, number],
  xShape: [number, number, number, number],
  attrs: Pick<DepthwiseConv2dNativeBackpropFilterAttrs, 'strides' | 'pad' | 'dimRoundingMode'>,
  where: StridedInput): TensorInfo | null {
  const [fh, fw, inC, chMul] = filterShape;
  const conv = backend_util.computeConv2DInfo(xShape, filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, true);
  const outC = inC * chMul;
  const rows = conv.batchSize * conv.outHeight;
  const perRowThreads = fh * outC;
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const wg = [64, 128, 256].includes(tuning.workgroupSize) ? tuning.workgroupSize : 256;
  const groupsX = Math.ceil(perRowThreads / wg);
  if (rows === 0 || perRowThreads === 0 || conv.outWidth === 0 || groupsX > maxDim) return null;
  // Chunks of rows: enough threads to fill the GPU, but at least minPositionsPerThread positions per thread.
  const minRows = Math.max(1, Math.ceil(tuning.minPositionsPerThread / conv.outWidth));
  let splits = Math.max(1, Math.min(Math.round(tuning.targetThreads / perRowThreads), Math.floor(rows / minRows), maxDim));
  const rowsPerSplit = Math.ceil(rows / splits);
  splits = Math.ceil(rows / rowsPerSplit);
  const outShape = splits === 1 ? filterShape.slice() : [splits, fh * fw * outC];
  const program = new DepthwiseBackpropFilterSplitProgram(outShape, [groupsX, splits, 1], wg, fw, conv.strideWidth, where.bf16);
  const uniforms = [
    conv.inHeight, conv.inWidth, inC, conv.outHeight, conv.outWidth, outC, chMul,
    conv.strideHeight, conv.padInfo.top, conv.padInfo.left, fh, rows, rowsPerSplit, where.pixelStride, where.channelOffset,
  ].map((v) => ({ type: 'int32' as const, data: [v] }));
  const partials = backend.runWebGPUProgram(program, [x, dy], 'float32', uniforms);
  if (splits === 1) return partials;
  return sumSplits(backend, partials, splits, filterShape.slice());
}
