/**
 * The other convolution kernels of a MambaOut training step on tfjs's 'cpu' backend (NHWC, dilation 1), which
 * together took ~7 s of a 37 s mambaout_femto step (batch 8, 224 px) once the gradients and matmuls were fixed:
 *
 *  - Conv2D:            y = im2col(x) · W, in chunks of output rows, through batchMatMulF32 (4×4 register blocks).
 *  - Conv2DBackpropInput: dcol = dy · Wᵀ per chunk of dy rows (batchMatMulF32), then col2im adds every patch row
 *                       back into dx.
 *  - DepthwiseConv2dNative: channel planes and a sliding register window along rows (as the depthwise gradients).
 *
 * W is the HWIO filter flattened to [K, Co], K = fh·fw·Ci with k = (r·fw + s)·Ci + ci.
 */
import { columnRanges, type ConvGeometry } from './conv2d_backprop_filter.js';
import { fromPlanes, toPlanes } from './depthwise_backprop.js';
import { batchMatMulF32 } from './matmul.js';

/** im2col chunk budget (float32 elements) and the fewest rows per chunk. */
const CHUNK_ELEMENTS = 1 << 16;
const MIN_ROWS = 256;

function chunkRows(P: number, width: number): number {
  return Math.max(1, Math.min(P, Math.max(MIN_ROWS, Math.floor(CHUNK_ELEMENTS / Math.max(1, width)))));
}

/**
 * The im2col correspondence of output positions p0 .. p0+pc-1: entry (p − p0, (r·fw + s)·Ci + ci) of `cols` [pc, K]
 * is pixel img[b, oy·sh + r − padTop, ox·sw + s − padLeft, ci] (none in the padding). `gather` copies the pixels into
 * the columns (im2col: conv2d; `cols` must be zero where the padding is), otherwise the columns are added back into
 * the pixels (col2im: the input gradient). `lo`/`hi`: columnRanges(g).
 */
function im2colRows(img: Float32Array, cols: Float32Array, p0: number, pc: number, g: ConvGeometry, lo: Int32Array, hi: Int32Array, gather: boolean): void {
  const { inH, inW, inC: Ci, outH, outW, filterH: fh, filterW: fw, strideH: sh, strideW: sw, padTop, padLeft } = g;
  const K = fh * fw * Ci;
  for (let p = p0; p < p0 + pc; p++) {
    const ox = p % outW;
    const t = (p - ox) / outW;
    const oy = t % outH;
    const b = (t - oy) / outH;
    const cRow = (p - p0) * K;
    for (let r = 0; r < fh; r++) {
      const iy = oy * sh + r - padTop;
      if (iy < 0 || iy >= inH) continue;
      const xRow = (b * inH + iy) * inW;
      for (let s = 0; s < fw; s++) {
        if (ox < lo[s] || ox >= hi[s]) continue;
        const xi = (xRow + ox * sw + s - padLeft) * Ci;
        const c0 = cRow + (r * fw + s) * Ci;
        if (gather) for (let ci = 0; ci < Ci; ci++) cols[c0 + ci] = img[xi + ci];
        else for (let ci = 0; ci < Ci; ci++) img[xi + ci] += cols[c0 + ci];
      }
    }
  }
}

/** Conv2D forward: `x` [N, H, W, Ci], `w` [fh, fw, Ci, Co], `out` [N, OH, OW, Co] (overwritten). */
export function conv2dNHWC(x: Float32Array, w: Float32Array, g: ConvGeometry, out: Float32Array): void {
  const { batch, inC: Ci, outH, outW, outC: Co, filterH: fh, filterW: fw } = g;
  const K = fh * fw * Ci;
  const P = batch * outH * outW;
  if (out.length !== P * Co) throw new Error(`conv2dNHWC: output has ${out.length} elements, expected ${P * Co}`);
  if (P === 0 || Co === 0) return;
  if (K === 0) {
    out.fill(0);
    return;
  }
  // Wᵀ [Co][K] once, so batchMatMulF32 packs it with contiguous copies (transposeB).
  const wt = new Float32Array(Co * K);
  for (let k = 0; k < K; k++) for (let co = 0; co < Co; co++) wt[co * K + k] = w[k * Co + co];
  const { lo, hi } = columnRanges(g);
  const rows = chunkRows(P, K);
  const A = new Float32Array(rows * K);
  for (let p0 = 0; p0 < P; p0 += rows) {
    const pc = Math.min(rows, P - p0);
    A.fill(0, 0, pc * K);
    im2colRows(x, A, p0, pc, g, lo, hi, true); // A[p - p0][(r·fw + s)·Ci + ci] = x[b, iy, ix, ci] (0 in the padding)
    batchMatMulF32(A.subarray(0, pc * K), wt, { batchA: 1, batchB: 1, M: pc, K, N: Co, transposeA: false, transposeB: true }, out.subarray(p0 * Co, (p0 + pc) * Co));
  }
}

/** Conv2DBackpropInput: `dy` [N, OH, OW, Co], `w` [fh, fw, Ci, Co], `out` = dx [N, H, W, Ci] (overwritten). */
export function conv2dBackpropInputNHWC(dy: Float32Array, w: Float32Array, g: ConvGeometry, out: Float32Array): void {
  const { batch, inH, inW, inC: Ci, outH, outW, outC: Co, filterH: fh, filterW: fw } = g;
  const K = fh * fw * Ci;
  const P = batch * outH * outW;
  if (out.length !== batch * inH * inW * Ci) throw new Error(`conv2dBackpropInputNHWC: output has ${out.length} elements, expected ${batch * inH * inW * Ci}`);
  out.fill(0);
  if (P === 0 || Co === 0 || K === 0) return;
  const { lo, hi } = columnRanges(g);
  const rows = chunkRows(P, K);
  const dcol = new Float32Array(rows * K);
  for (let p0 = 0; p0 < P; p0 += rows) {
    const pc = Math.min(rows, P - p0);
    // dcol[p][k] = Σ_co dy[p, co]·W[k, co]: W is [K, Co], i.e. op(B) = Wᵀ with transposeB
    batchMatMulF32(dy.subarray(p0 * Co, (p0 + pc) * Co), w, { batchA: 1, batchB: 1, M: pc, K: Co, N: K, transposeA: false, transposeB: true }, dcol.subarray(0, pc * K));
    im2colRows(out, dcol, p0, pc, g, lo, hi, false); // col2im: each patch row adds back into the pixels it was read from
  }
}

/**
 * DepthwiseConv2dNative forward: y[b, oy, ox, c·M + m] = Σ_{r,s} x[b, oy·sh + r − pt, ox·sw + s − pl, c]·w[r, s, c, m].
 * `x` [N, H, W, Ci], `w` [fh, fw, Ci, M], `out` [N, OH, OW, Ci·M] (overwritten).
 */
export function depthwiseConv2dNHWC(x: Float32Array, w: Float32Array, g: ConvGeometry, out: Float32Array): void {
  const { batch, inH, inW, inC: Ci, outH, outW, outC: Co, filterH: fh, filterW: fw, strideH: sh, strideW: sw, padTop, padLeft } = g;
  const M = Co / Ci;
  const F = fh * fw;
  if (out.length !== batch * outH * outW * Co) throw new Error(`depthwiseConv2dNHWC: output has ${out.length} elements, expected ${batch * outH * outW * Co}`);
  if (w.length !== F * Co) throw new Error(`depthwiseConv2dNHWC: filter has ${w.length} elements, expected ${F * Co}`);
  if (out.length === 0) return;
  const Hp = (outH - 1) * sh + fh;
  const Wp = (outW - 1) * sw + fw;
  const planeX = Hp * Wp;
  const planeY = outH * outW;
  const xp = new Float32Array(Ci * planeX); // zero border, interior rewritten per batch element
  const yp = new Float64Array(Co * planeY);
  const wd = new Float64Array(Co * F); // [d][r][s]
  for (let k = 0; k < F; k++) for (let d = 0; d < Co; d++) wd[d * F + k] = w[k * Co + d];
  const yLo = 0;
  const yHi = Math.min(inH, Hp - padTop);
  const xLo = 0;
  const xHi = Math.min(inW, Wp - padLeft);
  for (let b = 0; b < batch; b++) {
    toPlanes(x, b, inH, inW, Ci, xp, Hp, Wp, padTop, padLeft, yLo, yHi, xLo, xHi);
    yp.fill(0);
    for (let c = 0; c < Ci; c++) {
      const xBase = c * planeX;
      for (let m = 0; m < M; m++) {
        const d = c * M + m;
        for (let oy = 0; oy < outH; oy++) {
          const o0 = d * planeY + oy * outW;
          const oEnd = o0 + outW;
          for (let r = 0; r < fh; r++) {
            const xi0 = xBase + (oy * sh + r) * Wp;
            const wb = d * F + r * fw;
            if (sw === 1 && fw === 7) {
              const w0 = wd[wb], w1 = wd[wb + 1], w2 = wd[wb + 2], w3 = wd[wb + 3], w4 = wd[wb + 4], w5 = wd[wb + 5], w6 = wd[wb + 6];
              let xi = xi0;
              let x0 = xp[xi], x1 = xp[xi + 1], x2 = xp[xi + 2], x3 = xp[xi + 3], x4 = xp[xi + 4], x5 = xp[xi + 5];
              xi += 6;
              for (let o = o0; o < oEnd; o++, xi++) {
                const x6 = xp[xi];
                yp[o] += x0 * w0 + x1 * w1 + x2 * w2 + x3 * w3 + x4 * w4 + x5 * w5 + x6 * w6;
                x0 = x1; x1 = x2; x2 = x3; x3 = x4; x4 = x5; x5 = x6;
              }
            } else if (sw === 1 && fw === 3) {
              const w0 = wd[wb], w1 = wd[wb + 1], w2 = wd[wb + 2];
              let xi = xi0;
              let x0 = xp[xi], x1 = xp[xi + 1];
              xi += 2;
              for (let o = o0; o < oEnd; o++, xi++) {
                const x2 = xp[xi];
                yp[o] += x0 * w0 + x1 * w1 + x2 * w2;
                x0 = x1; x1 = x2;
              }
            } else {
              for (let o = o0, xi = xi0; o < oEnd; o++, xi += sw) {
                let sum = 0;
                for (let s = 0; s < fw; s++) sum += xp[xi + s] * wd[wb + s];
                yp[o] += sum;
              }
            }
          }
        }
      }
    }
    fromPlanes(yp, out, b, outH, outW, Co);
  }
}
