/**
 * Batched float32 matrix product for tfjs's 'cpu' backend (BatchMatMul: every Linear layer of MambaOut, forward and
 * backward). tfjs's own kernel walks 48-blocks with strided index arithmetic per multiply-add (~0.4 GMAC/s here:
 * 82% of a mambaout_femto training step at batch 8, 224 px). This one packs both operands per K-chunk so that the
 * reduction dimension is contiguous (rows of op(A), columns of op(B)), then runs a 4×4 register-blocked dot-product
 * kernel (16 accumulators in locals), the same scheme as conv2dBackpropFilterNHWC.
 *
 *   C[b] = op(A[b]) · op(B[b]),  op(A) [M, K], op(B) [K, N], op = transpose when the flag is set.
 */

/** Packed-B budget per K-chunk (float32 elements): 64 K = 256 KiB, about L2. */
const CHUNK_ELEMENTS = 1 << 16;
/** Shortest K-chunk, so the dot products stay long when N is large. */
const MIN_KC = 64;

const roundUp4 = (n: number) => (n + 3) & ~3;

export interface MatMulDims {
  /** Batch count of A and of B (equal, or one of them 1: broadcast). */
  batchA: number;
  batchB: number;
  M: number;
  K: number;
  N: number;
  transposeA: boolean;
  transposeB: boolean;
}

/**
 * out[bi] = op(a[bi % batchA]) · op(b[bi % batchB]) for bi < max(batchA, batchB). `a` holds [batchA, M, K] (or
 * [batchA, K, M] when transposeA), `b` [batchB, K, N] (or [batchB, N, K] when transposeB), `out`
 * [max(batchA, batchB), M, N] (overwritten).
 */
export function batchMatMulF32(a: Float32Array, b: Float32Array, d: MatMulDims, out: Float32Array): void {
  const { batchA, batchB, M, K, N, transposeA, transposeB } = d;
  const batch = Math.max(batchA, batchB);
  if (out.length !== batch * M * N) throw new Error(`batchMatMulF32: output has ${out.length} elements, expected ${batch * M * N}`);
  if (K === 0 || out.length === 0) {
    out.fill(0);
    return;
  }
  const Mp = roundUp4(M);
  const Np = roundUp4(N);
  const Kc = Math.min(K, Math.max(MIN_KC, Math.floor(CHUNK_ELEMENTS / Np)));
  // Packed chunks, reduction dim contiguous: Ap[i][kk] = op(A)[i, k0 + kk], Bp[j][kk] = op(B)[k0 + kk, j].
  // Rows M..Mp-1 and N..Np-1 stay zero.
  const Ap = new Float32Array(Mp * Kc);
  const Bp = new Float32Array(Np * Kc);
  const sizeA = M * K;
  const sizeB = K * N;
  const sizeC = M * N;
  for (let bi = 0; bi < batch; bi++) {
    const aOff = (bi % batchA) * sizeA;
    const bOff = (bi % batchB) * sizeB;
    const cOff = bi * sizeC;
    for (let k0 = 0; k0 < K; k0 += Kc) {
      const kc = Math.min(Kc, K - k0);
      // ---- pack
      if (!transposeA) {
        for (let i = 0; i < M; i++) {
          const src = aOff + i * K + k0;
          Ap.set(a.subarray(src, src + kc), i * Kc);
        }
      } else {
        for (let kk = 0; kk < kc; kk++) {
          const src = aOff + (k0 + kk) * M;
          for (let i = 0, dst = kk; i < M; i++, dst += Kc) Ap[dst] = a[src + i];
        }
      }
      if (transposeB) {
        for (let j = 0; j < N; j++) {
          const src = bOff + j * K + k0;
          Bp.set(b.subarray(src, src + kc), j * Kc);
        }
      } else {
        for (let kk = 0; kk < kc; kk++) {
          const src = bOff + (k0 + kk) * N;
          for (let j = 0, dst = kk; j < N; j++, dst += Kc) Bp[dst] = b[src + j];
        }
      }
      const first = k0 === 0;
      // ---- 4×4 blocks of C (the block of conv2d_backprop_filter.ts, inlined in both on purpose: see there)
      for (let i = 0; i < Mp; i += 4) {
        const a0 = i * Kc;
        const a1 = a0 + Kc;
        const a2 = a1 + Kc;
        const a3 = a2 + Kc;
        const fullRows = i + 4 <= M;
        for (let j = 0; j < Np; j += 4) {
          const b0 = j * Kc;
          const b1 = b0 + Kc;
          const b2 = b1 + Kc;
          const b3 = b2 + Kc;
          let s00 = 0, s01 = 0, s02 = 0, s03 = 0;
          let s10 = 0, s11 = 0, s12 = 0, s13 = 0;
          let s20 = 0, s21 = 0, s22 = 0, s23 = 0;
          let s30 = 0, s31 = 0, s32 = 0, s33 = 0;
          for (let p = 0; p < kc; p++) {
            const x0 = Ap[a0 + p], x1 = Ap[a1 + p], x2 = Ap[a2 + p], x3 = Ap[a3 + p];
            const y0 = Bp[b0 + p], y1 = Bp[b1 + p], y2 = Bp[b2 + p], y3 = Bp[b3 + p];
            s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3;
            s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3;
            s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3;
            s30 += x3 * y0; s31 += x3 * y1; s32 += x3 * y2; s33 += x3 * y3;
          }
          if (fullRows && j + 4 <= N) {
            let o = cOff + i * N + j;
            if (first) {
              out[o] = s00; out[o + 1] = s01; out[o + 2] = s02; out[o + 3] = s03; o += N;
              out[o] = s10; out[o + 1] = s11; out[o + 2] = s12; out[o + 3] = s13; o += N;
              out[o] = s20; out[o + 1] = s21; out[o + 2] = s22; out[o + 3] = s23; o += N;
              out[o] = s30; out[o + 1] = s31; out[o + 2] = s32; out[o + 3] = s33;
            } else {
              out[o] += s00; out[o + 1] += s01; out[o + 2] += s02; out[o + 3] += s03; o += N;
              out[o] += s10; out[o + 1] += s11; out[o + 2] += s12; out[o + 3] += s13; o += N;
              out[o] += s20; out[o + 1] += s21; out[o + 2] += s22; out[o + 3] += s23; o += N;
              out[o] += s30; out[o + 1] += s31; out[o + 2] += s32; out[o + 3] += s33;
            }
          } else {
            // edge block: store only the entries inside C
            const s = [s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33];
            for (let r = 0; r < 4 && i + r < M; r++) {
              for (let c = 0; c < 4 && j + c < N; c++) {
                const o = cOff + (i + r) * N + j + c;
                out[o] = first ? s[r * 4 + c] : out[o] + s[r * 4 + c];
              }
            }
          }
        }
      }
    }
  }
}
