/** Activations as tfjs op compositions (every backend). */
import * as tf from '@tensorflow/tfjs-core';

const SQRT1_2 = Math.SQRT1_2;

/** Exact GELU: 0.5·x·(1 + erf(x/√2)) (torch.nn.GELU default). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return x.mul(tf.erf(x.mul(SQRT1_2)).add(1)).mul(0.5);
}
