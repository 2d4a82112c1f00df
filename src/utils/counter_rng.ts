/**
 * Counter-based random numbers: a value is a pure function of (key, position, element), so the same noise comes out
 * of JavaScript on the host, of tfjs ops (tensorflow backend) and of a WGSL kernel, in any order and in parallel.
 * Used for random erasing's per-pixel noise ('pixel' mode), where a sequential generator would tie the noise to the
 * order in which it is produced and could not run on the device.
 *
 * The hash uses only what all three can compute bit-exactly: 32-bit wrapping add and multiply, and logical shifts
 * (tfjs has no int32 xor or shift ops; `counterNormalOps` in src/data/prefetch_ops.ts builds shifts from floorDiv /
 * floorMod and 32-bit multiplies from two 16-bit halves). It is murmur3's finalizer with xor replaced by add, applied
 * twice (once leaves neighbouring counters visibly correlated: lag-1 correlation of the normals -0.09; twice: within
 * the sampling error of 200,000 draws, like murmur3 itself):
 *
 *   round(h) = h += h >>> 16; h *= 0x85ebca6b; h += h >>> 13; h *= 0xc2b2ae35; h += h >>> 16
 *   mix(h)   = round(round(h))
 *   bits1    = mix(mix(key + pos * 0x9e3779b1) + elem * 0x27d4eb2f)
 *   bits2    = mix(bits1 + 0x9e3779b1)
 *   u1       = ((bits1 >>> 8) + 1) * 2^-24 in (0, 1],   u2 = (bits2 >>> 8) * 2^-24 in [0, 1)
 *   normal   = sqrt(-2 ln u1) * cos(2π u2)                (Box-Muller, each step rounded to float32)
 *
 * The integer part is identical everywhere; the float part is identical between the host and tfjs's cpu backend
 * (both compute each step in float64 and round to float32); WGSL's log/cos are accurate to a few ulp on GPUs (WGSL
 * guarantees 2^-11 absolute for cos), so device noise agrees with the host to float tolerance, not bit for bit.
 * Mean and variance over 10^6 draws are checked in test/prefetch.test.ts.
 */

export const HASH_M1 = 0x85ebca6b;
export const HASH_M2 = 0xc2b2ae35;
export const HASH_POS = 0x9e3779b1;
export const HASH_ELEM = 0x27d4eb2f;
/** float32(2π) */
export const TWO_PI_F32 = Math.fround(2 * Math.PI);
const INV_2_24 = 1 / 16777216;

/** One add-shift-multiply round (uint32 in, uint32 out). */
function round32(h: number): number {
  h = (h + (h >>> 16)) >>> 0;
  h = Math.imul(h, HASH_M1) >>> 0;
  h = (h + (h >>> 13)) >>> 0;
  h = Math.imul(h, HASH_M2) >>> 0;
  return (h + (h >>> 16)) >>> 0;
}

/** The mixing function: two rounds. */
export function mix32(h: number): number {
  return round32(round32(h));
}

/** The first uint32 of (key, pos, elem). */
export function counterBits(key: number, pos: number, elem: number): number {
  const h = mix32((key + Math.imul(pos, HASH_POS)) >>> 0);
  return mix32((h + Math.imul(elem, HASH_ELEM)) >>> 0);
}

/** A standard normal value for (key, pos, elem), float32 (see the header for the exact recipe). */
export function counterNormal(key: number, pos: number, elem: number): number {
  const b1 = counterBits(key, pos, elem);
  const b2 = mix32((b1 + HASH_POS) >>> 0);
  const f = Math.fround;
  const u1 = ((b1 >>> 8) + 1) * INV_2_24; // exact in float32
  const u2 = (b2 >>> 8) * INV_2_24;
  const r = f(Math.sqrt(f(-2 * f(Math.log(u1)))));
  const c = f(Math.cos(f(u2 * TWO_PI_F32)));
  return f(r * c);
}

/** WGSL of the same functions: `counterNormal(key : u32, pos : u32, elem : u32) -> f32`. */
export const COUNTER_NORMAL_WGSL = /* wgsl */ `
fn round32(x : u32) -> u32 {
  var h = x;
  h = h + (h >> 16u);
  h = h * ${HASH_M1}u;
  h = h + (h >> 13u);
  h = h * ${HASH_M2}u;
  return h + (h >> 16u);
}
fn mix32(x : u32) -> u32 {
  return round32(round32(x));
}
fn counterNormal(key : u32, pos : u32, elem : u32) -> f32 {
  let b1 = mix32(mix32(key + pos * ${HASH_POS}u) + elem * ${HASH_ELEM}u);
  let b2 = mix32(b1 + ${HASH_POS}u);
  let u1 = f32((b1 >> 8u) + 1u) * ${INV_2_24.toExponential()};
  let u2 = f32(b2 >> 8u) * ${INV_2_24.toExponential()};
  let r = sqrt(-2.0 * log(u1));
  return r * cos(u2 * ${TWO_PI_F32});
}
`;
