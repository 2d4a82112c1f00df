/**
 * Gradients of an NHWC depthwise conv2d (dilation 1, any channel multiplier M, any strides and paddings) in plain
 * typed-array JavaScript: DepthwiseConv2dNativeBackpropFilter and DepthwiseConv2dNativeBackpropInput. Used on tfjs's
 * 'cpu' backend (its own kernels index through TensorBuffer accessors) and on 'wasm' (which has neither kernel).
 *
 * Forward (tfjs semantics, filter [fh, fw, Ci, M], output channel d = c·M + m):
 *     y[b, oy, ox, d] = Σ_{r,s} x[b, oy·sh + r − padTop, ox·sw + s − padLeft, c] · w[r, s, c, m]
 *
 * Both gradients are per-channel 2-D correlations, so each batch element is first transposed into channel planes
 * (NHWC -> [C][H][W], zero-padded) and the work runs along contiguous plane rows. The common case of MambaOut (7×7,
 * stride 1, 'same') uses a sliding register window: per output column one new load feeds 7 multiply-adds whose
 * partial sums stay in locals (doubles).
 */
import type { ConvGeometry } from './conv2d_backprop_filter.js';

/**
 * Filter gradient: dW[r, s, c, m] = Σ_{b,oy,ox} x[b, oy·sh + r − pt, ox·sw + s − pl, c] · dy[b, oy, ox, c·M + m].
 * `x`: [N, H, W, Ci], `dy`: [N, OH, OW, Ci·M], `out`: [fh, fw, Ci, M] (overwritten).
 */
export function depthwiseBackpropFilterNHWC(x: Float32Array, dy: Float32Array, g: ConvGeometry, out: Float32Array): void {
  const { batch, inH, inW, inC: Ci, outH, outW, outC: Co, filterH: fh, filterW: fw, strideH: sh, strideW: sw, padTop, padLeft } = g;
  const M = Co / Ci;
  const F = fh * fw;
  if (out.length !== F * Co) throw new Error(`depthwiseBackpropFilterNHWC: output has ${out.length} elements, expected ${F * Co}`);
  if (batch === 0 || outH === 0 || outW === 0 || Co === 0) {
    out.fill(0);
    return;
  }
  // Padded x planes cover every position a filter tap can read: rows 0 .. (OH-1)·sh + fh - 1, same for columns.
  const Hp = (outH - 1) * sh + fh;
  const Wp = (outW - 1) * sw + fw;
  const planeX = Hp * Wp;
  const planeY = outH * outW;
  const xp = new Float32Array(Ci * planeX); // the border stays zero; the interior is rewritten per batch element
  const dyp = new Float32Array(Co * planeY);
  const acc = new Float64Array(Co * F); // [d][r][s]
  const yLo = Math.max(0, -padTop);
  const yHi = Math.min(inH, Hp - padTop);
  const xLo = Math.max(0, -padLeft);
  const xHi = Math.min(inW, Wp - padLeft);

  for (let b = 0; b < batch; b++) {
    toPlanes(x, b, inH, inW, Ci, xp, Hp, Wp, padTop, padLeft, yLo, yHi, xLo, xHi);
    toPlanes(dy, b, outH, outW, Co, dyp, outH, outW, 0, 0, 0, outH, 0, outW);
    for (let c = 0; c < Ci; c++) {
      const xBase = c * planeX;
      for (let m = 0; m < M; m++) {
        const d = c * M + m;
        const dyBase = d * planeY;
        const accBase = d * F;
        for (let r = 0; r < fh; r++) {
          const a = accBase + r * fw;
          if (sw === 1 && fw === 7) {
            let a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0;
            for (let oy = 0; oy < outH; oy++) {
              let xi = xBase + (oy * sh + r) * Wp;
              const di0 = dyBase + oy * outW;
              const diEnd = di0 + outW;
              let x0 = xp[xi], x1 = xp[xi + 1], x2 = xp[xi + 2], x3 = xp[xi + 3], x4 = xp[xi + 4], x5 = xp[xi + 5];
              xi += 6;
              for (let di = di0; di < diEnd; di++, xi++) {
                const x6 = xp[xi];
                const v = dyp[di];
                a0 += v * x0; a1 += v * x1; a2 += v * x2; a3 += v * x3; a4 += v * x4; a5 += v * x5; a6 += v * x6;
                x0 = x1; x1 = x2; x2 = x3; x3 = x4; x4 = x5; x5 = x6;
              }
            }
            acc[a] += a0; acc[a + 1] += a1; acc[a + 2] += a2; acc[a + 3] += a3; acc[a + 4] += a4; acc[a + 5] += a5; acc[a + 6] += a6;
          } else if (sw === 1 && fw === 3) {
            let a0 = 0, a1 = 0, a2 = 0;
            for (let oy = 0; oy < outH; oy++) {
              let xi = xBase + (oy * sh + r) * Wp;
              const di0 = dyBase + oy * outW;
              const diEnd = di0 + outW;
              let x0 = xp[xi], x1 = xp[xi + 1];
              xi += 2;
              for (let di = di0; di < diEnd; di++, xi++) {
                const x2 = xp[xi];
                const v = dyp[di];
                a0 += v * x0; a1 += v * x1; a2 += v * x2;
                x0 = x1; x1 = x2;
              }
            }
            acc[a] += a0; acc[a + 1] += a1; acc[a + 2] += a2;
          } else {
            for (let s = 0; s < fw; s++) {
              let sum = 0;
              for (let oy = 0; oy < outH; oy++) {
                let xi = xBase + (oy * sh + r) * Wp + s;
                const di0 = dyBase + oy * outW;
                const diEnd = di0 + outW;
                for (let di = di0; di < diEnd; di++, xi += sw) sum += dyp[di] * xp[xi];
              }
              acc[a + s] += sum;
            }
          }
        }
      }
    }
  }
  // acc [d][r][s] -> out [r][s][c][m] = [r·fw + s][d]
  for (let d = 0; d < Co; d++) for (let k = 0; k < F; k++) out[k * Co + d] = acc[d * F + k];
}

/**
 * Input gradient: dx[b, iy, ix, c] = Σ_{m,r,s} dy[b, oy, ox, c·M + m] · w[r, s, c, m] over the (oy, ox) with
 * oy·sh + r − pt = iy, ox·sw + s − pl = ix. `dy`: [N, OH, OW, Ci·M], `w`: [fh, fw, Ci, M], `out`: [N, H, W, Ci]
 * (overwritten).
 */
export function depthwiseBackpropInputNHWC(dy: Float32Array, w: Float32Array, g: ConvGeometry, out: Float32Array): void {
  const { batch, inH, inW, inC: Ci, outH, outW, outC: Co, filterH: fh, filterW: fw, strideH: sh, strideW: sw, padTop, padLeft } = g;
  const M = Co / Ci;
  const F = fh * fw;
  if (out.length !== batch * inH * inW * Ci) throw new Error(`depthwiseBackpropInputNHWC: output has ${out.length} elements, expected ${batch * inH * inW * Ci}`);
  if (w.length !== F * Co) throw new Error(`depthwiseBackpropInputNHWC: filter has ${w.length} elements, expected ${F * Co}`);
  if (out.length === 0) return;
  if (outH === 0 || outW === 0 || Co === 0) {
    out.fill(0);
    return;
  }
  // Filter per output channel, taps reversed along s: wr[d][r][t] = w[r, fw-1-t, c, m] (gather form below).
  const wr = new Float64Array(Co * F);
  for (let r = 0; r < fh; r++) for (let s = 0; s < fw; s++) for (let d = 0; d < Co; d++) wr[d * F + r * fw + (fw - 1 - s)] = w[(r * fw + s) * Co + d];
  const planeX = inH * inW;
  const dx = new Float64Array(Ci * planeX); // [c][iy][ix] for one batch element

  if (sw === 1) {
    // Gather: for one dy row oy and filter row r, dx row iy = oy·sh + r − pt receives
    //   dx[iy, ix] += Σ_t dyP[oy, ix + pl + t] · wr[r, t],  dyP = dy row shifted right by fw−1 with zero margins
    // (t = fw−1−s, so ix + pl + t − (fw−1) = ix + pl − s = ox). The margins make every index valid.
    const OWp = outW + 2 * (fw - 1);
    const planeY = outH * OWp;
    // Columns ix >= OW + fw - 1 - pl get no contribution (only when tfjs's output width is smaller than the padded
    // input allows, e.g. a numeric pad with non-square strides, for which tfjs computes both sizes from strideH).
    const nCols = Math.max(0, Math.min(inW, outW + fw - 1 - padLeft));
    const dyp = new Float32Array(Co * planeY);
    for (let b = 0; b < batch; b++) {
      toPlanes(dy, b, outH, outW, Co, dyp, outH, OWp, 0, fw - 1, 0, outH, 0, outW);
      dx.fill(0);
      for (let c = 0; c < Ci; c++) {
        const dxBase = c * planeX;
        for (let m = 0; m < M; m++) {
          const d = c * M + m;
          for (let iy = 0; iy < inH; iy++) {
            const o0 = dxBase + iy * inW;
            const oEnd = o0 + nCols;
            for (let r = 0; r < fh; r++) {
              const t = iy + padTop - r;
              if (t < 0) break; // r only grows
              const oy = t / sh;
              if (oy >= outH || oy !== Math.floor(oy)) continue;
              const yi0 = d * planeY + oy * OWp + padLeft;
              const wb = d * F + r * fw;
              if (fw === 7) {
                const w0 = wr[wb], w1 = wr[wb + 1], w2 = wr[wb + 2], w3 = wr[wb + 3], w4 = wr[wb + 4], w5 = wr[wb + 5], w6 = wr[wb + 6];
                let yi = yi0;
                let y0 = dyp[yi], y1 = dyp[yi + 1], y2 = dyp[yi + 2], y3 = dyp[yi + 3], y4 = dyp[yi + 4], y5 = dyp[yi + 5];
                yi += 6;
                for (let o = o0; o < oEnd; o++, yi++) {
                  const y6 = dyp[yi];
                  dx[o] += y0 * w0 + y1 * w1 + y2 * w2 + y3 * w3 + y4 * w4 + y5 * w5 + y6 * w6;
                  y0 = y1; y1 = y2; y2 = y3; y3 = y4; y4 = y5; y5 = y6;
                }
              } else if (fw === 3) {
                const w0 = wr[wb], w1 = wr[wb + 1], w2 = wr[wb + 2];
                let yi = yi0;
                let y0 = dyp[yi], y1 = dyp[yi + 1];
                yi += 2;
                for (let o = o0; o < oEnd; o++, yi++) {
                  const y2 = dyp[yi];
                  dx[o] += y0 * w0 + y1 * w1 + y2 * w2;
                  y0 = y1; y1 = y2;
                }
              } else {
                for (let o = o0, yi = yi0; o < oEnd; o++, yi++) {
                  let sum = 0;
                  for (let tt = 0; tt < fw; tt++) sum += dyp[yi + tt] * wr[wb + tt];
                  dx[o] += sum;
                }
              }
            }
          }
        }
      }
      fromPlanes(dx, out, b, inH, inW, Ci);
    }
  } else {
    // Scatter (any stride): dxP[oy·sh + r, ox·sw + s] += dy[oy, ox]·w[r, s] on a padded plane, then crop.
    const Hp = (outH - 1) * sh + fh;
    const Wp = (outW - 1) * sw + fw;
    const planeP = Hp * Wp;
    const planeY = outH * outW;
    const dyp = new Float32Array(Co * planeY);
    const acc = new Float64Array(planeP);
    for (let b = 0; b < batch; b++) {
      toPlanes(dy, b, outH, outW, Co, dyp, outH, outW, 0, 0, 0, outH, 0, outW);
      for (let c = 0; c < Ci; c++) {
        acc.fill(0);
        for (let m = 0; m < M; m++) {
          const d = c * M + m;
          for (let oy = 0; oy < outH; oy++) {
            const yi0 = d * planeY + oy * outW;
            for (let r = 0; r < fh; r++) {
              const row = (oy * sh + r) * Wp;
              for (let s = 0; s < fw; s++) {
                const wv = wr[d * F + r * fw + (fw - 1 - s)];
                for (let ox = 0, ai = row + s; ox < outW; ox++, ai += sw) acc[ai] += wv * dyp[yi0 + ox];
              }
            }
          }
        }
        // crop: dx[iy, ix] = acc[iy + pt, ix + pl] (0 where no window reaches)
        const dxBase = c * planeX;
        for (let iy = 0; iy < inH; iy++) {
          const py = iy + padTop;
          const o0 = dxBase + iy * inW;
          for (let ix = 0; ix < inW; ix++) {
            const px = ix + padLeft;
            dx[o0 + ix] = py < Hp && px < Wp ? acc[py * Wp + px] : 0;
          }
        }
      }
      fromPlanes(dx, out, b, inH, inW, Ci);
    }
  }
}

/**
 * Copy batch element b of an NHWC array [*, H, W, C] into channel planes [C][Hp][Wp] at offset (py, px), copying
 * rows yLo..yHi-1 and columns xLo..xHi-1 of the source (the part that falls inside the plane).
 */
export function toPlanes(
  src: Float32Array, b: number, H: number, W: number, C: number,
  dst: Float32Array, Hp: number, Wp: number, py: number, px: number,
  yLo: number, yHi: number, xLo: number, xHi: number,
): void {
  const plane = Hp * Wp;
  for (let y = yLo; y < yHi; y++) {
    let si = ((b * H + y) * W + xLo) * C;
    let di = (y + py) * Wp + px + xLo;
    for (let x = xLo; x < xHi; x++, di++) {
      for (let c = 0, dc = di; c < C; c++, dc += plane) dst[dc] = src[si++];
    }
  }
}

/** Write channel planes [C][H][W] into batch element b of an NHWC array. */
export function fromPlanes(src: Float64Array, dst: Float32Array, b: number, H: number, W: number, C: number): void {
  const plane = H * W;
  let di = b * plane * C;
  for (let p = 0; p < plane; p++) {
    for (let c = 0, si = p; c < C; c++, si += plane) dst[di++] = src[si];
  }
}
