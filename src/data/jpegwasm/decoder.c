/*
 * The C side of src/data/jpeg.ts: a small decompression API over libjpeg-turbo 2.1.5, compiled to wasm32 by
 * scripts/build_jpeg_wasm.sh. It does what TurboJPEG's tjDecompressHeader3 + tjDecompress2 did for us (the
 * @cwasm/jpeg-turbo package before): islow IDCT, fancy upsampling, RGB output, DCT scaling 1/1..1/8, and a
 * warning (truncated data, extraneous bytes, ...) turns the decode into a failure so that the caller hands the file
 * to sharp. An error exit calls the imported jpeg_error_exit, which throws in JavaScript: the stack unwinds out of
 * WebAssembly and jpeg.ts drops the instance (its heap may hold the aborted decode's allocations).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include "jpeglib.h"

__attribute__((import_module("env"), import_name("jpeg_error_exit"), noreturn)) void js_error_exit(int code);

static struct jpeg_decompress_struct dinfo;
static struct jpeg_error_mgr jerr;
static int ready;

static void error_exit(j_common_ptr cinfo) { js_error_exit(cinfo->err->msg_code); }
static void output_message(j_common_ptr cinfo) { (void)cinfo; }
/* Warnings (level < 0) are counted in num_warnings; trace messages are dropped. */
static void emit_message(j_common_ptr cinfo, int level) { if (level < 0) cinfo->err->num_warnings++; }

/* TurboJPEG's colorspace codes (TJCS_*), which jpeg.ts has used: 0 RGB, 1 YCbCr, 2 gray, 3 CMYK, 4 YCCK, -1 other. */
static int tj_colorspace(J_COLOR_SPACE cs) {
  switch (cs) {
    case JCS_RGB: return 0;
    case JCS_YCbCr: return 1;
    case JCS_GRAYSCALE: return 2;
    case JCS_CMYK: return 3;
    case JCS_YCCK: return 4;
    default: return -1;
  }
}

/*
 * Read the header of buf[0..len). Writes width, height, colorspace (TJCS code) to meta[0..2]. Returns 0, or -1 when
 * the header is incomplete or libjpeg warned.
 *
 * Every file gets a fresh decompressor, as in sharp and Pillow: libjpeg keeps Huffman and quantization tables in the
 * decompress object from one image to the next (for abbreviated datastreams), so a file that lacks a table would
 * otherwise decode with the previous file's instead of failing (found by fuzzing: the result depended on which file
 * came before). It costs under a microsecond per file (reading a header: 3.9 -> 4.2-4.7 us, 2-core box).
 */
__attribute__((export_name("mj_header"))) int mj_header(const unsigned char *buf, unsigned long len, int32_t *meta) {
  if (ready) jpeg_destroy_decompress(&dinfo);
  dinfo.err = jpeg_std_error(&jerr);
  jerr.error_exit = error_exit;
  jerr.output_message = output_message;
  jerr.emit_message = emit_message;
  jpeg_create_decompress(&dinfo);
  ready = 1;
  jerr.num_warnings = 0;
  jpeg_mem_src(&dinfo, buf, len);
  if (jpeg_read_header(&dinfo, TRUE) != JPEG_HEADER_OK || jerr.num_warnings) return -1;
  meta[0] = (int32_t)dinfo.image_width;
  meta[1] = (int32_t)dinfo.image_height;
  meta[2] = tj_colorspace(dinfo.jpeg_color_space);
  return 0;
}

/*
 * Decode the image whose header mj_header just read, at 1/denom (1, 2, 4, 8), into packed RGB at dst (w * 3 bytes per
 * row, w = ceil(width / denom), h = ceil(height / denom)). Only rows [y0, y1) and columns [x0, x1) have to come out
 * (0, 0, w, h: the whole image); they are written at their own place in the w x h frame and equal the whole decode's
 * to the bit. Other bytes of dst may be left as they were or hold decoded pixels of the margins (see below).
 * Returns 0, or -1 when libjpeg warned or the size differs from what the caller reserved (w, h).
 *
 * A region is decoded with libjpeg-turbo's own partial decoding: jpeg_crop_scanline for the columns (the IDCT,
 * upsampling and colour conversion of the others are skipped), jpeg_skip_scanlines for the rows above (in a
 * single-scan file their entropy-coded data is Huffman-decoded without IDCT), reading down to y1 only. Margins keep
 * the region exact: libjpeg starts a crop on an iMCU column boundary at or left of the requested one and treats both
 * crop edges as image edges, so fancy upsampling would differ there from the whole decode, and so would the block
 * smoothing of an incompletely refined progressive file: its 5x5 window of DC values reaches two blocks to the left,
 * and the upsampler reads one sample more. We ask for one iMCU column more on each side (three on the left for a
 * progressive file). Rows start on the iMCU row holding y0: context
 * upsampling after a skip reads the preceding iMCU row, which jpeg_skip_scanlines decodes for that (it reads, not
 * skips, the last row group before the target). test/data.test.ts proves the region equal to the whole decode.
 *
 * Then every remaining byte of entropy-coded data is still decoded, so that a warning (truncated data, corrupt data,
 * extraneous bytes before a marker or after the last scan) is seen exactly as the whole decode sees it and sends the
 * file to sharp: a single-scan file skips to its last row (jpeg_skip_scanlines Huffman-decodes the iMCU rows in
 * between; skipping to the very end would set eoi_reached without decoding anything) and reads that row; a
 * multi-scan (progressive) file was read to its end in jpeg_start_decompress already.
 */
__attribute__((export_name("mj_decode"))) int mj_decode(unsigned char *dst, int denom, int w, int h, int x0, int y0, int x1, int y1) {
  dinfo.scale_num = 1;
  dinfo.scale_denom = (unsigned int)denom;
  dinfo.out_color_space = JCS_RGB;
  dinfo.dct_method = JDCT_ISLOW;
  dinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&dinfo);
  if ((int)dinfo.output_width != w || (int)dinfo.output_height != h || dinfo.output_components != 3 ||
      x0 < 0 || y0 < 0 || x1 > w || y1 > h || x0 >= x1 || y0 >= y1) {
    jpeg_abort_decompress(&dinfo);
    return -1;
  }
  const size_t stride = (size_t)w * 3;
  JDIMENSION xoff = 0, cw = (JDIMENSION)w, last = (JDIMENSION)h;
  if (x0 > 0 || y0 > 0 || x1 < w || y1 < h) {
    const int align = dinfo.min_DCT_scaled_size * dinfo.max_h_samp_factor;
    const int lines = dinfo.min_DCT_scaled_size * dinfo.max_v_samp_factor;
    int cx0 = x0 - (dinfo.progressive_mode ? 3 : 1) * align, cx1 = x1 + align;
    if (cx0 < 0) cx0 = 0;
    if (cx1 > w) cx1 = w;
    xoff = (JDIMENSION)cx0;
    cw = (JDIMENSION)(cx1 - cx0);
    jpeg_crop_scanline(&dinfo, &xoff, &cw); /* moves xoff left to an iMCU column boundary, widens cw to match */
    const int top = (y0 / lines) * lines;
    if (top > 0) jpeg_skip_scanlines(&dinfo, (JDIMENSION)top);
    last = (JDIMENSION)y1;
  }
  JSAMPROW rows[16];
  while (dinfo.output_scanline < last) {
    int n = 0;
    for (; n < 16 && dinfo.output_scanline + n < last; n++) {
      rows[n] = dst + (size_t)(dinfo.output_scanline + n) * stride + (size_t)xoff * 3;
    }
    jpeg_read_scanlines(&dinfo, rows, (JDIMENSION)n);
  }
  if (dinfo.output_scanline < dinfo.output_height) {
    if (jpeg_has_multiple_scans(&dinfo)) {
      jpeg_skip_scanlines(&dinfo, dinfo.output_height - dinfo.output_scanline); /* all input consumed already */
    } else {
      const JDIMENSION left = dinfo.output_height - dinfo.output_scanline;
      if (left > 1) jpeg_skip_scanlines(&dinfo, left - 1);
      rows[0] = dst + (size_t)(h - 1) * stride + (size_t)xoff * 3;
      jpeg_read_scanlines(&dinfo, rows, 1);
    }
  }
  jpeg_finish_decompress(&dinfo);
  return jerr.num_warnings ? -1 : 0;
}
