/**
 * The prefetcher's batch work as tfjs ops: the path for the tensorflow backend (tfjs-node / tfjs-node-gpu, where we
 * cannot add kernels), and the one the tests run on the cpu backend. Same inputs and the same result as the WGSL
 * kernel MambaoutPrepareBatch (src/backend/kernels/webgpu/prepare_batch.ts describes the maths and the parameter
 * layout); on the cpu backend the result equals the host path of src/data/prefetch.ts bit for bit, pixel noise
 * included (tfjs's cpu kernels compute in float64 and round to float32, as the host code does).
 *
 * tfjs has no uint8 dtype and no int32 bit operations, so bytes are unpacked and the counter hash computed with
 * int32 floorDiv / floorMod (shifts and masks) and multiplies split into 16-bit halves (exact in float64, wrapping
 * modulo 2^32 when stored as int32, as C int32 arithmetic does on the tensorflow backend).
 */
import * as tf from '@tensorflow/tfjs-core';
import { HASH_ELEM, HASH_M1, HASH_M2, HASH_POS, TWO_PI_F32 } from '../utils/counter_rng.js';

export interface PrepareParams {
  n: number;
  height: number;
  width: number;
  /** per-image parameters (training); absent for eval batches (normalize only) */
  train: { ints: Int32Array; floats: Float32Array; maxBoxes: number; mode: number; key: number; posBase: number } | null;
}

const I = (v: number): tf.Scalar => tf.scalar(v | 0, 'int32');

/** x mod 2^32 (as int32) times a uint32 constant, modulo 2^32. */
function mulU32(x: tf.Tensor, m: number): tf.Tensor {
  const lo = m & 0xffff;
  const hi = m >>> 16;
  return tf.add(tf.mul(x, I(lo)), tf.mul(tf.mul(x, I(hi)), I(65536)));
}

/** Logical shift right by k (2 <= k < 32) of int32 bit patterns. */
function shr(x: tf.Tensor, k: number): tf.Tensor {
  return tf.mod(tf.floorDiv(x, I(2 ** k)), I(2 ** (32 - k)));
}

function round32(h: tf.Tensor): tf.Tensor {
  h = tf.add(h, shr(h, 16));
  h = mulU32(h, HASH_M1);
  h = tf.add(h, shr(h, 13));
  h = mulU32(h, HASH_M2);
  return tf.add(h, shr(h, 16));
}

const mix32 = (h: tf.Tensor): tf.Tensor => round32(round32(h));

/** counterNormal(key, pos, elem) (src/utils/counter_rng.ts) for int32 tensors `pos` and `elem` (broadcast). */
export function counterNormalOps(key: number, pos: tf.Tensor, elem: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const b1 = mix32(tf.add(mix32(tf.add(I(key), mulU32(pos, HASH_POS))), mulU32(elem, HASH_ELEM)));
    const b2 = mix32(tf.add(b1, I(HASH_POS)));
    const inv = tf.scalar(1 / 16777216);
    const u1 = tf.mul(tf.add(tf.cast(shr(b1, 8), 'float32'), tf.scalar(1)), inv);
    const u2 = tf.mul(tf.cast(shr(b2, 8), 'float32'), inv);
    const r = tf.sqrt(tf.mul(tf.log(u1), tf.scalar(-2)));
    return tf.mul(r, tf.cos(tf.mul(u2, tf.scalar(TWO_PI_F32))));
  });
}

/** [n, H, W, 1] bool: rows [y0, y1) x cols [x0, x1) of each image; the bounds are int32 [n, 1] columns. */
function boxMask(n: number, H: number, W: number, y0: tf.Tensor, y1: tf.Tensor, x0: tf.Tensor, x1: tf.Tensor): tf.Tensor {
  const ys = tf.range(0, H, 1, 'int32').reshape([1, H, 1, 1]);
  const xs = tf.range(0, W, 1, 'int32').reshape([1, 1, W, 1]);
  const col = (t: tf.Tensor) => t.reshape([n, 1, 1, 1]);
  return tf.logicalAnd(
    tf.logicalAnd(tf.greaterEqual(ys, col(y0)), tf.less(ys, col(y1))),
    tf.logicalAnd(tf.greaterEqual(xs, col(x0)), tf.less(xs, col(x1))),
  );
}

/**
 * The batch from packed uint8 words (int32 [ceil(n·H·W·3 / 4)], little-endian bytes) and the normalization table
 * (float32 [768]): float32 [n, H, W, 3].
 */
export function prepareBatchOps(words: tf.Tensor1D, lut: tf.Tensor1D, p: PrepareParams): tf.Tensor4D {
  const { n, height: H, width: W } = p;
  const total = n * H * W * 3;
  return tf.tidy(() => {
    const bytes = [1, 256, 65536, 16777216].map((d) => tf.mod(d === 1 ? words : tf.floorDiv(words, I(d)), I(256)));
    let v: tf.Tensor = tf.stack(bytes, 1).reshape([-1]).slice(0, total).reshape([n, H, W, 3]);
    const t = p.train;
    let ints: tf.Tensor2D | null = null;
    let floats: tf.Tensor2D | null = null;
    const S = t ? 6 + 4 * t.maxBoxes : 0;
    const F = t ? 512 + 3 * t.maxBoxes : 0;
    const column = (k: number) => ints!.slice([0, k], [n, 1]);
    if (t) {
      ints = tf.tensor2d(t.ints, [n, S], 'int32');
      floats = tf.tensor2d(t.floats, [n, F], 'float32');
      const kind = column(0).reshape([n, 1, 1, 1]);
      const partner = tf.reverse(v, 0);
      const base = tf.mul(tf.range(0, n, 1, 'int32'), I(F)).reshape([n, 1, 1, 1]);
      const flat = floats.reshape([-1]);
      const blended = tf.cast(
        tf.clipByValue(tf.round(tf.add(tf.gather(flat, tf.add(base, v)), tf.gather(flat, tf.add(tf.add(base, I(256)), partner)))), 0, 255),
        'int32',
      );
      const inCut = boxMask(n, H, W, column(1), column(2), column(3), column(4));
      v = tf.where(tf.equal(kind, I(1)), blended, tf.where(tf.logicalAnd(tf.equal(kind, I(2)), inCut), partner, v));
    }
    let x: tf.Tensor = tf.gather(lut, tf.add(v, tf.tensor1d([0, 256, 512], 'int32')));
    const erased: number[] = [];
    if (t) for (let i = 0; i < n; i++) if (t.ints[i * S + 5] > 0) erased.push(i);
    if (t && erased.length) {
      const count = column(5).reshape([n, 1, 1, 1]);
      let noise: tf.Tensor | null = null;
      // pixel noise (about 160 int ops per element) only for the images that have a box: a quarter in the recipe
      if (t.mode === 2) {
        const pos = tf.tensor1d(erased.map((i) => (t.posBase + i) | 0), 'int32').reshape([erased.length, 1, 1, 1]);
        const elem = tf.range(0, H * W * 3, 1, 'int32').reshape([1, H, W, 3]);
        const rows = Int32Array.from({ length: n }, (_, i) => Math.max(0, erased.indexOf(i))); // others: any row (not used)
        noise = tf.gather(counterNormalOps(t.key, pos, elem), tf.tensor1d(rows, 'int32'));
      }
      for (let j = 0; j < t.maxBoxes; j++) {
        const q = 6 + 4 * j;
        const top = column(q);
        const left = column(q + 1);
        const inBox = tf.logicalAnd(
          boxMask(n, H, W, top, tf.add(top, column(q + 2)), left, tf.add(left, column(q + 3))),
          tf.greater(count, I(j)),
        );
        const fill = t.mode === 2 ? noise! : t.mode === 1 ? floats!.slice([0, 512 + 3 * j], [n, 3]).reshape([n, 1, 1, 3]) : tf.zerosLike(x);
        x = tf.where(inBox, fill, x);
      }
    }
    return x as tf.Tensor4D;
  });
}
