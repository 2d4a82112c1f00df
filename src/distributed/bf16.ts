/**
 * bfloat16 for the compressed gradient exchange (torch DDP's bf16_compress_hook: gradients travel as bfloat16, are
 * summed, divided by the world size, and widened back to float32).
 *
 * Layout ("bf16x2"): a Float32Array / Uint32Array whose 4-byte words each hold two bfloat16 values, element 2j in the
 * low half and element 2j+1 in the high half (a trailing odd element is paired with +0). The words keep the
 * 4-byte element of every float32 path (ring chunks, shared-memory mailboxes, GPU copies); only the add and divide
 * kernels know what is inside.
 *
 * Rounding: float32 -> bfloat16 rounds to nearest, ties to even (bits + 0x7fff + ((bits >> 16) & 1), keep the high
 * half; overflow goes to infinity); any NaN becomes the quiet NaN 0x7fc0. The WGSL pack kernel (src/train/ddp_gpu.ts)
 * does exactly this, so the cpu path and the GPU path give the same bits. A sum of two bfloat16 values is exact in
 * float32 and the division of the average is one float32 division, each then rounded once more to bfloat16, as
 * torch computes a bfloat16 add (float32 arithmetic, one rounding of the result).
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bfloat16 bits (16-bit) of the float32 with these bits (round to nearest even; NaN -> 0x7fc0). */
export function bf16Bits(bits: number): number {
  bits >>>= 0;
  if ((bits & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/** bfloat16 of a number (first rounded to float32). */
export function toBf16(x: number): number {
  f32[0] = x;
  return bf16Bits(u32[0]);
}

/** The float32 value of bfloat16 bits. */
export function fromBf16(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/** Words needed for n bfloat16 values. */
export function bf16Words(n: number): number {
  return Math.ceil(n / 2);
}

/** Pack src (float32) into dst (bf16 pairs; dst.length >= ceil(src.length / 2)). */
export function packBf16(src: Float32Array, dst: Uint32Array | Float32Array): void {
  const s = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const d = dst instanceof Uint32Array ? dst : new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  const n = src.length;
  let j = 0;
  for (let i = 0; i + 1 < n; i += 2) d[j++] = (bf16Bits(s[i]) | (bf16Bits(s[i + 1]) << 16)) >>> 0;
  if (n & 1) d[j] = bf16Bits(s[n - 1]);
}

/** Unpack n values from bf16 pairs into float32. */
export function unpackBf16(src: Uint32Array | Float32Array, dst: Float32Array, n = dst.length): void {
  const s = src instanceof Uint32Array ? src : new Uint32Array(src.buffer, src.byteOffset, src.length);
  const d = new Uint32Array(dst.buffer, dst.byteOffset, n);
  let j = 0;
  for (let i = 0; i + 1 < n; i += 2) {
    const w = s[j++];
    d[i] = (w << 16) >>> 0;
    d[i + 1] = (w & 0xffff0000) >>> 0;
  }
  if (n & 1) d[n - 1] = (s[j] << 16) >>> 0;
}

/** Scalar reference of the pair kernels: dst[i] = bf16(dst[i] + src[i]) per half, i < src.length words. */
export function addBf16x2Scalar(dst: Float32Array, src: Float32Array): void {
  const d = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  const s = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < s.length; i++) {
    const a = d[i];
    const b = s[i];
    u32[0] = (a << 16) >>> 0;
    const al = f32[0];
    u32[0] = (b << 16) >>> 0;
    f32[0] = al + f32[0]; // exact in float64, one rounding to float32 = the IEEE float32 sum
    const lo = bf16Bits(u32[0]);
    u32[0] = (a & 0xffff0000) >>> 0;
    const ah = f32[0];
    u32[0] = (b & 0xffff0000) >>> 0;
    f32[0] = ah + f32[0];
    d[i] = (lo | (bf16Bits(u32[0]) << 16)) >>> 0;
  }
}

/** Scalar reference: a[i] = bf16(a[i] / w) per half. */
export function divideBf16x2Scalar(a: Float32Array, w: number): void {
  const d = new Uint32Array(a.buffer, a.byteOffset, a.length);
  for (let i = 0; i < d.length; i++) {
    const x = d[i];
    u32[0] = (x << 16) >>> 0;
    f32[0] = f32[0] / w;
    const lo = bf16Bits(u32[0]);
    u32[0] = (x & 0xffff0000) >>> 0;
    f32[0] = f32[0] / w;
    d[i] = (lo | (bf16Bits(u32[0]) << 16)) >>> 0;
  }
}
