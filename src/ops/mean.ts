/** Spatial mean of NHWC features (global average pooling). */
import * as tf from '@tensorflow/tfjs-core';
import { shouldFuse, type CustomGradFn } from './fused.js';

let meanHW: ((x: tf.Tensor) => tf.Tensor) | null = null;

/**
 * Mean over axes 1 and 2 of [N, H, W, C]. On WebGPU its gradient broadcasts dy / (H*W) instead of tfjs's Mean gradient,
 * which multiplies by a `ones(x.shape)` tensor built on the host and uploaded on every backward pass.
 * dy * 1 / n and dy / n are the same float, so the values equal tfjs's.
 */
export function meanSpatial(x: tf.Tensor4D): tf.Tensor2D {
  if (!shouldFuse('MambaoutLayerNorm')) return x.mean([1, 2]);
  if (!meanHW) {
    meanHW = tf.customGrad(((xi: tf.Tensor, save: tf.GradSaveFunc) => {
      const [n, h, w, c] = xi.shape;
      save([]);
      return {
        value: tf.mean(xi, [1, 2]),
        gradFunc: (dy: tf.Tensor | tf.Tensor[]) =>
          [tf.broadcastTo(tf.div(tf.reshape(dy as tf.Tensor, [n, 1, 1, c]), h * w), [n, h, w, c])],
      };
    }) as unknown as CustomGradFn) as unknown as (x: tf.Tensor) => tf.Tensor;
  }
  return meanHW(x) as tf.Tensor2D;
}
