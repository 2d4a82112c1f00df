/*
 * WebAssembly SIMD (wasm_simd128.h) versions of libjpeg-turbo 2.1.5's hot decoder stages, plugged in through its own
 * jsimd_* dispatch (jddctmgr.c, jdsample.c, jdcolor.c ask jsimd_can_*; the stubs of jsimd_none.c answer for the
 * rest). Each one computes exactly what the C function it replaces computes, in the same integer arithmetic, so
 * the pixels are the C build's (and sharp's and Pillow's) to the bit:
 *
 * - jsimd_idct_islow = jidctint.c jpeg_idct_islow: 32-bit lanes, the same constants, the same DESCALE rounding,
 *   the same wrap-around of the range-limit table (x & 1023), and its two short cuts (a column whose AC terms are
 *   zero, a row whose AC terms are zero) are reproduced lane by lane, so even overflowing coefficients of a broken
 *   file give the C result (JLONG is 32-bit on wasm32, like these lanes).
 * - jsimd_idct_4x4 / jsimd_idct_2x2 = jidctred.c jpeg_idct_4x4 / jpeg_idct_2x2 (decodes at 1/2 and 1/4), the same way.
 * - jsimd_h2v1_fancy_upsample / jsimd_h2v2_fancy_upsample = jdsample.c's triangle filters (16-bit lanes are
 *   enough: at most 16 * 255).
 * - jsimd_ycc_rgb_convert = jdcolext.c ycc_rgb_convert_internal with jdcolor.c's tables computed in 32-bit lanes.
 *
 * Only whole blocks of 8 or 16 columns inside the row go through SIMD; edges and tails run the scalar formula, so
 * nothing is read or written outside what the C code touches.
 * Measured (2026-11-30, 2-core box, 500x375 q90 4:2:0, node 20): see src/data/jpeg.ts.
 */
#define JPEG_INTERNALS
#include "jinclude.h"
#include "jpeglib.h"
#include "jsimd.h"
#include "jdct.h"
#include "jsimddct.h"
#include <wasm_simd128.h>

/* ------------------------------------------------------------------------------------------------------------ */
/* islow IDCT (jidctint.c) */

#define CONST_BITS 13
#define PASS1_BITS 2

#define I32(c) wasm_i32x4_splat(c)
#define ADD wasm_i32x4_add
#define SUB wasm_i32x4_sub
#define MUL wasm_i32x4_mul

/* One 8-point pass of jpeg_idct_islow on four columns (or rows) at once; out = DESCALE(..., shift). */
static inline void idct8(const v128_t *in, v128_t *out, int shift) {
  v128_t z1, z2, z3, z4, z5, tmp0, tmp1, tmp2, tmp3, tmp10, tmp11, tmp12, tmp13;
  z2 = in[2];
  z3 = in[6];
  z1 = MUL(ADD(z2, z3), I32(4433));                /* FIX_0_541196100 */
  tmp2 = ADD(z1, MUL(z3, I32(-15137)));            /* -FIX_1_847759065 */
  tmp3 = ADD(z1, MUL(z2, I32(6270)));              /* FIX_0_765366865 */
  z2 = in[0];
  z3 = in[4];
  tmp0 = wasm_i32x4_shl(ADD(z2, z3), CONST_BITS);
  tmp1 = wasm_i32x4_shl(SUB(z2, z3), CONST_BITS);
  tmp10 = ADD(tmp0, tmp3);
  tmp13 = SUB(tmp0, tmp3);
  tmp11 = ADD(tmp1, tmp2);
  tmp12 = SUB(tmp1, tmp2);

  tmp0 = in[7];
  tmp1 = in[5];
  tmp2 = in[3];
  tmp3 = in[1];
  z1 = ADD(tmp0, tmp3);
  z2 = ADD(tmp1, tmp2);
  z3 = ADD(tmp0, tmp2);
  z4 = ADD(tmp1, tmp3);
  z5 = MUL(ADD(z3, z4), I32(9633));                /* FIX_1_175875602 */
  tmp0 = MUL(tmp0, I32(2446));                     /* FIX_0_298631336 */
  tmp1 = MUL(tmp1, I32(16819));                    /* FIX_2_053119869 */
  tmp2 = MUL(tmp2, I32(25172));                    /* FIX_3_072711026 */
  tmp3 = MUL(tmp3, I32(12299));                    /* FIX_1_501321110 */
  z1 = MUL(z1, I32(-7373));                        /* -FIX_0_899976223 */
  z2 = MUL(z2, I32(-20995));                       /* -FIX_2_562915447 */
  z3 = MUL(z3, I32(-16069));                       /* -FIX_1_961570560 */
  z4 = MUL(z4, I32(-3196));                        /* -FIX_0_390180644 */
  z3 = ADD(z3, z5);
  z4 = ADD(z4, z5);
  tmp0 = ADD(tmp0, ADD(z1, z3));
  tmp1 = ADD(tmp1, ADD(z2, z4));
  tmp2 = ADD(tmp2, ADD(z2, z3));
  tmp3 = ADD(tmp3, ADD(z1, z4));

  const v128_t round = I32(1 << (shift - 1));
  tmp10 = ADD(tmp10, round);
  tmp11 = ADD(tmp11, round);
  tmp12 = ADD(tmp12, round);
  tmp13 = ADD(tmp13, round);
  out[0] = wasm_i32x4_shr(ADD(tmp10, tmp3), shift);
  out[7] = wasm_i32x4_shr(SUB(tmp10, tmp3), shift);
  out[1] = wasm_i32x4_shr(ADD(tmp11, tmp2), shift);
  out[6] = wasm_i32x4_shr(SUB(tmp11, tmp2), shift);
  out[2] = wasm_i32x4_shr(ADD(tmp12, tmp1), shift);
  out[5] = wasm_i32x4_shr(SUB(tmp12, tmp1), shift);
  out[3] = wasm_i32x4_shr(ADD(tmp13, tmp0), shift);
  out[4] = wasm_i32x4_shr(SUB(tmp13, tmp0), shift);
}

/* 4x4 transpose of 32-bit lanes: rows a..d become columns. */
static inline void transpose4(v128_t a, v128_t b, v128_t c, v128_t d, v128_t *o0, v128_t *o1, v128_t *o2, v128_t *o3) {
  v128_t t0 = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5);
  v128_t t1 = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5);
  v128_t t2 = wasm_i32x4_shuffle(a, b, 2, 6, 3, 7);
  v128_t t3 = wasm_i32x4_shuffle(c, d, 2, 6, 3, 7);
  *o0 = wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5);
  *o1 = wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7);
  *o2 = wasm_i32x4_shuffle(t2, t3, 0, 1, 4, 5);
  *o3 = wasm_i32x4_shuffle(t2, t3, 2, 3, 6, 7);
}

/* The post-IDCT range limit: range_limit[x & RANGE_MASK] of jdmaster.c's table, as ((x & 1023) ^ 512) - 384
 * saturated to 0..255 by the narrowing that follows (x & 1023 in 0..511 gives x + 128, 512..1023 wraps below 0). */
static inline v128_t range_limit(v128_t x) {
  return SUB(wasm_v128_xor(wasm_v128_and(x, I32(1023)), I32(512)), I32(384));
}

GLOBAL(int)
jsimd_can_idct_islow(void)
{
  return DCTSIZE == 8 && BITS_IN_JSAMPLE == 8 && sizeof(JCOEF) == 2 && sizeof(ISLOW_MULT_TYPE) == 2;
}

GLOBAL(void)
jsimd_idct_islow(j_decompress_ptr cinfo, jpeg_component_info *compptr,
                 JCOEFPTR coef_block, JSAMPARRAY output_buf,
                 JDIMENSION output_col)
{
  (void)cinfo;
  const ISLOW_MULT_TYPE *quant = (const ISLOW_MULT_TYPE *)compptr->dct_table;
  v128_t c[8], ws[8][2], col[8][2], out[8][2];
  int k;

  /* Pass 1: columns in lanes (columns 0-3 in [k][0], 4-7 in [k][1]); ws[k][g] = workspace row k. */
  v128_t ac = wasm_i16x8_splat(0);
  for (k = 0; k < 8; k++) {
    c[k] = wasm_v128_load(coef_block + 8 * k);
    if (k) ac = wasm_v128_or(ac, c[k]);
  }
  const v128_t q0 = wasm_v128_load(quant);
  v128_t dc[2] = { wasm_i32x4_shl(wasm_i32x4_extmul_low_i16x8(c[0], q0), PASS1_BITS),
                   wasm_i32x4_shl(wasm_i32x4_extmul_high_i16x8(c[0], q0), PASS1_BITS) };
  if (!wasm_v128_any_true(ac)) {
    /* every column takes jpeg_idct_islow's "AC terms all zero" short cut */
    for (k = 0; k < 8; k++) { ws[k][0] = dc[0]; ws[k][1] = dc[1]; }
  } else {
    v128_t in[2][8], o[2][8];
    for (k = 0; k < 8; k++) {
      const v128_t q = wasm_v128_load(quant + 8 * k);
      in[0][k] = wasm_i32x4_extmul_low_i16x8(c[k], q);
      in[1][k] = wasm_i32x4_extmul_high_i16x8(c[k], q);
    }
    idct8(in[0], o[0], CONST_BITS - PASS1_BITS);
    idct8(in[1], o[1], CONST_BITS - PASS1_BITS);
    const v128_t zero16 = wasm_i16x8_eq(ac, wasm_i16x8_splat(0));
    const v128_t zmask[2] = { wasm_i32x4_extend_low_i16x8(zero16), wasm_i32x4_extend_high_i16x8(zero16) };
    for (k = 0; k < 8; k++) {
      ws[k][0] = wasm_v128_bitselect(dc[0], o[0][k], zmask[0]);
      ws[k][1] = wasm_v128_bitselect(dc[1], o[1][k], zmask[1]);
    }
  }

  /* Rows in lanes: col[k][h] = workspace column k, rows 4h..4h+3. */
  transpose4(ws[0][0], ws[1][0], ws[2][0], ws[3][0], &col[0][0], &col[1][0], &col[2][0], &col[3][0]);
  transpose4(ws[0][1], ws[1][1], ws[2][1], ws[3][1], &col[4][0], &col[5][0], &col[6][0], &col[7][0]);
  transpose4(ws[4][0], ws[5][0], ws[6][0], ws[7][0], &col[0][1], &col[1][1], &col[2][1], &col[3][1]);
  transpose4(ws[4][1], ws[5][1], ws[6][1], ws[7][1], &col[4][1], &col[5][1], &col[6][1], &col[7][1]);

  /* Pass 2: four rows at a time; a row whose AC terms are zero takes DESCALE(wsptr[0], PASS1_BITS + 3). */
  for (int h = 0; h < 2; h++) {
    v128_t in[8], o[8];
    v128_t rac = col[1][h];
    for (k = 0; k < 8; k++) in[k] = col[k][h];
    for (k = 2; k < 8; k++) rac = wasm_v128_or(rac, col[k][h]);
    const v128_t rdc = wasm_i32x4_shr(ADD(col[0][h], I32(1 << (PASS1_BITS + 2))), PASS1_BITS + 3);
    const v128_t zmask = wasm_i32x4_eq(rac, I32(0));
    idct8(in, o, CONST_BITS + PASS1_BITS + 3);
    for (k = 0; k < 8; k++) out[k][h] = range_limit(wasm_v128_bitselect(rdc, o[k], zmask));
  }

  /* out[k][h]: output column k for rows 4h..4h+3. Narrow to bytes (B[j]: column 2j rows 0-7, column 2j+1 rows
   * 0-7) and transpose 8x8 bytes into rows. */
  v128_t B[4];
  for (int j = 0; j < 4; j++) {
    const v128_t a = wasm_i16x8_narrow_i32x4(out[2 * j][0], out[2 * j][1]);
    const v128_t b = wasm_i16x8_narrow_i32x4(out[2 * j + 1][0], out[2 * j + 1][1]);
    B[j] = wasm_u8x16_narrow_i16x8(a, b);
  }
  const v128_t S0 = wasm_i8x16_shuffle(B[0], B[1], 0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
  const v128_t S1 = wasm_i8x16_shuffle(B[0], B[1], 4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
  const v128_t S2 = wasm_i8x16_shuffle(B[2], B[3], 0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27);
  const v128_t S3 = wasm_i8x16_shuffle(B[2], B[3], 4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31);
  const v128_t R01 = wasm_i8x16_shuffle(S0, S2, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const v128_t R23 = wasm_i8x16_shuffle(S0, S2, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  const v128_t R45 = wasm_i8x16_shuffle(S1, S3, 0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const v128_t R67 = wasm_i8x16_shuffle(S1, S3, 8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  wasm_v128_store64_lane(output_buf[0] + output_col, R01, 0);
  wasm_v128_store64_lane(output_buf[1] + output_col, R01, 1);
  wasm_v128_store64_lane(output_buf[2] + output_col, R23, 0);
  wasm_v128_store64_lane(output_buf[3] + output_col, R23, 1);
  wasm_v128_store64_lane(output_buf[4] + output_col, R45, 0);
  wasm_v128_store64_lane(output_buf[5] + output_col, R45, 1);
  wasm_v128_store64_lane(output_buf[6] + output_col, R67, 0);
  wasm_v128_store64_lane(output_buf[7] + output_col, R67, 1);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Reduced-size IDCTs (jidctred.c), used when decoding at 1/2 (4x4 for every component of a 4:4:4 file, for the
 * luma of 4:2:0, whose chroma then takes the full islow IDCT above) and 1/4 (2x2 luma, 4x4 chroma). Same integer
 * arithmetic as the C code: pass 1 on columns in lanes (the C code skips column 4 (4x4) or columns 2, 4, 6 (2x2),
 * which pass 2 never reads; our lanes compute them and drop them), its "AC terms all zero" short cut per column
 * by bitselect, pass 2 on rows in lanes with its zero-row short cut, DESCALE rounding and range_limit as above. */

#define FIX_0_211164243 1730
#define FIX_0_509795579 4176
#define FIX_0_601344887 4926
#define FIX_0_720959822 5906
#define FIX_0_765366865 6270
#define FIX_0_850430095 6967
#define FIX_0_899976223 7373
#define FIX_1_061594337 8697
#define FIX_1_272758580 10426
#define FIX_1_451774981 11893
#define FIX_1_847759065 15137
#define FIX_2_172734803 17799
#define FIX_2_562915447 20995
#define FIX_3_624509785 29692

static inline v128_t descale(v128_t x, int n) { return wasm_i32x4_shr(ADD(x, I32(1 << (n - 1))), n); }

/* jpeg_idct_4x4's 4-point pass on dequantized (pass 1) or workspace (pass 2) values x0..x7 (x4 unused):
 * o0..o3 = DESCALE(tmp10 + tmp2, n), DESCALE(tmp12 + tmp0, n), DESCALE(tmp12 - tmp0, n), DESCALE(tmp10 - tmp2, n). */
static inline void idct4(const v128_t *x, v128_t *o, int n) {
  const v128_t t0 = wasm_i32x4_shl(x[0], CONST_BITS + 1);
  const v128_t t2 = ADD(MUL(x[2], I32(FIX_1_847759065)), MUL(x[6], I32(-FIX_0_765366865)));
  const v128_t tmp10 = ADD(t0, t2), tmp12 = SUB(t0, t2);
  const v128_t z1 = x[7], z2 = x[5], z3 = x[3], z4 = x[1];
  const v128_t tmp0 = ADD(ADD(MUL(z1, I32(-FIX_0_211164243)), MUL(z2, I32(FIX_1_451774981))),
                          ADD(MUL(z3, I32(-FIX_2_172734803)), MUL(z4, I32(FIX_1_061594337))));
  const v128_t tmp2 = ADD(ADD(MUL(z1, I32(-FIX_0_509795579)), MUL(z2, I32(-FIX_0_601344887))),
                          ADD(MUL(z3, I32(FIX_0_899976223)), MUL(z4, I32(FIX_2_562915447))));
  o[0] = descale(ADD(tmp10, tmp2), n);
  o[3] = descale(SUB(tmp10, tmp2), n);
  o[1] = descale(ADD(tmp12, tmp0), n);
  o[2] = descale(SUB(tmp12, tmp0), n);
}

GLOBAL(int)
jsimd_can_idct_4x4(void)
{
  return DCTSIZE == 8 && BITS_IN_JSAMPLE == 8 && sizeof(JCOEF) == 2 && sizeof(ISLOW_MULT_TYPE) == 2;
}

GLOBAL(void)
jsimd_idct_4x4(j_decompress_ptr cinfo, jpeg_component_info *compptr,
               JCOEFPTR coef_block, JSAMPARRAY output_buf,
               JDIMENSION output_col)
{
  (void)cinfo;
  const ISLOW_MULT_TYPE *quant = (const ISLOW_MULT_TYPE *)compptr->dct_table;
  v128_t c[8], in[2][8], ws[2][4], col[8], out[4];
  int k, g;

  /* Pass 1: ws[g][r] = workspace row r, columns 4g..4g+3. A column whose rows 1, 2, 3, 5, 6, 7 are zero takes
   * DEQUANTIZE(row 0) << PASS1_BITS. */
  v128_t ac = wasm_i16x8_splat(0);
  for (k = 0; k < 8; k++) {
    c[k] = wasm_v128_load(coef_block + 8 * k);
    if (k && k != 4) ac = wasm_v128_or(ac, c[k]);
  }
  for (k = 0; k < 8; k++) {
    const v128_t q = wasm_v128_load(quant + 8 * k);
    in[0][k] = wasm_i32x4_extmul_low_i16x8(c[k], q);
    in[1][k] = wasm_i32x4_extmul_high_i16x8(c[k], q);
  }
  const v128_t zero16 = wasm_i16x8_eq(ac, wasm_i16x8_splat(0));
  const v128_t zmask[2] = { wasm_i32x4_extend_low_i16x8(zero16), wasm_i32x4_extend_high_i16x8(zero16) };
  for (g = 0; g < 2; g++) {
    v128_t o[4];
    const v128_t dc = wasm_i32x4_shl(in[g][0], PASS1_BITS);
    idct4(in[g], o, CONST_BITS - PASS1_BITS + 1);
    for (k = 0; k < 4; k++) ws[g][k] = wasm_v128_bitselect(dc, o[k], zmask[g]);
  }

  /* Rows in lanes: col[j] = workspace column j, rows 0..3. */
  transpose4(ws[0][0], ws[0][1], ws[0][2], ws[0][3], &col[0], &col[1], &col[2], &col[3]);
  transpose4(ws[1][0], ws[1][1], ws[1][2], ws[1][3], &col[4], &col[5], &col[6], &col[7]);

  /* Pass 2; a row whose columns 1, 2, 3, 5, 6, 7 are zero takes DESCALE(wsptr[0], PASS1_BITS + 3). */
  v128_t rac = wasm_v128_or(wasm_v128_or(col[1], col[2]), wasm_v128_or(col[3], col[5]));
  rac = wasm_v128_or(rac, wasm_v128_or(col[6], col[7]));
  const v128_t rmask = wasm_i32x4_eq(rac, I32(0));
  const v128_t rdc = descale(col[0], PASS1_BITS + 3);
  idct4(col, out, CONST_BITS + PASS1_BITS + 3 + 1);
  for (k = 0; k < 4; k++) out[k] = range_limit(wasm_v128_bitselect(rdc, out[k], rmask));

  /* out[j]: output column j, rows 0..3 -> bytes (column-major), transposed into rows. */
  const v128_t b = wasm_u8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(out[0], out[1]), wasm_i16x8_narrow_i32x4(out[2], out[3]));
  const v128_t rows = wasm_i8x16_shuffle(b, b, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  wasm_v128_store32_lane(output_buf[0] + output_col, rows, 0);
  wasm_v128_store32_lane(output_buf[1] + output_col, rows, 1);
  wasm_v128_store32_lane(output_buf[2] + output_col, rows, 2);
  wasm_v128_store32_lane(output_buf[3] + output_col, rows, 3);
}

/* jpeg_idct_2x2's 2-point pass: o0, o1 = DESCALE(tmp10 +- tmp0, n) on x0, x1, x3, x5, x7. */
static inline void idct2(v128_t x0, v128_t x1, v128_t x3, v128_t x5, v128_t x7, v128_t *o0, v128_t *o1, int n) {
  const v128_t tmp10 = wasm_i32x4_shl(x0, CONST_BITS + 2);
  const v128_t tmp0 = ADD(ADD(MUL(x7, I32(-FIX_0_720959822)), MUL(x5, I32(FIX_0_850430095))),
                          ADD(MUL(x3, I32(-FIX_1_272758580)), MUL(x1, I32(FIX_3_624509785))));
  *o0 = descale(ADD(tmp10, tmp0), n);
  *o1 = descale(SUB(tmp10, tmp0), n);
}

GLOBAL(int)
jsimd_can_idct_2x2(void)
{
  return DCTSIZE == 8 && BITS_IN_JSAMPLE == 8 && sizeof(JCOEF) == 2 && sizeof(ISLOW_MULT_TYPE) == 2;
}

GLOBAL(void)
jsimd_idct_2x2(j_decompress_ptr cinfo, jpeg_component_info *compptr,
               JCOEFPTR coef_block, JSAMPARRAY output_buf,
               JDIMENSION output_col)
{
  (void)cinfo;
  const ISLOW_MULT_TYPE *quant = (const ISLOW_MULT_TYPE *)compptr->dct_table;
  static const int rows_used[5] = { 0, 1, 3, 5, 7 };
  v128_t in[2][5], ws[2][2];
  int k, g;

  /* Pass 1 (rows 0, 1, 3, 5, 7 of every column); a column whose rows 1, 3, 5, 7 are zero takes
   * DEQUANTIZE(row 0) << PASS1_BITS. ws[g][r] = workspace row r, columns 4g..4g+3. */
  v128_t ac = wasm_i16x8_splat(0);
  for (k = 0; k < 5; k++) {
    const v128_t cf = wasm_v128_load(coef_block + 8 * rows_used[k]);
    const v128_t q = wasm_v128_load(quant + 8 * rows_used[k]);
    if (k) ac = wasm_v128_or(ac, cf);
    in[0][k] = wasm_i32x4_extmul_low_i16x8(cf, q);
    in[1][k] = wasm_i32x4_extmul_high_i16x8(cf, q);
  }
  const v128_t zero16 = wasm_i16x8_eq(ac, wasm_i16x8_splat(0));
  const v128_t zmask[2] = { wasm_i32x4_extend_low_i16x8(zero16), wasm_i32x4_extend_high_i16x8(zero16) };
  for (g = 0; g < 2; g++) {
    v128_t o0, o1;
    const v128_t dc = wasm_i32x4_shl(in[g][0], PASS1_BITS);
    idct2(in[g][0], in[g][1], in[g][2], in[g][3], in[g][4], &o0, &o1, CONST_BITS - PASS1_BITS + 2);
    ws[g][0] = wasm_v128_bitselect(dc, o0, zmask[g]);
    ws[g][1] = wasm_v128_bitselect(dc, o1, zmask[g]);
  }

  /* Pass 2 with rows in lanes 0 and 1 (lanes 2, 3 repeat them): wsptr[j] of row r is lane j % 4 of ws[j / 4][r]. */
  const v128_t x0 = wasm_i32x4_shuffle(ws[0][0], ws[0][1], 0, 4, 0, 4);
  const v128_t x1 = wasm_i32x4_shuffle(ws[0][0], ws[0][1], 1, 5, 1, 5);
  const v128_t x3 = wasm_i32x4_shuffle(ws[0][0], ws[0][1], 3, 7, 3, 7);
  const v128_t x5 = wasm_i32x4_shuffle(ws[1][0], ws[1][1], 1, 5, 1, 5);
  const v128_t x7 = wasm_i32x4_shuffle(ws[1][0], ws[1][1], 3, 7, 3, 7);
  const v128_t rmask = wasm_i32x4_eq(wasm_v128_or(wasm_v128_or(x1, x3), wasm_v128_or(x5, x7)), I32(0));
  const v128_t rdc = descale(x0, PASS1_BITS + 3);
  v128_t o0, o1;
  idct2(x0, x1, x3, x5, x7, &o0, &o1, CONST_BITS + PASS1_BITS + 3 + 2);
  o0 = range_limit(wasm_v128_bitselect(rdc, o0, rmask));
  o1 = range_limit(wasm_v128_bitselect(rdc, o1, rmask));
  /* bytes: 0, 1 = column 0 of rows 0, 1; 4, 5 = column 1 of rows 0, 1 */
  const v128_t a = wasm_i16x8_narrow_i32x4(o0, o1);
  const v128_t b = wasm_u8x16_narrow_i16x8(a, a);
  const v128_t rows = wasm_i8x16_shuffle(b, b, 0, 4, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  wasm_v128_store16_lane(output_buf[0] + output_col, rows, 0);
  wasm_v128_store16_lane(output_buf[1] + output_col, rows, 1);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Fancy upsampling (jdsample.c). With the edge columns replicated, both filters are one formula per column i:
 *   h2v1: out[2i] = (3 in[i] + in[i-1] + 1) >> 2,   out[2i+1] = (3 in[i] + in[i+1] + 2) >> 2
 *   h2v2: s = 3 near + far (per column); out[2i] = (3 s[i] + s[i-1] + 8) >> 4, out[2i+1] = (3 s[i] + s[i+1] + 7) >> 4
 * (at i = 0 the C code's (4 s[0] + 8) >> 4 is this with s[-1] = s[0]; likewise at the last column). SIMD takes
 * blocks of 8 columns i..i+7 with 1 <= i and i + 8 < width, so its loads stay inside the row. */

static inline v128_t interleave_store(unsigned char *dst, v128_t even16, v128_t odd16) {
  const v128_t b = wasm_u8x16_narrow_i16x8(even16, odd16);
  const v128_t r = wasm_i8x16_shuffle(b, b, 0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  wasm_v128_store(dst, r);
  return r;
}

static void h2v1_row(const JSAMPLE *in, JSAMPLE *out, int w) {
  int i = 0;
  #define H2V1(i) do { \
      const int v = in[i] * 3, l = in[(i) > 0 ? (i) - 1 : 0], r = in[(i) + 1 < w ? (i) + 1 : w - 1]; \
      out[2 * (i)] = (JSAMPLE)((v + l + 1) >> 2); \
      out[2 * (i) + 1] = (JSAMPLE)((v + r + 2) >> 2); \
    } while (0)
  H2V1(0);
  const v128_t one = wasm_i16x8_splat(1), two = wasm_i16x8_splat(2), three = wasm_i16x8_splat(3);
  for (i = 1; i + 8 < w; i += 8) {
    const v128_t c = wasm_i16x8_mul(wasm_u16x8_load8x8(in + i), three);
    const v128_t l = wasm_u16x8_load8x8(in + i - 1);
    const v128_t r = wasm_u16x8_load8x8(in + i + 1);
    interleave_store(out + 2 * i, wasm_u16x8_shr(wasm_i16x8_add(wasm_i16x8_add(c, l), one), 2),
                     wasm_u16x8_shr(wasm_i16x8_add(wasm_i16x8_add(c, r), two), 2));
  }
  for (; i < w; i++) H2V1(i);
  #undef H2V1
}

GLOBAL(int)
jsimd_can_h2v1_fancy_upsample(void)
{
  return BITS_IN_JSAMPLE == 8;
}

GLOBAL(void)
jsimd_h2v1_fancy_upsample(j_decompress_ptr cinfo, jpeg_component_info *compptr,
                          JSAMPARRAY input_data, JSAMPARRAY *output_data_ptr)
{
  JSAMPARRAY output_data = *output_data_ptr;
  for (int inrow = 0; inrow < cinfo->max_v_samp_factor; inrow++)
    h2v1_row(input_data[inrow], output_data[inrow], (int)compptr->downsampled_width);
}

static void h2v2_row(const JSAMPLE *near, const JSAMPLE *far, JSAMPLE *out, int w) {
  int i = 0;
  #define S(j) (near[j] * 3 + far[j])
  #define H2V2(i) do { \
      const int v = S(i) * 3, l = S((i) > 0 ? (i) - 1 : 0), r = S((i) + 1 < w ? (i) + 1 : w - 1); \
      out[2 * (i)] = (JSAMPLE)((v + l + 8) >> 4); \
      out[2 * (i) + 1] = (JSAMPLE)((v + r + 7) >> 4); \
    } while (0)
  H2V2(0);
  const v128_t three = wasm_i16x8_splat(3), seven = wasm_i16x8_splat(7), eight = wasm_i16x8_splat(8);
  for (i = 1; i + 8 < w; i += 8) {
    const v128_t l = wasm_i16x8_add(wasm_i16x8_mul(wasm_u16x8_load8x8(near + i - 1), three), wasm_u16x8_load8x8(far + i - 1));
    const v128_t c = wasm_i16x8_add(wasm_i16x8_mul(wasm_u16x8_load8x8(near + i), three), wasm_u16x8_load8x8(far + i));
    const v128_t r = wasm_i16x8_add(wasm_i16x8_mul(wasm_u16x8_load8x8(near + i + 1), three), wasm_u16x8_load8x8(far + i + 1));
    const v128_t c3 = wasm_i16x8_mul(c, three);
    interleave_store(out + 2 * i, wasm_u16x8_shr(wasm_i16x8_add(wasm_i16x8_add(c3, l), eight), 4),
                     wasm_u16x8_shr(wasm_i16x8_add(wasm_i16x8_add(c3, r), seven), 4));
  }
  for (; i < w; i++) H2V2(i);
  #undef H2V2
  #undef S
}

GLOBAL(int)
jsimd_can_h2v2_fancy_upsample(void)
{
  return BITS_IN_JSAMPLE == 8;
}

GLOBAL(void)
jsimd_h2v2_fancy_upsample(j_decompress_ptr cinfo, jpeg_component_info *compptr,
                          JSAMPARRAY input_data, JSAMPARRAY *output_data_ptr)
{
  JSAMPARRAY output_data = *output_data_ptr;
  int inrow = 0, outrow = 0;
  while (outrow < cinfo->max_v_samp_factor) {
    /* nearest input row, then the row above (v = 0) or below (v = 1) */
    h2v2_row(input_data[inrow], input_data[inrow - 1], output_data[outrow++], (int)compptr->downsampled_width);
    h2v2_row(input_data[inrow], input_data[inrow + 1], output_data[outrow++], (int)compptr->downsampled_width);
    inrow++;
  }
}

/* ------------------------------------------------------------------------------------------------------------ */
/* YCbCr -> RGB (jdcolor.c build_ycc_rgb_table + jdcolext.c), the tables' entries computed in 32-bit lanes:
 *   R = y + ((FIX(1.402) (cr-128) + ONE_HALF) >> 16)      B = y + ((FIX(1.772) (cb-128) + ONE_HALF) >> 16)
 *   G = y + ((-FIX(0.34414) (cb-128) + ONE_HALF - FIX(0.71414) (cr-128)) >> 16)
 * each clamped to 0..255 (sample_range_limit). */

#define SCALEBITS 16
#define ONE_HALF ((JLONG)1 << (SCALEBITS - 1))
#undef FIX
#define FIX(x) ((JLONG)((x) * (1L << SCALEBITS) + 0.5))

static inline JSAMPLE clamp255(int v) { return (JSAMPLE)(v < 0 ? 0 : v > 255 ? 255 : v); }

/* Offsets (R, G, B) from y for 4 pixels; x_cb, x_cr in -128..127. */
static inline void ycc_offsets(v128_t x_cb, v128_t x_cr, v128_t *r, v128_t *g, v128_t *b) {
  const v128_t half = I32(ONE_HALF);
  *r = wasm_i32x4_shr(ADD(MUL(x_cr, I32(FIX(1.40200))), half), SCALEBITS);
  *b = wasm_i32x4_shr(ADD(MUL(x_cb, I32(FIX(1.77200))), half), SCALEBITS);
  *g = wasm_i32x4_shr(ADD(ADD(MUL(x_cb, I32(-FIX(0.34414))), half), MUL(x_cr, I32(-FIX(0.71414)))), SCALEBITS);
}

GLOBAL(int)
jsimd_can_ycc_rgb(void)
{
  return BITS_IN_JSAMPLE == 8;
}

GLOBAL(void)
jsimd_ycc_rgb_convert(j_decompress_ptr cinfo, JSAMPIMAGE input_buf,
                      JDIMENSION input_row, JSAMPARRAY output_buf,
                      int num_rows)
{
  const int n = (int)cinfo->output_width;
  const int ps = rgb_pixelsize[cinfo->out_color_space];
  const int ro = rgb_red[cinfo->out_color_space], go = rgb_green[cinfo->out_color_space],
            bo = rgb_blue[cinfo->out_color_space];
  const int packed_rgb = ps == 3 && ro == 0 && go == 1 && bo == 2;
  const v128_t c128 = wasm_i16x8_splat(128);
  while (--num_rows >= 0) {
    const JSAMPLE *yp = input_buf[0][input_row], *cbp = input_buf[1][input_row], *crp = input_buf[2][input_row];
    input_row++;
    JSAMPLE *out = *output_buf++;
    int col = 0;
    if (packed_rgb) {
      for (; col + 16 <= n; col += 16) {
        const v128_t y = wasm_v128_load(yp + col), cb = wasm_v128_load(cbp + col), cr = wasm_v128_load(crp + col);
        v128_t rgb16[3][2];
        for (int half = 0; half < 2; half++) {
          const v128_t y16 = half ? wasm_u16x8_extend_high_u8x16(y) : wasm_u16x8_extend_low_u8x16(y);
          const v128_t cb16 = wasm_i16x8_sub(half ? wasm_u16x8_extend_high_u8x16(cb) : wasm_u16x8_extend_low_u8x16(cb), c128);
          const v128_t cr16 = wasm_i16x8_sub(half ? wasm_u16x8_extend_high_u8x16(cr) : wasm_u16x8_extend_low_u8x16(cr), c128);
          v128_t r0, g0, b0, r1, g1, b1;
          ycc_offsets(wasm_i32x4_extend_low_i16x8(cb16), wasm_i32x4_extend_low_i16x8(cr16), &r0, &g0, &b0);
          ycc_offsets(wasm_i32x4_extend_high_i16x8(cb16), wasm_i32x4_extend_high_i16x8(cr16), &r1, &g1, &b1);
          rgb16[0][half] = wasm_i16x8_add(y16, wasm_i16x8_narrow_i32x4(r0, r1));
          rgb16[1][half] = wasm_i16x8_add(y16, wasm_i16x8_narrow_i32x4(g0, g1));
          rgb16[2][half] = wasm_i16x8_add(y16, wasm_i16x8_narrow_i32x4(b0, b1));
        }
        const v128_t R = wasm_u8x16_narrow_i16x8(rgb16[0][0], rgb16[0][1]);
        const v128_t G = wasm_u8x16_narrow_i16x8(rgb16[1][0], rgb16[1][1]);
        const v128_t B = wasm_u8x16_narrow_i16x8(rgb16[2][0], rgb16[2][1]);
        /* interleave R, G, B into 48 bytes */
        const v128_t RG0 = wasm_i8x16_shuffle(R, G, 0, 16, 0, 1, 17, 0, 2, 18, 0, 3, 19, 0, 4, 20, 0, 5);
        const v128_t o0 = wasm_i8x16_shuffle(RG0, B, 0, 1, 16, 3, 4, 17, 6, 7, 18, 9, 10, 19, 12, 13, 20, 15);
        const v128_t RG1 = wasm_i8x16_shuffle(R, G, 21, 0, 6, 22, 0, 7, 23, 0, 8, 24, 0, 9, 25, 0, 10, 26);
        const v128_t o1 = wasm_i8x16_shuffle(RG1, B, 0, 21, 2, 3, 22, 5, 6, 23, 8, 9, 24, 11, 12, 25, 14, 15);
        const v128_t RG2 = wasm_i8x16_shuffle(R, G, 0, 11, 27, 0, 12, 28, 0, 13, 29, 0, 14, 30, 0, 15, 31, 0);
        const v128_t o2 = wasm_i8x16_shuffle(RG2, B, 26, 1, 2, 27, 4, 5, 28, 7, 8, 29, 10, 11, 30, 13, 14, 31);
        wasm_v128_store(out + 3 * col, o0);
        wasm_v128_store(out + 3 * col + 16, o1);
        wasm_v128_store(out + 3 * col + 32, o2);
      }
    }
    for (; col < n; col++) {
      const int y = yp[col], xb = cbp[col] - 128, xr = crp[col] - 128;
      JSAMPLE *o = out + ps * col;
      o[ro] = clamp255(y + (int)((FIX(1.40200) * xr + ONE_HALF) >> SCALEBITS));
      o[go] = clamp255(y + (int)((-FIX(0.34414) * xb + ONE_HALF + -FIX(0.71414) * xr) >> SCALEBITS));
      o[bo] = clamp255(y + (int)((FIX(1.77200) * xb + ONE_HALF) >> SCALEBITS));
      if (ps == 4) o[6 - ro - go - bo] = 0xFF; /* the opaque alpha byte of the 4-byte layouts */
    }
  }
}
