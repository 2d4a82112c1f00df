/**
 * Float32 sums and quotients of whole arrays for the collectives (allreduce.ts, the AddF32Sink of transport.ts):
 *
 * dst += src and a /= w over float32 arrays. JS evaluates `d[i] + s[i]` in float64 and rounds once to float32,
 * which equals the IEEE float32 sum (float64 has more than 2*24+2 bits, so double rounding is innocuous; the
 * same holds for division). WebAssembly f32x4.add / f32x4.div are IEEE float32 operations, so the SIMD path
 * gives the same bits as the scalar path (NaN payloads aside) and ranks with and without SIMD agree.
 * The SIMD kernel works on staging areas inside its own memory: copying in and out (memcpy) plus a 4-wide add
 * is ~4x faster than V8's scalar Float32Array loop (2.5 ms vs 9-11 ms for 3.65M floats on an x86 server core).
 */
import { settings } from '../settings.js';
import { addBf16x2Scalar, divideBf16x2Scalar } from './bf16.js';

/** Floats per staging area of the SIMD kernels. */
const KCH = 1 << 16;

interface SimdKernels {
  add(dstPtr: number, srcPtr: number, nBytes: number): void;
  div(ptr: number, nBytes: number, w: number): void;
  /** The same on words holding two bfloat16 each: unpack, f32 add / divide, round to nearest even (bf16.ts). */
  addBf16(dstPtr: number, srcPtr: number, nBytes: number): void;
  divBf16(ptr: number, nBytes: number, w: number): void;
  a: Float32Array;
  b: Float32Array;
}

let simd: SimdKernels | null | undefined;

function uleb(n: number): number[] {
  const o: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    o.push(b);
  } while (n);
  return o;
}

function sleb(n: number): number[] {
  const o: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      o.push(b);
      return o;
    }
    o.push(b | 0x80);
  }
}

/**
 * Hand-assembled module: (import "m" "mem" memory) add(d,s,nBytes): d[] += s[]; div(p,nBytes,w): p[] /= w;
 * addbf(d,s,nBytes) / divbf(p,nBytes,w): the same on bfloat16 pairs (each u32 word = low bf16 | high bf16 << 16).
 */
function simdModuleBytes(): Uint8Array<ArrayBuffer> {
  const sec = (id: number, c: number[]): number[] => [id, ...uleb(c.length), ...c];
  const str = (t: string): number[] => [t.length, ...Array.from(t, (ch) => ch.charCodeAt(0))];
  const LOAD = [0xfd, 0x00, 0x02, 0x00]; // v128.load align=4 offset=0
  const STORE = [0xfd, 0x0b, 0x02, 0x00]; // v128.store
  const bump = (local: number): number[] => [0x20, local, 0x41, 0x10, 0x6a, 0x21, local]; // local += 16
  // add: params d=0 s=1 n=2; local end=3
  const add = [
    0x01, 0x01, 0x7f,
    0x20, 0, 0x20, 2, 0x6a, 0x21, 3, // end = d + n
    0x02, 0x40, 0x03, 0x40, // block loop
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1, // if d >= end break
    0x20, 0, 0x20, 0, ...LOAD, 0x20, 1, ...LOAD, 0xfd, 0xe4, 0x01, ...STORE, // *d = *d + *s (f32x4.add)
    ...bump(0), ...bump(1),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  // div: params p=0 n=1 w=2 (f32); locals end=3 (i32), wv=4 (v128)
  const div = [
    0x02, 0x01, 0x7f, 0x01, 0x7b,
    0x20, 2, 0xfd, 0x13, 0x21, 4, // wv = f32x4.splat(w)
    0x20, 0, 0x20, 1, 0x6a, 0x21, 3, // end = p + n
    0x02, 0x40, 0x03, 0x40,
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1,
    0x20, 0, 0x20, 0, ...LOAD, 0x20, 4, 0xfd, 0xe7, 0x01, ...STORE, // *p = *p / wv (f32x4.div)
    ...bump(0),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  // bfloat16 pairs. v128 ops: 0xfd + uleb(opcode).
  const V = (op: number): number[] => [0xfd, ...uleb(op)];
  const get = (l: number): number[] => [0x20, l];
  const set = (l: number): number[] => [0x21, l];
  const i32 = (v: number): number[] => [0x41, ...sleb(v)];
  const SPLAT_I32 = V(0x11), SPLAT_F32 = V(0x13), AND = V(0x4e), OR = V(0x50);
  const SHL = V(0xab), SHR_U = V(0xad), IADD = V(0xae), FADD = V(0xe4), FDIV = V(0xe7);
  // round the f32 lanes in local x to bf16 (nearest, ties to even): x + 0x7fff + ((x >> 16) & 1); then keep the
  // high halves: `>> 16` for the low bf16 of each word, `& 0xffff0000` for the high one
  const round = (x: number, C: number, ONE: number): number[] => [...get(x), ...get(C), ...IADD, ...get(x), ...i32(16), ...SHR_U, ...get(ONE), ...AND, ...IADD];
  // addbf: params d=0 s=1 n=2; locals end=3 (i32), a=4 b=5 M=6 C=7 ONE=8 lo=9 hi=10 (v128)
  const addbf = [
    0x02, 0x01, 0x7f, 0x07, 0x7b,
    ...i32(-65536), ...SPLAT_I32, ...set(6), ...i32(0x7fff), ...SPLAT_I32, ...set(7), ...i32(1), ...SPLAT_I32, ...set(8),
    0x20, 0, 0x20, 2, 0x6a, 0x21, 3,
    0x02, 0x40, 0x03, 0x40,
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1,
    ...get(0), ...LOAD, ...set(4), ...get(1), ...LOAD, ...set(5),
    ...get(4), ...i32(16), ...SHL, ...get(5), ...i32(16), ...SHL, ...FADD, ...set(9),
    ...get(4), ...get(6), ...AND, ...get(5), ...get(6), ...AND, ...FADD, ...set(10),
    ...get(0),
    ...round(9, 7, 8), ...i32(16), ...SHR_U,
    ...round(10, 7, 8), ...get(6), ...AND,
    ...OR, ...STORE,
    ...bump(0), ...bump(1),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  // divbf: params p=0 n=1 w=2 (f32); locals end=3 (i32), wv=4 M=5 C=6 ONE=7 lo=8 hi=9 a=10 (v128)
  const divbf = [
    0x02, 0x01, 0x7f, 0x07, 0x7b,
    ...get(2), ...SPLAT_F32, ...set(4),
    ...i32(-65536), ...SPLAT_I32, ...set(5), ...i32(0x7fff), ...SPLAT_I32, ...set(6), ...i32(1), ...SPLAT_I32, ...set(7),
    0x20, 0, 0x20, 1, 0x6a, 0x21, 3,
    0x02, 0x40, 0x03, 0x40,
    0x20, 0, 0x20, 3, 0x4f, 0x0d, 1,
    ...get(0), ...LOAD, ...set(10),
    ...get(10), ...i32(16), ...SHL, ...get(4), ...FDIV, ...set(8),
    ...get(10), ...get(5), ...AND, ...get(4), ...FDIV, ...set(9),
    ...get(0),
    ...round(8, 6, 7), ...i32(16), ...SHR_U,
    ...round(9, 6, 7), ...get(5), ...AND,
    ...OR, ...STORE,
    ...bump(0),
    0x0c, 0, 0x0b, 0x0b, 0x0b,
  ];
  return new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
    ...sec(1, [2, 0x60, 3, 0x7f, 0x7f, 0x7f, 0, 0x60, 3, 0x7f, 0x7f, 0x7d, 0]),
    ...sec(2, [1, ...str('m'), ...str('mem'), 2, 0, 8]),
    ...sec(3, [4, 0, 1, 0, 1]),
    ...sec(7, [4, ...str('add'), 0, 0, ...str('div'), 0, 1, ...str('addbf'), 0, 2, ...str('divbf'), 0, 3]),
    ...sec(10, [4, ...uleb(add.length), ...add, ...uleb(div.length), ...div, ...uleb(addbf.length), ...addbf, ...uleb(divbf.length), ...divbf]),
  ]);
}


function getSimd(): SimdKernels | null {
  if (simd !== undefined) return simd;
  simd = null;
  if (settings.distNoSimd) return simd;
  try {
    const bytes = simdModuleBytes();
    if (typeof WebAssembly === 'undefined' || !WebAssembly.validate(bytes)) return simd;
    const mem = new WebAssembly.Memory({ initial: 8 }); // 512 KiB: two staging areas of KCH floats
    const inst = new WebAssembly.Instance(new WebAssembly.Module(bytes), { m: { mem } });
    const ex = inst.exports as unknown as { add: SimdKernels['add']; div: SimdKernels['div']; addbf: SimdKernels['addBf16']; divbf: SimdKernels['divBf16'] };
    simd = { add: ex.add, div: ex.div, addBf16: ex.addbf, divBf16: ex.divbf, a: new Float32Array(mem.buffer, 0, KCH), b: new Float32Array(mem.buffer, KCH * 4, KCH) };
  } catch {
    simd = null;
  }
  return simd;
}

/** Time spent in the reduction kernels (addF32, divideF32), for the per-step breakdown; counted while `on`. */
export const reduceClock = { on: false, ms: 0 };

/** dst[i] += src[i] for i < src.length (IEEE float32 sums; SIMD when available). */
export function addF32(dst: Float32Array, src: Float32Array): void {
  if (reduceClock.on) {
    const t0 = performance.now();
    addF32Kernel(dst, src);
    reduceClock.ms += performance.now() - t0;
  } else addF32Kernel(dst, src);
}

function addF32Kernel(dst: Float32Array, src: Float32Array): void {
  const n = src.length;
  const k = getSimd();
  if (!k || n < 64) {
    addScalar(dst, src, 0, n);
    return;
  }
  for (let p = 0; p < n; p += KCH) {
    const m = Math.min(KCH, n - p);
    k.a.set(dst.subarray(p, p + m));
    k.b.set(src.subarray(p, p + m));
    const m4 = m & ~3;
    k.add(0, KCH * 4, m4 * 4);
    for (let i = m4; i < m; i++) k.a[i] += k.b[i];
    dst.set(k.a.subarray(0, m), p);
  }
}

/** a[i] = a[i] / w (IEEE float32 quotients, the same bits as `a[i] / w` in JS; SIMD when available). */
export function divideF32(a: Float32Array, w: number): void {
  if (reduceClock.on) {
    const t0 = performance.now();
    divideF32Kernel(a, w);
    reduceClock.ms += performance.now() - t0;
  } else divideF32Kernel(a, w);
}

function divideF32Kernel(a: Float32Array, w: number): void {
  const n = a.length;
  const k = getSimd();
  if (!k || n < 64) {
    for (let i = 0; i < n; i++) a[i] = a[i] / w;
    return;
  }
  for (let p = 0; p < n; p += KCH) {
    const m = Math.min(KCH, n - p);
    k.a.set(a.subarray(p, p + m));
    const m4 = m & ~3;
    k.div(0, m4 * 4, w);
    for (let i = m4; i < m; i++) k.a[i] = k.a[i] / w;
    a.set(k.a.subarray(0, m), p);
  }
}

/** dst[i] = bf16(dst[i] + src[i]) on bfloat16 pairs (bf16.ts layout; SIMD when available, same bits as the scalar path). */
export function addBf16x2(dst: Float32Array, src: Float32Array): void {
  const t0 = reduceClock.on ? performance.now() : 0;
  const n = src.length;
  const k = getSimd();
  if (!k || n < 64) addBf16x2Scalar(dst.subarray(0, n), src);
  else {
    for (let p = 0; p < n; p += KCH) {
      const m = Math.min(KCH, n - p);
      k.a.set(dst.subarray(p, p + m));
      k.b.set(src.subarray(p, p + m));
      const m4 = m & ~3;
      k.addBf16(0, KCH * 4, m4 * 4);
      if (m4 < m) addBf16x2Scalar(k.a.subarray(m4, m), k.b.subarray(m4, m));
      dst.set(k.a.subarray(0, m), p);
    }
  }
  if (reduceClock.on) reduceClock.ms += performance.now() - t0;
}

/** a[i] = bf16(a[i] / w) on bfloat16 pairs. */
export function divideBf16x2(a: Float32Array, w: number): void {
  const t0 = reduceClock.on ? performance.now() : 0;
  const n = a.length;
  const k = getSimd();
  if (!k || n < 64) divideBf16x2Scalar(a, w);
  else {
    for (let p = 0; p < n; p += KCH) {
      const m = Math.min(KCH, n - p);
      k.a.set(a.subarray(p, p + m));
      const m4 = m & ~3;
      k.divBf16(0, m4 * 4, w);
      if (m4 < m) divideBf16x2Scalar(k.a.subarray(m4, m), w);
      a.set(k.a.subarray(0, m), p);
    }
  }
  if (reduceClock.on) reduceClock.ms += performance.now() - t0;
}


function addScalar(dst: Float32Array, src: Float32Array, pos: number, n: number): void {
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    dst[pos + i] += src[i];
    dst[pos + i + 1] += src[i + 1];
    dst[pos + i + 2] += src[i + 2];
    dst[pos + i + 3] += src[i + 3];
  }
  for (; i < n; i++) dst[pos + i] += src[i];
}
