/**
 * bfloat16 storage for --amp on WebGPU: two bf16 values packed in one u32 (element 2i in the low half), held by tfjs
 * as int32 tensors of half the last dimension that only our kernels read and write.
 *
 * Why bf16 and not f16: this GPU/driver (Dawn on Vulkan, H200) offers no shader-f16 and its subgroup matrices are
 * integer-only, so arithmetic stays f32 everywhere; what a 16-bit format buys is bytes moved by the memory-bound
 * kernels and memory held by saved activations. bf16 keeps f32's exponent range, so gradients need no loss scaling
 * (f16 through WGSL's core pack2x16float would). bf16 -> f32 is exact (`bitcast<f32>(w << 16)`); f32 -> bf16 rounds to
 * nearest even on the bit pattern (relative error <= 2^-8 = 0.4%), as torch's `.to(torch.bfloat16)`. NaN payloads in
 * the low 16 bits may round to infinity (not handled; a NaN anywhere already stops training).
 */

/** WGSL helpers: unpack / pack bf16 pairs and quads (vec2<u32> = 4 values). */
export const WGSL_BF16 = `
fn bf16lo(w : u32) -> f32 { return bitcast<f32>(w << 16u); }
fn bf16hi(w : u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }
fn unpackBf16x2(w : u32) -> vec2<f32> { return vec2<f32>(bf16lo(w), bf16hi(w)); }
fn unpackBf16x4(v : vec2<u32>) -> vec4<f32> { return vec4<f32>(bf16lo(v.x), bf16hi(v.x), bf16lo(v.y), bf16hi(v.y)); }
fn bf16Round(x : f32) -> u32 { let b = bitcast<u32>(x); return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u; }
fn packBf16x2(a : f32, b : f32) -> u32 { return bf16Round(a) | (bf16Round(b) << 16u); }
fn packBf16x4(v : vec4<f32>) -> vec2<u32> { return vec2<u32>(packBf16x2(v.x, v.y), packBf16x2(v.z, v.w)); }
`;

/** Host reference: f32 values -> packed bf16 pairs (round to nearest even), length n/2 (n even). */
export function packBf16(values: ArrayLike<number>): Int32Array {
  if (values.length % 2 !== 0) throw new Error('packBf16: odd length');
  const f = new Float32Array(values);
  const u = new Uint32Array(f.buffer);
  const out = new Uint32Array(f.length / 2);
  const round = (b: number) => ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
  for (let i = 0; i < out.length; i++) out[i] = (round(u[2 * i]) | (round(u[2 * i + 1]) << 16)) >>> 0;
  return new Int32Array(out.buffer);
}

/** Host reference: packed bf16 pairs -> f32 values. */
export function unpackBf16(packed: ArrayLike<number>): Float32Array {
  const w = new Uint32Array(Int32Array.from(packed).buffer);
  const out = new Uint32Array(w.length * 2);
  for (let i = 0; i < w.length; i++) {
    out[2 * i] = (w[i] << 16) >>> 0;
    out[2 * i + 1] = (w[i] & 0xffff0000) >>> 0;
  }
  return new Float32Array(out.buffer);
}

/** Round f32 values to bf16 precision (host reference for tests). */
export function roundBf16(values: ArrayLike<number>): Float32Array {
  return unpackBf16(packBf16(values));
}
