/**
 * Element codecs of the checkpoint readers and writers: the bytes of each stored dtype (float32, float16, bfloat16,
 * float64, integers, bool; little-endian as torch.save and safetensors write them) to and from the host arrays of
 * types.ts (floating types widen to float32 on read and round to nearest even on write, as torch's .half()).
 */
import { UserError } from '../errors.js';
import { numel, type HostData, type HostTensor, type StoredDType } from './types.js';

/** Bytes per element of each stored dtype. */
export const DTYPE_SIZE: Record<StoredDType, number> = {
  float32: 4, float16: 2, bfloat16: 2, float64: 8,
  int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, bool: 1,
};

export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let halfTable: Float32Array | null = null;

/** float16 bit pattern -> float32 value table (65536 entries, built once). */
export function halfToFloatTable(): Float32Array {
  if (halfTable) return halfTable;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const f = h & 0x3ff;
    if (e === 0) t[h] = s * f * 2 ** -24; // zero / subnormal
    else if (e === 31) t[h] = f ? NaN : s * Infinity;
    else t[h] = s * (1 + f / 1024) * 2 ** (e - 15);
  }
  halfTable = t;
  return t;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> float16 bits, round to nearest even (as torch's .half()). */
export function floatToHalfBits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    // subnormal half (or zero): value = m * 2^-24
    if (e < -10) return sign;
    const m = mant | 0x800000; // implicit 1
    const shift = 14 - e; // bits to drop
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // may carry into the exponent: still correct
  return sign | h;
}

/** bfloat16 bits -> float32 value. */
export function bf16BitsToFloat(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

/** float32 -> bfloat16 bits, round to nearest even (NaN stays NaN). */
export function floatToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) return ((b >>> 16) | 0x40) & 0xffff;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

/** Raw element view types (the on-disk representation). */
export type RawArray = Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array | Int16Array | Int8Array | Uint8Array;

/**
 * A typed view of `bytes` as elements of `dtype` (float16/bfloat16 as Uint16Array bit
 * patterns). Copies only when the bytes are not aligned for the element size.
 * Bytes must be in host order.
 */
export function rawView(bytes: Uint8Array, dtype: StoredDType): RawArray {
  const size = DTYPE_SIZE[dtype];
  if (bytes.byteLength % size) throw new Error(`byte length ${bytes.byteLength} is not a multiple of ${size}`);
  // (new Uint8Array(x) copies; Buffer#slice would not)
  if (bytes.byteOffset % size) bytes = new Uint8Array(bytes);
  const { buffer, byteOffset } = bytes;
  const n = bytes.byteLength / size;
  switch (dtype) {
    case 'float32': return new Float32Array(buffer, byteOffset, n);
    case 'float64': return new Float64Array(buffer, byteOffset, n);
    case 'float16': case 'bfloat16': return new Uint16Array(buffer, byteOffset, n);
    case 'int64': return new BigInt64Array(buffer, byteOffset, n);
    case 'int32': return new Int32Array(buffer, byteOffset, n);
    case 'int16': return new Int16Array(buffer, byteOffset, n);
    case 'int8': return new Int8Array(buffer, byteOffset, n);
    case 'uint8': case 'bool': return new Uint8Array(buffer, byteOffset, n);
  }
}

/** A fresh host array for `n` elements of `dtype` (floating types widen to Float32Array). */
export function allocHost(dtype: StoredDType, n: number): HostData {
  switch (dtype) {
    case 'float32': case 'float16': case 'bfloat16': case 'float64': return new Float32Array(n);
    case 'int64': return new BigInt64Array(n);
    case 'int32': return new Int32Array(n);
    case 'int16': return new Int16Array(n);
    case 'int8': return new Int8Array(n);
    case 'uint8': case 'bool': return new Uint8Array(n);
  }
}

/** Reverses the byte order of every element in place. */
export function byteSwapInPlace(bytes: Uint8Array, size: number): void {
  if (size === 1) return;
  for (let i = 0; i + size <= bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

/**
 * Converts contiguous raw elements to host data. When `dtype` is stored natively in
 * its host type (float32, int*, uint8, bool) and `allowView` is set, returns `raw`
 * itself (no copy); otherwise a new array (float16/bfloat16/float64 widened to float32).
 */
export function rawToHost(raw: RawArray, dtype: StoredDType, allowView: boolean): HostData {
  switch (dtype) {
    case 'float16': {
      const t = halfToFloatTable();
      const src = raw as Uint16Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
      return out;
    }
    case 'bfloat16': {
      const src = raw as Uint16Array;
      const out = new Float32Array(src.length);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < src.length; i++) bits[i] = src[i] << 16;
      return out;
    }
    case 'float64':
      return Float32Array.from(raw as Float64Array);
    default:
      if (allowView) return raw as HostData;
      return (raw as HostData).slice();
  }
}

/**
 * Encodes a host tensor as contiguous little-endian bytes of its `dtype` (float16 and
 * bfloat16 rounded to nearest even, float64 widened from the float32 host data).
 * Returns a view of `t.data` (no copy) when the host array already has that layout.
 */
export function hostToBytes(t: HostTensor, name = 'tensor'): Uint8Array {
  if (!HOST_LITTLE_ENDIAN) throw new Error('big-endian hosts are not supported');
  const n = numel(t.shape);
  const d = t.data;
  if (d.length !== n) throw new UserError(`${name}: data has ${d.length} elements but shape [${t.shape.join(', ')}] needs ${n}`);
  const view = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const num = (i: number) => Number(d[i]);
  switch (t.dtype) {
    case 'float32': {
      if (d instanceof Float32Array) return view(d);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = num(i);
      return view(out);
    }
    case 'float64': {
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = num(i);
      return view(out);
    }
    case 'float16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToHalfBits(num(i));
      return view(out);
    }
    case 'bfloat16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) out[i] = floatToBf16Bits(num(i));
      return view(out);
    }
    case 'int64': {
      if (d instanceof BigInt64Array) return view(d);
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt(Math.trunc(num(i)));
      return view(out);
    }
    case 'int32':
      return view(d instanceof Int32Array ? d : Int32Array.from(d as ArrayLike<number>, (v) => Number(v)));
    case 'int16':
      return view(d instanceof Int16Array ? d : Int16Array.from(d as ArrayLike<number>, (v) => Number(v)));
    case 'int8':
      return view(d instanceof Int8Array ? d : Int8Array.from(d as ArrayLike<number>, (v) => Number(v)));
    case 'uint8':
      return view(d instanceof Uint8Array ? d : Uint8Array.from(d as ArrayLike<number>, (v) => Number(v)));
    case 'bool': {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = num(i) !== 0 ? 1 : 0;
      return out;
    }
  }
}
