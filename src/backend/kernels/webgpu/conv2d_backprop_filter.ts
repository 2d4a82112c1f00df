/**
 * Conv2DBackpropFilter for the tfjs WebGPU backend, as a split-K matrix product.
 *
 * With x [N,H,W,Cin], dy [N,OH,OW,Cout] (NHWC, dilation 1), the filter gradient is
 *   dW[kh,kw,ci,co] = sum over p=(n,oh,ow) of x[n, oh*sh - padT + kh, ow*sw - padL + kw, ci] * dy[n,oh,ow,co]
 * i.e. the matrix product A^T B with A = im2col(x) [P x K] (K = FH*FW*Cin, the row index of dW in its
 * [FH,FW,Cin,Cout] layout) and B = dy viewed as [P x Cout]. P = N*OH*OW is huge (802816 for MambaOut's stem at
 * batch 64) while K x Cout is small, so tfjs's kernel (one thread per filter weight looping over all of P) leaves
 * the GPU idle. Here:
 *   pass 1: workgroups tile the output (TM rows of K x TN columns of Cout) AND split P into S chunks; each
 *           workgroup accumulates its tile over its chunk with the usual shared-memory tiled product (im2col is
 *           done on the fly while loading A), writing partial sums to a [S, K, Cout] buffer;
 *   pass 2: `SplitSumProgram` adds the S partials (skipped when S = 1).
 * Sums run in a different order than the cpu backend's, so results agree to fp32 rounding (~1e-6 relative).
 *
 * Not covered (falls back to tfjs's kernel): NCHW data format and non-float32 inputs.
 */
import { backend_util } from '@tensorflow/tfjs-core';
import type { Conv2DBackpropFilterAttrs, KernelFunc, TensorInfo } from '@tensorflow/tfjs-core';
import type { WebGPUBackend, WebGPUProgram } from '@tensorflow/tfjs-backend-webgpu';
import { sumSplits, type KernelArgs } from './util.js';


type Uniform = { type: 'int32' | 'float32' | 'uint32'; data: number[] };

export interface Conv2DBackpropFilterTuning {
  /** Output tile rows (K = FH*FW*Cin): 32, 64 or 128; 0 = auto (32 when K <= 32, else 64). */
  tileK: number;
  /** Output tile columns (Cout): a multiple of 16 up to 128; 0 = auto (fewest tiles, least padding). */
  tileCout: number;
  /** Positions per shared-memory step (8, 16 or 32). */
  tileP: number;
  /** Aim for about this many workgroups (output tiles x P-splits). */
  targetWorkgroups: number;
  /** Each P-split gets at least this many positions. */
  minPositionsPerSplit: number;
  /** Cap on the partial-sum buffer (S * K * Cout floats). */
  maxPartialFloats: number;
}

const tuning: Conv2DBackpropFilterTuning = {
  tileK: 0,
  tileCout: 0,
  tileP: 16,
  targetWorkgroups: 2048,
  minPositionsPerSplit: 256,
  maxPartialFloats: 4 * 1024 * 1024,
};

/** Change the kernel's tile/split parameters (for benchmarking); returns the previous values. */
export function setConv2DBackpropFilterTuning(t: Partial<Conv2DBackpropFilterTuning>): Conv2DBackpropFilterTuning {
  const prev = { ...tuning };
  Object.assign(tuning, t);
  return prev;
}

export function getConv2DBackpropFilterTuning(): Conv2DBackpropFilterTuning {
  return { ...tuning };
}

const WG = 256; // threads per workgroup in pass 1, seen as a 16 x 16 grid for the output tile

/**
 * Pass 1. Output: [S, K, Cout] partial sums (or the final [FH,FW,Cin,Cout] when S = 1: same flat layout).
 * Thread (tx, ty) of the 16x16 grid owns rows ty + 16*i (i < TM/16) and columns tx + 16*j (j < TN/16) of the
 * workgroup's tile, so shared-memory reads are broadcasts (A) or consecutive (B): no bank conflicts.
 * TM is 32, 64 or 128 (so each thread loads a fixed K column of A); TN is any multiple of 16 up to 128.
 * Each A-load slot tracks its position (n, oh, ow) incrementally (+TP per step) instead of dividing.
 */
export class Conv2DBackpropFilterSplitProgram implements WebGPUProgram {
  outputShape: number[];
  shaderKey: string;
  dispatchLayout = { x: [0], y: [1], z: [2] };
  dispatch: [number, number, number];
  variableNames = ['x', 'dy'];
  uniforms = 'inH : i32, inW : i32, inC : i32, outH : i32, outW : i32, outC : i32, ' +
    'strideH : i32, strideW : i32, padT : i32, padL : i32, filterW : i32, K : i32, numPos : i32, ' +
    'chunkLen : i32, stepsPerSplit : i32,';
  workgroupSize: [number, number, number] = [WG, 1, 1];

  constructor(outputShape: number[], dispatch: [number, number, number], private tm: number, private tn: number, private tp: number) {
    this.outputShape = outputShape;
    this.dispatch = dispatch;
    this.shaderKey = `mambaout_conv2d_bpf_split_${tm}_${tn}_${tp}`;
  }

  getUserCode(): string {
    const { tm, tn, tp } = this;
    const rm = tm / 16;
    const rn = tn / 16;
    const aSlots = (tp * tm) / WG; // A elements each thread loads per step (TM divides 256)
    const aStride = WG / tm; // position offset between a thread's A slots
    const bCount = tp * tn;
    const bSlots = Math.ceil(bCount / WG);
    const range = (n: number) => Array.from({ length: n }, (_, i) => i);

    // Position state per A slot: p = pBegin + aPP + e*aStride decomposed once, then advanced by TP per step.
    const slotInit = range(aSlots).map((e) => `
        var sN${e} = 0; var sH${e} = 0; var sW${e} = 0;
        {
          let p = pBegin + aPP + ${e * aStride};
          sN${e} = p / outPlane;
          let pr = p - sN${e} * outPlane;
          sH${e} = pr / uniforms.outW;
          sW${e} = pr - sH${e} * uniforms.outW;
        }`).join('');
    const aLoad = range(aSlots).map((e) => `
          {
            let pp = aPP + ${e * aStride};
            var v = 0.0;
            if (kValid && p0 + pp < pEnd) {
              let ih = sH${e} * uniforms.strideH - uniforms.padT + kh;
              let iw = sW${e} * uniforms.strideW - uniforms.padL + kw;
              if (ih >= 0 && ih < uniforms.inH && iw >= 0 && iw < uniforms.inW) {
                v = x[((sN${e} * uniforms.inH + ih) * uniforms.inW + iw) * uniforms.inC + ci];
              }
            }
            As[pp * ${tm} + am] = v;
            sW${e} = sW${e} + ${tp};
            while (sW${e} >= uniforms.outW) { sW${e} = sW${e} - uniforms.outW; sH${e} = sH${e} + 1; }
            while (sH${e} >= uniforms.outH) { sH${e} = sH${e} - uniforms.outH; sN${e} = sN${e} + 1; }
          }`).join('');
    const bLoad = range(bSlots).map((e) => `
          {
            let flat = ${e * WG} + li;
            ${bCount % WG === 0 ? '' : `if (flat < ${bCount}) {`}
            let pp = flat / ${tn};
            let co = n0 + flat - pp * ${tn};
            let p = p0 + pp;
            var v = 0.0;
            if (co < uniforms.outC && p < pEnd) {
              v = dy[p * uniforms.outC + co];
            }
            Bs[flat] = v;
            ${bCount % WG === 0 ? '' : '}'}
          }`).join('');
    const fma: string[] = [];
    for (let i = 0; i < rm; i++) fma.push(`let a${i} = As[pp * ${tm} + ty + ${16 * i}];`);
    for (let j = 0; j < rn; j++) fma.push(`let b${j} = Bs[pp * ${tn} + tx + ${16 * j}];`);
    const accDecl: string[] = [];
    const store: string[] = [];
    for (let i = 0; i < rm; i++) {
      for (let j = 0; j < rn; j++) {
        accDecl.push(`var c${i}_${j} = 0.0;`);
        fma.push(`c${i}_${j} = fma(a${i}, b${j}, c${i}_${j});`);
        store.push(`if (k${i} < uniforms.K && co${j} < uniforms.outC) { result[(rowBase + k${i}) * uniforms.outC + co${j}] = c${i}_${j}; }`);
      }
    }
    const rowsCols: string[] = [];
    for (let i = 0; i < rm; i++) rowsCols.push(`let k${i} = m0 + ty + ${16 * i};`);
    for (let j = 0; j < rn; j++) rowsCols.push(`let co${j} = n0 + tx + ${16 * j};`);

    return `
      var<workgroup> As : array<f32, ${tp * tm}>;
      var<workgroup> Bs : array<f32, ${tp * tn}>;

      fn main() {
        let li = i32(localIndex);
        let tx = li % 16;
        let ty = li / 16;
        let n0 = i32(workgroupId.x) * ${tn};
        let m0 = i32(workgroupId.y) * ${tm};
        let split = i32(workgroupId.z);
        let pBegin = split * uniforms.chunkLen;
        let pEnd = min(pBegin + uniforms.chunkLen, uniforms.numPos);
        let outPlane = uniforms.outH * uniforms.outW;

        // The A column this thread loads is fixed: decompose its K index once.
        let am = li % ${tm};
        let aPP = li / ${tm};
        let kk = m0 + am;
        let kValid = kk < uniforms.K;
        let rowLen = uniforms.filterW * uniforms.inC;
        let kh = kk / rowLen;
        let kRem = kk - kh * rowLen;
        let kw = kRem / uniforms.inC;
        let ci = kRem - kw * uniforms.inC;
        ${slotInit}

        ${accDecl.join('\n        ')}

        // The loop count depends on uniforms only, so the barriers stay in uniform control flow.
        for (var st = 0; st < uniforms.stepsPerSplit; st = st + 1) {
          let p0 = pBegin + st * ${tp};
          ${aLoad}
          ${bLoad}
          workgroupBarrier();
          for (var pp = 0; pp < ${tp}; pp = pp + 1) {
            ${fma.join('\n            ')}
          }
          workgroupBarrier();
        }

        let rowBase = split * uniforms.K;
        ${rowsCols.join('\n        ')}
        ${store.join('\n        ')}
      }
    `;
  }
}

/** K tile: 32, 64 or 128 (must divide the 256 threads); 0 = auto. */
function pickTileK(v: number, K: number): number {
  if (v === 32 || v === 64 || v === 128) return v;
  return K <= 32 ? 32 : 64;
}

/** Cout tile: a multiple of 16 up to 128 that covers Cout with the fewest tiles and least padding; 0 = auto. */
function pickTileCout(v: number, cout: number): number {
  if (v > 0 && v % 16 === 0 && v <= 128) return v;
  const tiles = Math.ceil(cout / 128);
  return 16 * Math.ceil(cout / (16 * tiles));
}

/** Our Conv2DBackpropFilter; `fallback` (tfjs's kernel) handles what it does not cover. */
export function conv2dBackpropFilterWebGPU(args: KernelArgs, fallback?: KernelFunc): TensorInfo {
  const { x, dy } = args.inputs;
  const attrs = (args.attrs ?? {}) as unknown as Conv2DBackpropFilterAttrs;
  const backend = args.backend as WebGPUBackend;
  const supported = (attrs.dataFormat ?? 'NHWC') === 'NHWC' && x.dtype === 'float32' && dy.dtype === 'float32' && x.shape.length === 4;
  if (!supported) {
    if (!fallback) throw new Error('Conv2DBackpropFilter: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  }
  const conv = backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number], attrs.filterShape, attrs.strides, 1, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
  const [fh, fw, cin, cout] = attrs.filterShape;
  const K = fh * fw * cin;
  const P = conv.batchSize * conv.outHeight * conv.outWidth;
  const tm = pickTileK(tuning.tileK, K);
  const tn = pickTileCout(tuning.tileCout, cout);
  const tp = [8, 16, 32].includes(tuning.tileP) ? tuning.tileP : 16;
  const maxDim = backend.device.limits.maxComputeWorkgroupsPerDimension;
  const tilesN = Math.ceil(cout / tn);
  const tilesM = Math.ceil(K / tm);
  if (tilesN > maxDim || tilesM > maxDim || P === 0 || K === 0 || cout === 0) {
    if (!fallback) throw new Error('Conv2DBackpropFilter: unsupported case and no fallback kernel');
    return fallback(args as Parameters<KernelFunc>[0]) as TensorInfo;
  }
  // Split P so that tiles x splits ~ targetWorkgroups, each split a whole number of tp-steps.
  // (H200 timings: 2048 workgroups beat 1024 for the deep layers' small P; the partial cap keeps the reduction
  // pass cheap for the early layers' large P.)
  const maxSplitsByWork = Math.max(1, Math.floor(P / Math.max(tp, tuning.minPositionsPerSplit)));
  const maxSplitsByMemory = Math.max(1, Math.floor(tuning.maxPartialFloats / (K * cout)));
  let splits = Math.max(1, Math.min(Math.ceil(tuning.targetWorkgroups / (tilesN * tilesM)), maxSplitsByWork, maxSplitsByMemory, maxDim));
  const chunkLen = Math.ceil(Math.ceil(P / splits) / tp) * tp;
  splits = Math.ceil(P / chunkLen);
  const outShape = splits === 1 ? attrs.filterShape.slice() : [splits, K, cout];
  const program = new Conv2DBackpropFilterSplitProgram(outShape, [tilesN, tilesM, splits], tm, tn, tp);
  const uniforms: Uniform[] = [
    conv.inHeight, conv.inWidth, conv.inChannels, conv.outHeight, conv.outWidth, cout,
    conv.strideHeight, conv.strideWidth, conv.padInfo.top, conv.padInfo.left, fw, K, P,
    chunkLen, chunkLen / tp,
  ].map((v) => ({ type: 'int32', data: [v] }));
  const partials = backend.runWebGPUProgram(program, [x, dy], 'float32', uniforms);
  if (splits === 1) return partials;
  return sumSplits(backend, partials, splits, attrs.filterShape.slice());
}
