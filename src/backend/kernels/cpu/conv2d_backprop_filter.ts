/**
 * Conv2DBackpropFilter (the filter gradient of an NHWC conv2d, dilation 1) in plain typed-array JavaScript, used on
 * tfjs's 'cpu' backend (whose own kernel reads every element through TensorBuffer.get and is ~100x slower) and on the
 * 'wasm' backend (which has no such kernel at all).
 *
 * With the HWIO filter flattened to [K, Co] (K = kh·kw·Ci, row k = (r·fw + s)·Ci + ci), the gradient is one matrix
 * product over the P = N·OH·OW output positions:
 *
 *     dW[k, co] = Σ_p  A[k, p] · B[co, p],   A[k, p] = x[b, oy·sh + r − padTop, ox·sw + s − padLeft, ci] (0 in the
 *                                            padding),  B[co, p] = dy[b, oy, ox, co].
 *
 * P is processed in chunks of whole output rows: each chunk builds A (im2col, transposed so p is contiguous) and B
 * (dy transposed) in small scratch arrays that stay in cache, then a 4×4 register-blocked dot-product kernel adds the
 * chunk's contribution to a float64 accumulator. K and Co are padded to multiples of 4 with zero rows, so the inner
 * kernel has no edge cases.
 */

/** Geometry of one conv2d (NHWC activations, HWIO filter), as given by tf.backend_util.computeConv2DInfo. */
export interface ConvGeometry {
  batch: number;
  inH: number;
  inW: number;
  inC: number;
  outH: number;
  outW: number;
  outC: number;
  filterH: number;
  filterW: number;
  strideH: number;
  strideW: number;
  /** Zero rows added above the input (padInfo.top). */
  padTop: number;
  /** Zero columns added left of the input (padInfo.left). */
  padLeft: number;
}

/** Scratch budget (float32 elements) for one chunk of A and B together: 64 K elements = 256 KiB, about L2 size. */
const CHUNK_ELEMENTS = 1 << 16;
/** Minimum positions per chunk (measured: 256 is 5-10% faster than one 7-wide row for K·Co of 1728·288 and more). */
const MIN_CHUNK_P = 256;

const roundUp4 = (n: number) => (n + 3) & ~3;

/** Valid output-column range per filter column s: ix = ox·sw + s − padLeft lies in [0, W) for lo[s] <= ox < hi[s]. */
export function columnRanges(g: ConvGeometry): { lo: Int32Array; hi: Int32Array } {
  const lo = new Int32Array(g.filterW);
  const hi = new Int32Array(g.filterW);
  for (let s = 0; s < g.filterW; s++) {
    lo[s] = Math.min(g.outW, Math.max(0, Math.ceil((g.padLeft - s) / g.strideW)));
    hi[s] = Math.max(lo[s], Math.min(g.outW, Math.floor((g.inW - 1 + g.padLeft - s) / g.strideW) + 1));
  }
  return { lo, hi };
}

/**
 * dW = conv2d filter gradient. `x`: [N, H, W, Ci], `dy`: [N, OH, OW, Co], `out`: [fh, fw, Ci, Co] (overwritten).
 * Dilation 1; any strides and (non-negative) paddings.
 */
export function conv2dBackpropFilterNHWC(x: Float32Array, dy: Float32Array, g: ConvGeometry, out: Float32Array): void {
  const { batch, inH, inW, inC: Ci, outH, outW, outC: Co, filterH, filterW, strideH, strideW, padTop, padLeft } = g;
  const K = filterH * filterW * Ci;
  if (out.length !== K * Co) throw new Error(`conv2dBackpropFilterNHWC: output has ${out.length} elements, expected ${K * Co}`);
  const Kp = roundUp4(K);
  const Cop = roundUp4(Co);
  const acc = new Float64Array(Kp * Cop);
  const totalRows = batch * outH;
  if (totalRows === 0 || outW === 0 || K === 0 || Co === 0) {
    out.fill(0);
    return;
  }
  // Whole output rows per chunk: as many as fit CHUNK_ELEMENTS, but at least MIN_CHUNK_P positions so that the
  // dot products stay long when K·Co is large (deep layers with small feature maps).
  const rowsPerChunk = Math.min(totalRows, Math.max(Math.ceil(MIN_CHUNK_P / outW), Math.floor(CHUNK_ELEMENTS / ((Kp + Cop) * outW))));
  const Pc = rowsPerChunk * outW; // row stride of A and B
  // Rows K..Kp-1 of A and Co..Cop-1 of B are never written: they stay zero and contribute nothing.
  const A = new Float32Array(Kp * Pc);
  const B = new Float32Array(Cop * Pc);
  const xRowStride = inW * Ci;

  const { lo: oxLo, hi: oxHi } = columnRanges(g);

  for (let row0 = 0; row0 < totalRows; row0 += rowsPerChunk) {
    const nRows = Math.min(rowsPerChunk, totalRows - row0);
    const pc = nRows * outW;
    // ---- build A (im2col, p contiguous) and B (dy transposed) for output rows row0 .. row0+nRows-1
    for (let rr = 0; rr < nRows; rr++) {
      const row = row0 + rr;
      const b = (row / outH) | 0;
      const oy = row - b * outH;
      const pOff = rr * outW;
      for (let r = 0; r < filterH; r++) {
        const iy = oy * strideH + r - padTop;
        const rowValid = iy >= 0 && iy < inH;
        const xRow = (b * inH + iy) * xRowStride;
        for (let s = 0; s < filterW; s++) {
          const kBase = (r * filterW + s) * Ci;
          const lo = rowValid ? oxLo[s] : outW;
          const hi = rowValid ? oxHi[s] : outW;
          const xCol0 = xRow + (s - padLeft) * Ci; // x index of (iy, ix = ox·sw + s − padLeft, ci = 0) minus ox·sw·Ci
          const xStep = strideW * Ci;
          for (let ci = 0; ci < Ci; ci++) {
            const a = (kBase + ci) * Pc + pOff;
            let ox = 0;
            for (; ox < lo; ox++) A[a + ox] = 0;
            let xi = xCol0 + ci + lo * xStep;
            for (; ox < hi; ox++, xi += xStep) A[a + ox] = x[xi];
            for (; ox < outW; ox++) A[a + ox] = 0;
          }
        }
      }
      let d = row * outW * Co;
      for (let ox = 0; ox < outW; ox++) {
        const p = pOff + ox;
        for (let co = 0; co < Co; co++) B[co * Pc + p] = dy[d++];
      }
    }
    // ---- acc[k, co] += Σ_p A[k, p]·B[co, p], 4×4 blocks held in locals (doubles). The same block as matmul.ts's, on
    // purpose: as a shared function (16 sums through a Float64Array) it cost 5-10% more CPU time in both (2026-11-30).
    for (let k = 0; k < Kp; k += 4) {
      const a0 = k * Pc;
      const a1 = a0 + Pc;
      const a2 = a1 + Pc;
      const a3 = a2 + Pc;
      for (let c = 0; c < Cop; c += 4) {
        const b0 = c * Pc;
        const b1 = b0 + Pc;
        const b2 = b1 + Pc;
        const b3 = b2 + Pc;
        let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
        let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
        let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
        let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
        for (let p = 0; p < pc; p++) {
          const x0 = A[a0 + p], x1 = A[a1 + p], x2 = A[a2 + p], x3 = A[a3 + p];
          const y0 = B[b0 + p], y1 = B[b1 + p], y2 = B[b2 + p], y3 = B[b3 + p];
          s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
          s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
          s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
          s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
        }
        let o = k * Cop + c;
        acc[o] += s00; acc[o + 1] += s01; acc[o + 2] += s02; acc[o + 3] += s03;
        o += Cop;
        acc[o] += s10; acc[o + 1] += s11; acc[o + 2] += s12; acc[o + 3] += s13;
        o += Cop;
        acc[o] += s20; acc[o + 1] += s21; acc[o + 2] += s22; acc[o + 3] += s23;
        o += Cop;
        acc[o] += s30; acc[o + 1] += s31; acc[o + 2] += s32; acc[o + 3] += s33;
      }
    }
  }
  for (let k = 0; k < K; k++) {
    const src = k * Cop;
    const dst = k * Co;
    for (let co = 0; co < Co; co++) out[dst + co] = acc[src + co];
  }
}
