;; Pillow's 8-bit fixed-point resampling passes (libImaging/Resample.c, ImagingResampleHorizontal_8bpc /
;; ImagingResampleVertical_8bpc) with WebAssembly SIMD. Assembled into resample_simd.ts by
;; wat2wasm (scripts/build_resample_wasm.sh); resize.ts holds the plain-JS reference of both passes.
;; Arithmetic is Pillow's: int32 accumulators starting at 1 << 21, uint8 x int32 coefficient products (wrapping
;; int32, as the C code; the horizontal pass gets the same integer from two i16 dot products, see there), then
;; (acc >> 22) clamped to [0, 255] — the two saturating narrows clamp exactly so.
(module
  (import "m" "mem" (memory 1))

  ;; Horizontal pass over `rows` rows of packed RGB, four taps per step with i32x4.dot_i16x8_s: the pixels of taps
  ;; t, t+1 (and t+2, t+3) as i16 lanes (R R G G B B 0 0) against their coefficients split into 11-bit halves,
  ;; k = hi * 2048 + lo (hi = k >> 11 in [-2048, 2048], lo = k & 2047: both fit i16, so the i16 products are exact),
  ;; and acc = (sum of p * hi) << 11 + sum of p * lo + (1 << 21), which is Pillow's int32 sum to the bit (the same
  ;; integer, wrapping alike). Why: this pass was ~75% of the eval resize with one i32x4.mul per tap (3 of 4 lanes
  ;; used). Eval resize of 60 of the bench photos (300-1000 px, bicubic, to a 224 crop), the old kernel and this one
  ;; alternated in one process, 3 runs (2026-11-30, 2-core box): 1.01-1.09 -> 0.84-0.89 ms CPU per image with
  ;; i8x16.shuffle, whose constant masks V8 rebuilds in every iteration (5 instructions each); with i8x16.swizzle on
  ;; masks read from memory once (kept in registers: 3 instructions each) 0.90-0.96 -> 0.81-0.83.
  ;; src: first row, srcStride bytes per row; xmin/xlen: i32 per output column; kv: what hprep wrote (two swizzle masks,
  ;; then `quads` (= ceil(ksize / 4)) blocks of four v128 per column); dst: rows x dstW x 3 bytes. Reads up to 16
  ;; bytes past a column's last tap and writes 1 byte past the last output pixel (callers pad both buffers).
  (func (export "hpass") (param $src i32) (param $srcStride i32) (param $rows i32) (param $xmin i32) (param $xlen i32)
        (param $kv i32) (param $quads i32) (param $dstW i32) (param $dst i32)
    (local $y i32) (local $xx i32) (local $row i32) (local $p i32) (local $n i32) (local $kp i32)
    (local $hi v128) (local $lo v128) (local $v v128) (local $a v128) (local $b v128) (local $acc v128)
    (local $ma v128) (local $mb v128)
    ;; swizzle masks (bytes >= 16 give 0), loaded (not constants) so that V8 keeps them in registers
    (local.set $ma (v128.load (local.get $kv)))
    (local.set $mb (v128.load offset=16 (local.get $kv)))
    (local.set $kv (i32.add (local.get $kv) (i32.const 32)))
    (local.set $y (i32.const 0))
    (block $done_y (loop $ly
      (br_if $done_y (i32.ge_u (local.get $y) (local.get $rows)))
      (local.set $row (i32.add (local.get $src) (i32.mul (local.get $y) (local.get $srcStride))))
      (local.set $xx (i32.const 0))
      (block $done_x (loop $lx
        (br_if $done_x (i32.ge_u (local.get $xx) (local.get $dstW)))
        (local.set $p (i32.add (local.get $row)
          (i32.mul (i32.load (i32.add (local.get $xmin) (i32.shl (local.get $xx) (i32.const 2)))) (i32.const 3))))
        ;; steps of this column: ceil(xlen / 4) (the coefficients of missing taps are 0)
        (local.set $n (i32.shr_u (i32.add (i32.load (i32.add (local.get $xlen) (i32.shl (local.get $xx) (i32.const 2))))
          (i32.const 3)) (i32.const 2)))
        (local.set $kp (i32.add (local.get $kv) (i32.shl (i32.mul (local.get $xx) (local.get $quads)) (i32.const 6))))
        (local.set $hi (v128.const i32x4 0 0 0 0))
        (local.set $lo (v128.const i32x4 0 0 0 0))
        (block $done_t (loop $lt
          (br_if $done_t (i32.eqz (local.get $n)))
          ;; bytes R0 G0 B0 R1 G1 B1 R2 G2 B2 R3 G3 B3 -> i16 lanes R0 R1 G0 G1 B0 B1 0 0 and R2 R3 G2 G3 B2 B3 0 0
          ;; (byte 16 of a shuffle is a zero byte)
          (local.set $v (v128.load (local.get $p)))
          (local.set $a (i8x16.swizzle (local.get $v) (local.get $ma)))
          (local.set $b (i8x16.swizzle (local.get $v) (local.get $mb)))
          (local.set $hi (i32x4.add (local.get $hi) (i32x4.add
            (i32x4.dot_i16x8_s (local.get $a) (v128.load (local.get $kp)))
            (i32x4.dot_i16x8_s (local.get $b) (v128.load offset=32 (local.get $kp))))))
          (local.set $lo (i32x4.add (local.get $lo) (i32x4.add
            (i32x4.dot_i16x8_s (local.get $a) (v128.load offset=16 (local.get $kp)))
            (i32x4.dot_i16x8_s (local.get $b) (v128.load offset=48 (local.get $kp))))))
          (local.set $p (i32.add (local.get $p) (i32.const 12)))
          (local.set $kp (i32.add (local.get $kp) (i32.const 64)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $lt)))
        (local.set $acc (i32x4.add (i32x4.add (i32x4.shl (local.get $hi) (i32.const 11)) (local.get $lo))
          (i32x4.splat (i32.const 0x200000))))
        (local.set $acc (i16x8.narrow_i32x4_s (i32x4.shr_s (local.get $acc) (i32.const 22)) (v128.const i32x4 0 0 0 0)))
        (v128.store32_lane 0 (local.get $dst) (i8x16.narrow_i16x8_u (local.get $acc) (local.get $acc)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 3)))
        (local.set $xx (i32.add (local.get $xx) (i32.const 1)))
        (br $lx)))
      (local.set $y (i32.add (local.get $y) (i32.const 1)))
      (br $ly))))

  ;; hpass's swizzle masks (32 bytes) and coefficient vectors: for output column xx and taps 4q .. 4q + 3, at
  ;; kv + 32 + (xx * quads + q) * 64, the
  ;; i16 lanes (h0 h1 h0 h1 h0 h1 0 0), (l0 l1 l0 l1 l0 l1 0 0), (h2 h3 ...), (l2 l3 ...) of the coefficients
  ;; k[xx * ksize + 4q + i] (0 past ksize) split as hpass says; quads = ceil(ksize / 4). k: i32, ksize per column.
  (func (export "hprep") (param $k i32) (param $ksize i32) (param $dstW i32) (param $kv i32)
    (local $xx i32) (local $t i32) (local $end i32) (local $kp i32) (local $k0 i32) (local $k1 i32)
    (v128.store (local.get $kv) (v128.const i8x16 0 255 3 255 1 255 4 255 2 255 5 255 255 255 255 255))
    (v128.store offset=16 (local.get $kv) (v128.const i8x16 6 255 9 255 7 255 10 255 8 255 11 255 255 255 255 255))
    (local.set $kv (i32.add (local.get $kv) (i32.const 32)))
    (local.set $end (i32.and (i32.add (local.get $ksize) (i32.const 3)) (i32.const -4)))
    (local.set $xx (i32.const 0))
    (block $done_x (loop $lx
      (br_if $done_x (i32.ge_u (local.get $xx) (local.get $dstW)))
      (local.set $kp (i32.add (local.get $k) (i32.shl (i32.mul (local.get $xx) (local.get $ksize)) (i32.const 2))))
      ;; taps t, t + 1 -> one (hi, lo) vector pair; t = 0, 2, 4 .. < ceil(ksize / 4) * 4
      (local.set $t (i32.const 0))
      (block $done_t (loop $lt
        (br_if $done_t (i32.ge_u (local.get $t) (local.get $end)))
        (local.set $k0 (select (i32.load (i32.add (local.get $kp) (i32.shl (local.get $t) (i32.const 2)))) (i32.const 0)
          (i32.lt_u (local.get $t) (local.get $ksize))))
        (local.set $k1 (select (i32.load offset=4 (i32.add (local.get $kp) (i32.shl (local.get $t) (i32.const 2)))) (i32.const 0)
          (i32.lt_u (i32.add (local.get $t) (i32.const 1)) (local.get $ksize))))
        (v128.store (local.get $kv) (i32x4.replace_lane 3 (i32x4.splat
          (i32.or (i32.and (i32.shr_s (local.get $k0) (i32.const 11)) (i32.const 0xffff))
            (i32.shl (i32.shr_s (local.get $k1) (i32.const 11)) (i32.const 16)))) (i32.const 0)))
        (v128.store offset=16 (local.get $kv) (i32x4.replace_lane 3 (i32x4.splat
          (i32.or (i32.and (local.get $k0) (i32.const 2047)) (i32.shl (i32.and (local.get $k1) (i32.const 2047)) (i32.const 16))))
          (i32.const 0)))
        (local.set $kv (i32.add (local.get $kv) (i32.const 32)))
        (local.set $t (i32.add (local.get $t) (i32.const 2)))
        (br $lt)))
      (local.set $xx (i32.add (local.get $xx) (i32.const 1)))
      (br $lx))))

  ;; Vertical pass: output row yy = sum over taps t of k[yy*ksize + t] * source row (ymin[yy] + t), applied to all
  ;; rowBytes bytes of the row alike, 16 bytes at a time. src: source row 0 (at the window's first column),
  ;; srcStride bytes per row; dst: outRows x rowBytes. Reads and writes up to 15 bytes past a row's end (the next
  ;; row, or padding after the last one).
  (func (export "vpass") (param $src i32) (param $srcStride i32) (param $ymin i32) (param $ylen i32) (param $k i32)
        (param $ksize i32) (param $outRows i32) (param $rowBytes i32) (param $dst i32)
    (local $yy i32) (local $j i32) (local $base i32) (local $p i32) (local $n i32) (local $kp i32) (local $kp0 i32)
    (local $n0 i32) (local $w v128) (local $v v128) (local $lo v128) (local $hi v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $out i32)
    (local.set $yy (i32.const 0))
    (block $done_y (loop $ly
      (br_if $done_y (i32.ge_u (local.get $yy) (local.get $outRows)))
      (local.set $base (i32.add (local.get $src)
        (i32.mul (i32.load (i32.add (local.get $ymin) (i32.shl (local.get $yy) (i32.const 2)))) (local.get $srcStride))))
      (local.set $n0 (i32.load (i32.add (local.get $ylen) (i32.shl (local.get $yy) (i32.const 2)))))
      (local.set $kp0 (i32.add (local.get $k) (i32.shl (i32.mul (local.get $yy) (local.get $ksize)) (i32.const 2))))
      (local.set $out (i32.add (local.get $dst) (i32.mul (local.get $yy) (local.get $rowBytes))))
      (local.set $j (i32.const 0))
      (block $done_j (loop $lj
        (br_if $done_j (i32.ge_s (local.get $j) (local.get $rowBytes)))
        (local.set $a0 (i32x4.splat (i32.const 0x200000)))
        (local.set $a1 (local.get $a0))
        (local.set $a2 (local.get $a0))
        (local.set $a3 (local.get $a0))
        (local.set $p (i32.add (local.get $base) (local.get $j)))
        (local.set $kp (local.get $kp0))
        (local.set $n (local.get $n0))
        (block $done_t (loop $lt
          (br_if $done_t (i32.eqz (local.get $n)))
          (local.set $w (i32x4.splat (i32.load (local.get $kp))))
          (local.set $v (v128.load (local.get $p)))
          (local.set $lo (i16x8.extend_low_i8x16_u (local.get $v)))
          (local.set $hi (i16x8.extend_high_i8x16_u (local.get $v)))
          (local.set $a0 (i32x4.add (local.get $a0) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $lo)) (local.get $w))))
          (local.set $a1 (i32x4.add (local.get $a1) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $lo)) (local.get $w))))
          (local.set $a2 (i32x4.add (local.get $a2) (i32x4.mul (i32x4.extend_low_i16x8_u (local.get $hi)) (local.get $w))))
          (local.set $a3 (i32x4.add (local.get $a3) (i32x4.mul (i32x4.extend_high_i16x8_u (local.get $hi)) (local.get $w))))
          (local.set $p (i32.add (local.get $p) (local.get $srcStride)))
          (local.set $kp (i32.add (local.get $kp) (i32.const 4)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $lt)))
        (v128.store (i32.add (local.get $out) (local.get $j))
          (i8x16.narrow_i16x8_u
            (i16x8.narrow_i32x4_s (i32x4.shr_s (local.get $a0) (i32.const 22)) (i32x4.shr_s (local.get $a1) (i32.const 22)))
            (i16x8.narrow_i32x4_s (i32x4.shr_s (local.get $a2) (i32.const 22)) (i32x4.shr_s (local.get $a3) (i32.const 22)))))
        (local.set $j (i32.add (local.get $j) (i32.const 16)))
        (br $lj)))
      (local.set $yy (i32.add (local.get $yy) (i32.const 1)))
      (br $ly))))
)
