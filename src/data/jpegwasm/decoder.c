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
 * Decode the image whose header mj_header just read, at 1/denom (1, 2, 4, 8), into packed RGB at dst (width * 3
 * bytes per row, ceil(width / denom) x ceil(height / denom)). Returns 0, or -1 when libjpeg warned or the size
 * differs from what the caller reserved (w, h).
 */
__attribute__((export_name("mj_decode"))) int mj_decode(unsigned char *dst, int denom, int w, int h) {
  dinfo.scale_num = 1;
  dinfo.scale_denom = (unsigned int)denom;
  dinfo.out_color_space = JCS_RGB;
  dinfo.dct_method = JDCT_ISLOW;
  dinfo.do_fancy_upsampling = TRUE;
  jpeg_start_decompress(&dinfo);
  if ((int)dinfo.output_width != w || (int)dinfo.output_height != h || dinfo.output_components != 3) {
    jpeg_abort_decompress(&dinfo);
    return -1;
  }
  JSAMPROW rows[16];
  while (dinfo.output_scanline < dinfo.output_height) {
    int n = 0;
    for (; n < 16 && dinfo.output_scanline + n < dinfo.output_height; n++) {
      rows[n] = dst + (size_t)(dinfo.output_scanline + n) * (size_t)w * 3;
    }
    jpeg_read_scanlines(&dinfo, rows, (JDIMENSION)n);
  }
  jpeg_finish_decompress(&dinfo);
  return jerr.num_warnings ? -1 : 0;
}
